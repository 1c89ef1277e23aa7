"""Config files: `python -m wow_jax.main --config=configs/<name>.py[:variant]`."""
