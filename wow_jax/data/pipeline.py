"""Grain input pipeline: RLDS episodes -> batches of clips for world-model training.

    episodes (EpisodeSource, random access)
      -> global seeded shuffle, repeated forever (each epoch reshuffled)
      -> clip loading (random start, resize + crop, actions aligned + normalised)   [random_map]
      -> mixture captions                                                           [random_map]
      -> this process's shard: element i of every process_count (disjoint per JAX process)
      -> worker processes (mp_prefetch, order kept: batches do not depend on worker_count)
      -> drop bad episodes, counting them (num_skipped)
      -> batch (global batch / process_count)
      -> uint8 -> float32 in [-1, 1] (in the consuming process, so workers ship uint8)

Batch dict (B = config.data.batch_size // process_count, T = num_frames, A = action size):
    'video':        float32 [B, T, H, W, 3] in [-1, 1]
    'first_frame':  float32 [B, H, W, 3] in [-1, 1]   (video[:, 0], the image condition)
    'actions':      float32 [B, T-1, A]   actions[:, k] moves frame k to k+1, normalised
    'caption':      str [B]               mixture caption (see captions.py)
    'caption_kind': str [B]               e.g. 'model/long/fine' (robot/length/granularity)
    'instruction':  str [B]               the episode's plain instruction
    'episode_id':   str [B]
    'start':        int32 [B]             first step of the clip in its episode
    'num_skipped':  int32 [B]             bad episodes skipped just before each element
                                          (sum it for the 'data/skipped_episodes' metric)

The iterator is a grain DatasetIterator: `it.get_state()` / `it.set_state(state)` resume exactly.
"""

from __future__ import annotations

import grain
import numpy as np
from absl import flags, logging

from wow_jax.data import captions, clips, rlds, stats

ON_BAD = ("skip", "raise")


class ClipLoader:
    """Grain random map: episode index -> clip element (or {'_bad': message} when skipping)."""

    def __init__(self, source, spec: clips.ClipSpec, action_stats, action_norm: str, on_bad: str):
        self.source, self.spec = source, spec
        self.action_stats, self.action_norm, self.on_bad = action_stats, action_norm, on_bad

    def __call__(self, index, rng: np.random.Generator) -> dict:
        try:
            return self._load(int(index), rng)
        except rlds.BadEpisodeError as e:
            if self.on_bad == "raise":
                raise
            logging.warning("skipping bad episode: %s", e)
            return {"_bad": str(e)}

    def _load(self, index: int, rng: np.random.Generator) -> dict:
        where = self.source.location(index)
        chosen = {}

        def choose(num_steps, fps):
            chosen["stride"] = self.spec.stride_for(fps)
            frames, acts = clips.select_steps(num_steps, self.spec, chosen["stride"], rng, where)
            chosen["start"] = int(frames[0])
            return frames, acts

        size = (self.spec.height, self.spec.width)
        episode = self.source.read_clip(index, choose, min_size=size)
        if not episode["instruction"]:
            raise rlds.BadEpisodeError(
                f"episode at {where} has no language instruction (key "
                f"{self.source.instruction_key!r}); caption it or set config.data.instruction_key"
            )
        actions = clips.reduce_actions(episode["actions"], self.spec, chosen["stride"])
        if self.spec.num_frames == 1:  # A single frame has no transitions: [0, A] actions.
            width = self.action_stats["action_dim"] if self.action_stats is not None else 0
            actions = np.zeros((0, width), np.float32)
        if self.action_stats is not None and actions.shape[-1] != self.action_stats["action_dim"]:
            raise rlds.BadEpisodeError(
                f"episode at {where} has {actions.shape[-1]} action dims, the dataset statistics "
                f"{self.action_stats['action_dim']}; recompute them with "
                "`python -m scripts.compute_action_stats`"
            )
        return {
            "video": clips.resize_crop(episode["frames"], self.spec, rng),
            "actions": stats.normalize(actions, self.action_stats, self.action_norm),
            "instruction": episode["instruction"],
            "segments": episode["segments"],
            "robot": episode["robot"],
            "episode_id": episode["episode_id"],
            "start": np.int32(chosen["start"]),
        }


