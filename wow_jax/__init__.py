"""wow_jax: JAX/Flax training and inference for WoW-style robot world models."""

__version__ = "0.1.0"
