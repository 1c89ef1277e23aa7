"""Collects Meta-World expert episodes into the RLDS ArrayRecord format (cached on rerun).

    MUJOCO_GL=egl python -m scripts.collect_metaworld --config=configs/demo.py --out_dir=/tmp/mw \
        [--config.data.tasks="('reach-v3','push-v3')" --config.data.episodes_per_task=8]

Uses config.data: tasks, episodes_per_task, episode_length, action_noise, collect_seed, camera,
render_size (0 = max(height, width)). Prints the dataset dir and the measured collection speed.
"""

import time

from absl import app, flags
from ml_collections import config_flags

from wow_jax.data import rlds
from wow_jax.sim import metaworld_collect

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Config file.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output root ('' = config.data.path).")


def main(argv):
    del argv
    data_cfg = _CONFIG.value.data
    out_dir = _OUT_DIR.value or data_cfg.path
    if not out_dir:
        raise ValueError("pass --out_dir or --config.data.path")
    start = time.perf_counter()
    path = metaworld_collect.collect_from_config(data_cfg, out_dir)
    seconds = time.perf_counter() - start
    source = rlds.EpisodeSource(path)
    frames = sum(source.num_steps(i) for i in range(len(source)))
    print(
        f"{path}: {len(source)} episodes, {frames} frames; this run {seconds:.1f} s "
        f"({frames / seconds:.1f} frames/s end to end incl. writing; 0 work when cached)"
    )


if __name__ == "__main__":
    app.run(main)
