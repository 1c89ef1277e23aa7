"""Computes the action statistics of an RLDS ArrayRecord dataset once, stored next to the data.

    python -m scripts.compute_action_stats --data_dir=/data/my_rlds/1.0.0 [--action_key=action]

Writes <data_dir>/action_stats.json (mean, std, min, max, q01, q99, count, action_dim), which the
Grain pipeline reads to normalise actions (config.data.action_norm).
"""

from absl import app, flags

from wow_jax.data import rlds, stats

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Dataset dir (or a parent of one).", required=True
)
_ACTION_KEY = flags.DEFINE_string("action_key", "action", "Dotted step key of the action.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to read.")
_MAX_EPISODES = flags.DEFINE_integer("max_episodes", 0, "Use this many episodes, spread (0 = all).")


def main(argv):
    del argv
    source = rlds.EpisodeSource(_DATA_DIR.value, split=_SPLIT.value, action_key=_ACTION_KEY.value)
    result = stats.compute_action_stats(source, max_episodes=_MAX_EPISODES.value)
    path = stats.save_stats(result, source.path)
    print(f"{result['count']} actions of width {result['action_dim']} -> {path}")


if __name__ == "__main__":
    app.run(main)
