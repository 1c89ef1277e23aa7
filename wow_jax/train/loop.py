"""The one training loop: `run_train(config, workdir)` (mode 'train').

    lock, describe <workdir>/.lock (one run per workdir), config.json + tokenizer + action
                   statistics (wow_jax.rundir; a resume that changes an unsafe key is refused)
    task, data <- tasks.build(config, workdir)
    prepare        mesh + rules (config.mesh), optimizer, and every state leaf's sharding from the
                   boxed abstract state (params, Adam moments and EMA keep their logical axes)
    initial_state  restore the latest checkpoint, or init (+ checkpoint.init_from / initial_params)
    compile_step   jit(train_step, in/out shardings, donate state), compiled once
    run_loop       feed a batch, run the step, log, eval, save; SIGTERM -> save + clean exit

The train step (`build_train_step`) is pure: loss and grads of `task.loss`, the optax update, the
EMA, and a NaN/Inf guard that keeps the old state (jnp.where) when the loss or the gradient norm
is not finite, counting skipped steps; `config.train.max_bad_steps` skipped in a row halt the
run with `TrainingHalted` and the last good checkpoint kept. Step i draws its randomness from
fold_in(state.rng, i), so a resumed run repeats the uninterrupted run bit for bit.

A task's `frozen_keys` (LoRA: the whole base, {'dit', 'vae', 'text', 'clip'}) are top-level params
held outside the train state: an argument of the step that takes no gradient, no optimizer state,
no EMA and is never checkpointed; they are read again (checkpoint.init_from, else the seeded random
init) on every start, and a checkpoint records that reference (meta 'base') so a resume from
another base is refused.
"""

import dataclasses
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from wow_jax import checkpointing, compiler, flops, rundir, sharding
from wow_jax.train import metrics as metrics_lib
from wow_jax.train import optimizer as opt_lib
from wow_jax.train import state as state_lib
from wow_jax.train import workdir_lock


class TrainingHalted(RuntimeError):
    """Raised after `max_bad_steps` consecutive non-finite steps."""


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState  # Final state (on the mesh).
    frozen: dict  # The params held outside the state (task.frozen_keys), as trained with.
    losses: dict[int, float]  # step -> loss of that step (this process's view, steps run here).
    preempted: bool  # True when a SIGTERM ended the run early.


def build_train_step(task, tx, train_cfg: ml_collections.ConfigDict, mask):
    """(state, batch, frozen) -> (state, metrics); `mask` is the static trainable-leaf tree of
    bools; `frozen` the params held outside the state (task.frozen_keys; None: none)."""
    schedule = opt_lib.make_schedule(train_cfg)
    accum = train_cfg.grad_accum

    def train_step(state: state_lib.TrainState, batch: dict, frozen: dict | None = None):
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            return task.loss({**(frozen or {}), **params}, batch, rng)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        trained = [
            g for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(mask), strict=True) if m
        ]
        grad_norm = optax.tree.norm(trained)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            boundary = (state.step + 1) % accum == 0
            trained = opt_lib.trainable_subtree(params, mask)
            stepped = opt_lib.update_ema(ema, trained, train_cfg.ema_decay, state.step // accum)
            ema = jax.tree.map(lambda a, b: jnp.where(boundary, a, b), stepped, ema)

        def keep_if_finite(new, old):
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

        bad_streak = jnp.where(finite, 0, state.bad_streak + 1)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_finite(params, state.params),
            opt_state=keep_if_finite(opt_state, state.opt_state),
            ema_params=keep_if_finite(ema, state.ema_params),
            bad_streak=bad_streak,
            bad_total=state.bad_total + (~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss.astype(jnp.float32),
            "grad_norm": grad_norm,
            "lr": schedule(state.step // accum),
            "bad_streak": bad_streak,
            "bad_total": new_state.bad_total,
            **aux,
        }
        return new_state, metrics

    return train_step


def build_eval_step(task, seed: int):
    """(params, batch, index) -> loss with a fixed noise draw per eval batch index."""

    def eval_step(params, batch, index):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed + 1), index)
        loss, _ = task.loss(params, batch, rng)
        return loss

    return eval_step


