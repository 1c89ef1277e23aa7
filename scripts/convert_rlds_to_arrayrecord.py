"""Converts a TFRecord RLDS / Open X-Embodiment dataset (a TFDS version dir) to ArrayRecord.

    python -m scripts.convert_rlds_to_arrayrecord \
        --src=~/tensorflow_datasets/bridge/0.1.0 --dst=/data/rlds/bridge/0.1.0 \
        [--action_key=action --noverify_crc]

Default path: wow_jax/data/tfrecord.py, no TensorFlow: every serialized example is copied
unchanged (its CRC32C checked) into ArrayRecord shards and dataset_info.json says `fileFormat:
array_record`, so `tfds.data_source` / wow_jax's EpisodeSource read it with random access. Then
the action statistics are computed (--action_key; --noaction_stats to skip).

--use_tfds: use TFDS's own converter instead (tensorflow_datasets convert_format), which needs
TensorFlow: `pip install tensorflow` (an optional extra, not in requirements.txt).
Point config.data.image_key / instruction_key at the dataset's keys (e.g. 'observation.image',
'language_instruction' for most OXE datasets).
"""

from absl import app, flags

from wow_jax.data import rlds, stats, tfrecord

_SRC = flags.DEFINE_string("src", None, "TFDS dataset version dir (TFRecord).", required=True)
_DST = flags.DEFINE_string(
    "dst", None, "Output version dir (created, must be empty).", required=True
)
_USE_TFDS = flags.DEFINE_bool("use_tfds", False, "Use tfds convert_format (needs TensorFlow).")
_VERIFY = flags.DEFINE_bool("verify_crc", True, "Check every record's CRC32C (google-crc32c).")
_ACTION_STATS = flags.DEFINE_bool("action_stats", True, "Compute action_stats.json afterwards.")
_ACTION_KEY = flags.DEFINE_string("action_key", "action", "Dotted step key of the action.")


def main(argv):
    del argv
    if _USE_TFDS.value:
        try:
            from tensorflow_datasets.scripts.cli import convert_format_utils
        except ImportError as e:
            raise ImportError("--use_tfds needs TensorFlow: pip install tensorflow") from e
        convert_format_utils.convert_dataset(
            out_dir=_DST.value, out_file_format="array_record", dataset_version_dir=_SRC.value
        )
    else:
        tfrecord.convert_dataset(_SRC.value, _DST.value, "array_record", verify=_VERIFY.value)
    source = rlds.EpisodeSource(_DST.value, action_key=_ACTION_KEY.value)
    if _ACTION_STATS.value:
        stats.save_stats(stats.compute_action_stats(source), source.path)
    print(f"{len(source)} episodes -> {source.path}")


if __name__ == "__main__":
    app.run(main)
