"""The CLIP vision tower Wan2.1 image-to-video conditions on, as Flax linen.

Wan2.1-I2V (and WoW-1-Wan-14B) encode the first frame with the visual tower of open-clip
XLM-RoBERTa-large-ViT-H/14 (`wan/modules/clip.py`) and feed the *penultimate* block's tokens
(`visual(x, use_31_block=True)`: no post-norm, no head) into the DiT's `img_emb`.

    images [B, H, W, 3] in [-1, 1] -> tokens [B, 1 + (image_size/patch)^2, width]

Preprocessing (Wan's `CLIPModel.visual`): bicubic resize to image_size x image_size (PyTorch's
`F.interpolate(mode='bicubic', align_corners=False)`: cubic kernel a=-0.75, no antialiasing),
map [-1, 1] -> [0, 1], normalise with the OpenAI CLIP mean/std. Then a ViT: conv patch embedding
(no bias), class token, learned positions, pre-LayerNorm, then pre-norm blocks (LayerNorm ->
multi-head self-attention -> LayerNorm -> MLP with exact GELU). The module holds and runs the
first `num_layers - 1` blocks; the last block, post-norm and projection head of the checkpoint
are never used by Wan and are not loaded.
"""

import einops
import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from wow_jax import compiler
from wow_jax.models import vit
from wow_jax.sharding import BATCH, CONV_IN, EMBED, LAYERS, LENGTH

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP pixel mean (RGB, [0, 1] scale).
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP pixel std.
NORM_EPS = 1e-5  # LayerNorm epsilon of the open-clip ViT.


def preprocess(images: jnp.ndarray, image_size: int) -> jnp.ndarray:
    """images [B, H, W, 3] in [-1, 1] -> CLIP-normalised pixels [B, S, S, 3] (S = image_size)."""
    images = images.astype(jnp.float32)
    _, height, width, _ = images.shape
    if (height, width) != (image_size, image_size):
        rows = jnp.asarray(vit.bicubic_matrix(height, image_size))
        cols = jnp.asarray(vit.bicubic_matrix(width, image_size))
        images = jnp.einsum("oh,bhwc,pw->bopc", rows, images, cols)
    pixels = images * 0.5 + 0.5
    return (pixels - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


class CLIPVision(nn.Module):
    """images [B, H, W, 3] in [-1, 1] -> penultimate-block tokens [B, 1 + (S/p)^2, width]."""

    image_size: int
    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"CLIP expects RGB images [B, H, W, 3] in [-1, 1], got shape {images.shape}"
            )
        pixels = preprocess(images, self.image_size).astype(self.dtype)
        p, grid = self.patch_size, self.image_size // self.patch_size
        patches = nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, CONV_IN, EMBED)
            ),
            name="patch_embedding",
        )(pixels)
        init = nn.initializers.normal(self.width**-0.5)
        cls = self.param(
            "cls_embedding",
            nn.with_logical_partitioning(init, (EMBED,)),
            (self.width,),
            self.param_dtype,
        )
        positions = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(init, (None, EMBED)),
            (1 + grid * grid, self.width),
            self.param_dtype,
        )
        patches = einops.rearrange(patches, "b h w d -> b (h w) d")
        cls = jnp.broadcast_to(cls.astype(self.dtype), (patches.shape[0], 1, self.width))
        x = jnp.concatenate([cls, patches], axis=1) + positions.astype(self.dtype)
        x = vit.layer_norm(NORM_EPS, self.param_dtype, "pre_norm")(x).astype(self.dtype)
        x = nn.with_logical_constraint(x, (BATCH, LENGTH, EMBED))
        blocks = nn.scan(
            vit.Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            length=self.num_layers - 1,  # Wan's use_31_block: the penultimate block's output.
            metadata_params={nn.PARTITION_NAME: LAYERS},
        )(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            activation=self.activation,
            norm_eps=NORM_EPS,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="blocks",
        )
        x, _ = blocks(x, None)
        return x


def create(clip_cfg: ml_collections.ConfigDict) -> CLIPVision:
    """The vision tower described by `config.model.clip`."""
    if clip_cfg.image_size % clip_cfg.patch_size or clip_cfg.num_layers < 2:
        raise ValueError(
            f"config.model.clip: image_size ({clip_cfg.image_size}) must be a multiple of "
            f"patch_size ({clip_cfg.patch_size}) and num_layers ({clip_cfg.num_layers}) >= 2 "
            "(the penultimate block's tokens are used)"
        )
    if clip_cfg.activation not in vit.ACTIVATIONS:
        raise ValueError(
            f"config.model.clip.activation must be one of {list(vit.ACTIVATIONS)}, got "
            f"{clip_cfg.activation!r}"
        )
    return CLIPVision(
        image_size=clip_cfg.image_size,
        patch_size=clip_cfg.patch_size,
        width=clip_cfg.width,
        num_layers=clip_cfg.num_layers,
        num_heads=clip_cfg.num_heads,
        mlp_dim=clip_cfg.mlp_dim,
        activation=clip_cfg.activation,
        dtype=jnp.dtype(clip_cfg.dtype),
        param_dtype=jnp.dtype(clip_cfg.param_dtype),
    )


def init_params(clip_cfg: ml_collections.ConfigDict, rng: jax.Array):
    """Random 'params', boxed with logical axis names (traceable; `nn.meta.unbox` for arrays)."""
    size = clip_cfg.image_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    return compiler.jit_init(create(clip_cfg).init)(rng, images)["params"]


def abstract_params(clip_cfg: ml_collections.ConfigDict):
    """The boxed 'params' tree as ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda rng: init_params(clip_cfg, rng), jax.random.key(0))
