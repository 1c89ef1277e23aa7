"""Text-to-video and image-to-video generation of one clip for a batch of prompts.

`Generator.generate_clip(images, prompts, seeds, clip_index)`:
  images [B, H, W, 3] in [-1, 1] (I2V; None for T2V) -> video [B, T, H, W, 3] in [-1, 1].
Steps: text states of the prompts and the negative prompt (umT5); for I2V the conditioning frame
followed by T - 1 zero frames is VAE-encoded and joined to Wan's 4-channel frame mask, and CLIP
tokens of the frame are computed when the model has CLIP; noise from each row's seed; the whole
denoising loop (UniPC or Euler, with CFG) in one jitted call; VAE decode.

Noise of row b is normal(fold_in(key(seed_b), clip_index)): a job's output does not depend on
which other jobs share its batch, nor on the device mesh.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from wow_jax import compiler, configuration, sharding
from wow_jax.sampling import conditioning, guidance, schedulers, solvers
from wow_jax.sampling.models import Models


class Generator:
    """Holds the models, their params (placed on `mesh`) and the jitted stages."""

    def __init__(self, config: ml_collections.ConfigDict, params: dict, models: Models, mesh):
        guidance.check_guidance(config.sample.guidance)
        self.config, self.models, self.mesh, self.params = config, models, mesh, params
        self.rules = sharding.rules(config.mesh)
        data, vae = config.data, config.model.vae
        self.variant = config.model.dit.variant
        self.num_frames, self.height, self.width = data.num_frames, data.height, data.width
        self.t_stride = configuration.vae_temporal_stride(vae)
        s = configuration.vae_spatial_stride(vae)
        self.latent_shape = (
            conditioning.latent_frames(self.num_frames, self.t_stride),
            self.height // s,
            self.width // s,
            vae.z_dim,
        )
        for name in ("dit", "vae", "text") + (("clip",) if models.clip else ()):
            if name not in params:
                raise ValueError(
                    f"generation needs '{name}' params, the checkpoint holds {sorted(params)}; "
                    "see docs/generation.md ('Checkpoint layout')"
                )
        self.schedule = schedulers.from_config(config.sample)
        self._bar = None
        self._negative = {}
        self._encode = jax.jit(models.encode)
        self._decode = jax.jit(models.decode)
        self._clip = jax.jit(models.clip) if models.clip else None
        self._denoise = jax.jit(self._denoise_fn)
        self._compiled = {}  # Input signature -> compiled denoising loop (AOT, timed apart).

    # -- stages ------------------------------------------------------------------------------

    def _on_step(self, i):
        del i
        if self._bar is not None:
            self._bar.update(1)

    def _denoise_fn(self, dit_params, seeds, clip_index, cond, text, negative, image_tokens):
        """seeds [B] int32 -> normalized latents [B, t, h, w, z] (one jitted loop)."""
        cfg = self.config.sample

        def noise_of(seed):
            key = jax.random.fold_in(jax.random.key(seed), clip_index)
            return jax.random.normal(key, self.latent_shape, jnp.float32)

        noise = self._shard(jax.vmap(noise_of)(seeds))

        def model_fn(x, t, states):
            reps = x.shape[0] // seeds.shape[0]
            inputs = (
                x if cond is None else jnp.concatenate([x, jnp.tile(cond, (reps, 1, 1, 1, 1))], -1)
            )
            tokens = None if image_tokens is None else jnp.tile(image_tokens, (reps, 1, 1))
            timesteps = jnp.full((x.shape[0],), t, jnp.float32)
            return self.models.dit(dit_params, inputs, timesteps, states, tokens)

        velocity = guidance.guided_velocity(model_fn, text, negative, cfg.guidance)
        return solvers.sample(cfg.solver, velocity, noise, self.schedule, self._on_step)

    def _shard(self, x):
        """Batch-shards x along ('data', 'fsdp') when the batch divides; else replicates."""
        spec = sharding.batch_sharding(self.mesh, x.ndim, self.rules)
        size = int(np.prod([self.mesh.shape[a] for a in ("data", "fsdp")]))
        if x.shape[0] % size:
            spec = NamedSharding(self.mesh, PartitionSpec())
        return jax.lax.with_sharding_constraint(x, spec)

    def encode_text(self, prompts: list[str]) -> jax.Array:
        """Text states [B, L, D] of the prompts (the empty prompt is valid)."""
        return self.models.text(self.params["text"], list(prompts))

    def negative_states(self, batch: int) -> jax.Array:
        if batch not in self._negative:
            self._negative[batch] = self.encode_text([self.config.sample.negative_prompt] * batch)
        return self._negative[batch]

    def condition(self, images, clip_images=None):
        """images [B, H, W, 3] in [-1, 1] -> (cond [B, t, h, w, 4 + z], image tokens or None);
        CLIP reads clip_images [B, S, S, 3] when given (frames.py, 'wan'), else `images`."""
        images = jnp.asarray(images, jnp.float32)
        video = conditioning.conditioning_video(images, self.num_frames)
        latents = self._encode(self.params["vae"], video)
        cond = conditioning.i2v_condition(latents, self.num_frames, self.t_stride)
        if not self._clip:
            return cond, None
        clip_view = images if clip_images is None else jnp.asarray(clip_images, jnp.float32)
        return cond, self._clip(self.params["clip"], clip_view)

    def reconstruct(self, video) -> np.ndarray:
        """The latent space's round trip: video [B, T, H, W, 3] in [-1, 1] -> VAE encode ->
        decode -> [B, T, H, W, 3] in [-1, 1] (the best any latent world model can render)."""
        with sharding.activate(self.mesh, self.rules):
            latents = self._encode(self.params["vae"], jnp.asarray(video, jnp.float32))
            video = self._decode(self.params["vae"], latents)
            video = np.asarray(multihost_utils.process_allgather(video, tiled=True), np.float32)
        return np.clip(video, -1.0, 1.0)

    def _check_inputs(self, images, prompts, seeds):
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one each")
        if self.variant == "t2v":
            if images is not None:
                raise ValueError(
                    "a conditioning image was given but config.model.dit.variant is 't2v'; "
                    "use an i2v model (variant 'i2v') or drop the image"
                )
            return
        if images is None:
            raise ValueError("the i2v model needs a conditioning image per prompt (sample.image)")
        expected = (len(prompts), self.height, self.width, 3)
        if tuple(np.shape(images)) != expected:
            raise ValueError(f"images must be {expected} (B, H, W, RGB), got {np.shape(images)}")
        if not np.issubdtype(np.asarray(images).dtype, np.floating):
            raise ValueError(
                f"images must be float in [-1, 1], got {np.asarray(images).dtype}; convert uint8 "
                "frames with x / 127.5 - 1"
            )

    # -- one clip ----------------------------------------------------------------------------

    def generate_clip(
        self, images, prompts, seeds, clip_index: int = 0, bar=None, clip_images=None
    ):
        """-> (video np.float32 [B, T, H, W, 3] in [-1, 1], timings in seconds); clip_images:
        CLIP's view of the frames (see `condition`)."""
        self._check_inputs(images, prompts, seeds)
        timings, start = {}, time.perf_counter()
        with sharding.activate(self.mesh, self.rules):
            text = jax.block_until_ready(self.encode_text(prompts))
            negative = self.negative_states(len(prompts))
            timings["text_s"] = time.perf_counter() - start
            start = time.perf_counter()
            cond, tokens = (None, None) if images is None else self.condition(images, clip_images)
            jax.block_until_ready((cond, tokens))
            timings["condition_s"] = time.perf_counter() - start
            start = time.perf_counter()
            seeds = jnp.asarray(np.asarray(seeds, np.uint32).astype(np.int32))
            args = (self.params["dit"], seeds, jnp.int32(clip_index), cond, text, negative, tokens)
            signature = (
                jax.tree.structure(args),
                tuple((x.shape, x.dtype) for x in jax.tree.leaves(args)),
            )
            if signature not in self._compiled:
                self._compiled[signature] = self._denoise.lower(*args).compile(
                    compiler.program_options()
                )
                timings["compile_s"] = time.perf_counter() - start
            start = time.perf_counter()
            self._bar = bar
            latents = jax.block_until_ready(self._compiled[signature](*args))
            jax.effects_barrier()
            self._bar = None
            timings["denoise_s"] = time.perf_counter() - start
            timings["step_s"] = timings["denoise_s"] / self.config.sample.steps
            start = time.perf_counter()
            video = self._decode(self.params["vae"], latents)
            video = np.asarray(multihost_utils.process_allgather(video, tiled=True), np.float32)
            timings["decode_s"] = time.perf_counter() - start
        if video.shape[1:] != (self.num_frames, self.height, self.width, 3):
            raise ValueError(
                f"the VAE decoded {video.shape[1:]}, expected "
                f"{(self.num_frames, self.height, self.width, 3)} (T, H, W, RGB)"
            )
        return np.clip(video, -1.0, 1.0), timings
