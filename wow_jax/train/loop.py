"""The one training loop: `run_train(config, workdir)` (mode 'train').

    mesh  <- config.mesh                       task, data <- tasks.build(config, workdir)
    state <- restore latest checkpoint, or init (+ checkpoint.init_from / initial_params)
    step  <- jit(train_step, in/out shardings from the logical rules, donate state), compiled once
    loop: feed a batch, run the step, log, eval, save; SIGTERM -> save + clean exit

The train step (`build_train_step`) is pure: loss and grads of `task.loss`, the optax update, the
EMA, and a NaN/Inf guard that keeps the old state (jnp.where) when the loss or the gradient norm
is not finite, counting skipped steps; `config.train.max_bad_steps` skipped in a row halt the
run with `TrainingHalted` and the last good checkpoint kept. Step i draws its randomness from
fold_in(state.rng, i), so a resumed run repeats the uninterrupted run bit for bit.
"""

import dataclasses
import os
import signal
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from wow_jax import compiler, sharding
from wow_jax.train import checkpoint as ckpt_lib
from wow_jax.train import metrics as metrics_lib
from wow_jax.train import optimizer as opt_lib
from wow_jax.train import state as state_lib


class TrainingHalted(RuntimeError):
    """Raised after `max_bad_steps` consecutive non-finite steps."""


@dataclasses.dataclass
class TrainResult:
    state: state_lib.TrainState  # Final state (on the mesh).
    losses: dict[int, float]  # step -> loss of that step (this process's view, steps run here).
    preempted: bool  # True when a SIGTERM ended the run early.