class _DropBadIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, max_skips: int):
        super().__init__(parent)
        self._max_skips = max_skips

    def __next__(self):
        skipped = 0
        while True:
            element = next(self._parent)
            if "_bad" not in element:
                return {**element, "num_skipped": np.int32(skipped)}
            skipped += 1
            if skipped > self._max_skips:
                raise ValueError(
                    f"{skipped} consecutive bad episodes (more than the dataset holds), the last: "
                    f"{element['_bad']}; the dataset is unusable, rebuild it"
                )

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class DropBad(grain.IterDataset):
    """Drops {'_bad': ...} elements; the next good element carries how many were dropped.

    More than `max_skips` bad elements in a row (every episode bad) raise a ValueError.
    """

    def __init__(self, parent: grain.IterDataset, max_skips: int):
        super().__init__(parent)
        self._max_skips = max_skips

    def __iter__(self):
        return _DropBadIterator(self._parent.__iter__(), self._max_skips)


def _to_float(batch: dict) -> dict:
    video = clips.to_unit_range(batch["video"])
    return {**batch, "video": video, "first_frame": video[:, 0]}


def build_dataset(
    data_cfg,
    *,
    source: rlds.EpisodeSource | None = None,
    seed: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.IterDataset:
    """The training IterDataset of config.data (see the module docstring for the batch dict).

    source: defaults to `EpisodeSource(config.data.path)`; process_index/count default to JAX's.
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if data_cfg.batch_size % process_count:
        raise ValueError(
            f"config.data.batch_size ({data_cfg.batch_size}) must be divisible by the number of "
            f"processes ({process_count}); each process loads batch_size / process_count clips"
        )
    if data_cfg.on_bad_episode not in ON_BAD:
        raise ValueError(
            f"config.data.on_bad_episode must be one of {ON_BAD}, got {data_cfg.on_bad_episode!r}"
        )
    if source is None:
        source = rlds.EpisodeSource(
            data_cfg.path,
            image_key=data_cfg.image_key,
            action_key=data_cfg.action_key,
            instruction_key=data_cfg.instruction_key,
        )
    if len(source) < process_count:
        raise ValueError(f"{source.path} has {len(source)} episodes < {process_count} processes")
    seed = data_cfg.shuffle_seed if seed is None else seed
    action_stats = None if data_cfg.action_norm == "none" else stats.load_stats(source.path)
    loader = ClipLoader(
        source,
        clips.ClipSpec.from_config(data_cfg),
        action_stats,
        data_cfg.action_norm,
        data_cfg.on_bad_episode,
    )
    mixture = captions.CaptionMixture.from_config(data_cfg)
    ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
    ds = ds.random_map(loader, seed=seed + 1)
    ds = ds.random_map(captions.MixtureCaptionTransform(mixture), seed=seed + 2)
    ds = ds[process_index::process_count]
    local_batch = data_cfg.batch_size // process_count
    # Bound the read-ahead (Grain's default of 500 clips would be ~50 GB of 81x480x832 clips).
    buffer = local_batch * data_cfg.prefetch_buffer
    read = grain.ReadOptions(
        num_threads=data_cfg.read_threads,
        prefetch_buffer_size=buffer if data_cfg.read_threads else 0,
    )
    ds = ds.to_iter_dataset(read)
    if data_cfg.worker_count > 0:
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (tests, notebooks).
            flags.FLAGS.mark_as_parsed()
        # Workers map clips one to one (bad ones as markers) and Grain interleaves them back in
        # order, so the batches below do not depend on worker_count.
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=data_cfg.worker_count, per_worker_buffer_size=buffer
            )
        )
    ds = DropBad(ds, max_skips=len(source))
    ds = ds.batch(local_batch, drop_remainder=True)
    return ds.map(_to_float)


def create_iterator(data_cfg, **kwargs) -> grain.DatasetIterator:
    """iter(build_dataset(...)): checkpoint it with get_state()/set_state()."""
    return iter(build_dataset(data_cfg, **kwargs))


def take_clips(data_cfg, count: int) -> dict:
    """The first `count` clips of the iterator over `data_cfg` as one process sees the whole
    stream: {'video' [N, T, H, W, 3] in [-1, 1], 'caption', 'instruction' [N] strings}."""
    iterator = create_iterator(data_cfg, process_index=0, process_count=1)
    videos, caption_list, instructions = [], [], []
    while len(videos) < count:
        batch = next(iterator)
        videos.extend(np.asarray(batch["video"], np.float32))
        caption_list.extend(str(c) for c in batch["caption"])
        instructions.extend(str(c) for c in batch["instruction"])
    return {
        "video": np.stack(videos[:count]),
        "caption": np.asarray(caption_list[:count]),
        "instruction": np.asarray(instructions[:count]),
    }
