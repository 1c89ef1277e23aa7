"""Converts a folder of mp4 files + captions.jsonl into the RLDS ArrayRecord format.

    python -m scripts.build_video_dataset --video_dir=/data/wow_samples --out_dir=/data/rlds \
        [--name=videos --height=480 --width=832 --on_bad_episode=skip]

Caption format: wow_jax/data/videos.py. Action statistics are written when the videos carry
actions (an `actions` .npy per video).
"""

from absl import app, flags

from wow_jax.data import rlds, stats, videos

_VIDEO_DIR = flags.DEFINE_string("video_dir", None, "Folder of mp4 + captions.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Output root.", required=True)
_NAME = flags.DEFINE_string("name", "videos", "Dataset name (folder under out_dir).")
_HEIGHT = flags.DEFINE_integer("height", 0, "Resize frames to this height (0 = keep).")
_WIDTH = flags.DEFINE_integer("width", 0, "Resize frames to this width (0 = keep).")
_ON_BAD = flags.DEFINE_enum(
    "on_bad_episode",
    "skip",
    list(videos.ON_BAD),
    "Bad videos (no caption, unreadable).",
)
_FORMAT = flags.DEFINE_enum("image_format", "jpeg", ["jpeg", "png"], "Stored frame encoding.")


def main(argv):
    del argv
    size = (_HEIGHT.value, _WIDTH.value) if _HEIGHT.value and _WIDTH.value else None
    path = videos.build_video_dataset(
        _VIDEO_DIR.value, _OUT_DIR.value, _NAME.value, size, _ON_BAD.value, _FORMAT.value
    )
    source = rlds.EpisodeSource(path)
    if source.all_actions(0).size:
        stats.save_stats(stats.compute_action_stats(source), path)
    print(f"{len(source)} episodes -> {path}")


if __name__ == "__main__":
    app.run(main)
