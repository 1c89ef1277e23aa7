"""PyTorch <-> JAX checkpoint conversion (Wan-native and diffusers names), streaming.

formats (read/write .safetensors/.pth tensor by tensor), mapping (the rule engine), registry
(component -> model, table, diffusers class), importer (PyTorch -> Orbax on a mesh), exporter
(Orbax -> safetensors / diffusers folder), convert (`mode=convert`); Orbax reading and writing
is wow_jax/checkpointing.py. See docs/checkpoints.md.
"""
