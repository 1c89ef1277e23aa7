"""Training tasks (the models one loop trains) and the data each needs.

    build(config, workdir) -> (task, train_iterator, eval_iterator or None)

'world_model' (tasks/world_model.py; with config.idm.cotrain the IDM too, tasks/cotrain.py),
'vae' (tasks/vae.py) and 'idm' (tasks/idm.py) read
clips from the Grain pipeline of wow_jax.data, over the dataset that
wow_jax.data.prepare.prepare_dataset makes ready for config.data.source (collected / converted
into <workdir>/data on first use, with its action statistics); captions are tokenized on the host
for the frozen umT5, or looked up in the text-embedding cache when
config.model.text.embedding_cache is set (then umT5 is not part of the train state). With
config.train.inputs='latents' the world model reads the latent cache of config.train.latent_cache
instead (train/latent_cache.py: latents, text and image embeddings; the DiT alone in the state),
in a seeded order that resumes exactly (ArrayIterator); the IDM's
clips become frame pairs with their optical flow on the host (tasks/idm.py `pair_batch`). The
eval stream is the same data in another shuffle order.
"""

from pathlib import Path

import numpy as np

from wow_jax.train.tasks.base import DataIterator, Task

__all__ = ["DataIterator", "HostBatches", "Task", "build"]


class HostBatches:
    """Applies `fn` to every batch of `inner` on the host; checkpoint state is inner's.

    Counts the bad episodes the pipeline skipped (its 'num_skipped'); `pop_skipped()` returns
    the count since the last call (the loop logs it as data/skipped_episodes). `dataset_dir` is
    the dataset version dir read (the loop copies its action statistics into the run)."""

    def __init__(self, inner, fn, dataset_dir: Path):
        self.inner, self.fn, self.dataset_dir = inner, fn, dataset_dir
        self._skipped = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self.inner)
        if "num_skipped" in batch:
            self._skipped += int(np.sum(batch["num_skipped"]))
        return self.fn(batch)

    def pop_skipped(self) -> int:
        count, self._skipped = self._skipped, 0
        return count

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state) -> None:
        self.inner.set_state(state)


def clip_iterator(config, dataset_dir: Path, seed_offset: int = 0):
    """The Grain clip iterator of wow_jax.data (per-process batches, see its docstring) over
    `dataset_dir`, made ready by prepare.prepare_dataset (the one data-preparation path)."""
    from wow_jax.data import pipeline

    data_cfg = config.data.copy_and_resolve_references()
    with data_cfg.unlocked():
        data_cfg.path = str(dataset_dir)
    return pipeline.create_iterator(data_cfg, seed=data_cfg.shuffle_seed + seed_offset)


def world_model_batches(config, inner, dataset_dir: Path, text=None, text_cache=None):
    """Keeps video / first_frame and adds the mixture captions as token_ids / text_mask (online
    umT5; `text` is the task's conditioning.TextEncoder) or as text_states looked up in the
    text-embedding cache."""

    def fn(batch):
        captions = [str(c) for c in batch["caption"]]
        out = {
            "video": np.asarray(batch["video"], np.float32),
            "first_frame": np.asarray(batch["first_frame"], np.float32),
        }
        if text_cache is not None:
            out["text_states"] = np.asarray(text_cache.lookup_batch(captions), np.float32)
        else:
            out["token_ids"], out["text_mask"] = text.tokenize(captions)
        return out

    return HostBatches(inner, fn, dataset_dir)


def video_batches(inner, dataset_dir: Path):
    def fn(batch):
        return {"video": np.asarray(batch["video"], np.float32)}

    return HostBatches(inner, fn, dataset_dir)


def cached_world_model(config, null_text_states: np.ndarray):
    """The world-model task on latent-cache batches (train/latent_cache.py, config.train.inputs
    'latents'): the DiT alone is in the state (the frozen encoders ran when the cache was
    written); null_text_states [L, D] is the cache's empty prompt."""
    from wow_jax.train.tasks.world_model import WorldModelTask

    return WorldModelTask(config, null_text_states=null_text_states, components=("dit",))


