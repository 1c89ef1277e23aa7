"""Input-pipeline throughput: clips/s of the Grain pipeline at two clip sizes, 0 and 2 workers.

    python -m scripts.benchmark_data [--out=runs/benchmark_data.json --batches=10 --metaworld]

Builds synthetic RLDS ArrayRecord datasets in a temp dir (PNG frames of smooth patterns + noise,
stored larger than the clip so resize + crop run), then times the pipeline in steady state (after
the first batch and what the workers read ahead while it was made):
    17x64x64   from 96x96 frames      81x240x320   from 256x352 frames
With --metaworld also the Meta-World collection speed (frames/s, physics + 64x64 rendering).
There is no PyTorch reference for a data loader; the JSON records the machine's CPU count.
"""

import itertools
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from configs import tiny
from wow_jax.data import pipeline, rlds, stats

_OUT = flags.DEFINE_string("out", "runs/benchmark_data.json", "JSON output path.")
_BATCHES = flags.DEFINE_integer("batches", 10, "Timed batches per setting (steady state).")
_METAWORLD = flags.DEFINE_bool("metaworld", False, "Also time Meta-World collection.")
_FORMATS = flags.DEFINE_list("image_formats", ["png", "jpeg"], "Stored frame encodings to time.")

CASES = (  # (clip frames, height, width, stored height, stored width, episode steps)
    (17, 64, 64, 96, 96, 40),
    (81, 240, 320, 256, 352, 100),
)


def _episodes(n, steps, h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for e in range(n):
        frames = np.empty((steps, h, w, 3), np.uint8)
        for t in range(steps):
            base = (np.sin(xx / 17.0 + t / 5.0 + e) + np.cos(yy / 11.0 - t / 7.0)) * 60 + 128
            noise = rng.integers(0, 12, (h, w, 3))
            frames[t] = np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)
        actions = rng.normal(size=(steps, 7)).astype(np.float32)
        yield rlds.Episode(frames, actions, "pick up the cup", f"ep{e}", fps=10.0)


def _time_pipeline(path, frames, height, width, workers, batches):
    cfg = tiny.get_config().data
    cfg.path, cfg.num_frames, cfg.height, cfg.width = str(path), frames, height, width
    cfg.batch_size, cfg.worker_count = 2, workers
    it = pipeline.create_iterator(cfg, process_index=0, process_count=1)
    start = time.perf_counter()
    next(it)
    first = time.perf_counter() - start
    for _ in range(cfg.prefetch_buffer * workers):  # Drain what workers read ahead meanwhile.
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    if hasattr(it, "close"):
        it.close()
    return {
        "clips_per_s": batches * cfg.batch_size / seconds,
        "first_batch_s": first,
        "batch_size": cfg.batch_size,
        "timed_batches": batches,
    }


def _metaworld_speed():
    from wow_jax.sim import metaworld_collect

    task = metaworld_collect.MetaWorldTask("reach-v3", 64)
    try:
        metaworld_collect.collect_episode(task, 0, 5, 0.0, "warmup")
        start = time.perf_counter()
        episode = metaworld_collect.collect_episode(task, 1, 100, 0.0, "timed")
        seconds = time.perf_counter() - start
    finally:
        task.close()
    return {"task": "reach-v3", "size": 64, "frames_per_s": len(episode.frames) / seconds}


def main(argv):
    del argv
    results = {"cpu_count": os.cpu_count(), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for (frames, height, width, sh, sw, steps), fmt in itertools.product(CASES, _FORMATS.value):
            path = rlds.write_episodes(
                _episodes(4, steps, sh, sw),
                tmp,
                f"bench{frames}x{height}x{width}{fmt}",
                action_dim=7,
                image_shape=(sh, sw),
                image_format=fmt,
            )
            stats.save_stats(stats.compute_action_stats(rlds.EpisodeSource(path), False), path)
            for workers in (0, 2):
                row = _time_pipeline(path, frames, height, width, workers, _BATCHES.value)
                row.update(
                    clip=f"{frames}x{height}x{width}", stored=f"{sh}x{sw} {fmt}", workers=workers
                )
                print(json.dumps(row))
                results["cases"].append(row)
    if _METAWORLD.value:
        results["metaworld"] = _metaworld_speed()
        print(json.dumps(results["metaworld"]))
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
