"""The one conditioning path of training, sampling and the demo: VAE latents, I2V conditioning
latents and umT5 caption states, checked against the model functions they compose."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.data.test_tokenizer import train_spm
from wow_jax.models import text_encoder, vae
from wow_jax.sampling import conditioning, models


def _vae_params(cfg):
    return models.random_params(vae.abstract_params(cfg), seed=0)


def test_encode_video_and_conditioning_latents_are_normalised_vae_means(tiny_config):
    cfg = tiny_config.model.vae
    z = cfg.z_dim
    cfg.latents_mean = tuple(np.linspace(-0.5, 0.5, z).tolist())
    cfg.latents_std = tuple(np.linspace(0.5, 2.0, z).tolist())
    params = _vae_params(cfg)
    video = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 5, 16, 16, 3)), jnp.float32)
    raw = vae.encode(params, video, cfg, chunked=False)
    expected = (raw - jnp.asarray(cfg.latents_mean)) / jnp.asarray(cfg.latents_std)
    got = conditioning.encode_video(params, video, cfg, chunked=False)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    cond = conditioning.conditioning_latents(params, video[:, 0], 5, cfg, chunked=False)
    zeros_after = video.at[:, 1:].set(0.0)
    np.testing.assert_allclose(
        cond, conditioning.encode_video(params, zeros_after, cfg, chunked=False), atol=1e-6
    )
    assert cond.shape == (2, conditioning.latent_frames(5, 4), 2, 2, z)
    channels = conditioning.i2v_condition(cond, 5, 4)
    np.testing.assert_array_equal(channels[..., 4:], cond)


def test_text_encoder_tokenizes_and_runs_umt5(tiny_config, tmp_path):
    text_cfg = tiny_config.model.text
    text_cfg.tokenizer_path = train_spm(tmp_path)
    encoder = conditioning.TextEncoder(text_cfg)
    params = models.random_params(text_encoder.abstract_params(text_cfg), seed=1)
    captions = ["pick up the red block", ""]
    ids, mask = encoder.tokenize(captions)
    assert ids.shape == mask.shape == (2, text_cfg.text_len) and ids.dtype == np.int32
    assert mask[1].sum() == 1 and ids[1, 0] == encoder.tokenizer.eos_id  # '' is just EOS
    expected = text_encoder.create(text_cfg).apply({"params": params}, ids, mask)
    np.testing.assert_allclose(encoder(params, captions), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(encoder.states(params, ids, mask), expected, rtol=1e-6, atol=1e-6)


def test_text_encoder_without_tokenizer_says_which_key(tiny_config):
    text_cfg = tiny_config.model.text
    text_cfg.tokenizer_path = ""
    encoder = conditioning.TextEncoder(text_cfg)
    with pytest.raises(ValueError, match=r"config\.model\.text\.tokenizer_path is empty"):
        encoder.tokenize(["reach"])
