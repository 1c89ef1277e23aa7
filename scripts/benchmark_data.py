"""Data throughput: the Grain pipeline (clips/s) and TFRecord <-> ArrayRecord conversion (MB/s).

    python -m scripts.benchmark_data [--out=runs/benchmarks/data.json --batches=10 --metaworld
                                      --nopipeline --noconversion]

Builds synthetic RLDS ArrayRecord datasets in a temp dir (PNG frames of smooth patterns + noise,
stored larger than the clip so resize + crop run), then times the pipeline in steady state (after
the first batch and what the workers read ahead while it was made):
    17x64x64   from 96x96 frames      81x240x320   from 256x352 frames
Conversion (wow_jax/data/tfrecord.py, every record's CRC32C computed and checked) is timed in one
run with two CRC32C implementations: the pure-Python table loop wow_jax used before (the
reference, 'before') and google-crc32c ('after'), with their MB/s ratio.
With --metaworld also the Meta-World collection speed (frames/s, physics + 64x64 rendering).
There is no PyTorch reference for a data loader; the JSON records the machine's CPU count.
"""

import itertools
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import google_crc32c
import numpy as np
from absl import app, flags

from configs import tiny
from wow_jax.data import pipeline, rlds, stats, tfrecord

_OUT = flags.DEFINE_string("out", "runs/benchmarks/data.json", "JSON output path.")
_PIPELINE = flags.DEFINE_bool("pipeline", True, "Time the Grain pipeline.")
_CONVERSION = flags.DEFINE_bool("conversion", True, "Time TFRecord <-> ArrayRecord conversion.")
_CONVERSION_EPISODES = flags.DEFINE_integer(
    "conversion_episodes", 8, "Episodes (40 steps of 96x96 PNG frames) of the converted dataset."
)
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


def _pure_python_crc32c(data: bytes) -> int:
    """The CRC-32C table loop wow_jax/data/tfrecord.py used before google-crc32c (reference)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _time_conversion(tmp: str, episodes: int) -> dict:
    """MB/s of ArrayRecord -> TFRecord (CRCs written) and TFRecord -> ArrayRecord (CRCs checked)
    with the pure-Python CRC32C and with google-crc32c, on the same dataset."""
    src = rlds.write_episodes(
        _episodes(episodes, 40, 96, 96), tmp, "conversion", action_dim=7, image_shape=(96, 96)
    )
    shards = sorted(src.glob("*.array_record-*"))
    megabytes = sum(p.stat().st_size for p in shards) / 1e6
    payload = shards[0].read_bytes()
    rows = {}
    for name, crc in (("pure_python", _pure_python_crc32c), ("google_crc32c", tfrecord.crc32c)):
        assert crc(b"123456789") == 0xE3069283
        with mock.patch.object(tfrecord, "crc32c", crc):
            out = Path(tmp) / name
            tf_dir, write_s = _timed(
                lambda out=out: tfrecord.convert_dataset(src, out / "tf", to="tfrecord")
            )
            _, read_s = _timed(
                lambda out=out, tf_dir=tf_dir: tfrecord.convert_dataset(tf_dir, out / "ar")
            )
        _, crc_s = _timed(lambda crc=crc: crc(payload))
        rows[name] = {
            "to_tfrecord_mb_per_s": megabytes / write_s,
            "to_array_record_verified_mb_per_s": megabytes / read_s,
            "crc32c_only_mb_per_s": len(payload) / 1e6 / crc_s,
        }
    before, after = rows["pure_python"], rows["google_crc32c"]
    return {
        "megabytes": megabytes,
        "episodes": episodes,
        "google_crc32c_implementation": google_crc32c.implementation,
        "before": before,
        "after": after,
        "speedup": {k: after[k] / before[k] for k in before},
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
    if _CONVERSION.value:
        with tempfile.TemporaryDirectory() as tmp:
            results["conversion"] = _time_conversion(tmp, _CONVERSION_EPISODES.value)
        print(json.dumps(results["conversion"]))
    cases = itertools.product(CASES, _FORMATS.value) if _PIPELINE.value else ()
    with tempfile.TemporaryDirectory() as tmp:
        for (frames, height, width, sh, sw, steps), fmt in cases:
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
