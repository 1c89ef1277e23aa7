"""Wan2.1-T2V-1.3B: dim 1536, 30 layers, 12 heads, ffn 8960, 480x832 clips of 81 frames."""

from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    config.data.num_frames, config.data.height, config.data.width = 81, 480, 832
    config.data.batch_size = 8
    config.model.dit.dtype = "bfloat16"
    config.model.dit.remat_policy = "dots_saveable"
    config.sample.steps, config.sample.guidance, config.sample.shift = 50, 5.0, 5.0
    return config
