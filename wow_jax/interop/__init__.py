"""PyTorch <-> JAX checkpoint conversion (Wan-native and diffusers names), streaming.

formats (read/write .safetensors/.pth tensor by tensor), mapping (the rule engine), registry
(component -> model, table, diffusers class), importer (PyTorch -> Orbax on a mesh), exporter
(Orbax -> safetensors / diffusers folder), orbax_io (partial saves, leaf restores, load_params),
convert (`mode=convert`). See docs/checkpoints.md.
"""
