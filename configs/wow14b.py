"""WoW-1-Wan-14B: the Wan2.1-I2V-14B DiT post-trained on robot data, sampled as WoW's release
does (DiffSynth-Studio's WanVideoPipeline): FlowMatchScheduler with Euler steps on DiffSynth's
sigma grid, 50 steps, shift 5, guidance 5, negative prompt "low quality, distorted, ugly, bad
anatomy", seed 42, timesteps fed to the DiT in bfloat16, the frame resized as DiffSynth does.
Precision: each component as its reference runs it (DiT and umT5 bfloat16, VAE float32, CLIP
float32 as WoW's pipeline loads it); docs/generation.md gives the cost of a bfloat16 VAE.
"""

from configs import base, wan_i2v14b


def get_config(arg=None):
    del arg
    config = wan_i2v14b.get_config()
    config.model.clip.dtype = "float32"
    config.data.batch_size = 128  # 2 clips per chip on v5p:4x4x4 (64 chips, mesh fsdp=-1 = 64).
    dit = config.model.dit
    # Recompute each block; its f32 input (the per-layer residual the scan keeps, 25 GiB per
    # clip) goes to host memory: 2 clips per v5p chip take 41.5 GiB, not 104.9 (docs/scaling.md).
    dit.remat_policy = "offload_block_input"
    dit.attention = "auto"  # splash on TPU, cuDNN flash on GPU, xla on CPU (resolve_kernels).
    config.train.learning_rate = 1e-5
    sample = config.sample
    sample.solver, sample.sigma_grid, sample.timestep_dtype = "euler", "diffsynth", "bfloat16"
    sample.steps, sample.shift, sample.guidance = 50, 5.0, 5.0
    sample.negative_prompt = base.WOW_NEGATIVE_PROMPT
    sample.seed = 42
    sample.image_resize = "diffsynth"
    sample.param_dtype = "bfloat16"  # Generation holds the 14B DiT and umT5 in bf16.
    return config
