"""The report a person opens first: <workdir>/report.html and <workdir>/summary.md, from what the
demo's stages (or mode evaluate) left in the workdir; a section whose file is missing is left
out. `write_report(workdir)` returns {'html', 'markdown', 'curves'} paths.

Sections (file read):
  closed loop      evaluate/results.json: success rate [Wilson 95%] per task and policy, with
                   the imagined | executed gifs (evaluate/gifs)
  world model      imagined/metrics.json: PSNR/SSIM over frames 2..T of the imagined held-out
                   clips, copy-first-frame and the VAE reconstruction; per_frame.png; compare gifs
  IDM              idm/idm_eval.json: held-out translation MAE and gripper accuracy against the
                   baselines; open-loop replay success from the real frames
  imagination gap  evaluate/idm_gap.json: the IDM on real vs imagined held-out clips
  SOPHIA           refine/results.json: critic scores of round 0 and after refinement, closed-
                   loop success of the original vs refined prompts; refine/scores.png (the
                   rounds' gifs are on refine/report.html)
  training curves  <stage>/metrics.jsonl of vae, world_model and idm -> training_curves.png
"""

import html
import json
import os

import numpy as np
from matplotlib.figure import Figure

from wow_jax import evaluate

CURVE_STAGES = ("vae", "world_model", "idm")
HTML_FILE, MARKDOWN_FILE, CURVES_FILE = "report.html", "summary.md", "training_curves.png"


def _read(workdir: str, *parts: str):
    return evaluate.read_json(os.path.join(workdir, *parts))


def read_losses(path: str) -> tuple[list, list]:
    """(steps, train/loss values) logged in a run's metrics.jsonl."""
    steps, losses = [], []
    with open(path) as f:
        for row in map(json.loads, f):
            if "train/loss" in row:
                steps.append(row["step"])
                losses.append(row["train/loss"])
    return steps, losses


