"""Causal graphs: formatting and aggregation (graph-recovery metrics join this module with the world models).

Layout everywhere: bool ``(n_slots, n_slots + 1)``; row = child slot at t+1, column = parent slot at t, last
column = the action.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def parent_names(slot_names: Sequence[str]) -> tuple[str, ...]:
    """Column names of a graph: the slots, then ``"action"``."""
    return (*slot_names, "action")


def format_graph(graph: np.ndarray, slot_names: Sequence[str], *, fmt: str = "bool") -> str:
    """Render a graph (bool) or an edge-frequency matrix (float in [0, 1]) as an aligned text table.

    Args:
        graph: ``(n, n + 1)`` array.
        slot_names: the ``n`` slot names (rows; columns add ``action``).
        fmt: ``"bool"`` prints ``x``/``.``; ``"freq"`` prints percentages.
    """
    graph = np.asarray(graph)
    cols = parent_names(slot_names)
    if graph.shape != (len(slot_names), len(cols)):
        raise ValueError(f"graph has shape {graph.shape}, expected {(len(slot_names), len(cols))}")
    row_w = max(len(s) for s in slot_names) + 3
    col_w = max(max(len(c) for c in cols), 5)
    header = " " * row_w + " ".join(f"{c:>{col_w}}" for c in cols)
    lines = [header]
    for name, row in zip(slot_names, graph, strict=True):
        if fmt == "bool":
            cells = ["x" if v else "." for v in row]
        else:
            cells = [f"{100 * v:.0f}%" if v > 0 else "." for v in row]
        lines.append(f"{name + ' <-':<{row_w}}" + " ".join(f"{c:>{col_w}}" for c in cells))
    return "\n".join(lines)


def edge_frequency(local_graphs: np.ndarray) -> np.ndarray:
    """Fraction of transitions in which each edge is active: ``(T, n, n+1)`` bool -> ``(n, n+1)`` float."""
    local_graphs = np.asarray(local_graphs, dtype=bool)
    if local_graphs.ndim != 3 or len(local_graphs) == 0:
        raise ValueError(f"expected a non-empty (T, n, n+1) stack of graphs, got shape {local_graphs.shape}")
    return local_graphs.mean(axis=0)
