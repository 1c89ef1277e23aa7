"""LoRA export (issue 21): the adapter file loads in diffusers' Wan LoRA loader and reproduces
wow_jax's base + adapter; mode merge's checkpoint, exported, equals the merged JAX params; the
generation loader merges at sample.lora_scale."""

import jax
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file

from configs import tiny
from tests.models import dit_torch
from tests.models.test_lora import random_adapters
from wow_jax import adapters as adapters_lib
from wow_jax import checkpointing, sharding
from wow_jax.interop import convert, dit_table, lora_export, mapping
from wow_jax.models import dit, lora
from wow_jax.sampling import pipeline


def _config():
    config = tiny.get_config()
    config.model.dit = dit_torch.dit_config(config.model.dit, "t2v")
    config.train.lora.rank, config.train.lora.alpha = 2, 3.0
    return config


def _export_config(config, source: str, target: str, naming: str):
    config = config.copy_and_resolve_references()
    c = config.convert
    c.direction, c.component, c.source, c.target = "export", "lora", source, target
    c.naming, c.dtype = naming, "float32"
    return config


# issue 21: the exported adapter (Wan-native and diffusers names) loads through diffusers'
# WanPipeline.load_lora_weights onto the same tiny WanTransformer3DModel and gives wow_jax's
# base + adapter output to <= 1e-5 relative.
def test_exported_adapter_loads_in_diffusers_and_matches(tmp_path):
    pytest.importorskip("peft")
    from diffusers import WanPipeline

    config = _config()
    cfg = config.model.dit
    model = dit_torch.torch_model(cfg, seed=0)
    base = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(model))
    adapters = random_adapters(cfg, config.train.lora)
    checkpointing.save_params(tmp_path / "adapters", {"lora": adapters})
    x = dit_torch.inputs(cfg)
    want = jax.jit(dit.create(cfg, config.train.lora).apply)(
        {"params": base, "lora": adapters}, **x
    )
    without = dit_torch.torch_forward(model, x).detach().numpy()
    assert dit_torch.rel_err(without, want) > 1e-2  # the adapter matters
    for naming in ("wan", "diffusers"):
        target = tmp_path / f"lora_{naming}"
        export = _export_config(config, str(tmp_path / "adapters"), str(target), naming)
        report = convert.convert(export, str(tmp_path))
        assert report["tensors"] == 2 * 10 * cfg.num_layers
        prefix = lora_export.PREFIXES[naming]
        assert all(k.startswith(prefix + "blocks.") for k in load_file(report["file"]))
        torch_model = dit_torch.torch_model(cfg, seed=0)
        pipe = WanPipeline(
            tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=torch_model
        )
        pipe.load_lora_weights(str(target))
        got = dit_torch.torch_forward(pipe.transformer, x).detach().numpy()
        assert dit_torch.rel_err(got, want) <= 1e-5, naming


# issue 21: mode merge writes base + adapters as a full checkpoint; its Wan-native float32 export
# equals the merged JAX params; generation's loader merges the same at sample.lora_scale.
def test_merge_export_equals_merged_params(tmp_path):
    config = _config()
    cfg = config.model.dit
    base = dit_torch.flax_params(cfg, dit_torch.state_dict_numpy(dit_torch.torch_model(cfg)))
    adapters = random_adapters(cfg, config.train.lora)
    checkpointing.save_params(tmp_path / "base", {"dit": base})
    checkpointing.save_params(tmp_path / "adapters", {"lora": adapters})
    spec = lora.LoRASpec.from_config(config.train.lora)
    config.checkpoint.init_from = str(tmp_path / "base")
    config.sample.lora_checkpoint = str(tmp_path / "adapters")
    config.convert.target = str(tmp_path / "merged")
    adapters_lib.run_merge(config, str(tmp_path))

    export = config.copy_and_resolve_references()
    export.convert.direction, export.convert.component = "export", "dit"
    export.convert.source, export.convert.target = str(tmp_path / "merged"), str(tmp_path / "wan")
    export.convert.naming, export.convert.dtype = "wan", "float32"
    convert.convert(export, str(tmp_path))
    state = {}
    for path in (tmp_path / "wan").glob("*.safetensors"):
        state.update(load_file(path))
    shapes = mapping.flax_shapes_of(jax.tree.map(np.asarray, base))
    exported = mapping.torch_to_flax(state.__getitem__, dit_table.rules(cfg, "wan"), shapes)
    merged = checkpointing.restore_subtrees(str(tmp_path / "merged"), {"dit": None})["dit"]
    flat_merged = traverse_util.flatten_dict(jax.device_get(merged))
    flat_want = traverse_util.flatten_dict(jax.device_get(lora.merge(base, adapters, spec)))
    flat_exported = traverse_util.flatten_dict(exported)
    assert flat_exported.keys() == flat_merged.keys() == flat_want.keys()
    for k, v in flat_exported.items():
        np.testing.assert_array_equal(v, flat_merged[k])  # the export is the merged checkpoint
        np.testing.assert_allclose(v, flat_want[k], rtol=1e-6, atol=1e-7)  # = base + A B
    assert not np.array_equal(flat_want[("blocks", "ffn", "fc1", "kernel")],
                              base["blocks"]["ffn"]["fc1"]["kernel"])  # fmt: skip

    config.sample.lora_scale = 0.5
    mesh = sharding.make_mesh(config.mesh)
    loaded = pipeline.load_for_generation(config, mesh)["dit"]
    half = jax.device_get(lora.merge(base, adapters, spec, 0.5))
    for k, v in traverse_util.flatten_dict(jax.device_get(loaded)).items():
        np.testing.assert_allclose(v, traverse_util.flatten_dict(half)[k], rtol=1e-6, atol=1e-7)
