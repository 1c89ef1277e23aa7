"""PyTorch <-> JAX checkpoint conversion (Wan-native and diffusers names)."""
