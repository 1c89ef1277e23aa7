"""Data: episode readers and builders, Grain pipeline, mixture captions, tokenizer, text caches."""
