"""What the Colab notebooks in `experiments/` need besides the modes they run (`wow_jax.main.start`,
the same path as the command line): the runtime they are on, a tiny random run standing in for a
converted checkpoint, a folder of captioned mp4 episodes standing in for the user's own, and a
training run whose loss curve is drawn while it trains.

    runtime()                  'tpu' | 'gpu' | 'cpu', and describe_runtime() for people
    configure_mediapy()        mediapy's ffmpeg: the system's, else imageio-ffmpeg's
    enable_compilation_cache() JAX's persistent compilation cache in a folder
    random_run(config, dir)    <dir>/{config.json, tokenizer/, checkpoints/0/state[, action_stats]}
    example_videos(dir)        <dir>/{episode_<i>.mp4, captions.jsonl}: a square moving per caption
    train_live(config, dir)    mode train in a thread, its metrics.jsonl loss curve redrawn inline
"""

import json
import os
import threading

import jax
import ml_collections
import numpy as np

from wow_jax import checkpointing, demo, report, rundir
from wow_jax import models as registry
from wow_jax.data import stats
from wow_jax.sampling.models import random_params

SIZES = ("tiny", "full")  # The notebooks' parameter SIZE: random tiny models or the real ones.
# Instructions of the example episodes (and the corpus of a random run's tokenizer).
EXAMPLE_MOTIONS = {
    "move the square right": (1, 0),
    "move the square left": (-1, 0),
    "move the square down": (0, 1),
    "move the square up": (0, -1),
}
CACHE_MIN_COMPILE_S = 0.5  # Programs compiling faster than this are not cached.
BACKENDS = {"tpu": "tpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "cpu": "cpu"}


def check_size(size: str) -> str:
    """The notebooks' SIZE parameter, refused unless one of SIZES."""
    if size not in SIZES:
        raise ValueError(
            f"SIZE must be one of {SIZES}, got {size!r}; set it in the parameters cell"
        )
    return size


def runtime() -> str:
    """The accelerator JAX runs on: 'tpu', 'gpu' or 'cpu'."""
    return BACKENDS.get(jax.default_backend(), jax.default_backend())


def describe_runtime() -> str:
    """One line: backend, device count and kind, processes (e.g. 'tpu: 8 x TPU v2, 1 process')."""
    devices = jax.devices()
    return (
        f"{runtime()}: {len(devices)} x {devices[0].device_kind}, "
        f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''}"
    )


def configure_mediapy() -> str:
    """Points mediapy (which shows videos inline) at ffmpeg: the system's when on PATH (Colab),
    else imageio-ffmpeg's bundled binary (a requirement). Returns the ffmpeg used."""
    import shutil

    import imageio_ffmpeg
    import mediapy

    path = shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()
    mediapy.set_ffmpeg(path)
    return path


def enable_compilation_cache(directory: str) -> str:
    """JAX's persistent compilation cache in `directory`: a program compiled once (a second
    generate with other weights, a rerun after a kernel restart) is read back instead of compiled
    again. Returns `directory`."""
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    return directory


