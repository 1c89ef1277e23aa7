"""WoW-1-Wan-14B: the Wan2.1-I2V-14B DiT post-trained on robot data (480x832, 81 frames,
50 steps, guidance 5, shift 5), with the Wan2.1 VAE, umT5-XXL and CLIP ViT-H/14 encoders.
"""

from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    dit = config.model.dit
    dit.variant, dit.in_channels = "i2v", 36
    dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 5120, 13824, 40, 40
    dit.dtype = "bfloat16"
    # Recompute each block; its f32 input (the per-layer residual the scan keeps, 25 GiB per
    # clip) goes to host memory: 2 clips per v5p chip take 41.5 GiB, not 104.9 (docs/scaling.md).
    dit.remat_policy = "offload_block_input"
    dit.attention = "auto"  # splash on TPU, cuDNN flash on GPU, xla on CPU (resolve_kernels).
    config.model.vae.dtype = "bfloat16"
    config.model.text.dtype = "bfloat16"
    config.model.clip.dtype = "bfloat16"
    config.data.num_frames, config.data.height, config.data.width = 81, 480, 832
    config.data.batch_size = 128  # 2 clips per chip on v5p:4x4x4 (64 chips, mesh fsdp=-1 = 64).
    config.train.learning_rate = 1e-5
    config.sample.steps, config.sample.guidance, config.sample.shift = 50, 5.0, 5.0
    config.sample.param_dtype = "bfloat16"  # Inference holds the 14B DiT (and encoders) in bf16.
    return config
