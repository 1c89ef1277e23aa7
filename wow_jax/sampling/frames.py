"""The conditioning frame of image-to-video, prepared as one of two reference pipelines does it
(config.sample.image_resize):

- 'diffsynth' (DiffSynth-Studio's WanVideoPipeline, which WoW's release runs): the uint8 frame is
  resized to exactly height x width with Pillow's default filter (bicubic, antialiased when
  shrinking; no resize when the size already matches), mapped by x * 2/255 - 1, and CLIP reads
  this resized frame (`encode_image`).
- 'wan' (the Wan2.1 repository's `WanI2V.generate`): the frame is mapped by (x/255 - 0.5)/0.5 at
  its own size; the clip size keeps its aspect ratio r = H/W within max_area = height * width:
  h = round(sqrt(max_area r) // s // p * p) * s (w likewise with 1/r; s the VAE stride, p the
  patch); the VAE reads the frame resized to h x w by PyTorch's bicubic (align_corners=False, no
  antialiasing, values not clipped); CLIP reads the original frame, resized by the same bicubic
  to its image_size (done here, so frames of any size batch together).

    diffsynth_frame(image uint8 [H, W, 3], height, width) -> ConditioningFrame
    wan_frame(image uint8 [H, W, 3], size (h, w), clip_size) -> ConditioningFrame
"""

import dataclasses

import numpy as np
from PIL import Image

from wow_jax.models import vit

IMAGE_RESIZE = ("diffsynth", "wan")  # config.sample.image_resize choices.


@dataclasses.dataclass(frozen=True)
class ConditioningFrame:
    """frame: [h, w, 3] float32 ~[-1, 1], the VAE's input (the clip's first frame);
    clip_frame: [S, S, 3] float32, CLIP's input, or None when CLIP reads `frame`."""

    frame: np.ndarray
    clip_frame: np.ndarray | None


def wan_size(height: int, width: int, max_area: int, stride: int, patch: tuple[int, int]):
    """Wan2.1's clip size (h, w) for a frame of height x width within max_area pixels."""
    aspect = height / width
    lat_h = round(np.sqrt(max_area * aspect) // stride // patch[0] * patch[0])
    lat_w = round(np.sqrt(max_area / aspect) // stride // patch[1] * patch[1])
    return lat_h * stride, lat_w * stride


def torch_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """image [H, W, C] float32 -> [height, width, C] as PyTorch's F.interpolate(mode='bicubic',
    align_corners=False) (no antialiasing; identity at the same size)."""
    rows = vit.bicubic_matrix(image.shape[0], height)
    cols = vit.bicubic_matrix(image.shape[1], width)
    return np.einsum("yh,hwc,xw->yxc", rows, image.astype(np.float32), cols).astype(np.float32)


def diffsynth_frame(image: np.ndarray, height: int, width: int) -> ConditioningFrame:
    """uint8 [H, W, 3] -> DiffSynth's frame [height, width, 3] (`image.resize((width, height))`,
    then `preprocess_image`); CLIP reads the same frame."""
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
    return ConditioningFrame(image.astype(np.float32) * np.float32(2 / 255) - np.float32(1), None)


def wan_frame(image: np.ndarray, size: tuple[int, int], clip_size: int) -> ConditioningFrame:
    """uint8 [H, W, 3] -> Wan2.1's VAE frame [h, w, 3] (size = wan_size(...)) and CLIP frame
    [clip_size, clip_size, 3], both bicubic from the full frame in [-1, 1]."""
    unit = (image.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    return ConditioningFrame(torch_bicubic(unit, *size), torch_bicubic(unit, clip_size, clip_size))
