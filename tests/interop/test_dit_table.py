"""The DiT name tables: Wan2.1-native and diffusers names reach the same Flax tree, both ways."""

import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from tests.models import dit_torch
from wow_jax.interop import dit_table, mapping
from wow_jax.models import dit


def _config(tiny_config, variant, scan_layers):
    return dit_torch.dit_config(tiny_config.model.dit, variant, scan_layers=scan_layers)


def _random_params(cfg, seed=0):
    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(cfg)))
    rng = np.random.default_rng(seed)
    flat = {path: rng.standard_normal(shape).astype(np.float32) for path, shape in shapes.items()}
    return traverse_util.unflatten_dict(flat), shapes


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
@pytest.mark.parametrize("scan_layers", [True, False], ids=["scan", "loop"])
@pytest.mark.parametrize("naming", ["wan", "diffusers"])
def test_round_trip_flax_to_torch_names_and_back(tiny_config, variant, scan_layers, naming):
    cfg = _config(tiny_config, variant, scan_layers)
    params, shapes = _random_params(cfg)
    rules = dit_table.rules(cfg, naming)
    state = mapping.flax_to_torch(params, rules)
    assert len(state) == len(rules)
    back = mapping.torch_to_flax(state.__getitem__, rules, shapes)
    flat, flat_back = traverse_util.flatten_dict(params), traverse_util.flatten_dict(back)
    assert flat.keys() == flat_back.keys()
    for path, value in flat.items():
        np.testing.assert_array_equal(flat_back[path], value)


def _wan_state_from_diffusers(cfg, diffusers_state):
    """Renames a diffusers state dict to Wan2.1 names through the two tables."""
    by_slot = {(r.flax_path, r.layer): r.torch_name for r in dit_table.rules(cfg, "wan")}
    return {
        by_slot[(r.flax_path, r.layer)]: diffusers_state[r.torch_name]
        for r in dit_table.rules(cfg, "diffusers")
    }


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_wan_and_diffusers_names_fill_the_same_flax_tree(tiny_config, variant):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    cfg = _config(tiny_config, variant, scan_layers=True)
    diffusers_state = dit_torch.state_dict_numpy(dit_torch.torch_model(cfg, seed=1))
    mapping.check_names(diffusers_state, dit_table.rules(cfg, "diffusers"))
    wan_state = _wan_state_from_diffusers(cfg, diffusers_state)
    # The Wan names are what diffusers' own Wan2.1 converter expects: it maps them back onto
    # exactly the diffusers state dict.
    converted = convert_wan_transformer_to_diffusers(dict(wan_state))
    assert converted.keys() == diffusers_state.keys()
    for name, value in converted.items():
        assert value is diffusers_state[name], name

    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(cfg)))
    from_wan = mapping.torch_to_flax(wan_state.__getitem__, dit_table.rules(cfg, "wan"), shapes)
    from_diffusers = dit_torch.flax_params(cfg, diffusers_state)
    flat_wan = traverse_util.flatten_dict(from_wan)
    flat_diffusers = traverse_util.flatten_dict(from_diffusers)
    assert flat_wan.keys() == flat_diffusers.keys() == shapes.keys()
    for path, value in flat_diffusers.items():
        np.testing.assert_array_equal(flat_wan[path], value)


def test_wan_names_of_the_14b_i2v_model():
    """Spot-check Wan2.1-native names and shapes (WanModel, i2v) against the Flax tree."""
    from configs import wow14b

    cfg = wow14b.get_config().model.dit
    rules = {r.torch_name: r for r in dit_table.rules(cfg, "wan")}
    shapes = mapping.flax_shapes_of(nn.meta.unbox(dit.abstract_params(cfg)))
    expected = {  # Wan2.1 name: shape in the PyTorch layout.
        "patch_embedding.weight": (5120, 36, 1, 2, 2),
        "text_embedding.0.weight": (5120, 4096),
        "time_projection.1.weight": (30720, 5120),
        "blocks.39.self_attn.norm_q.weight": (5120,),
        "blocks.0.cross_attn.k_img.weight": (5120, 5120),
        "blocks.0.cross_attn.norm_k_img.weight": (5120,),
        "blocks.7.norm3.bias": (5120,),
        "blocks.3.ffn.0.weight": (13824, 5120),
        "blocks.3.modulation": (1, 6, 5120),
        "head.modulation": (1, 2, 5120),
        "head.head.weight": (64, 5120),
        "img_emb.proj.0.weight": (1280,),
        "img_emb.proj.1.weight": (1280, 1280),
        "img_emb.proj.3.weight": (5120, 1280),
        "img_emb.proj.4.bias": (5120,),
    }
    for name, torch_shape in expected.items():
        rule = rules[name]
        flax_shape = mapping.target_shape(rule, shapes)
        assert mapping.to_flax_layout(np.empty(torch_shape), rule.transform).shape == flax_shape
    assert len(rules) == 2 + 6 * 2 + 1 + 8 + 40 * 32  # 32 tensors per i2v block.
    with pytest.raises(ValueError, match="naming must be one of"):
        dit_table.rules(cfg, "comfy")
