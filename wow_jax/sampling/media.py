"""Reading the conditioning image and writing generated clips (mp4, gif, contact sheet, json).

Frames on the host are uint8 [T, H, W, 3]; model-side video is float in [-1, 1].
"""

import json
import math
import os

import imageio.v3 as iio
import imageio_ffmpeg
import mediapy
import numpy as np
from PIL import Image


def read_image(path: str) -> np.ndarray:
    """Reads an RGB frame -> uint8 [H, W, 3] (sampling/frames.py prepares it for the model)."""
    if not path:
        raise ValueError("no conditioning image given; set --config.sample.image=PATH")
    if not os.path.isfile(path):
        raise ValueError(f"conditioning image {path!r} does not exist; check the path")
    try:
        with Image.open(path) as file:
            return np.asarray(file.convert("RGB"))
    except Image.DecompressionBombError as error:  # Refused before decoding (PIL's pixel cap).
        raise ValueError(
            f"conditioning image {path!r} is too large to decode: {error} (PIL's "
            "Image.MAX_IMAGE_PIXELS guard); downscale it to the clip size first"
        ) from None
    except (OSError, ValueError) as error:  # PIL.UnidentifiedImageError is an OSError.
        raise ValueError(
            f"cannot read conditioning image {path!r} ({type(error).__name__}: {error}); "
            "give a PNG or JPEG file"
        ) from None


def contact_sheet(frames: np.ndarray, max_frames: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> a grid image of up to `max_frames` evenly spaced frames."""
    idx = np.unique(
        np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    )
    picked = frames[idx]
    cols = math.ceil(math.sqrt(len(picked)))
    rows = math.ceil(len(picked) / cols)
    pad = rows * cols - len(picked)
    picked = np.concatenate([picked, np.zeros((pad, *picked.shape[1:]), np.uint8)])
    grid = picked.reshape(rows, cols, *picked.shape[1:])
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * frames.shape[1], cols * frames.shape[2], 3)


def write_outputs(stem: str, frames: np.ndarray, fps: int, sheet_frames: int, info: dict) -> dict:
    """Writes stem.mp4, stem.gif, stem_frames.png and stem.json; returns {kind: path}."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = {
        "mp4": f"{stem}.mp4",
        "gif": f"{stem}.gif",
        "sheet": f"{stem}_frames.png",
        "json": f"{stem}.json",
    }
    mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())  # No system ffmpeg needed.
    mediapy.write_video(paths["mp4"], frames, fps=fps)
    iio.imwrite(paths["gif"], frames, duration=1000.0 / fps, loop=0)
    iio.imwrite(paths["sheet"], contact_sheet(frames, sheet_frames))
    with open(paths["json"], "w") as f:
        json.dump({**info, "files": paths}, f, indent=2)
    return paths
