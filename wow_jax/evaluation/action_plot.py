"""A png of action sequences, one panel per action dimension (predicted vs true, or one series).

plot_actions(path, {label: [T, A] actions}, names [A], title, xlabel)  -> path
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # Not pyplot: no global backend or figure state.

PANEL_SIZE = (7.0, 1.8)  # Inches (width, height) of one dimension's panel.


def plot_actions(path: str | Path, series: dict, names, title: str, xlabel: str = "step") -> Path:
    """Draws every [T, A] series of `series` (label -> actions) over its step index, one panel
    per dimension named by `names`; writes and returns `path`."""
    names = list(names)
    width, height = PANEL_SIZE
    figure = Figure(figsize=(width, height * len(names)))
    axes = np.atleast_1d(figure.subplots(len(names), 1, sharex=True))
    for dim, (axis, name) in enumerate(zip(axes, names, strict=True)):
        for label, actions in series.items():
            axis.plot(np.asarray(actions)[:, dim], label=label, linewidth=1.2)
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel(xlabel)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
