"""The SOPHIA page a person opens first: <refine dir>/report.html with scores.png beside it.

summary     per case: the instruction, round 0's mean and best critic score (the original
            instruction), the final best score and prompt, and, when run, the closed-loop
            success of the original and the refined prompt on the same seed
scores.png  per case the best-so-far score over rounds (solid) and each round's mean
            candidate score (dotted); the threshold dashed
per case    one row per round: every candidate's gif side by side with its prompt, the four
            template scores, the verdict and the rationales (the round's best framed)
"""

from __future__ import annotations

import html
import os

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from wow_jax.sophia import critic

HTML_FILE, PLOT_FILE = "report.html", "scores.png"
OUTCOME = {True: "solved", False: "failed"}  # A closed-loop episode's success.
STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:4px 8px}.round{display:flex;gap:8px;margin:8px 0}"
    "figure{margin:0;padding:4px;border:2px solid #ddd;width:220px;font-size:11px}"
    "figure.best{border-color:#2a2}img{width:100%;image-rendering:pixelated}"
)


def plot_scores(cases: list[dict], threshold: float, path: str) -> str:
    """scores.png (module docstring); returns its path."""
    figure = Figure(figsize=(6.0, 3.6))
    axis = figure.subplots()
    for case in cases:
        rounds = np.arange(len(case["rounds"]))
        best = [r["best_so_far"]["score"] for r in case["rounds"]]
        mean = [np.mean([c["report"]["score"] for c in r["candidates"]]) for r in case["rounds"]]
        line = axis.plot(rounds, best, marker="o", label=case["name"])[0]
        axis.plot(rounds, mean, linestyle=":", color=line.get_color())
    axis.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="threshold")
    axis.set_xlabel("round")
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.set_ylabel("critic score (best so far; mean dotted)")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _escape(text) -> str:
    return html.escape(str(text))


def summary_rows(results: dict) -> list[list[str]]:
    closed = results.get("closed_loop", {}).get("cases", {})
    rows = []
    for case in results["cases"]:
        first = [c["report"]["score"] for c in case["rounds"][0]["candidates"]]
        loop = closed.get(case["name"])
        rows.append(
            [
                case["name"],
                case["instruction"],
                f"{np.mean(first):.3f} / {max(first):.3f}",
                f"{case['best']['score']:.3f} ({case['best']['verdict']}, round "
                f"{case['best']['round']})",
                case["best"]["prompt"],
                "-"
                if loop is None
                else f"{OUTCOME[loop['original']]} -> {OUTCOME[loop['refined']]}",
            ]
        )
    return rows


def candidate_figure(candidate: dict, best: bool, folder: str) -> str:
    report = candidate["report"]
    scores = ", ".join(f"{n} {report['templates'][n]['score']:.1f}" for n in critic.TEMPLATES)
    notes = "".join(
        f"<li>{_escape(n)}: {_escape(t['rationale'])}</li>" for n, t in report["templates"].items()
    )
    source = os.path.relpath(candidate["gif"], folder)
    return (
        f"<figure class='{'best' if best else 'candidate'}'><img src='{_escape(source)}' "
        f"alt='{_escape(candidate['prompt'])}'><figcaption><b>{_escape(candidate['prompt'])}"
        f"</b><br>score <span class='score'>{report['score']:.3f}</span> "
        f"{_escape(report['verdict'])}<br>{_escape(scores)}<details><summary>rationales"
        f"</summary><ul>{notes}<li>verdict: {_escape(report['verdict_rationale'])}</li></ul>"
        "</details></figcaption></figure>"
    )


def case_section(case: dict, folder: str) -> str:
    parts = [f"<h2>{_escape(case['name'])}: {_escape(case['instruction'])}</h2>"]
    for record in case["rounds"]:
        figures = "".join(
            candidate_figure(c, k == record["best"], folder)
            for k, c in enumerate(record["candidates"])
        )
        stop = f" (stop: {record['stop']})" if record["stop"] else ""
        parts.append(f"<h3>round {record['round']}{stop}</h3><div class='round'>{figures}</div>")
    return "".join(parts)


def write_page(folder: str, results: dict, threshold: float) -> str:
    """report.html and scores.png in `folder` from refine's results; returns the page's path."""
    plot = plot_scores(results["cases"], threshold, os.path.join(folder, PLOT_FILE))
    header = ["case", "instruction", "round 0 mean / best", "final best", "final prompt",
              "closed-loop success original -> refined"]  # fmt: skip
    head = "".join(f"<th>{_escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(c)}</td>" for c in row) + "</tr>"
        for row in summary_rows(results)
    )
    sections = "".join(case_section(case, folder) for case in results["cases"])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>SOPHIA refinement</title>"
        f"<style>{STYLE}</style></head><body><h1>SOPHIA: critic-guided refinement</h1>"
        f"<p>{_escape(results['text'])}</p><table>{head}{body}</table>"
        f"<img class='plot' src='{os.path.basename(plot)}' style='width:600px'>{sections}"
        "</body></html>"
    )
    path = os.path.join(folder, HTML_FILE)
    with open(path, "w") as f:
        f.write(page)
    return path
