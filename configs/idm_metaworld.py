"""The FM-IDM on Meta-World (scripts/evaluate_idm.py, wow_jax/sim/idm_eval.py): collect expert
episodes of four tasks, train the IDM from scratch, score it on held-out seeds against the
baselines and replay its actions in the simulator. Sized for a 2-core CPU (~10 minutes,
docs/idm.md); `configs/idm_metaworld.py:quick` is the smoke-test size.
"""

from configs import base


def get_config(arg=None):
    config = base.get_config()
    config.mode = "train"
    config.train.task = "idm"

    data = config.data
    data.tasks = ("reach-v3", "coffee-button-v3", "button-press-topdown-v3", "pick-place-v3")
    data.episodes_per_task, data.episode_length = 16, 80
    data.num_frames, data.height, data.width = 9, 64, 64
    data.batch_size = 8

    idm = config.model.idm
    idm.width, idm.motion_width = 16, 16

    config.idm.frame_gap = 2
    config.idm.heldout_episodes = 8

    train = config.train
    train.steps, train.warmup_steps, train.learning_rate = 600, 50, 1e-3
    train.log_every, train.tensorboard = 50, False
    config.checkpoint.save_every = 600

    if arg == "quick":
        data.tasks = ("reach-v3", "handle-press-v3")
        data.episodes_per_task, data.episode_length = 2, 48
        config.idm.heldout_episodes, config.idm.baseline_batches = 1, 2
        train.steps, train.warmup_steps, config.checkpoint.save_every = 10, 2, 10
        train.log_every = 5
    elif arg is not None:
        raise ValueError(
            f"configs/idm_metaworld.py variant must be omitted or 'quick', got {arg!r}"
        )
    return config
