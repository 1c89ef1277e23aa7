"""umT5 encoder checkpoints both ways against transformers' UMT5EncoderModel (random tiny model)."""

import jax
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

from tests.models.test_text_encoder import rerandomise
from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import exporter, importer, registry
from wow_jax.models import text_encoder


def torch_umt5(cfg, seed=0):
    """UMT5EncoderModel built from the config.json our exporter writes, weights re-drawn."""
    config = transformers.UMT5Config(**registry.get("text").diffusers_config(cfg))
    return rerandomise(transformers.UMT5EncoderModel(config).eval(), seed)


def torch_states(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy() * mask[..., None]


def test_umt5_round_trip(tiny_config, tmp_path):
    cfg = tiny_config.model.text
    mesh = shd.make_mesh(tiny_config.mesh)
    model = torch_umt5(cfg)
    model.save_pretrained(tmp_path / "hf")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, cfg.vocab_size, (2, cfg.text_len)).astype(np.int64)
    mask = (np.arange(cfg.text_len)[None] < np.array([[cfg.text_len], [5]])).astype(np.int64)
    want = torch_states(model, ids, mask)

    report = importer.import_checkpoint("text", tmp_path / "hf", tmp_path / "ckpt", cfg, mesh)
    assert report["naming"] == "hf"
    target = {"text": shd.abstract_on_mesh(text_encoder.abstract_params(cfg), None)}
    params = checkpointing.restore_subtrees(tmp_path / "ckpt", target)["text"]
    apply = jax.jit(text_encoder.create(cfg).apply)
    got = apply({"params": params}, ids.astype(np.int32), mask.astype(np.int32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    exporter.export_checkpoint("text", tmp_path / "ckpt", tmp_path / "out", cfg, dtype="float32")
    loaded = transformers.UMT5EncoderModel.from_pretrained(tmp_path / "out").eval()
    original, again = model.state_dict(), loaded.state_dict()
    assert set(original) == set(again)
    for name, value in original.items():
        assert torch.equal(value, again[name]), name
    np.testing.assert_array_equal(torch_states(loaded, ids, mask), want)

    exporter.export_checkpoint(
        "text", tmp_path / "ckpt", tmp_path / "wan", cfg, naming="wan", dtype="float32"
    )
    wan = load_file(tmp_path / "wan/models_t5_umt5-xxl-enc-bf16.safetensors")
    tables = registry.rules_by_naming(registry.get("text"), cfg)
    slot = {(r.flax_path, r.layer): r.torch_name for r in tables["hf"]}
    assert set(wan) == {r.torch_name for r in tables["wan"]}
    for rule in tables["wan"]:
        want_tensor = original[slot[(rule.flax_path, rule.layer)]].numpy()
        np.testing.assert_array_equal(wan[rule.torch_name], want_tensor, err_msg=rule.torch_name)
