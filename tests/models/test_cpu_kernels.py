"""The CPU-only kernels behind config.model.cpu_kernels: resolved for the compile target; off, the
DiT is plain XLA that forward-mode autodiff passes through; on, the same numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from wow_jax import configuration
from wow_jax.models import dit

FD_STEP = 1e-2  # Central finite-difference step on unit-scale inputs (fp32).


def _dit_cfg(tiny_config, cpu_kernels: bool, variant: str = "i2v"):
    cfg = tiny_config.model.dit.copy_and_resolve_references()
    if variant == "i2v":
        cfg.variant, cfg.in_channels = "i2v", 36
    cfg.cpu_kernels = cpu_kernels
    return cfg


def _inputs(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "latents": rng.standard_normal((2, 2, 4, 4, cfg.in_channels)),
        "timesteps": np.array([250.0, 750.0]),
        "text_states": rng.standard_normal((2, 5, cfg.text_dim)),
        "image_tokens": rng.standard_normal((2, 3, cfg.image_dim)),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in x.items()}


def _params(cfg):
    params = nn.meta.unbox(dit.init_params(cfg, jax.random.key(0)))
    # Zero-initialised head and random-but-small modulation would hide most of the network:
    # redraw every leaf so the derivative exercises every block.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    redrawn = [
        0.3 * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, redrawn)


@pytest.mark.parametrize("backend,enabled", [("cpu", True), ("tpu", False), ("gpu", False)])
def test_auto_resolves_on_exactly_for_a_cpu_compile_target(tiny_config, backend, enabled):
    configuration.resolve_kernels(tiny_config, backend)
    assert tiny_config.model.dit.cpu_kernels is enabled
    assert tiny_config.model.vae.cpu_kernels is enabled


# issue 15: attention='auto' is the TPU kernel on TPU, cuDNN flash on GPU, xla on CPU, and splash
# runs in the Pallas interpreter exactly off TPU.
@pytest.mark.parametrize(
    "backend,kernel,interpret",
    [("tpu", "splash", False), ("gpu", "cudnn", True), ("cpu", "xla", True)],
)
def test_auto_attention_resolves_for_the_compile_target(tiny_config, backend, kernel, interpret):
    tiny_config.model.dit.attention = "auto"
    configuration.resolve_kernels(tiny_config, backend)
    assert tiny_config.model.dit.attention == kernel
    assert tiny_config.model.dit.pallas_interpret is interpret


@pytest.mark.parametrize("choice,enabled", [("on", True), ("off", False)])
def test_on_and_off_ignore_the_backend(tiny_config, choice, enabled):
    tiny_config.model.cpu_kernels = choice
    for backend in ("cpu", "tpu"):
        configuration.resolve_kernels(tiny_config, backend)
        assert tiny_config.model.dit.cpu_kernels is enabled


def test_an_unknown_choice_is_refused(tiny_config):
    tiny_config.model.cpu_kernels = "maybe"
    with pytest.raises(ValueError, match=r"config.model.cpu_kernels must be one of"):
        configuration.validate(tiny_config, 8)


def test_dit_jvp_without_cpu_kernels_matches_central_finite_differences(tiny_config):
    """jax.jvp through the whole i2v DiT (attention, fusion points, scanned remat blocks) in
    fp32, against (f(x + h v) - f(x - h v)) / 2h along a random direction of every input."""
    cfg = _dit_cfg(tiny_config, cpu_kernels=False)
    module, params, x = dit.create(cfg), _params(cfg), _inputs(cfg)
    keys = ("latents", "text_states", "image_tokens")
    rng = np.random.default_rng(7)
    tangent = {k: jnp.asarray(rng.standard_normal(x[k].shape), jnp.float32) for k in keys}

    def f(inputs):
        return module.apply({"params": params}, **{**x, **inputs})

    primal = {k: x[k] for k in keys}
    out, jvp = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(primal, tangent)
    shifted = jax.jit(lambda s: f({k: primal[k] + s * tangent[k] for k in keys}))
    fd = (shifted(FD_STEP) - shifted(-FD_STEP)) / (2 * FD_STEP)
    assert float(jnp.max(jnp.abs(out - f(primal)))) < 1e-5 * float(jnp.max(jnp.abs(out)))
    rel = float(jnp.linalg.norm(jvp - fd) / jnp.linalg.norm(fd))
    print(f"jvp vs central differences: relative error {rel:.2e}")
    assert float(jnp.linalg.norm(fd)) > 1.0 and rel < 1e-3, rel
    # jax.linearize works too and gives the same tangent.
    _, linear = jax.linearize(f, primal)
    np.testing.assert_allclose(np.asarray(linear(tangent)), np.asarray(jvp), rtol=1e-4, atol=1e-5)


def test_dit_with_cpu_kernels_refuses_jvp_and_without_accepts_it(tiny_config):
    """Why the switch exists: the CPU kernels' custom_vjp blocks forward-mode autodiff."""
    for enabled in (True, False):
        cfg = _dit_cfg(tiny_config, cpu_kernels=enabled, variant="t2v")
        module, x = dit.create(cfg), _inputs(cfg)
        del x["image_tokens"]
        params = nn.meta.unbox(dit.abstract_params(cfg))

        def jvp(p, module=module, x=x):
            def f(latents):
                return module.apply({"params": p}, **{**x, "latents": latents})

            return jax.jvp(f, (x["latents"],), (x["latents"],))

        if enabled:
            with pytest.raises(TypeError, match="custom_vjp"):
                jax.jit(jvp).lower(params)
        else:
            jax.jit(jvp).lower(params)


def test_dit_outputs_and_gradients_equal_with_cpu_kernels_on_and_off(tiny_config):
    """The fusion barriers and the written-out attention backward change how XLA:CPU runs the
    DiT, not what it computes: outputs equal to 1e-6, parameter gradients to 1e-5."""
    results = {}
    for enabled in (False, True):
        cfg = _dit_cfg(tiny_config, enabled)  # i2v: self-, text and image attention.
        module, x = dit.create(cfg), _inputs(cfg)
        params = _params(cfg)

        def loss(p, module=module, x=x):
            out = module.apply({"params": p}, **x)
            return jnp.sum(out * jnp.cos(out)), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        results[enabled] = out, grads
    (out_off, grads_off), (out_on, grads_on) = results[False], results[True]
    scale = float(jnp.max(jnp.abs(out_off)))
    assert float(jnp.max(jnp.abs(out_on - out_off))) <= 1e-6 * scale
    for g_on, g_off in zip(jax.tree.leaves(grads_on), jax.tree.leaves(grads_off), strict=True):
        assert float(jnp.max(jnp.abs(g_on - g_off))) <= 1e-5 * max(float(jnp.max(abs(g_off))), 1)
