"""Optimizer factory: AdamW with warmup + cosine/constant schedule, global-norm clipping, parameter
freezing by path regex, gradient accumulation (optax.MultiSteps), and the parameter EMA.

    tx = make_optimizer(config.train, params)   # params: the (unboxed) trainable tree
    updates, opt_state = tx.update(grads, opt_state, params)

Frozen leaves (path matches `train.freeze`, e.g. '^(vae|text|clip)/') get zero updates through
`optax.multi_transform` with `optax.set_to_zero`: they keep no optimizer state, take no part in
the clipping norm, and their gradients are dead code that XLA removes. The EMA covers the trained
leaves only (`trainable_subtree`): a frozen leaf's EMA would equal the leaf.

Given boxed params (`nn.Partitioned` with logical axes), `tx.init` keeps the boxes on every
param-shaped optimizer leaf (Adam moments, accumulated gradients), so the shardings of the whole
optimizer state follow from its partition specs (train/state.py).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

TRAINABLE, FROZEN = "trainable", "frozen"


def make_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay (to final_lr_ratio) or constant."""
    peak, warmup = train_cfg.learning_rate, train_cfg.warmup_steps
    if train_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup,
            decay_steps=max(train_cfg.steps, warmup + 1),
            end_value=peak * train_cfg.final_lr_ratio,
        )
    if train_cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    raise ValueError(
        f"config.train.schedule must be 'cosine' or 'constant', got {train_cfg.schedule!r}"
    )


def path_string(path) -> str:
    """'dit/blocks/self_attn/q/kernel' for a jax tree path."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


AUTO = "auto"


def freeze_labels(params, pattern: str):
    """Tree of TRAINABLE / FROZEN labels: leaves whose path matches `pattern` are frozen.

    The loop resolves config.train.freeze='auto' to the task's `frozen_pattern` first."""
    if pattern == AUTO:
        raise ValueError("resolve config.train.freeze='auto' with resolve_freeze(task, ...) first")
    if not pattern:
        return jax.tree.map(lambda _: TRAINABLE, params)
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: FROZEN if regex.search(path_string(path)) else TRAINABLE, params
    )


def resolve_freeze(pattern: str, task) -> str:
    """'auto' -> the task's `frozen_pattern` (world model: '^(vae|text|clip)/'; VAE: '')."""
    return getattr(task, "frozen_pattern", "") if pattern == AUTO else pattern


def trainable_mask(params, pattern: str):
    """Tree of bools, True where the leaf is trained."""
    return jax.tree.map(lambda label: label == TRAINABLE, freeze_labels(params, pattern))


def _adamw(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW on the schedule of `train_cfg`."""
    return optax.chain(
        optax.clip_by_global_norm(train_cfg.clip_norm),
        optax.adamw(
            make_schedule(train_cfg),
            b1=train_cfg.adam_b1,
            b2=train_cfg.adam_b2,
            eps=train_cfg.adam_eps,
            weight_decay=train_cfg.weight_decay,
        ),
    )


def group_labels(labels, groups: dict):
    """Trained leaves under a top-level key of `groups` get that key as their label."""
    return {
        key: jax.tree.map(lambda label, k=key: k if label == TRAINABLE else label, tree)
        if key in groups
        else tree
        for key, tree in labels.items()
    }


def make_optimizer(
    train_cfg: ml_collections.ConfigDict,
    params,
    freeze: str | None = None,
    groups: dict | None = None,
) -> optax.GradientTransformation:
    """The full transformation for `params` (a tree of arrays or ShapeDtypeStructs); `freeze`
    (default config.train.freeze) is the resolved regex of frozen paths. `groups` ({top-level
    params key: train config}, a task's `optimizer_groups`): the trained leaves under each key
    get their own optimiser (own clipping norm, moments and learning rate), e.g. the co-trained
    IDM (tasks/cotrain.py)."""
    freeze = train_cfg.freeze if freeze is None else freeze
    groups = groups or {}
    labels = group_labels(freeze_labels(params, freeze), groups)
    if all(label == FROZEN for label in jax.tree.leaves(labels)):
        raise ValueError(f"config.train.freeze={freeze!r} freezes every parameter; loosen it")
    transforms = {TRAINABLE: _adamw(train_cfg), FROZEN: optax.set_to_zero()}
    transforms.update({key: _adamw(cfg) for key, cfg in groups.items()})
    tx = optax.multi_transform(transforms, labels)
    if train_cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=train_cfg.grad_accum)
    return tx


def trainable_subtree(params: dict, mask: dict) -> dict:
    """The nested-dict params with the frozen leaves (mask False) left out, e.g. {'dit': ...}
    for the world model; a leaf may be an array or a boxed `nn.Partitioned`."""
    flat, flat_mask = traverse_util.flatten_dict(params), traverse_util.flatten_dict(mask)
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if flat_mask[k]})


def update_ema(ema, params, decay: float, step: jax.Array):
    """EMA of the parameters with warm-up `min(decay, (1 + step) / (10 + step))`."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
