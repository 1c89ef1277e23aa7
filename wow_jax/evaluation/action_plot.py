"""A png of action sequences, one panel per action dimension (predicted vs true, or one series).

plot_actions(path, {label: [T, A] actions}, names [A], title)  -> path
"""

from pathlib import Path

import numpy as np

PANEL_SIZE = (7.0, 1.8)  # Inches (width, height) of one dimension's panel.


def plot_actions(path: str | Path, series: dict, names, title: str) -> Path:
    """Draws every [T, A] series of `series` (label -> actions) over its step index, one panel
    per dimension named by `names`; writes and returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = list(names)
    width, height = PANEL_SIZE
    figure, axes = plt.subplots(len(names), 1, figsize=(width, height * len(names)), sharex=True)
    for dim, (axis, name) in enumerate(zip(np.atleast_1d(axes), names, strict=True)):
        for label, actions in series.items():
            axis.plot(np.asarray(actions)[:, dim], label=label, linewidth=1.2)
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[0].set_title(title, fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("pair (frame t -> t + k)")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
