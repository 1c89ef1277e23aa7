"""Wan2.1-I2V-14B as the Wan2.1 repository runs it (generate.py, wan/image2video.py, wan/configs):
480x832 clips of 81 frames, FlowUniPCMultistepScheduler on its own sigma grid, 40 steps, shift 3
(480p I2V), guidance 5, the I2V negative prompt, the frame resized by Wan's max-area rule, the
DiT and umT5 in bfloat16, the VAE in float32, CLIP in float16 (clip_dtype).
"""

from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    dit = config.model.dit
    dit.variant, dit.in_channels = "i2v", 36
    dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 5120, 13824, 40, 40
    dit.dtype = "bfloat16"
    dit.remat_policy = "full"
    config.model.text.dtype = "bfloat16"
    config.model.clip.dtype = "float16"
    config.data.num_frames, config.data.height, config.data.width = 81, 480, 832
    sample = config.sample
    sample.solver, sample.sigma_grid, sample.timestep_dtype = "unipc", "wan", "float32"
    sample.steps, sample.shift, sample.guidance = 40, 3.0, 5.0
    sample.negative_prompt = base.WAN_I2V_NEGATIVE_PROMPT
    sample.image_resize = "wan"
    return config
