"""Figures: learned vs true causal graph heatmaps (TensorBoard images and report PNGs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def graph_heatmaps(predicted: np.ndarray, true: np.ndarray, slot_names: Sequence[str], title: str = ""):
    """A matplotlib figure with two heatmaps: mean predicted edge score and true edge frequency, ``(n, n+1)``.

    Self-edges (the diagonal) are greyed out in the learned map: a slot's own past reaches it through its own
    temporal block, not through the cross-slot attention read as the graph, so their scores mean nothing there
    (the headline graph metrics exclude them too).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(slot_names)
    cols = [*slot_names, "action"]
    learned = np.array(predicted, dtype=float)
    learned[np.arange(n), np.arange(n)] = np.nan
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    fig, axes = plt.subplots(1, 2, figsize=(3.5 + 1.2 * len(cols), 1.4 + 0.5 * n), constrained_layout=True)
    panels = (learned, np.asarray(true)), ("learned (mean edge score; grey: self)", "true (edge frequency)")
    for i, (ax, data, name) in enumerate(zip(axes, *panels, strict=True)):
        im = ax.imshow(data, vmin=0, vmax=1, cmap=cmap)
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(n), [f"{s} <-" for s in slot_names] if i == 0 else [])
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
