"""Flax model components. Each module listed in `COMPONENTS` exposes

    abstract_params(config) -> tree of jax.ShapeDtypeStruct (boxed with logical axis names)

built with `jax.eval_shape`, so `describe` and the sharding code can size a model without
allocating it.
"""

import importlib

# component name -> (module, config.model section, issue that builds it)
COMPONENTS = {
    "dit": ("wow_jax.models.dit", "dit", 3),
    "vae": ("wow_jax.models.vae", "vae", 4),
    "text": ("wow_jax.models.text_encoder", "text", 5),
    "clip": ("wow_jax.models.clip", "clip", 5),
    "idm": ("wow_jax.models.idm", "idm", None),
}


def load_component(name: str):
    """Imports a component's module, or returns None when it has not landed yet."""
    module_name = COMPONENTS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise
