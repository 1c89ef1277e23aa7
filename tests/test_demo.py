"""End to end: mode 'demo' (`python -m wow_jax.main --config=configs/demo.py:quick`) on one CPU
device, then a second run in the same workdir that reuses every stage's outputs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import linen as nn

pytest.importorskip("metaworld")

from configs import demo as demo_config  # noqa: E402
from wow_jax import checkpointing, demo  # noqa: E402
from wow_jax.train.tasks.vae import VAETask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_demo(workdir) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
    env.update(JAX_PLATFORMS="cpu", MUJOCO_GL=env.get("MUJOCO_GL", "egl"))
    cmd = [
        sys.executable,
        "-m",
        "wow_jax.main",
        "--config=configs/demo.py:quick",
        f"--workdir={workdir}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _outputs(workdir) -> dict:
    """Modification times of every file a stage writes besides its checkpoints."""
    names = ["clips/train.npz", "clips/heldout.npz", "cache/train/meta.json"]
    names += ["cache/heldout/meta.json", "cache/train/latents.npy"]
    names += ["latent_stats.json", "tokenizer/spiece.model", "imagined/metrics.json"]
    names += ["imagined/per_frame.png"]
    names += [f"imagined/compare_{i}.gif" for i in range(2)]
    names += ["idm/idm_eval.json", "evaluate/episodes/imagine_act/reach-v3/group_0.json"]
    return {name: os.stat(workdir / name).st_mtime_ns for name in names}


def test_quick_demo_trains_checkpoints_imagines_and_resumes(tmp_path):
    out = _run_demo(tmp_path)
    summary = json.loads((tmp_path / "demo_summary.json").read_text())

    for stage, steps in (("vae", 10), ("world_model", 20)):
        records = [
            json.loads(line)
            for line in (tmp_path / stage / "metrics.jsonl").read_text().split("\n")
            if line
        ]
        assert [r["step"] for r in records if "train/loss" in r] == list(range(1, steps + 1))
        assert os.path.isdir(tmp_path / stage / "checkpoints" / str(steps))
        assert os.listdir(tmp_path / stage / "tensorboard")
    records = (tmp_path / "world_model" / "metrics.jsonl").read_text().split("\n")
    evals = [json.loads(r)["step"] for r in records if "eval/loss" in r]
    assert evals == [10, 20]  # held-out eval loss every train.eval_every steps
    assert checkpointing.subtree_names(tmp_path / "world_model" / "checkpoints") == [
        "clip",
        "dit",
        "text",
        "vae",
    ]
    stats = json.loads((tmp_path / "latent_stats.json").read_text())
    assert len(stats["latents_mean"]) == len(stats["latents_std"]) == 16
    assert (tmp_path / "tokenizer" / "spiece.model").exists()
    # The world model's run directory describes itself (generate needs no model flags).
    run = json.loads((tmp_path / "world_model" / "config.json").read_text())
    vae = run["model"]["vae"]
    assert (vae["latents_mean"], vae["latents_std"]) == (
        stats["latents_mean"],
        stats["latents_std"],
    )
    copy = tmp_path / "world_model" / "tokenizer" / "spiece.model"
    assert run["model"]["text"]["tokenizer_path"] == str(copy)
    assert copy.read_bytes() == (tmp_path / "tokenizer" / "spiece.model").read_bytes()
    imagined = summary["imagined"]
    assert len(imagined["clips"]) == 2
    for clip in imagined["clips"]:
        assert os.path.getsize(clip["gif"]) > 0
        assert np.isfinite(clip["psnr"]) and -1.0 <= clip["ssim"] <= 1.0
    assert "PSNR dB" in out.stdout and f"{imagined['mean_psnr']:.2f}" in out.stdout
    # Per frame: the model against copy-first-frame and the VAE's reconstruction ceiling.
    later = imagined["frames_2_to_T"]
    assert sorted(later) == ["copy_first", "imagined", "reconstruction"]
    assert f"{later['reconstruction']['psnr']:.2f}" in out.stdout

    # issue 18: the IDM stage, the closed loop and the report a person opens first.
    assert set(summary["idm"]["heldout"]) >= {"idm", "zero", "mean", "nearest_flow"}
    closed = summary["closed_loop"]["tasks"]["reach-v3"]
    assert list(closed) == ["imagine_act", "idm_replay", "expert", "random", "zero"]
    assert all(s["episodes"] == 2 and len(s["ci95"]) == 2 for s in closed.values())
    assert "closed-loop success rate" in out.stdout
    report = (tmp_path / "report.html").read_text()
    for title in ("Closed loop in Meta-World", "World model", "Inverse dynamics", "Training"):
        assert title in report
    assert 'src="evaluate/gifs/reach-v3_' in report and (tmp_path / "summary.md").exists()
    # issue 18: the IDM stage reads the collected episodes; it collected a second copy inside
    # the dataset folder (130 s of physics in the full demo).
    assert not (tmp_path / "data" / "metaworld" / "1.0.0" / "metaworld").exists()

    # A second run reuses every stage: no collection, training, encoding or imagining again.
    written = _outputs(tmp_path)
    again = _run_demo(tmp_path)
    assert _outputs(tmp_path) == written
    assert again.stderr.count("nothing to do: checkpoint step") == 2  # vae, world_model
    assert "Meta-World episodes" not in again.stderr
    assert json.loads((tmp_path / "demo_summary.json").read_text()) == summary
    assert f"{imagined['mean_psnr']:.2f}" in again.stdout


# issue 18: demo clips were 9 consecutive steps of 64-step episodes, mostly the approach; a clip
# now spans a whole episode, long enough for each task's scripted expert to finish the task.
@pytest.mark.parametrize("variant", [None, "quick"])
def test_demo_clips_span_whole_episodes(variant):
    data = demo_config.get_config(variant).data
    assert (data.num_frames - 1) * data.frame_stride == data.episode_length


# issue 18: the held-out clips the demo scores show the task done, not only the approach.
def test_demo_experts_succeed_within_the_held_out_episodes():
    from wow_jax.sim import metaworld_collect as mc

    config = demo_config.get_config()
    data = config.data
    seed = data.collect_seed + config.idm.heldout_seed_offset
    for index, name in enumerate(data.tasks):
        task = mc.MetaWorldTask(name, size=16, camera=data.camera)
        try:
            episode = mc.collect_episode(
                task, mc.episode_seed(seed, index, 0), data.episode_length, 0.0, name
            )
        finally:
            task.close()
        assert episode.success[-1], f"{name}: the expert did not succeed in {data.episode_length}"


# issue 18: the demo trained its VAE on 5-frame crops of 9-frame clips; nothing refused it.
def test_vae_crops_shorter_than_the_clips_are_refused_before_collecting(tmp_path):
    config = demo_config.get_config("quick")
    config.demo.vae_frames = config.data.num_frames - 4
    with pytest.raises(
        ValueError, match=r"config.demo.vae_frames must be 0 .*--config.demo.vae_frames=0"
    ):
        demo.run_demo(config, str(tmp_path))
    assert not os.listdir(tmp_path)  # Refused before any stage ran.
    config.demo.vae_frames = config.data.num_frames
    demo.check_vae_frames(config)


def _taps(grads) -> dict:
    """{'path[tap k]': gradient slice}: a 3D kernel per temporal tap, any other leaf whole."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        name, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
        if leaf.ndim == 5 and leaf.shape[0] > 1:  # [kt, kh, kw, Cin, Cout]
            out.update({f"{name}[tap {k}]": leaf[k] for k in range(leaf.shape[0])})
        else:
            out[name] = leaf
    return out


