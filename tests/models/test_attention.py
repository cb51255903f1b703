"""Cross-slot attention: shapes, gating that really cuts information, oracle masks, penalties, graph rollout."""

from __future__ import annotations

import pytest
import torch

from cwm_rl.models.attention import (
    CLOSED_EDGES,
    EDGE_MODES,
    KINDS,
    SlotCrossAttention,
    edge_mode,
    gates_open,
    graph_rollout,
)

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
    # Move every slot but a child's parent and the child itself (its own state is its query, and a slot's own
    # past reaches it through the residual stream anyway).
    for child, others in ((0, [1, 3]), (1, [0, 2, 3])):
        other = slots.clone()
        other[:, others] += 1.0
        torch.testing.assert_close(attn(other, action, mask).out[:, child], base[:, child])
    other = slots.clone()
    other[:, [0, 1, 3]] += 1.0
    moved = attn(other, action, mask).out
    # Children 2 and 3 have no parent: a zero message, so their output is exactly the projection bias.
    for child in (2, 3):
        torch.testing.assert_close(moved[:, child], attn.out_proj.bias.expand(B, D))
        torch.testing.assert_close(base[:, child], attn.out_proj.bias.expand(B, D))
    # And the open edge does carry information: moving slot 2 changes child 0.
    other[:, 2] += 1.0
    assert not torch.allclose(attn(other, action, mask).out[:, 0], base[:, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_gates_open_opens_every_gate_in_training_too_and_restores(kind):
    """Shut gates (bias -50) run as open ones (bias +50) inside ``gates_open``, in training as in evaluation;
    softmax attention has no gates and is unchanged."""
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind=kind, resample_closed_action=False)
    slots, action = _inputs()
    outs = {}
    for bias in (-50.0, 50.0):
        if kind != "softmax":
            torch.nn.init.constant_(attn.edge_bias, bias)
        for training in (False, True):
            attn.train(training)
            torch.manual_seed(1)
            outs[bias, training, False] = attn(slots, action).out
            with gates_open(attn):
                torch.manual_seed(1)
                outs[bias, training, True] = attn(slots, action).out
    for training in (False, True):
        torch.testing.assert_close(outs[-50.0, training, True], outs[50.0, training, False])
        if kind != "softmax":
            assert not torch.allclose(outs[-50.0, training, False], outs[50.0, training, False])
    assert attn.force_open is False


@pytest.mark.parametrize("resample", [False, True])
def test_hard_gates_are_binary_and_cut_information_in_eval(resample):
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard", resample_closed_action=resample).eval()
    torch.nn.init.constant_(attn.edge_bias, -50.0)  # every edge closed
    slots, action = _inputs()
    out = attn(slots, action)
    if not resample:  # nothing flows: the output is the projection bias
        torch.testing.assert_close(out.out, attn.out_proj.bias.expand(B, N, D))
    # Either way, a closed action edge does not carry the sample's own action. (Closed *slot* parents still shift
    # the softmax shares of what does flow: the side channel documented in docs/design_notes.md.)
    other_action = action.clone()
    other_action[0] += 1.0
    torch.testing.assert_close(attn(slots, other_action).out[0], out.out[0])
    torch.nn.init.constant_(attn.edge_bias, 0.0)
    a = attn(slots, action)
    b = attn(slots * 2.0, action)
    assert not torch.allclose(a.out, b.out)


def _split_graph(kind: str) -> tuple[SlotCrossAttention, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An attention layer whose graph keeps some edges and drops others, its inputs and the graph."""
    torch.manual_seed(1)
    attn = SlotCrossAttention(D, kind=kind, resample_closed_action=False).eval()
    if kind != "softmax":
        torch.nn.init.constant_(attn.edge_bias, 0.0)  # gates near 0.5: some open, some shut
    slots, action = _inputs(2)
    scores = attn(slots, action).scores
    graph = scores > attn.default_threshold(N + 1)
    assert graph.any() and not graph.all()
    return attn, slots, action, graph


def test_learned_edge_mode_gates_with_the_thresholded_graph():
    # softmax: exactly the oracle path given the model's own thresholded graph as the mask
    attn, slots, action, graph = _split_graph("softmax")
    with edge_mode(attn, "learned"):
        torch.testing.assert_close(attn(slots, action).out, attn(slots, action, graph).out)
    # sigmoid: the soft gates replaced by the 0/1 graph. Scaling every edge logit by a large factor keeps its sign
    # (the same graph) and saturates the native soft gates to 0/1, which must give the same messages.
    attn, slots, action, graph = _split_graph("sigmoid")
    with edge_mode(attn, "learned"):
        learned = attn(slots, action).out
    with torch.no_grad():
        for layer in (attn.edge_q,):
            layer.weight.mul_(1e4)
            layer.bias.mul_(1e4)
        attn.edge_bias.mul_(1e4)
    saturated = attn(slots, action)
    assert torch.equal(saturated.scores > 0.5, graph)
    torch.testing.assert_close(saturated.out, learned, atol=1e-5, rtol=1e-4)
    assert attn.edge_mode == "native"  # the context restored it


def test_edge_modes_differ_where_they_should_and_leave_training_alone():
    for kind in KINDS:
        attn, slots, action, _ = _split_graph(kind)
        outs = {}
        for mode in EDGE_MODES:
            with edge_mode(attn, mode):
                outs[mode] = attn(slots, action).out
        if kind == "hard":  # thresholded gates are what hard attention runs with
            torch.testing.assert_close(outs["learned"], outs["native"])
            assert not torch.allclose(outs["soft"], outs["native"])
        else:  # soft is the native way of soft gates and of softmax attention
            torch.testing.assert_close(outs["soft"], outs["native"])
            assert not torch.allclose(outs["learned"], outs["native"])
        attn.train()
        torch.manual_seed(0)
        native = attn(slots, action).out
        with edge_mode(attn, "learned"):
            torch.manual_seed(0)
            torch.testing.assert_close(attn(slots, action).out, native)
    with pytest.raises(ValueError, match="edge mode 'dense' is not one of"):
        with edge_mode(attn, "dense"):
            pass


def test_closed_action_edge_reads_another_samples_action():
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard").eval()
    torch.nn.init.constant_(attn.edge_bias, -50.0)  # every edge closed
    slots, action = _inputs()
    base = attn(slots, action).out
    # In evaluation the batch is rolled by one: sample 1 reads sample 0's action, and only that.
    moved = action.clone()
    moved[0] += 1.0
    out = attn(slots, moved).out
    assert not torch.allclose(out[1], base[1])
    torch.testing.assert_close(out[[0, 2]], base[[0, 2]])
    # Without a batch axis, or with a batch of one, there is no other sample: a closed edge carries nothing.
    single = attn(slots[:1], action[:1]).out
    torch.testing.assert_close(single, attn.out_proj.bias.expand(1, N, D))
    # Slot parents are never resampled: with only the action column resampled, moving sample 0's slots
    # changes no other sample.
    shifted = slots.clone()
    shifted[0] += 1.0
    torch.testing.assert_close(attn(shifted, action).out[1:], base[1:])


def _projections(attn, slots, action):
    q = attn.q_proj(slots).view(B, N, attn.n_heads, attn.d_head).transpose(1, 2)
    parents = torch.cat([slots, action.unsqueeze(1)], dim=1)
    k = attn.k_proj(parents).view(B, N + 1, attn.n_heads, attn.d_head).transpose(1, 2)
    v = attn.v_proj(parents).view(B, N + 1, attn.n_heads, attn.d_head).transpose(1, 2)
    return q, k, v, q @ k.transpose(-1, -2) / attn.d_head**0.5


def test_hard_gate_multiplies_the_softmax_weight_so_a_lone_edge_stays_trainable():
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard", resample_closed_action=False).eval()
    slots, action = _inputs()
    q, k, v, logits = _projections(attn, slots, action)
    gates = torch.zeros(B, 1, N, N + 1)
    gates[:, :, 0, 2] = 1.0  # child 0 reads slot 2 only
    gates.requires_grad_(True)
    messages = attn._hard_messages(q, k, v, logits, gates, None)
    # No renormalisation over the open parents: the lone edge keeps its share among all parents.
    share = torch.softmax(logits, -1)[..., 0, 2]  # (B, H)
    torch.testing.assert_close(messages[..., 0, :], share.unsqueeze(-1) * v[..., 2, :])
    torch.testing.assert_close(messages[..., 1:, :], torch.zeros_like(messages[..., 1:, :]))  # closed rows: nothing
    messages[..., 0, :].sum().backward()
    assert gates.grad[:, 0, 0, 2].abs().min() > 0  # renormalising made this gradient exactly zero


def test_hard_gates_train_with_straight_through_gradients():
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard").train()
    slots, action = _inputs()
    out = attn(slots, action)
    (out.out.square().mean() + out.penalty).backward()
    assert attn.edge_q.weight.grad is not None and attn.edge_q.weight.grad.abs().sum() > 0
    assert attn.edge_bias.grad is not None and attn.edge_bias.grad.abs() > 0


@pytest.mark.parametrize("kind", ["sigmoid", "hard"])
def test_gate_penalty_forms(kind):
    """``prob``: mean gate probability; ``logit``: mean ``-log(1 - p)``, whose gradient does not vanish on a
    saturated open gate; a masked (oracle) edge costs nothing in either."""
    slots, action = _inputs()
    attn = {form: SlotCrossAttention(D, kind=kind, gate_penalty=form) for form in ("prob", "logit")}
    torch.manual_seed(0)
    attn["logit"].load_state_dict(attn["prob"].state_dict())
    for layer in attn.values():
        torch.nn.init.zeros_(layer.edge_q.weight)  # every edge logit equals the bias
        torch.nn.init.zeros_(layer.edge_q.bias)
        torch.nn.init.constant_(layer.edge_bias, 6.0)  # p = 0.9975: saturated
    out = {form: layer(slots, action) for form, layer in attn.items()}
    assert out["prob"].penalty.item() == pytest.approx(torch.sigmoid(torch.tensor(6.0)).item(), rel=1e-6)
    assert out["logit"].penalty.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(6.0)).item())
    grads = {}
    for form, layer in attn.items():
        layer(slots, action).penalty.backward()
        grads[form] = layer.edge_bias.grad.item()
    assert grads["prob"] == pytest.approx(0.0025, abs=1e-4)  # p (1 - p): almost no push
    assert grads["logit"] == pytest.approx(0.9975, abs=1e-4)  # p: a full push
    mask = torch.zeros(B, N, N + 1, dtype=torch.bool)
    mask[:, :, 0] = True
    for form, layer in attn.items():
        masked = layer(slots, action, mask).penalty.item()
        assert masked == pytest.approx(out[form].penalty.item() / (N + 1), rel=1e-5)


@pytest.mark.parametrize("closed_edges", CLOSED_EDGES)
def test_closed_parents_reach_the_child_only_through_the_keyed_side_channel(closed_edges):
    """Gates fixed so child 0 reads only the action: moving every other slot changes child 0's message through the
    softmax shares with ``"keyed"`` closed edges (the documented side channel), and not at all with ``"constant"``.
    The lone open edge keeps a share below 1 either way, so its gate still gets a gradient."""
    torch.manual_seed(0)
    attn = SlotCrossAttention(D, kind="hard", closed_edges=closed_edges, resample_closed_action=False).eval()
    gates = torch.zeros(B, N, N + 1)
    gates[:, 0, N] = 1.0
    attn._hard_gates = lambda logits, probs: gates
    slots, action = _inputs()
    moved = slots.clone()
    moved[:, 1:] += 1.0
    same = torch.allclose(attn(moved, action).out[:, 0], attn(slots, action).out[:, 0])
    assert same == (closed_edges == "constant")
    attn.train()
    attn._hard_gates = lambda logits, probs: gates + probs - probs.detach()  # straight-through, as in training
    attn(slots, action).out[:, 0].sum().backward()
    assert attn.edge_bias.grad is not None and attn.edge_bias.grad.abs() > 0


def test_bad_configuration():
    with pytest.raises(ValueError, match="closed_edges"):
        SlotCrossAttention(D, closed_edges="open")
    with pytest.raises(ValueError, match="gate penalty"):
        SlotCrossAttention(D, gate_penalty="l2")
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
