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


# ---------------------------------------------------------------------------------------------------------- metrics
# One place for every graph-recovery number the toolkit reports. Inputs are stacks of local graphs
# ``(..., n, n + 1)`` (numpy arrays or torch tensors); predictions are bool, scores are real-valued.
#
# Headline convention: **self-edges excluded, action column included**. Self-edges are active in almost every
# transition of every env, so counting them inflates F1 and hides the interaction edges that matter; the action
# column says which slots an action reaches, which a planner needs. Every metric is also reported with self-edges
# included and with the action column excluded (keys ``*_with_self`` / ``*_no_action``).

HEADLINE = {"include_self": False, "include_action": True}
VARIANTS = {
    "": HEADLINE,
    "_with_self": {"include_self": True, "include_action": True},
    "_no_action": {"include_self": False, "include_action": False},
}


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def edge_mask(n_slots: int, *, include_self: bool = True, include_action: bool = True) -> np.ndarray:
    """Bool ``(n, n + 1)`` mask of the graph entries a metric counts."""
    mask = np.ones((n_slots, n_slots + 1), dtype=bool)
    if not include_self:
        mask[np.arange(n_slots), np.arange(n_slots)] = False
    if not include_action:
        mask[:, n_slots] = False
    return mask


def _check_pair(pred: np.ndarray, true: np.ndarray) -> None:
    if pred.shape != true.shape or pred.ndim < 2 or pred.shape[-1] != pred.shape[-2] + 1:
        raise ValueError(f"graphs must share a shape (..., n, n+1); got {pred.shape} and {true.shape}")


def shd(pred, true, *, include_self: bool = True, include_action: bool = True) -> float:
    """Mean structural Hamming distance per graph: entries that differ (missing plus extra edges).

    Edges run from t to t+1, so there are no reversals to count: SHD is the Hamming distance over the counted
    entries, averaged over the leading axes (one number for a single graph).
    """
    pred, true = _as_numpy(pred).astype(bool), _as_numpy(true).astype(bool)
    _check_pair(pred, true)
    mask = edge_mask(pred.shape[-2], include_self=include_self, include_action=include_action)
    diff = (pred != true) & mask
    return float(diff.reshape(-1, mask.size).sum(axis=1).mean())


def precision_recall_f1(pred, true, *, include_self: bool = True, include_action: bool = True) -> dict[str, float]:
    """Edge precision, recall and F1, pooled over all graphs (micro-averaged). Empty denominators give 0 (F1 of
    two empty graphs is 1)."""
    pred, true = _as_numpy(pred).astype(bool), _as_numpy(true).astype(bool)
    _check_pair(pred, true)
    mask = edge_mask(pred.shape[-2], include_self=include_self, include_action=include_action)
    tp = int((pred & true & mask).sum())
    fp = int((pred & ~true & mask).sum())
    fn = int((~pred & true & mask).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    if tp + fp + fn == 0:
        f1 = 1.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1}


def auroc(scores, true, *, include_self: bool = True, include_action: bool = True) -> float:
    """Area under the ROC curve of raw edge scores against the true edges (Mann-Whitney U, ties count 1/2).

    Returns NaN when the counted entries are all edges or all non-edges (the AUROC is undefined).
    """
    scores, true = _as_numpy(scores).astype(np.float64), _as_numpy(true).astype(bool)
    _check_pair(scores, true)
    mask = np.broadcast_to(
        edge_mask(true.shape[-2], include_self=include_self, include_action=include_action), true.shape
    )
    s, t = scores[mask], true[mask]
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # Average ranks over ties: positions i..j-1 share the mean rank.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    mean_rank = (starts + ends + 1) / 2.0  # 1-based ranks
    ranks[order] = np.repeat(mean_rank, ends - starts)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def global_graph(local_graphs, *, min_frequency: float = 0.0) -> np.ndarray:
    """Aggregate local graphs ``(T, n, n+1)`` into a global graph: edges active in more than ``min_frequency`` of
    the transitions (the default, 0, is the union)."""
    return edge_frequency(_as_numpy(local_graphs)) > min_frequency


GLOBAL_MIN_FREQUENCY = 0.01


def global_graph_metrics(pred, true, *, min_frequency: float = GLOBAL_MIN_FREQUENCY) -> dict[str, float]:
    """Recovery of the *global* graph: the local graphs ``(T, n, n+1)`` of each side aggregated with
    :func:`global_graph` (an edge is in it when active in more than ``min_frequency`` of the transitions), then
    compared once, headline convention. ``global_shd`` counts wrong edges of that one graph; ``global_f1`` etc.

    The default 1% keeps a handful of stray per-transition errors from adding an edge (with 0, the union, one false
    edge in thousands of transitions would); edges rarer than that are not resolved at this level.
    """
    pred_g = global_graph(pred, min_frequency=min_frequency)
    true_g = global_graph(true, min_frequency=min_frequency)
    out = {"global_shd": shd(pred_g, true_g, **HEADLINE)}
    out.update({f"global_{k}": v for k, v in precision_recall_f1(pred_g, true_g, **HEADLINE).items()})
    return out


def graph_metrics(pred, true, scores=None) -> dict[str, float]:
    """Every local-graph recovery number, headline first, with the ``_with_self`` and ``_no_action`` variants.

    Args:
        pred: predicted bool graphs ``(..., n, n+1)``.
        true: ground-truth graphs, same shape (e.g. ``info["local_graph"]``).
        scores: optional raw edge scores (same shape) for AUROC.
    """
    out: dict[str, float] = {}
    for suffix, opts in VARIANTS.items():
        out[f"shd{suffix}"] = shd(pred, true, **opts)
        for k, v in precision_recall_f1(pred, true, **opts).items():
            out[f"{k}{suffix}"] = v
        if scores is not None:
            out[f"auroc{suffix}"] = auroc(scores, true, **opts)
    return out
