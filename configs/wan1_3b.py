"""Wan2.1-T2V-1.3B (dim 1536, 30 layers, 12 heads, ffn 8960), 480x832 clips of 81 frames, sampled
as the Wan2.1 repository's generate.py does by default: FlowUniPCMultistepScheduler on its own
sigma grid, 50 steps, shift 5, guidance 5, its negative prompt; DiT and umT5 in bfloat16, VAE in
float32. (Wan2.1's README suggests shift 8-12 and guidance 6 for this model.)
"""

from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    config.data.num_frames, config.data.height, config.data.width = 81, 480, 832
    config.data.batch_size = 8
    config.model.dit.dtype = "bfloat16"
    config.model.dit.remat_policy = "dots_saveable"
    config.model.text.dtype = "bfloat16"
    sample = config.sample
    sample.solver, sample.sigma_grid, sample.timestep_dtype = "unipc", "wan", "float32"
    sample.steps, sample.shift, sample.guidance = 50, 5.0, 5.0
    sample.negative_prompt = base.WAN_NEGATIVE_PROMPT
    sample.image_resize = "wan"  # (Used only if switched to an i2v DiT.)
    return config
