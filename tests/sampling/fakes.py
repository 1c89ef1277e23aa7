"""Small deterministic stand-ins for the DiT, VAE, umT5 and CLIP with the contract signatures
(wow_jax.sampling.models.Models), to test the generation plumbing without the real modules."""

import jax
import jax.numpy as jnp
import numpy as np

from wow_jax.sampling.models import Models

TEXT_LEN = 8


def fake_params(config, seed=0):
    dit, z = config.model.dit, config.model.vae.z_dim
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[0]), jnp.float32)

    return {
        "dit": {
            "w": normal(dit.in_channels, z),
            "b": normal(1, z),
            "t": normal(dit.text_dim, z),
            "c": normal(dit.image_dim, z),
        },
        "vae": {"enc": normal(3, z), "dec": normal(z, 3)},
        "text": {"emb": normal(64, dit.text_dim)},
        "clip": {"proj": normal(3, dit.image_dim)},
    }


def fake_models(config, with_clip=True) -> Models:
    t_stride = 2 ** sum(bool(t) for t in config.model.vae.temporal_downsample)
    s = 2 ** (len(config.model.vae.dim_mult) - 1)

    def dit(p, latents, timesteps, text, tokens):
        cond = jnp.mean(text, axis=1) @ p["t"]
        if tokens is not None:
            cond = cond + jnp.mean(tokens, axis=1) @ p["c"]
        cond = cond + (timesteps / 1000.0)[:, None] * p["b"]
        return jnp.tanh(latents @ p["w"] + cond[:, None, None, None, :])

    def encode(p, video):
        b, t, h, w, c = video.shape
        rest = video[:, 1:].reshape(b, (t - 1) // t_stride, t_stride, h, w, c).mean(2)
        frames = jnp.concatenate([video[:, :1], rest], axis=1)
        pooled = frames.reshape(b, frames.shape[1], h // s, s, w // s, s, c).mean((3, 5))
        return pooled @ p["enc"]

    def decode(p, latents):
        x = jnp.tanh(latents @ p["dec"])
        x = jnp.repeat(jnp.repeat(x, s, axis=2), s, axis=3)
        x = jnp.concatenate([x[:, :1], jnp.repeat(x[:, 1:], t_stride, axis=1)], axis=1)
        ramp = jnp.linspace(-0.3, 0.3, x.shape[1])[None, :, None, None, None]
        return jnp.clip(x + ramp, -1, 1)  # Distinct frames (a GIF writer merges equal ones).

    def text(p, prompts):
        ids = np.zeros((len(prompts), TEXT_LEN), np.int32)
        mask = np.zeros((len(prompts), TEXT_LEN), np.float32)
        for i, prompt in enumerate(prompts):
            codes = [1 + b % 63 for b in prompt.encode()][:TEXT_LEN]
            ids[i, : len(codes)], mask[i, : len(codes)] = codes, 1
        return p["emb"][ids] * mask[..., None]

    def clip(p, images):
        b, h, w, c = images.shape
        patches = images.reshape(b, 2, h // 2, 2, w // 2, c).mean((2, 4)).reshape(b, 4, c)
        return jax.nn.gelu(patches @ p["proj"])

    return Models(
        dit=dit, encode=encode, decode=decode, text=text, clip=clip if with_clip else None
    )