def plot_curves(workdir: str) -> str | None:
    """training_curves.png: train/loss over steps per stage (log scale); None without any."""
    stages = [s for s in CURVE_STAGES if os.path.exists(os.path.join(workdir, s, "metrics.jsonl"))]
    if not stages:
        return None
    figure = Figure(figsize=(4.0 * len(stages), 3.2))
    axes = np.atleast_1d(figure.subplots(1, len(stages)))
    for axis, stage in zip(axes, stages, strict=True):
        steps, losses = read_losses(os.path.join(workdir, stage, "metrics.jsonl"))
        axis.plot(steps, losses)
        axis.set_yscale("log")
        axis.set_title(f"{stage}: train loss", fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = os.path.join(workdir, CURVES_FILE)
    figure.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------- tables


def closed_loop_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    policies = list(results["mean"])
    rows = []
    for task, runs in [*results["tasks"].items(), ("mean", results["mean"])]:
        cells = []
        for policy in policies:
            s = runs[policy]
            low, high = s["ci95"]
            cells.append(f"{s['success_rate']:.2f} [{low:.2f}, {high:.2f}] ({s['episodes']})")
        rows.append([task, *cells])
    return ["task", *policies], rows


def quality_rows(imagined: dict) -> tuple[list[str], list[list[str]]]:
    later = imagined["frames_2_to_T"]
    rows = [
        [method, f"{scores['psnr']:.2f}", f"{scores['ssim']:.3f}"]
        for method, scores in later.items()
    ]
    return ["held-out clips, frames 2..T", "PSNR dB", "SSIM"], rows


def idm_rows(idm_eval: dict) -> tuple[list[str], list[list[str]]]:
    rows = [
        [method, f"{s['translation_mae']:.3f}", _accuracy(s)]
        for method, s in idm_eval["heldout"].items()
    ]
    return ["IDM on held-out real frames", "translation MAE", "gripper accuracy"], rows


def gap_rows(gap: dict) -> tuple[list[str], list[list[str]]]:
    rows = [
        [method, f"{gap[method]['translation_mae']:.3f}", _accuracy(gap[method])]
        for method in ("real", "imagined", "mean", "zero")
    ]
    return ["IDM reading", "translation MAE", "gripper accuracy"], rows


def _accuracy(scores: dict) -> str:
    return f"{scores['gripper_accuracy']:.3f}" if "gripper_accuracy" in scores else "-"


def replay_rows(idm_eval: dict) -> tuple[list[str], list[list[str]]]:
    methods = ("idm", "oracle", "mean", "expert")
    rows = [
        [task, *(f"{r[f'{m}_success_rate']:.2f}" for m in methods)]
        for task, r in idm_eval["replay"].items()
    ]
    return ["open-loop replay from real frames", *methods], rows


def refine_rows(refined: dict) -> tuple[list[str], list[list[str]]]:
    s = refined["summary"]
    rows = [
        [
            "critic score, mean over start states",
            f"{s['round_0_best']:.3f}",
            f"{s['final_best']:.3f}",
        ],
        ["critic verdict 'completed'", str(s["completed_round_0"]), str(s["completed_final"])],
    ]
    if "closed_loop" in refined:
        rates = [refined["closed_loop"][k]["success_rate"] for k in ("original", "refined")]
        rows.append(["closed-loop success rate", *(f"{r:.2f}" for r in rates)])
    return ["", "original instruction (round 0 best)", "refined (best)"], rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _relative(workdir: str, path: str) -> str:
    return os.path.relpath(path, workdir)


# ----------------------------------------------------------------------------- the report


def sections(workdir: str) -> list[dict]:
    """[{'title', 'tables': [(header, rows)], 'images': [paths], 'text'}] of what exists."""
    out = []
    results = _read(workdir, "evaluate", "results.json")
    if results is not None:
        settings = results["settings"]
        out.append(
            {
                "title": "Closed loop in Meta-World: success rate [Wilson 95% interval] (episodes)",
                "text": (
                    f"{settings['episodes_per_task']} held-out seeds per task, up to "
                    f"{settings['max_steps']} env steps; imagine_act re-plans after "
                    + (
                        f"{settings['execute_frames']} imagined frame steps"
                        if settings["execute_frames"]
                        else "each whole imagined clip"
                    )
                    + "; idm_replay is the IDM on the expert's real video (replay upper bound)."
                ),
                "tables": [closed_loop_rows(results)],
                "images": results.get("gifs", []),
            }
        )
    imagined = _read(workdir, "imagined", "metrics.json")
    if imagined is not None:
        out.append(
            {
                "title": "World model: imagined held-out clips against copy-first-frame and the "
                "VAE reconstruction",
                "text": "Mean over held-out clips and frames 2..T (frame 1 is given).",
                "tables": [quality_rows(imagined)],
                "images": [imagined["plot"], *(c["gif"] for c in imagined["clips"])],
            }
        )
    idm_eval = _read(workdir, "idm", "idm_eval.json")
    if idm_eval is not None:
        out.append(
            {
                "title": "Inverse dynamics (FM-IDM)",
                "text": "Dataset units; baselines: zero action, mean action, nearest flow.",
                "tables": [idm_rows(idm_eval), replay_rows(idm_eval)],
                "images": [idm_eval["plot"]] if idm_eval.get("plot") else [],
            }
        )
    gap = _read(workdir, "evaluate", "idm_gap.json")
    if gap is not None:
        out.append(
            {
                "title": "Imagination gap: the IDM on real vs imagined held-out clips",
                "text": (
                    f"{gap['clips']} held-out clips; actions read from the real frames and from "
                    "the clip the world model imagined from the same first frame and instruction, "
                    "against the true actions (dataset units)."
                ),
                "tables": [gap_rows(gap)],
                "images": [],
            }
        )
    refined = _read(workdir, "refine", "results.json")
    if refined is not None:
        out.append(
            {
                "title": "SOPHIA: critic-guided refinement of the instruction",
                "text": refined["text"] + " Every round's clips: refine/report.html.",
                "tables": [refine_rows(refined)],
                "images": [os.path.join(workdir, "refine", "scores.png")],
            }
        )
    curves = plot_curves(workdir)
    if curves is not None:
        out.append({"title": "Training curves", "text": "", "tables": [], "images": [curves]})
    return out


def write_report(workdir: str) -> dict:
    """Writes report.html and summary.md (module docstring); returns their paths."""
    found = sections(workdir)
    md, body = ["# wow_jax run report", ""], []
    for section in found:
        md += [f"## {section['title']}", "", section["text"], ""]
        body.append(
            f"<h2>{html.escape(section['title'])}</h2><p>{html.escape(section['text'])}</p>"
        )
        for header, rows in section["tables"]:
            md += [markdown_table(header, rows), ""]
            body.append(html_table(header, rows))
        images = [_relative(workdir, p) for p in section["images"] if os.path.exists(p)]
        md += [f"![{os.path.basename(p)}]({p})" for p in images] + [""]
        tags = (f'<img src="{html.escape(p)}" title="{html.escape(p)}">' for p in images)
        body.append("".join(tags))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "img{margin:4px;image-rendering:pixelated;max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>wow_jax report</title>"
        f"<style>{style}</style></head><body><h1>wow_jax run report</h1>{''.join(body)}"
        "</body></html>"
    )
    paths = {
        "html": os.path.join(workdir, HTML_FILE),
        "markdown": os.path.join(workdir, MARKDOWN_FILE),
    }
    with open(paths["html"], "w") as f:
        f.write(page)
    with open(paths["markdown"], "w") as f:
        f.write("\n".join(md))
    return paths
