"""Every registered component follows the model contract of wow_jax/models/__init__.py, and the
one registry serves describe, interop and training."""

import importlib

import jax
import pytest
from flax import linen as nn

from wow_jax import models
from wow_jax.interop import registry


@pytest.mark.parametrize("name", models.COMPONENT_NAMES)
def test_component_follows_the_contract(tiny_config, name):
    module = models.load(name)
    cfg = models.model_config(tiny_config, name)
    assert isinstance(module.create(cfg), nn.Module)
    abstract = module.abstract_params(cfg)
    traced = jax.eval_shape(lambda rng: module.init_params(cfg, rng), jax.random.key(0))
    assert jax.tree.structure(abstract) == jax.tree.structure(traced)
    boxed = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxed and all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
    assert all(len(leaf.names) == leaf.value.ndim for leaf in boxed)
    if models.get(name).table is not None:
        table = importlib.import_module(models.get(name).table)
        assert table.NAMINGS and callable(table.rules)


def test_every_convertible_component_has_a_pytorch_layout_and_nothing_else_does():
    assert set(registry.LAYOUTS) == set(models.CONVERTIBLE_NAMES)
    assert all(registry.get(name).name == name for name in models.CONVERTIBLE_NAMES)
    # Generation loads the world model, all of it convertible; the IDM is neither.
    assert set(models.WORLD_MODEL_NAMES) <= set(models.CONVERTIBLE_NAMES)
    assert "idm" in models.COMPONENT_NAMES and "idm" not in models.WORLD_MODEL_NAMES
    with pytest.raises(ValueError, match=r"'idm' has no PyTorch layout; convertible: \['dit'"):
        registry.get("idm")


def test_unknown_component_is_refused_with_the_list():
    with pytest.raises(ValueError, match=r"unknown model component 'dino'.*'dit', 'vae'.*'idm'"):
        models.get("dino")
