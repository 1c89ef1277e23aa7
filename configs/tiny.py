"""Tiny sizes for unit tests: every component builds and runs in well under a second on CPU."""

from configs import base


def get_config(arg=None):
    del arg
    config = base.get_config()
    dit = config.model.dit
    dit.dim, dit.ffn_dim, dit.num_heads, dit.num_layers = 32, 64, 2, 2
    dit.freq_dim = 32
    dit.text_dim, dit.image_dim, dit.text_len = 32, 32, 16
    dit.rope_max_len = 64

    vae = config.model.vae
    vae.base_dim, vae.dim_mult, vae.num_res_blocks = 8, (1, 2, 2, 2), 1

    text = config.model.text
    text.vocab_size, text.dim, text.ffn_dim = 512, 32, 64
    text.num_heads, text.head_dim, text.num_layers = 2, 16, 2
    text.num_buckets, text.max_distance, text.text_len = 8, 16, 16

    clip = config.model.clip
    clip.image_size, clip.patch_size, clip.width = 28, 14, 32
    clip.num_layers, clip.num_heads, clip.mlp_dim = 3, 2, 64

    dinov2 = config.model.dinov2
    dinov2.image_size, dinov2.patch_size, dinov2.width = 16, 4, 32
    dinov2.num_layers, dinov2.num_heads, dinov2.mlp_dim = 2, 2, 128

    idm = config.model.idm
    idm.width, idm.motion_width, idm.stage_mult, idm.norm_groups = 8, 8, (1, 2), 4
    idm.fuse_width, idm.pool_grid, idm.mlp_dim = 16, 2, 32
    idm.dinov2 = dinov2.copy_and_resolve_references()

    config.data.num_frames, config.data.height, config.data.width = 5, 32, 32
    config.train.steps, config.train.warmup_steps, config.train.log_every = 4, 1, 1
    config.sample.steps = 4
    config.checkpoint.save_every = 2
    return config
