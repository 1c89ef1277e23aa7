"""The conditioning frame as DiffSynth's WanVideoPipeline and the Wan2.1 repository prepare it."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wow_jax.sampling import frames


def image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def diffsynth_reference(array, height, width):
    """WanVideoPipeline.encode_image + BasePipeline.preprocess_image (DiffSynth-Studio at
    3edf3583b1f08944cee837b94d9f84d669c2729c): `image.resize((width, height))` with Pillow's
    default filter, then np.array(image, float32) * (2 / 255) - 1; CLIP reads the same tensor."""
    resized = Image.fromarray(array).resize((width, height))
    return np.array(resized, dtype=np.float32) * (2 / 255) - 1


def wan_reference(array, max_area, clip_size, vae_stride=(4, 8, 8), patch_size=(1, 2, 2)):
    """WanI2V.generate (Wan2.1 at 9737cba9c1c3c4d04b33fcad41c111989865d315) up to the VAE input,
    and CLIPModel.visual's resize: TF.to_tensor (uint8 -> float32 / 255), sub(0.5).div(0.5), the
    max-area size, F.interpolate(mode='bicubic') of the full image for both."""
    img = torch.from_numpy(array).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    img = img.sub_(0.5).div_(0.5)
    h, w = img.shape[1:]
    aspect_ratio = h / w
    lat_h = round(
        np.sqrt(max_area * aspect_ratio) // vae_stride[1] // patch_size[1] * patch_size[1]
    )
    lat_w = round(
        np.sqrt(max_area / aspect_ratio) // vae_stride[2] // patch_size[2] * patch_size[2]
    )
    h, w = lat_h * vae_stride[1], lat_w * vae_stride[2]
    vae_in = F.interpolate(img[None], size=(h, w), mode="bicubic")[0]
    clip_in = F.interpolate(img[None], size=(clip_size,) * 2, mode="bicubic", align_corners=False)
    return vae_in.permute(1, 2, 0).numpy(), clip_in[0].permute(1, 2, 0).numpy()


# issue 16: 'diffsynth' equals DiffSynth's resize and scaling exactly (and leaves CLIP the frame).
@pytest.mark.parametrize("size", [(40, 72), (32, 48), (96, 64)])
def test_diffsynth_frame_matches_diffsynth(size):
    array = image(*size)
    got = frames.diffsynth_frame(array, 32, 48)
    np.testing.assert_array_equal(got.frame, diffsynth_reference(array, 32, 48))
    assert got.frame.dtype == np.float32 and got.clip_frame is None


# issue 16: 'wan' equals Wan2.1's max-area size, torch bicubic and CLIP on the original frame.
@pytest.mark.parametrize("size", [(40, 72), (32, 48), (60, 30), (17, 100)])
def test_wan_frame_matches_wan_repository(size):
    array, max_area, clip_size = image(*size), 32 * 48, 28
    vae_in, clip_in = wan_reference(array, max_area, clip_size)
    target = frames.wan_size(*size, max_area, 8, (2, 2))
    got = frames.wan_frame(array, target, clip_size)
    assert got.frame.shape == vae_in.shape
    np.testing.assert_allclose(got.frame, vae_in, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.clip_frame, clip_in, rtol=0, atol=1e-5)
    if size == (32, 48):  # Same size: no resampling at all.
        np.testing.assert_array_equal(got.frame, vae_in)


def test_wan_size_keeps_the_aspect_ratio_within_the_area():
    # As Wan2.1 computes it: sqrt(399360 * (480 / 832)) = 479.99999999999994 in float64, so a
    # 480x832 frame makes a 464x832 clip there (and here, with image_resize='wan').
    assert frames.wan_size(480, 832, 480 * 832, 8, (2, 2)) == (464, 832)
    assert frames.wan_size(720, 1280, 480 * 832, 8, (2, 2)) == (464, 832)  # 16:9.
    assert frames.wan_size(832, 480, 480 * 832, 8, (2, 2)) == (832, 480)
    h, w = frames.wan_size(600, 600, 480 * 832, 8, (2, 2))
    assert (h, w) == (624, 624) and h * w <= 480 * 832 and math.gcd(h, 16) == 16


def test_the_two_resizes_differ_when_shrinking():
    array = image(96, 144)
    stretched = frames.diffsynth_frame(array, 32, 48).frame  # Antialiased (Pillow).
    wan = frames.wan_frame(array, (32, 48), 28).frame  # No antialiasing (torch).
    assert np.abs(stretched - wan).max() > 0.1