class _Preemption:
    """SIGTERM -> flag (checked between steps); multi-process runs agree via Orbax/JAX sync."""

    def __init__(self):
        self.flag = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and exiting after this step")
        self.flag = True

    def reached(self, manager, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                return bool(manager.reached_preemption(step)) or self.flag
            except Exception:  # noqa: BLE001 (no preemption service: fall back to the flag)
                return self.flag
        return self.flag

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _pop_skipped(data) -> int | None:
    """Bad episodes the data pipeline skipped since the last call (None: not counted)."""
    pop = getattr(data, "pop_skipped", None)
    return None if pop is None else pop()


def _host(tree) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(tree).items()}


@dataclasses.dataclass
class Run:
    """What init/restore, compilation and the loop share; built once by `prepare`."""

    config: ml_collections.ConfigDict
    workdir: str | None
    task: Any
    mesh: jax.sharding.Mesh
    rules: sharding.Rules  # config.mesh.rules (default sharding.LOGICAL_RULES).
    tx: optax.GradientTransformation
    mask: Any  # Tree of bools like params: True where the leaf is trained.
    init_rng: jax.Array  # Key of the random parameter init.
    create: Callable  # params -> fresh TrainState (state.create with this run's optimizer).
    abstract_state: state_lib.TrainState  # ShapeDtypeStructs carrying each leaf's sharding.
    frozen_keys: tuple[str, ...]  # task.frozen_keys: top-level params held outside the state.
    abstract_frozen: dict  # Their ShapeDtypeStructs with shardings ({} without frozen_keys).
    manager: Any  # The run's Orbax CheckpointManager (<workdir>/checkpoints); None: compile only.
    total: int  # Train-step calls of the whole run (steps * grad_accum).

    @property
    def shardings(self) -> state_lib.TrainState:
        """A NamedSharding per state leaf (those of `abstract_state`)."""
        return jax.tree.map(lambda leaf: leaf.sharding, self.abstract_state)

    @property
    def frozen_shardings(self) -> dict:
        return jax.tree.map(lambda leaf: leaf.sharding, self.abstract_frozen)

    @property
    def meta(self) -> dict:
        """What every checkpoint's meta records besides the step: the frozen base's source."""
        return {"base": self.config.checkpoint.init_from} if self.frozen_keys else {}


def prepare(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    task,
    mesh: jax.sharding.Mesh | None = None,
) -> Run:
    """The mesh, optimizer and every state leaf's sharding, derived from the boxed abstract state
    (`state.create` of the boxed abstract params: Adam moments and EMA keep the logical axes).

    `mesh`: default config.mesh over this host's devices (scripts/aot_compile.py passes a TPU
    topology's); `workdir=None`: no checkpoint manager (nothing is run, only compiled)."""
    train_cfg = config.train
    mesh = mesh or sharding.make_mesh(config.mesh)
    rules = sharding.rules(config.mesh)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    with sharding.activate(mesh, rules):
        boxed_params = jax.eval_shape(task.init_params, init_rng)
    frozen_keys = tuple(getattr(task, "frozen_keys", ()))
    boxed_frozen = {name: boxed_params[name] for name in frozen_keys}
    boxed_params = {k: v for k, v in boxed_params.items() if k not in frozen_keys}
    abstract_params = nn.unbox(boxed_params)
    freeze = opt_lib.resolve_freeze(train_cfg.freeze, task)
    groups = getattr(task, "optimizer_groups", None)  # Own optimisers (a co-trained IDM).
    tx = opt_lib.make_optimizer(train_cfg, abstract_params, freeze, groups)
    mask = opt_lib.trainable_mask(abstract_params, freeze)

    def create(params):
        return state_lib.create(params, tx, state_rng, train_cfg.ema_decay, mask)

    boxed_state = jax.eval_shape(create, boxed_params)
    manager = None
    if workdir is not None:
        directory = checkpointing.as_path(workdir) / "checkpoints"
        manager = checkpointing.make_manager(directory, config.checkpoint)
    return Run(
        config=config,
        workdir=workdir,
        task=task,
        mesh=mesh,
        rules=rules,
        tx=tx,
        mask=mask,
        init_rng=init_rng,
        create=create,
        abstract_state=sharding.abstract_on_mesh(boxed_state, mesh, rules),
        frozen_keys=frozen_keys,
        abstract_frozen=sharding.abstract_on_mesh(boxed_frozen, mesh, rules),
        manager=manager,
        total=train_cfg.steps * train_cfg.grad_accum,
    )


