"""World-model task: flow-matching training of the Wan DiT (T2V or I2V) on robot clips.

params = {'dit': trained, 'vae', 'text', 'clip' (i2v): frozen by config.train.freeze}; all four
are kept in the state so every checkpoint is a complete generation checkpoint.
With LoRA (config.train.lora.rank > 0) params also hold 'lora', the DiT's adapters
(wow_jax/models/lora.py): the only trained subtree; the others are `frozen_keys`, held by the loop
outside the train state (never checkpointed, no gradients).

Batch (global jax.Arrays, B = batch), each group from a cache or computed online:
    latents:  'latents' [B, t, h, w, z] normalised (+ 'cond_latents' [B, t, h, w, z] for i2v),
              or 'video' [B, T, H, W, 3] in [-1, 1] encoded by the frozen VAE (posterior mean)
    text:     'text_states' [B, L, D], or 'token_ids' / 'text_mask' [B, L] int32 run through umT5
    image:    (i2v) 'image_tokens' [B, N, E], or CLIP of 'first_frame' [B, H, W, 3] (default
              video[:, 0])

Loss: x_t = (1 - s) x_0 + s noise with shifted sigmas, DiT(concat[x_t, mask, cond], 1000 s, text,
image) regressed onto noise - x_0 (see flow_matching.py). With probability
config.train.text_dropout a sample's caption is replaced by the empty prompt (EOS only), the
unconditional branch of classifier-free guidance.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wow_jax import configuration, flops, models
from wow_jax.models import lora as lora_lib
from wow_jax.sampling import conditioning
from wow_jax.train import flow_matching as fm

LORA_DROPOUT_STREAM = 2  # fold_in index of the adapter-dropout key (the split keys stay as before).
T5_EOS_ID = 1  # umT5 '</s>': an empty caption tokenizes to [EOS, pad, ...].


def empty_prompt_tokens(text_len: int, eos_id: int = T5_EOS_ID):
    """(ids [L], mask [L]) of the empty caption, as Tokenizer.encode(['']) returns."""
    ids = np.zeros((text_len,), np.int32)
    mask = np.zeros((text_len,), np.int32)
    ids[0], mask[0] = eos_id, 1
    return ids, mask


class WorldModelTask:
    name = "world_model"
    frozen_pattern = "^(vae|text|clip)/"  # config.train.freeze='auto': only the DiT trains.

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        null_tokens: tuple[np.ndarray, np.ndarray] | None = None,
        null_text_states: np.ndarray | None = None,
        components: tuple[str, ...] = ("dit", "vae", "text", "clip"),
    ):
        from wow_jax.models import clip, dit

        self.config = config
        self.train_cfg = config.train
        self.dit_cfg, self.vae_cfg = config.model.dit, config.model.vae
        self.text_cfg, self.clip_cfg = config.model.text, config.model.clip
        self.i2v = self.dit_cfg.variant == "i2v"
        self.lora_cfg = config.train.lora
        self.dit = dit.create(self.dit_cfg, self.lora_cfg)
        self.text = conditioning.TextEncoder(self.text_cfg)
        self.clip = clip.create(self.clip_cfg) if self.i2v else None
        if null_tokens is None and self.text.tokenizer is not None:
            ids, mask = self.text.tokenize([""])
            null_tokens = ids[0], mask[0]
        self.null_tokens = null_tokens or empty_prompt_tokens(self.text_cfg.text_len)
        self.null_text_states = null_text_states
        if "dit" not in components:
            raise ValueError(f"world-model components must include 'dit', got {components}")
        self.components = tuple(c for c in components if c != "clip" or self.i2v)
        # Top-level params the loop keeps out of the train state: the whole base under LoRA.
        self.frozen_keys = self.components if self.lora_cfg.rank else ()
        self.t_stride = configuration.vae_temporal_stride(self.vae_cfg)
        self.s_stride = configuration.vae_spatial_stride(self.vae_cfg)

    def init_params(self, rng):
        """Boxed params of `components` ({'dit', 'vae', 'text'(, 'clip' for i2v)} by default):
        random init; the loop replaces frozen ones with trained weights (checkpoint.init_from
        or `initial_params`). Drop components a cached batch never needs to save memory."""
        names = ("dit", "vae", "text", "clip", lora_lib.COLLECTION)
        rngs = dict(zip(names, jax.random.split(rng, len(names)), strict=True))
        params = {
            name: models.load(name).init_params(models.model_config(self.config, name), rngs[name])
            for name in self.components
        }
        if self.lora_cfg.rank:
            params[lora_lib.COLLECTION] = models.load("dit").init_adapters(
                self.dit_cfg, self.lora_cfg, rngs[lora_lib.COLLECTION]
            )
        return params

    def _frozen(self, params, name: str, needed_for: str):
        if name not in params:
            raise ValueError(
                f"the batch has no {needed_for}, so the world model needs its frozen {name!r} "
                f"params, but the task was built with components={self.components}; add "
                f"{name!r} or put {needed_for} in the batch (a cache)"
            )
        return jax.lax.stop_gradient(params[name])

    # ---------------------------------------------------------------- conditioning pieces

    def latents(self, params, batch):
        """(x_0, cond_latents or None), both normalised [B, t, h, w, z]."""
        if "latents" in batch:
            x0 = batch["latents"]
            cond = batch.get("cond_latents")
            if self.i2v and cond is None:
                raise ValueError(
                    "an i2v latent-cache batch needs 'cond_latents' (VAE latents of the first "
                    "frame followed by zeros); write them with the cache or pass 'video'"
                )
            return x0, cond
        if "video" not in batch:
            raise ValueError(
                f"world-model batch needs 'latents' (cache) or 'video', got keys {sorted(batch)}"
            )
        vae_params = self._frozen(params, "vae", "'latents'")
        video = batch["video"]
        x0 = conditioning.encode_video(vae_params, video, self.vae_cfg, chunked=False)
        cond = None
        if self.i2v:
            cond = conditioning.conditioning_latents(
                vae_params, video[:, 0], video.shape[1], self.vae_cfg, chunked=False
            )
        return x0, cond

    def text_states(self, params, batch, drop):
        """[B, L, D] caption states; rows with drop=True get the empty-prompt states."""
        if "text_states" in batch:
            states = batch["text_states"]
            if self.train_cfg.text_dropout > 0:
                if self.null_text_states is None:
                    raise ValueError(
                        "text_dropout > 0 with cached 'text_states' needs the empty-prompt "
                        "embedding: pass null_text_states (the cache's entry for '')"
                    )
                null = jnp.asarray(self.null_text_states, states.dtype)[None]
                states = jnp.where(drop[:, None, None], null, states)
            return states
        ids, mask = batch["token_ids"], batch["text_mask"]
        null_ids, null_mask = (jnp.asarray(x)[None] for x in self.null_tokens)
        ids = jnp.where(drop[:, None], null_ids, ids)
        mask = jnp.where(drop[:, None], null_mask, mask)
        text_params = self._frozen(params, "text", "'text_states'")
        return self.text.states(text_params, ids, mask)

    def image_tokens(self, params, batch):
        if not self.i2v:
            return None
        if "image_tokens" in batch:
            return batch["image_tokens"]
        first = batch["first_frame"] if "first_frame" in batch else batch["video"][:, 0]
        # The CLIP module resizes to its image_size itself (Wan's bicubic), exactly as generation.
        return self.clip.apply({"params": self._frozen(params, "clip", "'image_tokens'")}, first)

    def model_input(self, x_t, cond, num_frames):
        if not self.i2v:
            return x_t
        channels = conditioning.i2v_condition(cond, num_frames, self.t_stride)
        return jnp.concatenate([x_t, channels.astype(x_t.dtype)], axis=-1)

    # ---------------------------------------------------------------- task interface

    def loss(self, params, batch, rng):
        drop_rng, fm_rng = jax.random.split(rng)
        dropout_rng = jax.random.fold_in(rng, LORA_DROPOUT_STREAM)
        x0, cond = self.latents(params, batch)
        x0 = x0.astype(jnp.float32)
        drop = jax.random.bernoulli(drop_rng, self.train_cfg.text_dropout, (x0.shape[0],))
        text = self.text_states(params, batch, drop)
        image = self.image_tokens(params, batch)
        noisy = fm.noisy_inputs(fm_rng, x0, self.train_cfg)
        num_frames = 1 + (x0.shape[1] - 1) * self.t_stride
        inputs = self.model_input(noisy["x_t"], cond, num_frames)
        variables = {"params": params["dit"]}
        if lora_lib.COLLECTION in params:
            variables[lora_lib.COLLECTION] = params[lora_lib.COLLECTION]
        velocity = self.dit.apply(
            variables, inputs, noisy["timesteps"], text, image, rngs={"dropout": dropout_rng}
        )
        loss = fm.weighted_mse(velocity, noisy["target"], noisy["weight"])
        return loss, {"sigma_mean": jnp.mean(noisy["sigma"]), "text_dropped": jnp.mean(drop)}

    def _latent_grid(self, batch) -> tuple[int, int, int]:
        if "latents" in batch:
            return tuple(batch["latents"].shape[1:4])
        frames, height, width = batch["video"].shape[1:4]
        t = (frames - 1) // self.t_stride + 1
        return t, height // self.s_stride, width // self.s_stride

    def tokens_per_sample(self, batch) -> int:
        """DiT tokens per clip: latent cells / patch volume."""
        return flops.video_tokens(self.dit_cfg, self._latent_grid(batch))

    def train_flops(self, batch) -> float:
        """Model FLOPs of one train step of the whole batch: 3 x the DiT forward per clip
        (wow_jax.flops; the frozen VAE / umT5 / CLIP are not counted)."""
        text = (batch["text_states"] if "text_states" in batch else batch["token_ids"]).shape[1]
        image = 0
        if self.i2v:
            image = (
                batch["image_tokens"].shape[1]
                if "image_tokens" in batch
                else 1 + (self.clip_cfg.image_size // self.clip_cfg.patch_size) ** 2
            )
        forward = flops.dit_forward(self.dit_cfg, self._latent_grid(batch), text, image)
        return flops.TRAIN_MULTIPLIER * forward * jax.tree.leaves(batch)[0].shape[0]
