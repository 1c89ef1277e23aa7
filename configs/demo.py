"""The CPU demo (mode 'demo', wow_jax/demo.py): collect Meta-World episodes, train a tiny VAE and
image-to-video world model, imagine clips for held-out start frames. `configs/demo.py:quick` is
the test-sized variant.
"""

from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.mode = "demo"

    dit = config.model.dit
    # 2x temporal VAE stride: Wan's frame mask has 2 channels, so 16 + 2 + 16 input channels.
    dit.variant, dit.in_channels, dit.patch_size = "i2v", 34, (1, 4, 4)
    dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 128, 256, 4, 4
    dit.text_dim, dit.image_dim, dit.text_len = 64, 64, 32
    dit.rope_max_len = 256

    vae = config.model.vae
    # 2x spatial and 2x temporal compression: at 64x64 the 8x/4x Wan layout reconstructs below
    # copy-first-frame (docs/demo.md, the measured designs).
    vae.base_dim, vae.dim_mult, vae.num_res_blocks = 16, (1, 2), 1
    vae.temporal_downsample = (True,)

    text = config.model.text
    text.vocab_size, text.dim, text.ffn_dim = 1024, 64, 128
    text.num_heads, text.head_dim, text.num_layers, text.text_len = 2, 32, 2, 32

    clip = config.model.clip
    clip.image_size, clip.patch_size, clip.width = 56, 14, 64
    clip.num_layers, clip.num_heads, clip.mlp_dim = 3, 2, 128

    # A clip is a whole expert episode: 9 frames 12 steps apart cover 96 steps, in which the
    # scripted experts of all four tasks succeed (first success at ~45-95 steps).
    config.data.num_frames, config.data.height, config.data.width = 9, 64, 64
    config.data.frame_stride, config.data.episode_length = 12, 96
    config.data.tasks = ("reach-v3", "push-v3", "drawer-open-v3", "button-press-v3")
    config.data.episodes_per_task = 16
    config.train.steps, config.train.warmup_steps = 3000, 100
    config.train.learning_rate = 3e-4
    config.demo.vae_steps, config.demo.clips, config.demo.heldout = 600, 64, 8
    config.demo.vae_lr = 3e-3
    config.train.shift, config.train.timestep_sampling = 3.0, "uniform"
    config.train.log_every, config.train.eval_every, config.train.eval_batches = 50, 500, 2
    config.sample.steps, config.sample.guidance, config.sample.shift = 20, 3.0, 3.0
    config.sample.negative_prompt = ""
    config.checkpoint.save_every = 500

    # The IDM stage (FM-IDM from scratch on the same episodes) and the closed-loop evaluation.
    config.data.action_reduce = "mean"  # A clip action is the mean of its env steps (replay).
    config.model.idm.width = 16
    config.idm.frame_gap = 1  # Frames are 12 env steps apart: adjacent ones show the motion.
    config.demo.idm_steps, config.demo.idm_lr = 300, 1e-3
    config.evaluate.episodes_per_task, config.evaluate.batch = 4, 4
    config.sophia.candidates, config.sophia.rounds, config.sophia.episodes_per_task = 4, 2, 1

    if arg == "quick":
        config.data.tasks = ("reach-v3",)
        config.data.episodes_per_task = 2
        config.data.episode_length, config.data.frame_stride = 24, 3
        config.train.steps, config.train.warmup_steps = 20, 2
        config.demo.vae_steps, config.demo.clips, config.demo.heldout = 10, 8, 2
        config.train.log_every, config.train.eval_every = 5, 10
        config.sample.steps = 4
        config.checkpoint.save_every = 10
        config.demo.idm_steps = 10
        config.idm.heldout_episodes, config.idm.baseline_batches = 1, 2
        config.evaluate.episodes_per_task, config.evaluate.max_steps = 2, 12
        config.evaluate.batch, config.evaluate.gif_episodes = 2, 1
        config.sophia.candidates, config.sophia.rounds = 2, 2
    elif arg is not None:
        raise ValueError(f"configs/demo.py variant must be omitted or 'quick', got {arg!r}")
    return config
