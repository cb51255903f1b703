"""Figures: learned vs true causal graph heatmaps (TensorBoard images and report PNGs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def graph_heatmaps(predicted: np.ndarray, true: np.ndarray, slot_names: Sequence[str], title: str = ""):
    """A matplotlib figure with two heatmaps: mean predicted edge score and true edge frequency, ``(n, n+1)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [*slot_names, "action"]
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 1.2 * len(cols), 1.2 + 0.5 * len(slot_names)))
    for ax, data, name in zip(
        axes, (predicted, true), ("learned (mean edge score)", "true (edge frequency)"), strict=True
    ):
        im = ax.imshow(np.asarray(data), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(slot_names)), [f"{s} <-" for s in slot_names])
        ax.set_title(name, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_figure(fig, path, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG atomically (a crash mid-write never leaves a half-written image) and close it."""
    import matplotlib.pyplot as plt

    from cwm_rl.checkpoint import atomic_write

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"), what="figure")
    finally:
        plt.close(fig)
