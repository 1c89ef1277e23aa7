"""Writes every mixture caption the pipeline can give a dataset's clips (for the text cache).

    python -m scripts.list_caption_variants --config=configs/demo.py \
        --config.data.path=/data/metaworld/1.0.0 --out=/data/metaworld/captions.json
    python -m scripts.cache_text_embeddings --config=configs/demo.py \
        --captions=/data/metaworld/captions.json --output=/data/metaworld/text_embeddings

Uses config.data (path, keys, num_frames, frame_stride, caption_* mixture, robot_name); the output
is a JSON list of strings, sorted (the empty prompt for classifier-free guidance is not included).
"""

import json

from absl import app, flags
from ml_collections import config_flags

from wow_jax.data import captions, rlds

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Config file.")
_OUT = flags.DEFINE_string("out", None, "Output .json path.", required=True)


def main(argv):
    del argv
    data_cfg = _CONFIG.value.data
    source = rlds.EpisodeSource(
        data_cfg.path, image_key=data_cfg.image_key, instruction_key=data_cfg.instruction_key
    )
    variants = captions.dataset_caption_variants(source, data_cfg)
    with open(_OUT.value, "w", encoding="utf-8") as f:
        json.dump(variants, f, indent=0, ensure_ascii=False)
    print(f"{len(variants)} captions from {len(source)} episodes -> {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