def _given_params(run: Run, initial_params: dict | None) -> dict:
    """{top-level params key: tree} replacing the random init: the task's `pretrained_params`
    (weights it imports), `initial_params`, then the subtrees of config.checkpoint.init_from
    that the task has (restored onto the mesh)."""
    pretrained = getattr(run.task, "pretrained_params", None)  # e.g. an imported DINOv2.
    given = {**(pretrained(run.init_rng) if pretrained else {}), **(initial_params or {})}
    abstract_params = {**run.abstract_frozen, **run.abstract_state.params}
    init_from = run.config.checkpoint.init_from
    if init_from:
        stored = set(checkpointing.subtree_names(init_from))
        wanted = {
            name: abstract_params[name]
            for name in abstract_params
            if name in stored and name not in given
        }
        if not wanted and not given:
            raise ValueError(
                f"config.checkpoint.init_from={init_from!r} holds params {sorted(stored)}, none "
                f"of this task's {sorted(abstract_params)}"
            )
        given.update(checkpointing.restore_subtrees(init_from, wanted))
    unknown = sorted(set(given) - set(abstract_params))
    if unknown:
        raise ValueError(
            f"initial params {unknown} are not in the task's params {sorted(abstract_params)}"
        )
    return given


def initial_state(run: Run, train_data=None, initial_params: dict | None = None):
    """(state, frozen params): the newest readable checkpoint of the run (with the data
    position), or a fresh state on the mesh; the frozen params (run.frozen_keys) are read or
    initialised again either way."""
    restored = checkpointing.restore_latest(run.manager, run.abstract_state, train_data)
    if restored is None:
        return _initialise(run, initial_params, with_state=True)
    state, meta, step = restored
    logging.info("resumed from %s step %d", run.manager.directory, step)
    if not run.frozen_keys:
        return state, {}
    stored, wanted = meta.get("base"), run.meta["base"]
    if stored != wanted:
        raise ValueError(
            f"{run.manager.directory} step {step} trained adapters on the base "
            f"config.checkpoint.init_from={stored!r} but this run has {wanted!r}; resume with the "
            "same base or use a new --workdir"
        )
    return state, _initialise(run, initial_params, with_state=False)[1]


def _initialise(run: Run, initial_params: dict | None, with_state: bool):
    """(fresh state or None, frozen params) on the mesh: `_given_params` + the random init."""
    given = _given_params(run, initial_params)
    if not with_state:
        given = {k: v for k, v in given.items() if k in run.frozen_keys}

    def init(rng, given):
        # Subtrees in `given` replace the random init, which XLA then never computes.
        params = {**nn.unbox(run.task.init_params(rng)), **given}
        frozen = {name: params.pop(name) for name in run.frozen_keys}
        return (run.create(params) if with_state else None), frozen

    all_shardings = {**run.frozen_shardings, **run.shardings.params}
    given_sh = {name: all_shardings[name] for name in given}
    given = jax.device_put(given, given_sh)
    out_sh = (run.shardings if with_state else None, run.frozen_shardings)
    init_fn = jax.jit(init, in_shardings=(None, given_sh), out_shardings=out_sh)
    with sharding.activate(run.mesh, run.rules):
        compiled = init_fn.lower(run.init_rng, given).compile(compiler.init_options())
        state, frozen = compiled(run.init_rng, given)
    if given:
        logging.info("initial params for %s; the rest initialised randomly", sorted(given))
    return state, frozen


