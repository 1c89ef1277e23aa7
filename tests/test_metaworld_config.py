"""configs/metaworld.py (issue 18): the full-size AVDC benchmark config validates for a pod-sized
mesh, and its reduced variant's world-model stage (the demo's own cache and training path) builds,
shards its parameters over 8 simulated CPU devices and trains a few steps."""

import json
import subprocess
import sys
from pathlib import Path

from configs import metaworld
from tests import multiprocess
from wow_jax import configuration

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from configs import metaworld
from wow_jax import configuration, demo
from wow_jax import models as registry
from wow_jax.sampling.models import random_params
from wow_jax.train import loop
from wow_jax.train.array_data import ArrayIterator
from wow_jax.train.tasks.world_model import WorldModelTask

workdir = {workdir!r}
config = metaworld.get_config("reduced")
configuration.validate(config, jax.device_count())
data = config.data
rng = np.random.default_rng(0)
def clips(n):
    video = rng.uniform(-1, 1, (n, data.num_frames, data.height, data.width, 3)).astype(np.float32)
    text = np.asarray(["open the door with the arm"] * n)
    return {{"video": video, "caption": text, "instruction": text}}
vae = random_params(registry.load("vae").abstract_params(config.model.vae), seed=1)
encoders = {{"vae": vae, **demo.frozen_encoders(config)}}
config, cache, held = demo.build_cache(config, workdir, encoders, 0, clips(16), clips(8))
cfg = demo.stage_config(config, "world_model", config.train.steps, config.train.learning_rate)
null = cache.pop("null_text_states")[0]
held.pop("null_text_states", None)
run = loop.train(
    cfg, workdir + "/world_model", WorldModelTask(cfg, null_text_states=null),
    ArrayIterator(cache, data.batch_size, seed=0), initial_params=encoders,
)
specs = [str(leaf.sharding.spec) for leaf in jax.tree.leaves(run.state.params["dit"])]
print(json.dumps({{
    "devices": jax.device_count(), "step": int(run.state.step),
    "sharded": sum("fsdp" in s for s in specs), "leaves": len(specs),
}}))
"""


def test_full_size_config_validates_on_a_pod_mesh():
    # issue 18: configs/metaworld.py is the AVDC benchmark at GPU/TPU size.
    config = metaworld.get_config()
    assert config.data.tasks == metaworld.AVDC_TASKS and len(metaworld.AVDC_TASKS) == 11
    assert (config.data.height, config.data.width) == (128, 128)
    configuration.validate(config, num_devices=32)


def test_reduced_config_shards_on_8_devices_and_trains_the_world_model(tmp_path):
    # issue 18: at reduced size the benchmark builds, shards on 8 simulated devices and runs a
    # few steps of its world-model stage.
    script = SCRIPT.format(root=str(ROOT), workdir=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=multiprocess.cpu_env(8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8 and result["step"] == 2
    assert result["sharded"] > 0  # DiT parameters are split over the fsdp axis.
    losses = [
        json.loads(line)["train/loss"]
        for line in (tmp_path / "world_model" / "metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert len(losses) == 2 and all(0 < loss < 100 for loss in losses)