def cotrain_batches(config, world: HostBatches, action_stats: dict | None) -> HostBatches:
    """The world model's batches with the IDM's pair batch of the same clips under 'idm'
    (tasks/cotrain.py)."""
    from wow_jax.train.tasks import cotrain, idm

    def fn(batch):
        return {**world.fn(batch), cotrain.IDM: idm.pair_batch(batch, config, action_stats)}

    return HostBatches(world.inner, fn, world.dataset_dir)


def _world_model(config, workdir: str):
    """(task, make(seed offset) -> iterator) of task 'world_model', co-training the IDM with
    config.idm.cotrain (tasks/cotrain.py)."""
    from wow_jax.data import prepare
    from wow_jax.data import text_cache as text_cache_lib
    from wow_jax.train.tasks.world_model import WorldModelTask

    if config.train.inputs == "latents":
        return _cached_world_model(config)
    cache = text_cache_lib.from_config(config.model.text)
    if cache is not None:  # umT5 never runs: keep it out of the state
        text = None
        null = np.asarray(cache.lookup(""), np.float32)
        task = WorldModelTask(config, null_text_states=null, components=("dit", "vae", "clip"))
    else:  # captions tokenized on the host, umT5 run in the train step
        task = WorldModelTask(config)
        text = task.text
        text.require_tokenizer()  # One error now, not after the data preparation.
    if config.idm.cotrain:
        from wow_jax.train.tasks import cotrain, idm

        task = cotrain.CoTrainTask(config, task)
    dataset_dir = prepare.prepare_dataset(config.data, workdir)
    action_stats = None
    if config.idm.cotrain:
        action_stats = idm.dataset_action_stats(config.data, dataset_dir)
        idm.check_action_dim(config.model.idm, action_stats)

    def make(offset):
        inner = clip_iterator(config, dataset_dir, offset)
        batches = world_model_batches(config, inner, dataset_dir, text, cache)
        return cotrain_batches(config, batches, action_stats) if config.idm.cotrain else batches

    return task, make


def _cached_world_model(config):
    """(task, make(seed offset) -> iterator) of task 'world_model' on the latent cache
    (config.train.inputs='latents')."""
    from wow_jax.train import latent_cache
    from wow_jax.train.array_data import ArrayIterator

    if config.idm.cotrain:
        raise ValueError(
            "config.idm.cotrain reads pixel frames for the IDM, but config.train.inputs='latents' "
            "trains from the latent cache; set --config.train.inputs=pixels to co-train"
        )
    arrays = latent_cache.load_for_training(config)
    task = cached_world_model(config, np.asarray(arrays.pop(latent_cache.NULL_KEY)[0]))

    def make(offset):
        seed = config.data.shuffle_seed + offset
        return ArrayIterator(arrays, config.data.batch_size, seed=seed)

    return task, make


def build(config, workdir: str):
    """(task, train iterator, eval iterator or None) for config.train.task."""
    from wow_jax.data import prepare

    name = config.train.task
    if config.idm.cotrain and name != "world_model":
        raise ValueError(
            f"config.idm.cotrain trains the IDM beside the world model: it needs "
            f"config.train.task='world_model', got {name!r}; train the IDM alone with task 'idm'"
        )
    eval_wanted = config.train.eval_every > 0
    # Each task is built (its inputs checked) before the dataset is collected or converted.
    if name == "world_model":
        task, make = _world_model(config, workdir)
    elif name == "vae":
        from wow_jax.train.tasks.vae import VAETask

        task = VAETask(config)
        dataset_dir = prepare.prepare_dataset(config.data, workdir)

        def make(offset):
            return video_batches(clip_iterator(config, dataset_dir, offset), dataset_dir)

    elif name == "idm":
        from wow_jax.train.tasks import idm

        task = idm.IDMTask(config)
        dataset_dir = prepare.prepare_dataset(config.data, workdir)
        action_stats = idm.dataset_action_stats(config.data, dataset_dir)
        idm.check_action_dim(config.model.idm, action_stats)

        def make(offset):
            inner = clip_iterator(config, dataset_dir, offset)
            return HostBatches(
                inner, lambda batch: idm.pair_batch(batch, config, action_stats), dataset_dir
            )

    else:
        raise ValueError(f"config.train.task must be 'world_model', 'vae' or 'idm', got {name!r}")
    return task, make(0), (make(1000) if eval_wanted else None)
