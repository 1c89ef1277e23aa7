"""The full-size Meta-World benchmark (mode 'demo', wow_jax/demo.py) on AVDC's 11 tasks (Ko et
al. 2023, "Learning to Act from Actionless Videos through Dense Correspondences": 43.1% mean
success with video + flow-derived actions, UniPi 6.1%, BC-Scratch 16.2%): collect expert
episodes, train the VAE, the image-to-video world model and the FM-IDM, imagine held-out clips
and run imagine-then-act in closed loop against the IDM replay, expert, random and zero policies.
Meant for a GPU or TPU (hours); AVDC-like resolution (128x128) and data size (25 episodes per
task, one camera: AVDC used 5 per task from each of 3 cameras). `configs/metaworld.py:reduced`
is the same pipeline at test size (tests/test_metaworld_config.py runs its world-model stage
sharded on 8 simulated devices).
"""

from configs import demo

AVDC_TASKS = (
    "door-open-v3",
    "door-close-v3",
    "basketball-v3",
    "shelf-place-v3",
    "button-press-v3",
    "button-press-topdown-v3",
    "faucet-close-v3",
    "faucet-open-v3",
    "handle-press-v3",
    "hammer-v3",
    "assembly-v3",
)


def get_config(arg=None):
    config = demo.get_config()

    data = config.data
    data.tasks = AVDC_TASKS
    data.episodes_per_task, data.episode_length = 25, 200
    # 17 frames 8 env steps apart span 128 steps: most of an expert episode per clip.
    data.num_frames, data.frame_stride, data.height, data.width = 17, 8, 128, 128
    data.batch_size = 32

    dit = config.model.dit
    dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 512, 2048, 8, 12
    dit.text_dim, dit.image_dim, dit.rope_max_len = 256, 256, 1024
    # Wan's VAE layout (8x spatial, 4x temporal): 128x128 -> 16x16 latents, 2x2 patches; the
    # i2v frame mask then has 4 channels (in_channels 16 + 4 + 16).
    dit.in_channels, dit.patch_size = 36, (1, 2, 2)
    vae = config.model.vae
    vae.base_dim, vae.dim_mult, vae.num_res_blocks = 64, (1, 2, 4, 4), 2
    vae.temporal_downsample = (False, True, True)
    text = config.model.text
    text.dim, text.ffn_dim, text.num_heads, text.head_dim, text.num_layers = 256, 512, 4, 64, 4
    clip = config.model.clip
    clip.image_size, clip.width, clip.num_layers, clip.num_heads, clip.mlp_dim = 112, 256, 6, 4, 512
    config.model.idm.width, config.model.idm.motion_width = 32, 32

    config.demo.clips, config.demo.heldout = 4096, 32
    config.demo.vae_steps, config.demo.vae_crop = 20000, 64
    config.demo.idm_steps = 20000
    config.train.steps, config.train.warmup_steps, config.train.learning_rate = 50000, 1000, 2e-4
    config.train.log_every, config.train.eval_every = 100, 2000
    config.checkpoint.save_every = 2000
    config.sample.steps = 30
    config.idm.frame_gap, config.idm.heldout_episodes = 1, 8
    config.evaluate.episodes_per_task, config.evaluate.batch = 25, 25
    config.evaluate.max_steps = 500  # Meta-World's own episode limit.

    if arg == "reduced":
        data.tasks = AVDC_TASKS[:2]
        data.episodes_per_task, data.episode_length = 2, 24
        data.num_frames, data.frame_stride, data.height, data.width = 5, 2, 32, 32
        data.batch_size = 8
        dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 64, 128, 2, 2
        dit.text_dim, dit.image_dim = 64, 64
        vae.base_dim, vae.num_res_blocks = 8, 1
        text.dim, text.ffn_dim, text.num_heads, text.head_dim, text.num_layers = 64, 128, 2, 32, 2
        clip.image_size, clip.width, clip.num_layers = 28, 64, 2
        clip.num_heads, clip.mlp_dim = 2, 128
        config.demo.clips, config.demo.heldout = 16, 2
        config.demo.vae_steps, config.demo.vae_crop, config.demo.idm_steps = 2, 0, 2
        config.train.steps, config.train.warmup_steps = 2, 1
        config.train.log_every, config.train.eval_every = 1, 0
        config.checkpoint.save_every = 2
        config.sample.steps = 2
        config.idm.heldout_episodes = 1
        config.evaluate.episodes_per_task, config.evaluate.batch = 1, 1
        config.evaluate.max_steps = 8
    elif arg is not None:
        raise ValueError(f"configs/metaworld.py variant must be omitted or 'reduced', got {arg!r}")
    return config