def shard_first_batch(run: Run, host_batch) -> dict:
    """The first batch on the mesh, after checking the global batch divides data*fsdp."""
    ways = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
    global_batch = int(jax.tree.leaves(host_batch)[0].shape[0]) * jax.process_count()
    if global_batch % ways:
        raise ValueError(
            f"the global batch ({global_batch}) must be divisible by mesh data*fsdp = {ways}; "
            "change config.data.batch_size or config.mesh"
        )
    return sharding.shard_batch(host_batch, run.mesh, run.rules)


def compile_step(run: Run, batch):
    """The train step, jitted with the state and batch shardings (state donated), compiled once."""
    batch_sh = jax.tree.map(lambda x: x.sharding, batch)
    step_jit = jax.jit(
        build_train_step(run.task, run.tx, run.config.train, run.mask),
        in_shardings=(run.shardings, batch_sh, run.frozen_shardings),
        out_shardings=(run.shardings, sharding.replicated(run.mesh)),
        donate_argnums=0,
    )
    platform = run.mesh.devices.flat[0].platform  # The compile target (a TPU topology in AOT).
    with sharding.activate(run.mesh, run.rules):
        lowered = step_jit.lower(run.abstract_state, _abstract(batch), run.abstract_frozen)
        return lowered.compile(compiler.program_options(platform))


def _abstract(batch):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch
    )


