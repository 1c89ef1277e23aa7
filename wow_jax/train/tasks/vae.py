"""VAE task: train the Wan causal 3D VAE as a beta-VAE on clips.

params = {'vae'}. Batch: 'video' [B, T, H, W, 3] in [-1, 1], T = 1 + 4k.
Loss = mean squared reconstruction error of decode(z ~ q(z|video)) (unclamped) +
config.train.kl_weight * KL(q(z|video) || N(0, I)) averaged over latent cells.
(Wan2.1's VAE was trained with L1 + perceptual + GAN terms as well; MSE + KL is enough for the
demo's small simulator clips and keeps the objective a pure function.)
"""

import jax.numpy as jnp
import ml_collections


class VAETask:
    name = "vae"
    frozen_pattern = ""  # config.train.freeze='auto': everything trains.

    def __init__(self, config: ml_collections.ConfigDict):
        from wow_jax.models import vae

        self.lib = vae
        self.vae_cfg = config.model.vae
        self.kl_weight = config.train.kl_weight

    def init_params(self, rng):
        return {"vae": self.lib.init_params(self.vae_cfg, rng)}

    def loss(self, params, batch, rng):
        video = batch["video"]
        mean, logvar = self.lib.encode_distribution(
            params["vae"], video, self.vae_cfg, chunked=False
        )
        z = self.lib.sample_latents(rng, mean, logvar)
        recon = self.lib.decode(params["vae"], z, self.vae_cfg, chunked=False, clamp=False)
        mse = jnp.mean(jnp.square(recon.astype(jnp.float32) - video.astype(jnp.float32)))
        cells = mean.size // mean.shape[0]
        kl = jnp.mean(self.lib.kl_divergence(mean, logvar)) / cells
        return mse + self.kl_weight * kl, {"mse": mse, "kl": kl, "latent_std": jnp.std(mean)}

    def tokens_per_sample(self, batch) -> int:
        """Pixels per clip (frames x height x width)."""
        t, h, w = batch["video"].shape[1:4]
        return int(t * h * w)
