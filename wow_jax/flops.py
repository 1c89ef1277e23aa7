"""FLOP accounting: the analytic model FLOPs of the DiT (the number MFU is quoted against) and
the compiler's count of a compiled program, with the layer scan multiplied out.

Analytic (`dit_forward`), per clip, a matmul of [m, k] x [k, n] counting 2 m k n FLOPs, with
L video tokens (latent cells / patch volume), Lt text and Li image tokens, width d, FFN width f:

    per block   self-attention  4 * 2 L d^2 (q, k, v, o)  +  2 * 2 L^2 d (q k^T, p v)
                cross-attention 2 * 2 L d^2 (q, o)  +  2 * 2 Lt d^2 (k, v)  +  2 * 2 L Lt d
                  (i2v image)   2 * 2 Li d^2 (k_img, v_img)  +  2 * 2 L Li d
                feed-forward    2 * 2 L d f
    outside     patch embedding 2 L (pt ph pw C_in) d, head 2 L d (pt ph pw C_out),
                text embedding 2 Lt (text_dim d + d^2), image embedding 2 Li (image_dim^2 +
                image_dim d), time embedding 2 (freq_dim d + d^2 + 6 d^2)

Norms, RoPE, softmax and other elementwise work are not counted. A train step is
`TRAIN_MULTIPLIER` = 3 forward passes (the backward pass is twice the forward); the recompute of
rematerialisation and the frozen encoders (VAE, umT5, CLIP) are not model FLOPs. WoW-14B at
81x480x832 (L = 32,760, Lt = 512, Li = 257): 1.686e15 forward, 5.06e15 train FLOPs per clip,
52% of them the self-attention products q k^T and p v.

Compiler (`compiled_flops`): XLA's `cost_analysis()` of the partitioned per-device program
counts the body of a loop once and a Pallas kernel (splash attention) as zero FLOPs. For a
scanned stack, `extrapolate_layers` takes the counts of the same program with 1 and 2 unscanned
layers: F(1) + (N - 1) (F(2) - F(1)); `attention_kernel_flops` is what the splash kernel
executes (its backward recomputes the logits, so more than the model FLOPs it stands for).
"""

import jax
import ml_collections

TRAIN_MULTIPLIER = 3  # forward + backward (2x forward) per train step.
MODULATION_VECTORS = 6  # The DiT's time projection: dim -> 6 * dim.


def matmul(m: float, k: float, n: float) -> float:
    """FLOPs of an [m, k] x [k, n] matrix product."""
    return 2.0 * m * k * n


def dit_block_forward(dit_cfg: ml_collections.ConfigDict, tokens: int, text: int, image: int):
    """Forward FLOPs of one DiT block for one clip (`tokens` video, `text`/`image` context)."""
    d, f = dit_cfg.dim, dit_cfg.ffn_dim
    self_attention = 4 * matmul(tokens, d, d) + 2 * matmul(tokens, d, tokens)
    cross = 2 * matmul(tokens, d, d) + 2 * matmul(text, d, d) + 2 * matmul(tokens, d, text)
    if dit_cfg.variant == "i2v":
        cross += 2 * matmul(image, d, d) + 2 * matmul(tokens, d, image)
    return self_attention + cross + 2 * matmul(tokens, d, f)


def video_tokens(dit_cfg: ml_collections.ConfigDict, grid: tuple[int, int, int]) -> int:
    """Video tokens of one clip of latent `grid` (t, h, w): latent cells / patch volume."""
    pt, ph, pw = dit_cfg.patch_size
    return (grid[0] // pt) * (grid[1] // ph) * (grid[2] // pw)


def attention_kernel_products(remat_policy: str, train: bool) -> int:
    """[L, d] x [d, L]-sized products a flash kernel (splash) executes per head and call, per
    forward pass (`train` False) or train step: the forward computes q k^T and p v (2); the
    backward's dkv kernel recomputes q k^T and computes dV, dP, dK (4), its dq kernel recomputes
    q k^T and computes dP, dQ (3); a rematerialised block (every policy but 'none') runs the
    forward again in the backward pass (2)."""
    if not train:
        return 2
    return 2 + 4 + 3 + (0 if remat_policy == "none" else 2)


def attention_kernel_flops(
    dit_cfg: ml_collections.ConfigDict, grid: tuple[int, int, int], train: bool
) -> float:
    """FLOPs the self-attention kernel of every block executes for one clip: what XLA's cost
    model cannot see in a Pallas kernel (`attention_kernel_products` x 2 L^2 d x layers)."""
    tokens = video_tokens(dit_cfg, grid)
    products = attention_kernel_products(dit_cfg.remat_policy, train)
    return dit_cfg.num_layers * products * matmul(tokens, dit_cfg.dim, tokens)


def dit_forward(
    dit_cfg: ml_collections.ConfigDict, grid: tuple[int, int, int], text: int, image: int
) -> float:
    """Forward FLOPs of the DiT for one clip of latent `grid` (t, h, w) with `text` text and
    `image` CLIP tokens (ignored for t2v); see the module docstring for the formula."""
    pt, ph, pw = dit_cfg.patch_size
    patch = pt * ph * pw
    tokens = video_tokens(dit_cfg, grid)
    d = dit_cfg.dim
    outside = (
        matmul(tokens, patch * dit_cfg.in_channels, d)
        + matmul(tokens, d, patch * dit_cfg.out_channels)
        + matmul(text, dit_cfg.text_dim, d)
        + matmul(text, d, d)
        + matmul(1, dit_cfg.freq_dim, d)
        + matmul(1, d, d)
        + matmul(1, d, MODULATION_VECTORS * d)
    )
    if dit_cfg.variant == "i2v":
        outside += matmul(image, dit_cfg.image_dim, dit_cfg.image_dim)
        outside += matmul(image, dit_cfg.image_dim, d)
    return outside + dit_cfg.num_layers * dit_block_forward(dit_cfg, tokens, text, image)


def compiled_flops(compiled) -> float | None:
    """XLA's FLOPs of one call of an AOT-compiled program, per device (None when the backend
    does not report them); loop bodies are counted once, Pallas kernels as zero."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 (some backends do not implement it)
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def extrapolate_layers(one_layer: float, two_layers: float, num_layers: int) -> float:
    """FLOPs of an N-layer stack from the counts with 1 and 2 layers: F(1) + (N-1)(F(2)-F(1))."""
    return one_layer + (num_layers - 1) * (two_layers - one_layer)


def step_flops_per_device(task, batch, compiled) -> tuple[float | None, str]:
    """(FLOPs of one train step per device, where they come from) for the logged MFU: the
    task's analytic `train_flops(batch)` (global, split over the devices) when it has one
    ('analytic'), else the compiled step's count ('compiler')."""
    analytic = getattr(task, "train_flops", None)
    if analytic is not None:
        return analytic(batch) / jax.device_count(), "analytic"
    return compiled_flops(compiled), "compiler"