# issue 18: with 5-frame crops (2 latent frames) of 9-frame clips (3 latent frames) the causal
# temporal taps reaching the third latent frame got exactly zero gradient and kept their random
# init (decoder conv_in, mid, up_blocks_0; encoder down_blocks_6, mid, conv_out; both temporal
# upsamplers), so the last frames of every imagined clip decoded as noise.
def test_demo_vae_stage_trains_every_parameter_the_clips_use():
    """The demo's VAE stage settings (configs/demo.py: clip frames, crop frames) at a tiny width
    on 16x16 frames: after one step (the attention output projection starts at zero, blocking
    its inputs' gradient at step 0), every parameter and temporal tap gets a non-zero gradient,
    except taps that only ever read the causal zero padding of a clip of data.num_frames frames;
    those must not change the clip's reconstruction either."""
    config = demo_config.get_config()
    config.model.vae.base_dim = 4
    clips = np.random.default_rng(0).uniform(-1, 1, (1, config.data.num_frames, 16, 16, 3))
    clips = clips.astype(np.float32)
    crops = demo.vae_crops(clips, config.demo.vae_frames, 0, 1, seed=0)
    task = VAETask(config)
    rng = jax.random.PRNGKey(1)
    params = nn.meta.unbox(task.init_params(jax.random.PRNGKey(0)))
    loss = jax.jit(lambda p, video: task.loss(p, {"video": video}, rng)[0])
    grad = jax.jit(jax.grad(lambda p: loss(p, crops)))
    params = jax.tree.map(lambda p, g: p - 1e-3 * np.sign(g), params, grad(params))
    dead = [name for name, g in _taps(grad(params)).items() if not np.any(g)]

    def scramble(path, leaf):
        name = jax.tree_util.keystr(path)
        taps = [k for k in range(leaf.shape[0]) if f"{name}[tap {k}]" in dead]
        return leaf.at[np.asarray(taps, int)].add(1.0) if taps else leaf

    scrambled = jax.tree_util.tree_map_with_path(scramble, params)
    assert all("[tap " in name for name in dead), dead  # No whole parameter is left untrained.
    assert float(loss(scrambled, clips)) == float(loss(params, clips)), dead


# The imagine stage was reused whenever metrics.json had the world model's step: a rerun with
# other sampler settings (more steps, another guidance) reported the old clips' numbers.
def test_imagine_stage_reruns_when_the_sampler_settings_change(tmp_path, monkeypatch):
    from wow_jax.sampling import compare, generator, models

    calls = []

    def imagine_and_compare(gen, real, prompts, seeds, out_dir, fps):
        calls.append(gen)
        os.makedirs(out_dir, exist_ok=True)
        return {"clips": [{} for _ in real], "guidance": gen}

    monkeypatch.setattr(compare, "imagine_and_compare", imagine_and_compare)
    monkeypatch.setattr(generator, "Generator", lambda config, *_: config.sample.guidance)
    monkeypatch.setattr(models, "from_config", lambda config: None)
    config = demo_config.get_config("quick")
    heldout = {"video": np.zeros((2, 3, 8, 8, 3), np.float32), "instruction": ["a", "b"]}
    first = demo.imagine(config, str(tmp_path), {}, 20, heldout)
    assert demo.imagine(config, str(tmp_path), {}, 20, heldout) == first and len(calls) == 1
    config.sample.guidance += 1.0
    again = demo.imagine(config, str(tmp_path), {}, 20, heldout)
    assert len(calls) == 2 and again["guidance"] == config.sample.guidance
    assert demo.imagine(config, str(tmp_path), {}, 21, heldout)["guidance"] and len(calls) == 3