def build_train_step(task, tx, train_cfg: ml_collections.ConfigDict, mask):
    """(state, batch) -> (state, metrics); `mask` is the static trainable-leaf tree of bools."""
    schedule = opt_lib.make_schedule(train_cfg)
    accum = train_cfg.grad_accum

    def train_step(state: state_lib.TrainState, batch: dict):
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, aux), grads = jax.value_and_grad(lambda p: task.loss(p, batch, rng), has_aux=True)(
            state.params
        )
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
            stepped = opt_lib.update_ema(ema, params, train_cfg.ema_decay, state.step // accum)
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


def state_shardings(abstract_state, abstract_params, param_shardings, mesh):
    """Shardings for every TrainState leaf: a leaf whose tree path ends with a parameter's path
    and has its shape (params, Adam moments, EMA) takes that parameter's sharding; the rest
    (counters, rng) are replicated."""
    by_path = {}
    for (path, leaf), sh in zip(
        jax.tree_util.tree_leaves_with_path(abstract_params),
        jax.tree.leaves(param_shardings),
        strict=True,
    ):
        by_path[opt_lib.path_string(path)] = (leaf.shape, sh)
    replicated = sharding.replicated(mesh)

    def pick(path, leaf):
        parts = opt_lib.path_string(path).split("/")
        for start in range(len(parts)):
            hit = by_path.get("/".join(parts[start:]))
            if hit is not None and hit[0] == leaf.shape:
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_state)


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
    """
    train_cfg = config.train
    mesh = sharding.make_mesh(config.mesh)
    if task is None:
        from wow_jax.train import tasks

        task, train_data, eval_data = tasks.build(config, workdir)
    total = train_cfg.steps * train_cfg.grad_accum
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    with sharding.activate(mesh):
        abstract_boxed = jax.eval_shape(task.init_params, init_rng)
    param_sh = sharding.variable_shardings(abstract_boxed, mesh)
    abstract_params = nn.unbox(abstract_boxed)
    freeze = opt_lib.resolve_freeze(train_cfg.freeze, task)
    tx = opt_lib.make_optimizer(train_cfg, abstract_params, freeze)
    mask = opt_lib.trainable_mask(abstract_params, freeze)

    def create(params):
        return state_lib.create(params, tx, state_rng, train_cfg.ema_decay)

    abstract_state = jax.eval_shape(create, abstract_params)
    state_sh = state_shardings(abstract_state, abstract_params, param_sh, mesh)

    manager = ckpt_lib.make_manager(os.path.join(workdir, "checkpoints"), config.checkpoint)
    latest = manager.latest_step()
    if latest is not None:
        target = ckpt_lib.abstract_with_shardings(abstract_state, state_sh)
        state, _ = ckpt_lib.restore(manager, latest, target, train_data)
        logging.info("resumed from %s step %d", manager.directory, latest)
    else:
        given = dict(initial_params or {})
        if config.checkpoint.init_from:
            path = ckpt_lib.params_directory(config.checkpoint.init_from)
            stored = set(ckpt_lib.stored_params(path))
            wanted = {
                name: ckpt_lib.abstract_with_shardings(abstract_params[name], param_sh[name])
                for name in abstract_params
                if name in stored and name not in given
            }
            if not wanted and not given:
                raise ValueError(
                    f"config.checkpoint.init_from={config.checkpoint.init_from!r} holds params "
                    f"{sorted(stored)}, none of this task's {sorted(abstract_params)}"
                )
            given.update(ckpt_lib.restore_params(path, wanted))
        unknown = sorted(set(given) - set(abstract_params))
        if unknown:
            raise ValueError(
                f"initial params {unknown} are not in the task's params {sorted(abstract_params)}"
            )

        def init(rng, given):
            # Subtrees in `given` replace the random init, which XLA then never computes.
            return create({**nn.unbox(task.init_params(rng)), **given})

        given_sh = {name: param_sh[name] for name in given}
        given = jax.device_put(given, given_sh)
        init_fn = jax.jit(init, in_shardings=(None, given_sh), out_shardings=state_sh)
        with sharding.activate(mesh):
            state = init_fn.lower(init_rng, given).compile(compiler.init_options())(init_rng, given)
        if given:
            logging.info("initial params for %s; the rest initialised randomly", sorted(given))

    step = int(jax.device_get(state.step))
    if step >= total:
        logging.info("nothing to do: checkpoint step %d >= %d steps", step, total)
        return TrainResult(state, {}, False)

    first = next(train_data)
    skipped = _pop_skipped(train_data)  # Bad episodes skipped in this log interval.
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    global_batch = int(jax.tree.leaves(first)[0].shape[0]) * jax.process_count()
    if global_batch % ways:
        raise ValueError(
            f"the global batch ({global_batch}) must be divisible by mesh data*fsdp = {ways}; "
            "change config.data.batch_size or config.mesh"
        )
    batch = sharding.shard_batch(first, mesh)
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch
    )
    step_jit = jax.jit(
        build_train_step(task, tx, train_cfg, mask),
        in_shardings=(state_sh, jax.tree.map(lambda x: x.sharding, batch)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    with sharding.activate(mesh):
        compiled = step_jit.lower(
            ckpt_lib.abstract_with_shardings(abstract_state, state_sh), abstract_batch
        ).compile(compiler.program_options())
    eval_fn = None
    if eval_data is not None and train_cfg.eval_every > 0:
        eval_fn = jax.jit(build_eval_step(task, config.seed))
        eval_start = eval_data.get_state()

    writer = metrics_lib.MetricsWriter(
        workdir,
        samples_per_step=global_batch,
        tokens_per_sample=task.tokens_per_sample(abstract_batch),
        flops_per_step=metrics_lib.compiled_flops(compiled),
        peak_flops=metrics_lib.peak_flops_per_device(train_cfg.peak_flops),
        tensorboard=train_cfg.tensorboard,
    )
    preemption = _Preemption()
    losses: dict[int, float] = {}
    pending = None
    preempted = False

    def consume(done_step, metrics):
        nonlocal skipped
        scalars = _host(metrics)
        losses[done_step] = scalars["loss"]
        writer.record(done_step, scalars)
        if done_step == 1 or done_step % train_cfg.log_every == 0 or done_step == total:
            scalars.update(writer.throughput(done_step))
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
            eval_batch = sharding.shard_batch(next(eval_data), mesh)
            with sharding.activate(mesh):
                total_loss += float(eval_fn(params, eval_batch, i))
        return total_loss / train_cfg.eval_batches

    writer.start(step)
    try:
        with sharding.activate(mesh):
            while step < total:
                state, metrics = compiled(state, batch)
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
                    ckpt_lib.save(
                        manager, step, state, train_data, {"step": step}, eval_loss=eval_loss
                    )
                if preempted:
                    logging.warning("preempted: saved step %d; exiting cleanly", step)
                    break
                if step < total:
                    batch = sharding.shard_batch(next(train_data), mesh)
                    if skipped is not None:
                        skipped += _pop_skipped(train_data)
            if pending is not None:
                consume(*pending)
    finally:
        manager.wait_until_finished()
        preemption.restore()
        writer.close()
    return TrainResult(state, losses, preempted)


def run_train(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Mode 'train': `python -m wow_jax.main --config=configs/tiny.py --config.mode=train ...`."""
    result = train(config, workdir)
    if result.losses:
        last = max(result.losses)
        print(f"trained to step {last}: loss {result.losses[last]:.5f} (workdir {workdir})")
