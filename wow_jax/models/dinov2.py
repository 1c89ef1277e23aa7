"""DINOv2 (Oquab et al. 2023), the self-supervised ViT whose features the FM-IDM's paper and the
WoW baseline IDM read, as Flax linen; weights from transformers' `Dinov2Model` releases
(facebook/dinov2-*) through `wow_jax/interop/dinov2_table.py`.

    images [B, H, W, 3] in [-1, 1] -> tokens [B, 1 + (H/p)(W/p), width]
    (H, W multiples of patch_size p; tokens[:, 0] is the class token = HF's pooler_output, the
    rest are the patch tokens in row-major order: `patch_grid` gives [B, H/p, W/p, width])

As transformers' Dinov2Model (eval, no mask tokens): map [-1, 1] -> [0, 1] and normalise with the
ImageNet mean/std (the DINOv2 image processor's), conv patch embedding (with bias), class token,
learned positions for an image_size x image_size input, bicubically interpolated (PyTorch's
`F.interpolate(mode='bicubic', align_corners=False)`, no antialiasing, in float32) to the input's
patch grid when it differs, then pre-norm blocks with layer scale (LayerNorm eps 1e-6, exact
GELU MLP) and a final LayerNorm over every token. No pre-norm, no register tokens.
"""

import einops
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from wow_jax import compiler
from wow_jax.models import vit
from wow_jax.sharding import BATCH, CONV_IN, EMBED, LAYERS, LENGTH

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2 image processor pixel mean (RGB, [0, 1] scale).
IMAGENET_STD = (0.229, 0.224, 0.225)  # DINOv2 image processor pixel std.
NORM_EPS = 1e-6  # LayerNorm epsilon of every DINOv2 release (Dinov2Config.layer_norm_eps).
ACTIVATION = "gelu"  # MLP activation of the released ViT-S/B/L (Dinov2Config.hidden_act).
POS_INIT_STD = 0.02  # Dinov2Config.initializer_range: truncated-normal std of cls / positions.


def interpolate_positions(positions: jnp.ndarray, grid: tuple[int, int]) -> jnp.ndarray:
    """Patch positions [g, g, D] -> [h, w, D] (h, w = grid): HF's interpolate_pos_encoding."""
    if positions.shape[:2] == grid:
        return positions
    rows = jnp.asarray(vit.bicubic_matrix(positions.shape[0], grid[0]))
    cols = jnp.asarray(vit.bicubic_matrix(positions.shape[1], grid[1]))
    return jnp.einsum("oh,hwd,pw->opd", rows, positions.astype(jnp.float32), cols)


def patch_grid(tokens: jnp.ndarray, grid: tuple[int, int]) -> jnp.ndarray:
    """tokens [B, 1 + h*w, D] -> patch tokens [B, h, w, D] (the class token dropped)."""
    return einops.rearrange(tokens[:, 1:], "b (h w) d -> b h w d", h=grid[0], w=grid[1])


class Dinov2(nn.Module):
    """images [B, H, W, 3] in [-1, 1] -> final-LayerNorm tokens [B, 1 + (H/p)(W/p), width]."""

    image_size: int
    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _check(self, images: jnp.ndarray) -> None:
        p = self.patch_size
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % p or images.shape[2] % p:
            raise ValueError(
                f"DINOv2 expects RGB images [B, H, W, 3] in [-1, 1] with H and W multiples of "
                f"config.model.dinov2.patch_size ({p}), got shape {images.shape}; resize or crop"
            )

    def _embed(self, pixels: jnp.ndarray) -> jnp.ndarray:
        """Normalised pixels [B, H, W, 3] -> tokens with positions [B, 1 + h*w, width]."""
        p, g = self.patch_size, self.image_size // self.patch_size
        patches = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, CONV_IN, EMBED)
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (EMBED,)),
            name="patch_embedding",
        )(pixels)
        init = nn.initializers.truncated_normal(POS_INIT_STD)
        cls = self.param(
            "cls_token",
            nn.with_logical_partitioning(init, (EMBED,)),
            (self.width,),
            self.param_dtype,
        )
        positions = self.param(
            "position_embeddings",
            nn.with_logical_partitioning(init, (None, EMBED)),
            (1 + g * g, self.width),
            self.param_dtype,
        )
        grid = patches.shape[1:3]
        patch_pos = interpolate_positions(positions[1:].reshape(g, g, self.width), grid)
        positions = jnp.concatenate([positions[:1], patch_pos.reshape(-1, self.width)], axis=0)
        patches = einops.rearrange(patches, "b h w d -> b (h w) d")
        cls = jnp.broadcast_to(cls.astype(self.dtype), (patches.shape[0], 1, self.width))
        return jnp.concatenate([cls, patches], axis=1) + positions.astype(self.dtype)

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        self._check(images)
        pixels = images.astype(jnp.float32) * 0.5 + 0.5
        pixels = ((pixels - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)).astype(
            self.dtype
        )
        x = nn.with_logical_constraint(self._embed(pixels), (BATCH, LENGTH, EMBED))
        blocks = nn.scan(
            vit.Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.num_layers,
            metadata_params={nn.PARTITION_NAME: LAYERS},
        )(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            activation=ACTIVATION,
            norm_eps=NORM_EPS,
            layer_scale=True,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="blocks",
        )
        x, _ = blocks(x, None)
        return vit.layer_norm(NORM_EPS, self.param_dtype, "norm")(x).astype(self.dtype)


def create(dino_cfg: ml_collections.ConfigDict) -> Dinov2:
    """The ViT described by `config.model.dinov2`."""
    if dino_cfg.image_size % dino_cfg.patch_size or dino_cfg.width % dino_cfg.num_heads:
        raise ValueError(
            f"config.model.dinov2: image_size ({dino_cfg.image_size}) must be a multiple of "
            f"patch_size ({dino_cfg.patch_size}) and width ({dino_cfg.width}) of num_heads "
            f"({dino_cfg.num_heads})"
        )
    return Dinov2(
        image_size=dino_cfg.image_size,
        patch_size=dino_cfg.patch_size,
        width=dino_cfg.width,
        num_layers=dino_cfg.num_layers,
        num_heads=dino_cfg.num_heads,
        mlp_dim=dino_cfg.mlp_dim,
        dtype=jnp.dtype(dino_cfg.dtype),
        param_dtype=jnp.dtype(dino_cfg.param_dtype),
    )


def init_params(dino_cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random 'params', boxed with logical axis names (traceable; `nn.meta.unbox` for arrays)."""
    size = dino_cfg.image_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    return compiler.jit_init(create(dino_cfg).init)(rng, images)["params"]


def abstract_params(dino_cfg: ml_collections.ConfigDict):
    """The boxed 'params' tree as ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda rng: init_params(dino_cfg, rng), jax.random.key(0))
