"""umT5 encoder: parity with transformers UMT5EncoderModel, Wan/HF weight names, sharding, sizes."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import linen as nn
from flax import traverse_util

from tests.data.test_tokenizer import TRICKY_CAPTIONS, train_spm
from wow_jax import sharding
from wow_jax.data.tokenizer import Tokenizer
from wow_jax.interop import mapping, umt5_table
from wow_jax.models import text_encoder

PARITY_TEXT_LEN = 40  # Longer than max_distance (16) so the log-spaced buckets are exercised.


def hf_model(text_cfg, seed=0):
    """A tiny transformers UMT5EncoderModel with every weight re-randomised."""
    config = transformers.UMT5Config(
        vocab_size=text_cfg.vocab_size,
        d_model=text_cfg.dim,
        d_kv=text_cfg.head_dim,
        d_ff=text_cfg.ffn_dim,
        num_heads=text_cfg.num_heads,
        num_layers=text_cfg.num_layers,
        relative_attention_num_buckets=text_cfg.num_buckets,
        relative_attention_max_distance=text_cfg.max_distance,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    return rerandomise(transformers.UMT5EncoderModel(config).eval(), seed)


def rerandomise(model, seed):
    """Redraws every weight: norm scales ~ 1 + 0.2 N(0, 1), matrices ~ N(0, 1/fan_in)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "layer_norm" in name else noise * p.shape[-1] ** -0.5)
    return model


def hf_state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def parity_setup(tmp_path_factory):
    from configs import tiny

    text_cfg = tiny.get_config().model.text
    text_cfg.text_len = PARITY_TEXT_LEN
    model = hf_model(text_cfg)
    tokenizer = Tokenizer(train_spm(tmp_path_factory.mktemp("spm")), PARITY_TEXT_LEN)
    ids, mask = tokenizer.encode(TRICKY_CAPTIONS)
    return text_cfg, model, ids, mask


def test_parity_with_transformers_umt5(parity_setup, tmp_path):
    text_cfg, model, ids, mask = parity_setup
    text_cfg = copy.deepcopy(text_cfg)
    model.save_pretrained(tmp_path)  # The real format: model.safetensors, one embedding copy.
    text_cfg.checkpoint_path = str(tmp_path / "model.safetensors")
    text_cfg.checkpoint_naming = "hf"
    params = umt5_table.load_params(text_cfg)
    got = np.asarray(jax.jit(text_encoder.create(text_cfg).apply)({"params": params}, ids, mask))
    with torch.no_grad():
        want = model(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
        ).last_hidden_state.numpy()
    valid = mask.astype(bool)
    assert valid.sum(1).min() >= 1 and valid.sum(1).max() == PARITY_TEXT_LEN  # short + truncated
    rel = np.abs(got - want)[valid].max() / np.abs(want[valid]).max()
    print(f"umT5 max relative error vs transformers: {rel:.2e}")
    assert rel <= 1e-5
    assert (got[~valid] == 0).all()  # Wan trims to the real length: padding states are zero.


def test_wan_naming_maps_to_the_same_tree(parity_setup, tmp_path):
    text_cfg, model, ids, mask = parity_setup
    hf_params = umt5_table.import_params(hf_state(model), text_cfg, "hf")
    wan_tensors = mapping.flax_to_torch(hf_params, umt5_table.rules(text_cfg, "wan"))
    # Spot-check the Wan names against the layout of wan/modules/t5.py.
    d, f, h, b = text_cfg.dim, text_cfg.ffn_dim, text_cfg.num_heads, text_cfg.num_buckets
    assert wan_tensors["token_embedding.weight"].shape == (text_cfg.vocab_size, d)
    assert wan_tensors["blocks.1.ffn.gate.0.weight"].shape == (f, d)
    assert wan_tensors["blocks.0.ffn.fc2.weight"].shape == (d, f)
    assert wan_tensors["blocks.1.pos_embedding.embedding.weight"].shape == (b, h)
    np.testing.assert_array_equal(
        wan_tensors["blocks.1.attn.q.weight"],
        model.state_dict()["encoder.block.1.layer.0.SelfAttention.q.weight"].numpy(),
    )
    np.testing.assert_array_equal(
        wan_tensors["blocks.0.ffn.fc1.weight"],
        model.state_dict()["encoder.block.0.layer.1.DenseReluDense.wi_1.weight"].numpy(),
    )
    torch.save({k: torch.from_numpy(v) for k, v in wan_tensors.items()}, tmp_path / "t5.pth")
    wan_params = umt5_table.import_params(
        umt5_table.read_checkpoint(str(tmp_path / "t5.pth")), text_cfg, "wan"
    )
    flat_a, flat_b = (traverse_util.flatten_dict(p) for p in (hf_params, wan_params))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key])
    # And back: Flax -> HF names reproduces the transformers state dict (one embedding copy).
    back = mapping.flax_to_torch(wan_params, umt5_table.rules(text_cfg, "hf"))
    state = umt5_table.canonical_names(hf_state(model), "hf")
    assert back.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(back[key], state[key])


