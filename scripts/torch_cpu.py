"""PyTorch set-up shared by the benchmarks that time a PyTorch reference on CPU."""


def configure(threads: int = 0):
    """Imports torch, sets its thread count (0 = torch's default, one per core) and makes it flush
    denormal floats as XLA:CPU always does, so that neither side takes the x86 denormal slow path
    (without it PyTorch ran ~9-10x slower on random weights). Returns the torch module."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return torch
