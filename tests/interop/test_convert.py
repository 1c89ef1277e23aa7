"""`mode=convert` on a training checkpoint's real layout, and the targets it refuses."""

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn

from wow_jax import checkpointing
from wow_jax import sharding as shd
from wow_jax.interop import convert, registry
from wow_jax.models import dit as dit_lib
from wow_jax.train import state as state_lib

COMPONENTS = ("dit", "vae", "text", "clip")  # A world-model training state's params.


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    """(CheckpointManager root, params) of a TrainState like training's: params of every tiny
    component (random), Adam state, and the EMA of the trained DiT, saved at step 5."""
    from configs import tiny

    cfg = tiny.get_config()
    rng = np.random.default_rng(0)
    params = {
        name: jax.tree.map(
            lambda x: rng.normal(size=x.shape).astype(x.dtype),
            nn.meta.unbox(registry.abstract_params(registry.get(name), cfg.model[name])),
        )
        for name in COMPONENTS
    }
    mask = {name: jax.tree.map(lambda _, n=name: n == "dit", p) for name, p in params.items()}
    state = state_lib.create(params, optax.adam(1e-3), jax.random.PRNGKey(0), 0.5, mask)
    state = state.replace(ema_params=jax.tree.map(lambda x: x + 1.0, state.ema_params))
    root = tmp_path_factory.mktemp("run") / "checkpoints"
    manager = checkpointing.make_manager(root, cfg.checkpoint)
    assert checkpointing.save(manager, 5, state)
    manager.wait_until_finished()
    manager.close()
    return root, params


def _config(tiny_config, direction, source, target, **convert_keys):
    config = tiny_config
    config.mode = "convert"
    config.convert.direction, config.convert.source = direction, str(source)
    config.convert.target, config.convert.dtype = str(target), "float32"
    for key, value in convert_keys.items():
        config.convert[key] = value
    return config


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# issue 14 B2: at 5ce451f the default params key said "another model size" (fixed by 887781d)
def test_export_of_a_training_checkpoint_with_the_default_params_key(
    tiny_config, tmp_path, training_checkpoint
):
    root, params = training_checkpoint
    config = _config(tiny_config, "export", root, tmp_path / "dit_diffusers")
    assert config.convert.params_key == "params"
    convert.convert(config, str(tmp_path), progress=False)
    config = _config(tiny_config, "import", tmp_path / "dit_diffusers", tmp_path / "back")
    convert.convert(config, str(tmp_path), progress=False)
    mesh = shd.make_mesh(config.mesh)
    target = {"dit": shd.abstract_on_mesh(dit_lib.abstract_params(config.model.dit), mesh)}
    back = checkpointing.restore_subtrees(tmp_path / "back", target)["dit"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(back), params["dit"])

    config = _config(tiny_config, "export", root, tmp_path / "bigger")
    config.model.dit.num_layers = 3  # The checkpoint's DiT has 2.
    with pytest.raises(ValueError, match=r"another model size.*config\.model\.dit"):
        convert.convert(config, str(tmp_path), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "dit_diffusers"]


# issue 14 B5: convert --overwrite with the target equal to the source deleted the source
@pytest.mark.parametrize("where", ["is", "is inside", "contains"])
def test_a_target_overlapping_the_source_is_refused(
    tiny_config, tmp_path, training_checkpoint, where
):
    root, _ = training_checkpoint
    target = {"is": root, "is inside": root / "5" / "out", "contains": root.parent}[where]
    before = _files(root)
    config = _config(tiny_config, "export", root, target, overwrite=True)
    with pytest.raises(ValueError, match=f"target {target} {where} config.convert.source {root}"):
        convert.convert(config, str(tmp_path), progress=False)
    release = tmp_path / "Wan2.1-T2V-1.3B"
    release.mkdir()
    (release / "README.md").write_text("the release's own file")
    (release / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    config = _config(tiny_config, "import", release, release, overwrite=True)
    with pytest.raises(ValueError, match=f"target {release} is config.convert.source"):
        convert.convert(config, str(tmp_path), progress=False)
    assert _files(root) == before
    assert sorted(p.name for p in release.iterdir()) == [
        "README.md",
        "diffusion_pytorch_model.safetensors",
    ]
