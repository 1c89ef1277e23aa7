"""Throughput of the Flax umT5 and CLIP encoders vs their PyTorch references, same weights.

    python -m scripts.benchmark_encoders --size=small --out=/tmp/encoders.json

Builds transformers UMT5EncoderModel / CLIPVisionModel at the chosen size with random weights,
imports the same weights into the Flax modules (through the interop tables), checks the outputs
agree, then times `--steps` forward passes of each (after a warm-up/compile call) and writes
JSON: seconds per batch for JAX and PyTorch and their ratio (torch_s / jax_s > 1: JAX faster).
Sizes: 'tiny' (configs/tiny.py), 'small' (a few layers at modest width), 'xxl' (umT5-XXL and
ViT-H/14 at full size: needs an accelerator and ~30 GB of host memory for the import).
"""

import json
import time

import jax
import numpy as np
from absl import app, flags, logging

from configs import tiny, wow14b
from scripts import torch_cpu
from wow_jax.interop import clip_table, umt5_table
from wow_jax.models import clip, text_encoder

_SIZE = flags.DEFINE_enum("size", "small", ["tiny", "small", "xxl"], "Encoder sizes.")
_BATCH = flags.DEFINE_integer("batch", 4, "Captions / images per forward pass.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed forward passes.")
_OUT = flags.DEFINE_string("out", "", "JSON output path ('' = print only).")


def configs_for(size: str):
    if size == "xxl":
        config = wow14b.get_config()
        config.model.text.dtype = config.model.clip.dtype = "float32"
        return config.model.text, config.model.clip
    config = tiny.get_config()
    text, vision = config.model.text, config.model.clip
    if size == "small":
        text.vocab_size, text.dim, text.ffn_dim, text.num_heads = 32000, 512, 1280, 8
        text.head_dim, text.num_layers, text.text_len = 64, 6, 128
        text.num_buckets, text.max_distance = 32, 128
        vision.image_size, vision.patch_size, vision.width = 224, 14, 512
        vision.num_layers, vision.num_heads, vision.mlp_dim = 7, 8, 2048
    return text, vision


def timed(fn, steps: int) -> float:
    fn()  # Warm-up (compiles JAX).
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def bench_text(text_cfg, batch: int, steps: int) -> dict:
    import transformers

    torch = torch_cpu.configure()
    model = transformers.UMT5EncoderModel(
        transformers.UMT5Config(
            vocab_size=text_cfg.vocab_size, d_model=text_cfg.dim, d_kv=text_cfg.head_dim,
            d_ff=text_cfg.ffn_dim, num_heads=text_cfg.num_heads, num_layers=text_cfg.num_layers,
            relative_attention_num_buckets=text_cfg.num_buckets,
            relative_attention_max_distance=text_cfg.max_distance,
            feed_forward_proj="gated-gelu", dropout_rate=0.0,
        )
    ).eval()  # fmt: skip
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = umt5_table.import_params(state, text_cfg, "hf")
    rng = np.random.default_rng(0)
    ids = rng.integers(3, text_cfg.vocab_size, (batch, text_cfg.text_len)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:, text_cfg.text_len // 2 :] = 0
    ids = np.where(mask > 0, ids, 0)
    apply = jax.jit(text_encoder.create(text_cfg).apply)
    run_jax = lambda: apply({"params": params}, ids, mask).block_until_ready()  # noqa: E731
    t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

    def run_torch():
        with torch.no_grad():
            return model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

    got, want = np.asarray(run_jax()), run_torch().numpy()
    valid = mask.astype(bool)
    rel = float(np.abs(got - want)[valid].max() / np.abs(want[valid]).max())
    jax_s, torch_s = timed(run_jax, steps), timed(run_torch, steps)
    return {"jax_s": jax_s, "torch_s": torch_s, "ratio": torch_s / jax_s, "max_rel_err": rel}


def bench_clip(clip_cfg, batch: int, steps: int) -> dict:
    import transformers

    torch = torch_cpu.configure()
    model = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=clip_cfg.width, intermediate_size=clip_cfg.mlp_dim,
            num_hidden_layers=clip_cfg.num_layers, num_attention_heads=clip_cfg.num_heads,
            image_size=clip_cfg.image_size, patch_size=clip_cfg.patch_size,
            hidden_act=clip_cfg.activation, layer_norm_eps=1e-5,
        )
    ).eval()  # fmt: skip
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = clip_table.import_params(state, clip_cfg, "hf")
    size = clip_cfg.image_size
    images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    pixels = (images * 0.5 + 0.5 - np.asarray(clip.CLIP_MEAN)) / np.asarray(clip.CLIP_STD)
    t_pixels = torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    apply = jax.jit(clip.create(clip_cfg).apply)
    run_jax = lambda: apply({"params": params}, images).block_until_ready()  # noqa: E731

    def run_torch():
        with torch.no_grad():
            return model(pixel_values=t_pixels, output_hidden_states=True).hidden_states[-2]

    got, want = np.asarray(run_jax()), run_torch().numpy()
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    jax_s, torch_s = timed(run_jax, steps), timed(run_torch, steps)
    return {"jax_s": jax_s, "torch_s": torch_s, "ratio": torch_s / jax_s, "max_rel_err": rel}


def main(argv):
    del argv
    text_cfg, clip_cfg = configs_for(_SIZE.value)
    result = {
        "size": _SIZE.value,
        "batch": _BATCH.value,
        "device": jax.devices()[0].device_kind,
        "umt5": bench_text(text_cfg, _BATCH.value, _STEPS.value),
        "clip": bench_clip(clip_cfg, _BATCH.value, _STEPS.value),
    }
    logging.info("done")
    print(json.dumps(result, indent=2))
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
