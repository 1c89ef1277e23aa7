"""Data: robot-episode readers, Grain transforms, tokenization and caption caches."""
