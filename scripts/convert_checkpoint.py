"""Convert checkpoints between PyTorch (Wan-native / diffusers) and Orbax.

    # PyTorch -> Orbax (naming detected; params laid out for the config's mesh)
    python -m scripts.convert_checkpoint import --config configs/wow14b.py --component dit \\
        --source /ckpt/WoW-1-Wan-14B --target /ckpt/wow14b_dit

    # Orbax -> diffusers folder (WanTransformer3DModel.from_pretrained loads it), EMA weights
    python -m scripts.convert_checkpoint export --config configs/wow14b.py --component dit \\
        --source /runs/wow/checkpoints/5000 --params-key ema_params --target /out/transformer

The same functions back `python -m wow_jax.main --config.mode=convert`. Multi-host: run it on
every host with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set (or a TPU pod;
see wow_jax/train/distributed.py); each host then fills its own shards of one checkpoint.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

from wow_jax import configuration
from wow_jax.interop import convert


def load_config(spec: str):
    """'configs/wow14b.py' or 'configs/demo.py:quick' -> ConfigDict."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("convert_config", path)
    if module_spec is None or not Path(path).exists():
        raise ValueError(f"--config {path} is not a config file; e.g. configs/wow14b.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("direction", choices=["import", "export"])
    parser.add_argument("--config", required=True, help="Model config, e.g. configs/wow14b.py.")
    parser.add_argument("--component", default="dit", choices=["dit", "vae", "text", "clip"])
    parser.add_argument("--source", required=True, help="Checkpoint to read.")
    parser.add_argument("--target", required=True, help="Folder to write.")
    parser.add_argument("--naming", default="auto", choices=["auto", "wan", "diffusers", "hf"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument("--params-key", default="params", help="'ema_params' for EMA weights.")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        c = config.convert
        c.direction, c.component, c.source, c.target = (
            args.direction, args.component, args.source, args.target,
        )  # fmt: skip
        c.naming, c.dtype, c.max_shard_size = args.naming, args.dtype, args.max_shard_size
        c.params_key, c.overwrite, config.mode = args.params_key, args.overwrite, "convert"
        import jax  # noqa: PLC0415

        from wow_jax.train import distributed  # noqa: PLC0415

        distributed.initialize_from_env()  # Multi-host: join the cluster before JAX starts.
        configuration.validate(config, jax.device_count())
        report = convert.convert(config, workdir=".", progress=not args.no_progress)
    except convert.ERRORS as error:
        sys.exit(f"convert_checkpoint: {error}")
    print(report)
    return report


if __name__ == "__main__":
    main()