def run_loop(
    run: Run, state, frozen, compiled, batch, train_data, eval_data, skipped
) -> TrainResult:
    """Feeds batches to the compiled step from `state` to the last step: logs, evaluates,
    checkpoints, and on SIGTERM saves and returns early. `frozen`: the params held outside the
    state; `batch` is the first (sharded) batch; `skipped` the bad episodes the data pipeline
    skipped before it (None: not counted)."""
    config, train_cfg, mesh, manager, total = (
        run.config, run.config.train, run.mesh, run.manager, run.total
    )  # fmt: skip
    step = int(jax.device_get(state.step))
    eval_fn = None
    if eval_data is not None and train_cfg.eval_every > 0:
        eval_fn = jax.jit(build_eval_step(run.task, config.seed))
        eval_start = eval_data.get_state()
    global_batch = int(jax.tree.leaves(batch)[0].shape[0])
    flops_per_step, flops_source = flops.step_flops_per_device(run.task, _abstract(batch), compiled)
    logging.info("FLOPs per step per device for MFU: %s (%s)", flops_per_step, flops_source)
    writer = metrics_lib.MetricsWriter(
        run.workdir,
        samples_per_step=global_batch,
        tokens_per_sample=run.task.tokens_per_sample(_abstract(batch)),
        flops_per_step=flops_per_step,
        peak_flops=metrics_lib.peak_flops_per_device(train_cfg.peak_flops),
        tensorboard=train_cfg.tensorboard,
        step=step,
        total_steps=total if train_cfg.progress_bar else 0,
    )
    preemption = _Preemption()
    losses: dict[int, float] = {}
    pending = None
    preempted = False

    def consume(done_step, metrics):
        nonlocal skipped
        scalars = _host(metrics)
        losses[done_step] = scalars["loss"]
        logged = done_step == 1 or done_step % train_cfg.log_every == 0 or done_step == total
        if logged:
            scalars.update(writer.throughput(done_step))  # steps/s, MFU: also in metrics.jsonl
        writer.record(done_step, scalars)
        if logged:
            writer.write(done_step, scalars)
            writer.log_line(done_step, total, scalars)
            if skipped is not None:
                data_scalars = {"skipped_episodes": skipped}
                writer.write(done_step, data_scalars, prefix="data")
                writer.record(done_step, data_scalars, prefix="data")
                if skipped:
                    logging.warning(
                        "step %d: the data pipeline skipped %d bad episodes since the last log "
                        "line (see the warnings above for which and why)",
                        done_step,
                        skipped,
                    )
                skipped = 0
        if scalars["bad_streak"] >= train_cfg.max_bad_steps:
            raise TrainingHalted(
                f"{int(scalars['bad_streak'])} train steps in a row had a NaN/Inf loss or "
                f"gradient (config.train.max_bad_steps={train_cfg.max_bad_steps}); stopped at "
                f"step {done_step}. The last good checkpoint is kept in {manager.directory} "
                f"(latest step {manager.latest_step()}). Lower config.train.learning_rate, check "
                "the data for NaNs, or use float32 (config.model.*.dtype)."
            )

    def evaluate(params) -> float:
        eval_data.set_state(eval_start)
        total_loss = 0.0
        for i in range(train_cfg.eval_batches):
            eval_batch = sharding.shard_batch(next(eval_data), mesh, run.rules)
            total_loss += float(eval_fn({**frozen, **params}, eval_batch, i))
        return total_loss / train_cfg.eval_batches

    writer.start(step)
    try:
        with sharding.activate(mesh, run.rules):
            while step < total:
                state, metrics = compiled(state, batch, frozen)
                step += 1
                if pending is not None:
                    consume(*pending)
                pending = (step, metrics)
                eval_loss = None
                if eval_fn is not None and step % train_cfg.eval_every == 0:
                    eval_loss = evaluate(state.params)
                    writer.write(step, {"loss": eval_loss}, prefix="eval")
                    writer.record(step, {"loss": eval_loss}, prefix="eval")
                    logging.info("step %d eval loss %.5f", step, eval_loss)
                preempted = preemption.reached(manager, step)
                if step % config.checkpoint.save_every == 0 or step == total or preempted:
                    consume(*pending)  # the NaN guard sees this step before it is saved
                    pending = None
                    meta = {"step": step, **run.meta}
                    checkpointing.save(manager, step, state, train_data, meta, eval_loss=eval_loss)
                if preempted:
                    logging.warning("preempted: saved step %d; exiting cleanly", step)
                    break
                if step < total:
                    batch = sharding.shard_batch(next(train_data), mesh, run.rules)
                    if skipped is not None:
                        skipped += _pop_skipped(train_data)
            if pending is not None:
                consume(*pending)
    finally:
        manager.wait_until_finished()
        preemption.restore()
        writer.close()
    return TrainResult(state, frozen, losses, preempted)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    task=None,
    train_data=None,
    eval_data=None,
    initial_params: dict | None = None,
) -> TrainResult:
    """Trains `task` (default: built from config.train.task) and returns the final state.

    `initial_params`: {top-level params key: tree} placed into a fresh (not resumed) state, e.g.
    the VAE trained in an earlier stage; `config.checkpoint.init_from` does the same from disk.
    The workdir is locked for the run (workdir_lock) and describes itself (wow_jax.rundir).
    """
    with workdir_lock.hold(workdir):
        rundir.describe(config, workdir)
        if task is None:
            from wow_jax.train import tasks

            task, train_data, eval_data = tasks.build(config, workdir)
        dataset_dir = getattr(train_data, "dataset_dir", None)
        rundir.copy_action_stats(workdir, task.name, dataset_dir)
        return _train(config, workdir, task, train_data, eval_data, initial_params)


def _train(config, workdir, task, train_data, eval_data, initial_params) -> TrainResult:
    run = prepare(config, workdir, task)
    state, frozen = initial_state(run, train_data, initial_params)
    step = int(jax.device_get(state.step))
    if step >= run.total:
        logging.info("nothing to do: checkpoint step %d >= %d steps", step, run.total)
        run.manager.wait_until_finished()
        return TrainResult(state, frozen, {}, False)
    first = next(train_data)
    skipped = _pop_skipped(train_data)  # Bad episodes skipped in this log interval.
    batch = shard_first_batch(run, first)
    compiled = compile_step(run, batch)
    return run_loop(run, state, frozen, compiled, batch, train_data, eval_data, skipped)


def run_train(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Mode 'train': `python -m wow_jax.main --config=configs/tiny.py --workdir=DIR`."""
    result = train(config, workdir)
    if result.losses:
        last = max(result.losses)
        print(f"trained to step {last}: loss {result.losses[last]:.5f} (workdir {workdir})")
