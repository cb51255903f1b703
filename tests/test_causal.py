"""Graph utilities and recovery metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cwm_rl.causal import (
    auroc,
    edge_frequency,
    edge_mask,
    format_graph,
    global_graph,
    global_graph_metrics,
    graph_metrics,
    precision_recall_f1,
    shd,
)

# Two slots: rows a, b; columns a, b, action.
TRUE = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
PRED = np.array([[1, 1, 1], [0, 1, 0]], dtype=bool)  # one extra edge (a <- b), one missing (b <- a)


def test_edge_mask_variants():
    assert edge_mask(2).sum() == 6
    assert edge_mask(2, include_self=False).tolist() == [[False, True, True], [True, False, True]]
    assert edge_mask(2, include_action=False)[:, 2].tolist() == [False, False]


def test_shd_and_f1_by_hand():
    assert shd(PRED, TRUE) == 2.0
    assert shd(PRED, PRED) == 0.0
    assert shd(PRED, TRUE, include_action=False) == 2.0
    # Self-edges agree here, so excluding them leaves both errors; SHD is averaged over a stack.
    assert shd(np.stack([PRED, TRUE]), np.stack([TRUE, TRUE]), include_self=False) == 1.0
    m = precision_recall_f1(PRED, TRUE)  # tp = 3 (a<-a, a<-action, b<-b), fp = 1, fn = 1
    assert m == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75})
    m = precision_recall_f1(PRED, TRUE, include_self=False)  # tp = 1 (a<-action), fp = 1, fn = 1
    assert m == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    empty = np.zeros((2, 3), dtype=bool)
    assert precision_recall_f1(empty, empty)["f1"] == 1.0
    assert precision_recall_f1(empty, TRUE) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_auroc_by_hand_and_ties():
    true = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    perfect = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.7]])
    assert auroc(perfect, true) == 1.0
    assert auroc(-perfect, true) == 0.0
    assert auroc(np.full((2, 3), 0.5), true) == 0.5  # all tied
    # positives 0.9, 0.8, 0.2; negatives 0.1, 0.2, 0.3: pairs won 3 + 3 + (1 + 0.5 tie) = 7.5 of 9
    scores = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.2]])
    assert auroc(scores, true) == pytest.approx(7.5 / 9)
    assert math.isnan(auroc(perfect, np.ones((2, 3), dtype=bool)))


def test_graph_metrics_variants_and_torch_inputs():
    pred, true = torch.tensor(np.stack([PRED, TRUE])), torch.tensor(np.stack([TRUE, TRUE]))
    scores = pred.float() * 0.8 + 0.1
    m = graph_metrics(pred, true, scores)
    assert set(m) == {
        f"{k}{s}" for k in ("shd", "precision", "recall", "f1", "auroc") for s in ("", "_with_self", "_no_action")
    }
    assert m["shd_with_self"] == 1.0 and m["shd"] == 1.0
    assert m["f1_with_self"] == pytest.approx(2 * 7 / (2 * 7 + 1 + 1))


def test_global_graph_and_frequency():
    stack = np.stack([TRUE, PRED, TRUE, TRUE])
    freq = edge_frequency(stack)
    assert freq[0, 1] == 0.25 and freq[1, 0] == 0.75 and freq[0, 0] == 1.0
    assert global_graph(stack).tolist() == (TRUE | PRED).tolist()
    assert global_graph(stack, min_frequency=0.5).tolist() == TRUE.tolist()


def test_global_graph_metrics_ignore_rare_stray_edges():
    # 200 transitions: the model's extra edge a <- b appears once (0.5%), its missing edge b <- a is missing in 150.
    true = np.stack([TRUE] * 200)
    pred = true.copy()
    pred[0, 0, 1] = True
    pred[:150, 1, 0] = False
    m = global_graph_metrics(pred, true)  # 1%: the stray edge is out, b <- a (25% of transitions) is in
    assert m == pytest.approx({"global_shd": 0.0, "global_precision": 1.0, "global_recall": 1.0, "global_f1": 1.0})
    union = global_graph_metrics(pred, true, min_frequency=0.0)  # the union counts the single stray edge
    assert union["global_shd"] == 1.0 and union["global_precision"] == pytest.approx(2 / 3)
    pred[150:, 1, 0] = False  # now never predicted: a missing global edge
    assert global_graph_metrics(pred, true)["global_recall"] == 0.5  # 1 of the 2 non-self edges


def test_shape_errors_and_format():
    with pytest.raises(ValueError, match="share a shape"):
        shd(np.zeros((2, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="non-empty"):
        edge_frequency(np.zeros((0, 2, 3), bool))
    text = format_graph(TRUE, ["a", "b"])
    assert text.splitlines()[1].split() == ["a", "<-", "x", ".", "x"]
    assert "75%" in format_graph(edge_frequency(np.stack([TRUE, PRED, TRUE, TRUE])), ["a", "b"], fmt="freq")
