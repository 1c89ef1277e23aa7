"""The diffusers `WanTransformer3DModel` as the numeric reference of the Flax DiT, with every
weight re-randomised, and its weights mapped onto the Flax tree (parity tests, benchmarks).

torch and diffusers are test-only dependencies (requirements-test.txt): imported when called.
"""

import ml_collections
import numpy as np

from wow_jax.interop import dit_table, mapping
from wow_jax.models import dit


def random_diffusers_dit(dit_cfg: ml_collections.ConfigDict, seed: int = 0, vector_std=0.5):
    """diffusers model for `dit_cfg`, float32, eval mode, every parameter redrawn (also the output
    head, which diffusers zero-initialises and which would make a comparison vacuous): matrices
    ~ N(0, 1/fan_in), norm scales ~ N(1, vector_std), other vectors ~ N(0, vector_std)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**dit_table.diffusers_kwargs(dit_cfg)).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "scale_shift_table" not in name:
                torch.nn.init.normal_(p, std=float(np.prod(p.shape[1:])) ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                torch.nn.init.normal_(p, mean=1.0, std=vector_std)
            else:
                torch.nn.init.normal_(p, std=vector_std)
    return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def flax_params(dit_cfg, state: dict[str, np.ndarray], naming: str = "diffusers"):
    """Maps a state dict onto the Flax tree of `dit_cfg` through the DiT table."""
    from flax import linen as nn

    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(dit_cfg)))
    return mapping.torch_to_flax(state.__getitem__, dit_table.rules(dit_cfg, naming), shapes)
