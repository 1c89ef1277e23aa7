"""Flax model components, all following one contract, and the one registry of them.

The contract. Every model module named in `COMPONENTS` (`wow_jax/models/<module>.py`) exposes,
with `cfg = config.model.<name>`:

    create(cfg) -> flax.linen.Module
        The module; its `apply({'params': params}, ...)` is the model (shapes in its docstring).
    init_params(cfg, rng) -> params
        Random 'params', every leaf boxed with its logical axis names (`nn.Partitioned`, names
        from `wow_jax.sharding`); traceable (jit, eval_shape), so the training loop initialises
        it sharded. `nn.meta.unbox(params)` gives plain arrays; `apply` accepts either.
    abstract_params(cfg) -> params
        `jax.eval_shape` of init_params: the same boxed tree of jax.ShapeDtypeStruct, nothing
        allocated (describe, shardings, checkpoint restore, name tables).

and, where the model has PyTorch releases, its name table is the module named by the entry's
`table` in `wow_jax/interop/`, exposing `NAMINGS` and `rules(cfg, naming)` (the file layout of
its releases is `wow_jax.interop.registry.LAYOUTS[name]`). A new model is one module following
the contract plus one entry here; describe, checkpoint restore, conversion and training find it
by name: a checkpoint's params are {name: tree} for names in COMPONENT_NAMES, and the restore
target of one is `load(name).abstract_params(model_config(config, name))` placed on the mesh
through its logical axes (`sharding.variable_shardings`).

Three views of the registry:
    COMPONENT_NAMES    every component (describe, dtype checks, checkpoint params)
    WORLD_MODEL_NAMES  the world model's components: what generation loads (the IDM is not one:
                       it reads the world model's frames, it does not make them)
    CONVERTIBLE_NAMES  the components with a PyTorch name table (mode convert, interop)
"""

import dataclasses
import importlib
from types import ModuleType

import ml_collections


@dataclasses.dataclass(frozen=True)
class Component:
    name: str  # Key in COMPONENTS, in a checkpoint's params tree and in config.model.<name>.
    module: str  # Model module following the contract above.
    table: str | None = None  # PyTorch <-> Flax name table (wow_jax/interop/<model>_table.py).


COMPONENTS = {
    "dit": Component("dit", "wow_jax.models.dit", "wow_jax.interop.dit_table"),
    "vae": Component("vae", "wow_jax.models.vae", "wow_jax.interop.vae_table"),
    "text": Component("text", "wow_jax.models.text_encoder", "wow_jax.interop.umt5_table"),
    "clip": Component("clip", "wow_jax.models.clip", "wow_jax.interop.clip_table"),
    "dinov2": Component("dinov2", "wow_jax.models.dinov2", "wow_jax.interop.dinov2_table"),
    "idm": Component("idm", "wow_jax.models.idm"),  # Trained from scratch: no PyTorch release.
}
COMPONENT_NAMES = tuple(COMPONENTS)
WORLD_MODEL_NAMES = ("dit", "vae", "text", "clip")
CONVERTIBLE_NAMES = tuple(name for name, c in COMPONENTS.items() if c.table is not None)


def get(name: str) -> Component:
    """The registry entry of component `name`."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown model component {name!r}; expected one of {COMPONENT_NAMES}")
    return COMPONENTS[name]


def load(name: str) -> ModuleType:
    """The model module of component `name` (create / init_params / abstract_params)."""
    return importlib.import_module(get(name).module)


def model_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """config.model.<name>: the hyper-parameters `load(name)`'s functions take."""
    return config.model[get(name).name]
