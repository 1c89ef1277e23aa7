"""VAE checkpoints both ways against diffusers' AutoencoderKLWan (random tiny model): diffusers
folder and Wan-native .pth in, diffusers folder and Wan names out."""

import jax
import numpy as np
import torch
from diffusers import AutoencoderKLWan
from safetensors.numpy import load_file

from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import exporter, importer, mapping, registry
from wow_jax.models import vae

TOL = 1e-4  # Max abs error against PyTorch at fp32 (as the VAE parity tests).


def torch_vae(cfg, seed=0):
    """AutoencoderKLWan built from the config.json our exporter writes, weights re-drawn."""
    kwargs = registry.get("vae").diffusers_config(cfg)
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
    model = AutoencoderKLWan(**kwargs).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("gamma") else 0.08 * noise)
    return model


def encode_decode_torch(model, video):
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(video, -1, 1)))
        mean = model.encode(x).latent_dist.mean
        out = model.decode(mean).sample
    return np.moveaxis(mean.numpy(), 1, -1), np.moveaxis(out.numpy(), 1, -1)


def test_vae_round_trips(tiny_config, tmp_path):
    cfg = tiny_config.model.vae
    mesh = shd.make_mesh(tiny_config.mesh)
    model = torch_vae(cfg)
    video = np.random.default_rng(0).uniform(-1, 1, (1, 5, 16, 16, 3)).astype(np.float32)
    want_mean, want_video = encode_decode_torch(model, video)

    # Wan-native .pth (the published Wan2.1_VAE.pth format) -> Orbax -> JAX forward.
    tables = registry.rules_by_naming(registry.get("vae"), cfg)
    slot = {(r.flax_path, r.layer): r.torch_name for r in tables["diffusers"]}
    state = model.state_dict()
    wan = {r.torch_name: state[slot[(r.flax_path, r.layer)]] for r in tables["wan"]}
    (tmp_path / "release").mkdir()
    torch.save(wan, tmp_path / "release/Wan2.1_VAE.pth")
    report = importer.import_checkpoint("vae", tmp_path / "release", tmp_path / "ckpt", cfg, mesh)
    assert report["naming"] == "wan"
    target = {"vae": shd.abstract_on_mesh(vae.abstract_params(cfg), None)}
    params = checkpointing.restore_subtrees(tmp_path / "ckpt", target)["vae"]
    mean = jax.jit(lambda p, v: vae.encode(p, v, cfg))(params, video)
    np.testing.assert_allclose(mean, want_mean, atol=TOL, rtol=0)
    # The decoder's params equal the in-memory mapping (whose decode parity the VAE tests show).
    in_memory = mapping.torch_to_flax(
        lambda name: wan[name].numpy(), tables["wan"], mapping.flax_shapes_of(params)
    )
    jax.tree.map(np.testing.assert_array_equal, params, in_memory)

    # Orbax -> diffusers folder -> from_pretrained: identical tensors and outputs.
    exporter.export_checkpoint("vae", tmp_path / "ckpt", tmp_path / "hf", cfg, dtype="float32")
    loaded = AutoencoderKLWan.from_pretrained(tmp_path / "hf").eval()
    again = loaded.state_dict()
    assert set(again) == set(state)
    for name, value in state.items():
        assert torch.equal(value, again[name]), name
    got_mean, got_video = encode_decode_torch(loaded, video)
    np.testing.assert_array_equal(got_mean, want_mean)
    np.testing.assert_array_equal(got_video, want_video)

    # diffusers folder -> Orbax -> Wan names: the .pth tensors back exactly.
    importer.import_checkpoint("vae", tmp_path / "hf", tmp_path / "ckpt2", cfg, mesh)
    exporter.export_checkpoint(
        "vae", tmp_path / "ckpt2", tmp_path / "wan_out", cfg, naming="wan", dtype="float32"
    )
    exported = load_file(tmp_path / "wan_out/Wan2.1_VAE.safetensors")
    assert set(exported) == set(wan)
    for name, value in wan.items():
        np.testing.assert_array_equal(exported[name], value.numpy(), err_msg=name)