def test_missing_checkpoint_file_names_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.model\.text\.checkpoint_path"):
        umt5_table.read_checkpoint(str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"))


def test_import_refuses_a_wrong_checkpoint(parity_setup):
    text_cfg, model, _, _ = parity_setup
    state = hf_state(model)
    del state["encoder.block.1.layer.0.SelfAttention.k.weight"]
    with pytest.raises(mapping.MappingError, match="missing from the checkpoint"):
        umt5_table.import_params(state, text_cfg, "hf")
    with pytest.raises(mapping.MappingError, match="no place for"):
        umt5_table.import_params(hf_state(model), text_cfg, "wan")


def test_param_count_matches_torch(tiny_config):
    text_cfg = tiny_config.model.text
    abstract = nn.meta.unbox(text_encoder.abstract_params(text_cfg))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    torch_count = sum(p.numel() for p in hf_model(text_cfg).parameters())  # tied: counted once
    assert count == torch_count


def test_every_param_has_logical_axes(tiny_config):
    boxed = text_encoder.abstract_params(tiny_config.model.text)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    names = {n for x in leaves for n in x.names}
    assert {sharding.VOCAB, sharding.EMBED, sharding.MLP, sharding.HEADS, sharding.LAYERS} <= names


def test_sharded_call_equals_single_device(tiny_config, parity_setup):
    _, _, ids, mask = parity_setup
    text_cfg = tiny_config.model.text
    ids, mask = ids[:8, : text_cfg.text_len], mask[:8, : text_cfg.text_len]
    module = text_encoder.create(text_cfg)
    params = nn.meta.unbox(text_encoder.init_params(text_cfg, jax.random.key(1)))
    want = jax.jit(module.apply)({"params": params}, ids, mask)
    mesh = sharding.make_mesh(_mesh_cfg(fsdp=4, tensor=2))
    shardings = sharding.variable_shardings(text_encoder.abstract_params(text_cfg), mesh)
    with sharding.activate(mesh):
        placed = jax.device_put(params, nn.meta.unbox(shardings))
        got = jax.jit(module.apply)({"params": placed}, *sharding.shard_batch((ids, mask), mesh))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    kernel = placed["blocks"]["fc1"]["kernel"]  # [layers, embed, mlp] -> (None, fsdp, tensor)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")


def test_umt5_xxl_size():
    from configs import wow14b

    abstract = nn.meta.unbox(text_encoder.abstract_params(wow14b.get_config().model.text))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    # 256384*4096 embedding + 24 * (4 * 4096^2 + 3 * 4096*10240 + 32*64 + 2*4096) + 4096.
    assert count == 5_680_910_336


def test_bad_input_shapes(tiny_config):
    module = text_encoder.create(tiny_config.model.text)
    with pytest.raises(ValueError, match=r"token_ids \[B, L\]"):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((4,), jnp.int32), jnp.ones((4,)))


def _mesh_cfg(**sizes):
    from configs import base

    cfg = base.get_config().mesh
    cfg.data, cfg.fsdp, cfg.tensor, cfg.sequence = 1, 1, 1, 1
    for key, value in sizes.items():
        cfg[key] = value
    return cfg


def test_config_validation_names_the_encoder_keys(tiny_config):
    from wow_jax import configuration

    tiny_config.model.text.checkpoint_naming = "diffusers"
    with pytest.raises(ValueError, match=r"model\.text\.checkpoint_naming"):
        configuration.validate(tiny_config, num_devices=8)


def test_bfloat16_compute_tracks_float32(tiny_config, parity_setup):
    _, _, ids, mask = parity_setup
    text_cfg = tiny_config.model.text
    ids, mask = ids[:, : text_cfg.text_len], mask[:, : text_cfg.text_len]
    params = text_encoder.init_params(text_cfg, jax.random.key(2))
    want = jax.jit(text_encoder.create(text_cfg).apply)({"params": params}, ids, mask)
    text_cfg.dtype = "bfloat16"
    got = jax.jit(text_encoder.create(text_cfg).apply)({"params": params}, ids, mask)
    assert got.dtype == jnp.bfloat16
    err = np.abs(np.asarray(got, np.float32) - np.asarray(want))
    assert err.max() / np.abs(np.asarray(want)).max() < 3e-2


def test_relative_buckets_match_transformers_at_umt5_xxl_sizes():
    """32 buckets, max distance 128, 512 tokens: every (query, key) bucket as transformers."""
    config = transformers.UMT5Config(
        d_model=8, d_kv=4, num_heads=2, relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )  # fmt: skip
    attention = transformers.models.umt5.modeling_umt5.UMT5Attention(
        config, has_relative_attention_bias=True
    )
    position = torch.arange(512)
    want = attention._relative_position_bucket(position[None, :] - position[:, None]).numpy()
    np.testing.assert_array_equal(
        np.asarray(text_encoder.relative_position_buckets(512, 32, 128)), want
    )
