"""Cross-slot attention: shapes, gating that really cuts information, oracle masks, penalties, graph rollout."""

from __future__ import annotations

import pytest
import torch

from cwm_rl.models.attention import KINDS, SlotCrossAttention, graph_rollout

B, N, D = 3, 4, 16


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g), torch.randn(B, D, generator=g)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_score_range(kind):
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, n_heads=4, kind=kind)
    slots, action = _inputs()
    out = attn(slots, action)
    assert out.out.shape == (B, N, D)
    assert out.scores.shape == (B, N, N + 1)
    assert (out.scores >= 0).all() and (out.scores <= 1).all()
    assert out.penalty.dim() == 0 and 0 <= out.penalty.item() <= 1
    # Extra leading axes (batch, time) work the same.
    out_t = attn(slots.unsqueeze(1).expand(B, 2, N, D), action.unsqueeze(1).expand(B, 2, D))
    assert out_t.scores.shape == (B, 2, N, N + 1)


def test_softmax_rows_sum_to_one_and_entropy_penalty():
    attn = SlotCrossAttention(D, kind="softmax")
    slots, action = _inputs()
    out = attn(slots, action)
    torch.testing.assert_close(out.scores.sum(-1), torch.ones(B, N))
    for p in attn.parameters():  # zero weights: uniform attention, maximal entropy
        torch.nn.init.zeros_(p)
    assert attn(slots, action).penalty.item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_mask_cuts_every_other_parent(kind):
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind=kind).eval()
    if kind != "softmax":
        torch.nn.init.constant_(attn.edge_bias, 10.0)  # every gate open, so only the mask decides
    slots, action = _inputs()
    mask = torch.zeros(B, N, N + 1, dtype=torch.bool)
    mask[:, 0, 2] = True  # child 0 may read slot 2 only
    mask[:, 1, N] = True  # child 1 may read the action only
    base = attn(slots, action, mask).out
    other = slots.clone()
    other[:, [0, 1, 3]] += 1.0  # move every parent except slot 2
    moved = attn(other, action, mask).out
    torch.testing.assert_close(moved[:, 0], base[:, 0])
    torch.testing.assert_close(moved[:, 1], base[:, 1])
    # Children 2 and 3 have no parent: a zero message, so their output is exactly the projection bias.
    for child in (2, 3):
        torch.testing.assert_close(moved[:, child], attn.out_proj.bias.expand(B, D))
        torch.testing.assert_close(base[:, child], attn.out_proj.bias.expand(B, D))
    # And the open edge does carry information: moving slot 2 changes child 0.
    other[:, 2] += 1.0
    assert not torch.allclose(attn(other, action, mask).out[:, 0], base[:, 0])


def test_hard_gates_are_binary_and_cut_information_in_eval():
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard").eval()
    torch.nn.init.constant_(attn.edge_bias, -50.0)  # every edge closed
    slots, action = _inputs()
    out = attn(slots, action)
    torch.testing.assert_close(out.out, attn.out_proj.bias.expand(B, N, D))
    torch.nn.init.constant_(attn.edge_bias, 0.0)
    a = attn(slots, action)
    b = attn(slots * 2.0, action)
    assert not torch.allclose(a.out, b.out)


def test_hard_gates_train_with_straight_through_gradients():
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard").train()
    slots, action = _inputs()
    out = attn(slots, action)
    (out.out.square().mean() + out.penalty).backward()
    assert attn.edge_q.weight.grad is not None and attn.edge_q.weight.grad.abs().sum() > 0
    assert attn.edge_bias.grad is not None and attn.edge_bias.grad.abs() > 0


def test_bad_configuration():
    with pytest.raises(ValueError, match="kind"):
        SlotCrossAttention(D, kind="sparsemax")
    with pytest.raises(ValueError, match="divisible"):
        SlotCrossAttention(10, n_heads=4)


def test_graph_rollout_composes_layers():
    # Two slots a, b; columns a, b, action.
    first = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # a <- action, b <- b
    second = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # a <- a, b <- a
    torch.testing.assert_close(graph_rollout([first]), first)
    rolled = graph_rollout([first, second])
    # b <- a <- action: b reaches the action through a; a keeps the action.
    torch.testing.assert_close(rolled, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError):
        graph_rollout([])
