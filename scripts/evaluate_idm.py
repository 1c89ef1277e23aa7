"""Trains the FM-IDM on Meta-World and evaluates it: held-out action errors against the
baselines and open-loop replay in the simulator (wow_jax/sim/idm_eval.py; docs/idm.md).

    python -m scripts.evaluate_idm --config=configs/idm_metaworld.py --workdir=runs/idm_eval

Writes <workdir>/idm_eval.json and <workdir>/idm_eval_actions.png; a rerun restores the trained
IDM and the collected episodes from <workdir>.
"""

import json

import jax
from absl import app, flags
from ml_collections import config_flags

from wow_jax import configuration
from wow_jax.sim import idm_eval

_CONFIG = config_flags.DEFINE_config_file("config", "configs/idm_metaworld.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/idm_eval", "Data, checkpoints and the report.")


def summary(report: dict) -> str:
    """One line per method (held-out errors) and per task (replay success)."""
    lines = ["held-out pairs: translation MAE, gripper accuracy"]
    for method, scores in report["heldout"].items():
        accuracy = scores.get("gripper_accuracy", float("nan"))
        lines.append(f"  {method:13s} {scores['translation_mae']:.4f}  {accuracy:.3f}")
    lines.append("open-loop replay success (IDM / oracle / mean / expert, episodes)")
    for task, run in report["replay"].items():
        rates = " / ".join(f"{run[f'{m}_success_rate']:.2f}" for m in idm_eval.REPLAY_METHODS)
        lines.append(f"  {task:24s} {rates}  ({run['episodes']})")
    return "\n".join(lines)


def main(argv):
    del argv
    config = _CONFIG.value
    configuration.validate(config, jax.device_count())
    report = idm_eval.run_evaluate_idm(config, _WORKDIR.value)
    print(summary(report))
    print(json.dumps(report["seconds"]))


if __name__ == "__main__":
    app.run(main)