def random_run(
    config: ml_collections.ConfigDict,
    workdir: str,
    names: tuple[str, ...] = registry.WORLD_MODEL_NAMES,
    seed: int = 0,
) -> str:
    """Writes a run directory as training leaves it, with random params of the components `names`
    (`sampling.models.random_params`, seed + index) at checkpoints/0/state: config.json
    (`rundir.describe`), a sentencepiece tokenizer trained on EXAMPLE_MOTIONS when 'text' is one
    of them (sets config.model.text.tokenizer_path), and, for 'idm', action statistics of mean 0
    and std 1 over [-1, 1] (config.model.idm.action_dim dims). Modes generate / act / convert read
    it like a trained run. Returns `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    if "text" in names:
        tokenizer = demo.train_tokenizer(list(EXAMPLE_MOTIONS), os.path.join(workdir, "tokenizer"))
        config.model.text.tokenizer_path = tokenizer
    rundir.describe(config, workdir)
    if "idm" in names:
        dim = config.model.idm.action_dim
        zeros, ones = [0.0] * dim, [1.0] * dim
        moments = {"mean": zeros, "std": ones, "min": [-1.0] * dim, "max": ones}
        stats.save_stats(
            {**moments, "q01": [-1.0] * dim, "q99": ones, "count": 1, "action_dim": dim}, workdir
        )
    params = {
        name: random_params(registry.load(name).abstract_params(config.model[name]), seed + i)
        for i, name in enumerate(names)
    }
    checkpointing.save_params(os.path.join(workdir, rundir.CHECKPOINTS, "0", "state"), params)
    return workdir


def _square_episode(motion: tuple[int, int], frames: int, size: int, rng):
    """(uint8 [frames, size, size, 3] video of a coloured square crossing a grey floor along
    `motion`, float32 [frames, 2] actions: its displacement in pixels to the next frame)."""
    video = np.full((frames, size, size, 3), 96, np.uint8)
    side = size // 4
    start = rng.integers(side, size - 2 * side, 2)
    colour = rng.integers(128, 256, 3)
    corners = []
    for t in range(frames):
        step = (t * (size - 3 * side)) // max(frames - 1, 1)
        x, y = np.clip(start + step * np.asarray(motion), 0, size - side)
        video[t, y : y + side, x : x + side] = colour
        corners.append((x, y))
    actions = np.diff(np.asarray(corners + corners[-1:], np.float32), axis=0)
    return video, actions


def example_videos(directory: str, episodes: int = 8, frames: int = 17, size: int = 64) -> str:
    """A folder in the format of `data.source='videos'` (wow_jax/data/videos.py): `episodes` mp4
    files of a square moving as its caption says (EXAMPLE_MOTIONS in turn), their actions
    (`episode_<i>_actions.npy`, [frames, 2]) and captions.jsonl. Returns `directory`."""
    import imageio.v2 as imageio

    os.makedirs(directory, exist_ok=True)
    rng, records = np.random.default_rng(0), []
    for i in range(episodes):
        caption, motion = list(EXAMPLE_MOTIONS.items())[i % len(EXAMPLE_MOTIONS)]
        video, actions = _square_episode(motion, frames, size, rng)
        name = f"episode_{i}"
        path = os.path.join(directory, f"{name}.mp4")
        imageio.mimwrite(path, video, fps=10, macro_block_size=1)
        actions_file = f"{name}_actions.npy"
        np.save(os.path.join(directory, actions_file), actions)
        records.append({"video": f"{name}.mp4", "caption": caption, "actions": actions_file})
    with open(os.path.join(directory, "captions.jsonl"), "w") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n")
    return directory


def _loss_figure(metrics_path: str):
    """A matplotlib Figure of train/loss over steps from a run's metrics.jsonl."""
    from matplotlib.figure import Figure

    steps, losses = report.read_losses(metrics_path) if os.path.exists(metrics_path) else ([], [])
    figure = Figure(figsize=(5, 3))
    axis = figure.subplots()
    axis.plot(steps, losses, marker=".")
    axis.set_xlabel("step")
    axis.set_ylabel("train loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def train_live(config: ml_collections.ConfigDict, workdir: str, refresh_s: float = 2.0) -> str:
    """Mode train (`wow_jax.main.start`, as the command line runs it) in a thread while the cell
    redraws the loss curve of <workdir>/metrics.jsonl every `refresh_s` seconds; a failure of the
    run is raised here. Returns the run directory."""
    from IPython import display

    from wow_jax import main

    failure = []

    def run():
        try:
            main.start(config, workdir)
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            failure.append(error)

    thread = threading.Thread(target=run, name="wow_jax-train")
    thread.start()
    metrics = os.path.join(workdir, "metrics.jsonl")
    handle = display.display(_loss_figure(metrics), display_id=True)
    while thread.is_alive():
        thread.join(refresh_s)
        handle.update(_loss_figure(metrics))
    if failure:
        raise failure[0]
    return workdir
