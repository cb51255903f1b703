"""The slot world model: shapes, recurrent step == teacher-forced forward, oracle gating, gradients."""

from __future__ import annotations

import pytest
import torch

from cwm_rl.models.world_model import SlotModelConfig, SlotWorldModel, consuming_step

SLOTS = (1, 1, 4, 2)  # Interventional Pong's slot widths
B, T = 3, 6


def _data(kind: str = "discrete", seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, sum(SLOTS), generator=g, dtype=dtype)
    act = torch.randint(0, 3, (B, T), generator=g) if kind == "discrete" else torch.rand(B, T, 2, generator=g) * 2 - 1
    return obs, act


def _model(temporal: str, attention: str, readout: str = "last", oracle: bool = False, action=("discrete", 3)):
    torch.manual_seed(0)
    cfg = SlotModelConfig(
        d_model=16, n_layers=2, n_heads=2, temporal=temporal, attention=attention, graph_readout=readout
    )
    return SlotWorldModel(SLOTS, action, cfg, ground_truth_mask=oracle)


@pytest.mark.parametrize("attention", ["softmax", "sigmoid", "hard"])
@pytest.mark.parametrize("readout", ["last", "mean", "rollout"])
def test_forward_shapes(attention, readout):
    model = _model("attention", attention, readout)
    obs, act = _data()
    pred = model(obs, act)
    assert pred.delta.shape == (B, T, sum(SLOTS))
    assert pred.reward.shape == (B, T) and pred.termination_logit.shape == (B, T)
    assert pred.scores.shape == (B, T, len(SLOTS), len(SLOTS) + 1)
    assert (pred.scores >= 0).all() and (pred.scores <= 1).all()
    assert model.local_graph(pred.scores).dtype == torch.bool


@pytest.mark.parametrize("temporal", ["attention", "ssm"])
@pytest.mark.parametrize("attention", ["softmax", "hard"])
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_step_by_step_equals_forward(temporal, attention, action):
    spec = ("discrete", 3) if action == "discrete" else ("continuous", 2)
    model = _model(temporal, attention, action=spec).double().eval()
    obs, act = _data(action, dtype=torch.float64)
    full = model(obs, act)
    state = model.initial_state(B)
    for t in range(T):
        pred, state = model.step(state, obs[:, t], act[:, t])
        torch.testing.assert_close(pred.delta, full.delta[:, t], atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(pred.reward, full.reward[:, t], atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(pred.scores, full.scores[:, t], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("temporal, ssm_kind", [("ssm", "mamba2"), ("ssm", "mamba1"), ("attention", None)])
def test_consuming_step_matches_step_and_reuses_the_state(temporal, ssm_kind):
    """``step_`` gives ``step``'s numbers; for the SSM it writes the new state into the old state's memory."""
    torch.manual_seed(0)
    cfg = SlotModelConfig(d_model=16, n_heads=2, temporal=temporal, ssm_kwargs={"kind": ssm_kind} if ssm_kind else None)
    model = SlotWorldModel(SLOTS, ("discrete", 3), cfg).eval()
    assert consuming_step(model) == model.step_
    obs, act = _data()
    kept, consumed = model.initial_state(B), model.initial_state(B)
    with torch.no_grad():
        for t in range(T):
            before = consumed
            ref, kept = model.step(kept, obs[:, t], act[:, t])
            pred, consumed = model.step_(consumed, obs[:, t], act[:, t])
            torch.testing.assert_close(pred.delta, ref.delta, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(pred.scores, ref.scores)
            if temporal == "ssm":
                assert consumed[0].ssm.data_ptr() == before[0].ssm.data_ptr()  # no new state tensor
                torch.testing.assert_close(before[0].ssm, consumed[0].ssm)  # the old one was overwritten
    stand_in = type("StandIn", (), {"step": lambda self, *a: None})()  # a contract model without step_
    assert consuming_step(stand_in) == stand_in.step


def test_continuous_actions_and_gradients():
    model = _model("attention", "hard", action=("continuous", 2)).train()
    obs, act = _data("continuous")
    pred = model(obs, act)
    loss = pred.delta.square().mean() + pred.reward.square().mean() + pred.termination_logit.mean() + pred.penalty
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_oracle_needs_and_uses_the_mask():
    model = _model("attention", "softmax", oracle=True).eval()
    obs, act = _data()
    with pytest.raises(ValueError, match="ground-truth"):
        model(obs, act)
    n = len(SLOTS)
    mask = torch.zeros(B, T, n, n + 1, dtype=torch.bool)
    mask[..., torch.arange(n), torch.arange(n)] = True  # self-edges only
    base = model(obs, act, mask)
    moved = obs.clone()
    moved[..., 2:6] += 1.0  # move the ball slot only
    out = model(moved, act, mask)
    # With self-edges only, the paddles' and the score's predictions ignore the ball.
    torch.testing.assert_close(out.delta[..., :2], base.delta[..., :2])
    torch.testing.assert_close(out.delta[..., 6:], base.delta[..., 6:])
    assert not torch.allclose(out.delta[..., 2:6], base.delta[..., 2:6])


def test_gate_options_reach_every_layer():
    cfg = SlotModelConfig(d_model=16, n_layers=2, n_heads=2, gate_init=1.0, gate_penalty="logit")
    model = SlotWorldModel(SLOTS, ("discrete", 3), cfg)
    for block in model.blocks:
        assert block.cross.edge_bias.item() == 1.0 and block.cross.gate_penalty == "logit"
    assert SlotWorldModel(SLOTS, ("discrete", 3)).blocks[0].cross.edge_bias.item() == 3.0  # the class default


def test_mlp_layers_sets_the_depth_of_each_blocks_slot_network():
    """``mlp_layers`` hidden layers of width ``mlp_ratio * d_model``; the default keeps the one-hidden-layer layout
    (and its parameter names, so older checkpoints load)."""
    default = SlotWorldModel(SLOTS, ("discrete", 3), SlotModelConfig(d_model=16, n_heads=2))
    assert [type(m).__name__ for m in default.blocks[0].mlp] == ["Linear", "GELU", "Linear"]
    deep = SlotWorldModel(SLOTS, ("discrete", 3), SlotModelConfig(d_model=16, n_heads=2, mlp_layers=3))
    linears = [m for m in deep.blocks[0].mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 32), (32, 16)]
    obs, act = _data()
    assert deep(obs, act).delta.shape == (B, T, sum(SLOTS))


def test_bad_configuration():
    with pytest.raises(ValueError, match="graph_readout"):
        SlotWorldModel(SLOTS, ("discrete", 3), SlotModelConfig(graph_readout="max"))
    with pytest.raises(ValueError, match="temporal"):
        SlotWorldModel(SLOTS, ("discrete", 3), SlotModelConfig(temporal="lstm"))
    with pytest.raises(ValueError, match="action kind"):
        SlotWorldModel(SLOTS, ("multibinary", 3), SlotModelConfig(temporal="attention"))
    with pytest.raises(ValueError, match="mlp_layers must be at least 1"):
        SlotWorldModel(SLOTS, ("discrete", 3), SlotModelConfig(mlp_layers=0))


def test_dense_mlp_baseline_contract():
    from cwm_rl.models.mlp import DenseMLPModel

    torch.manual_seed(0)
    model = DenseMLPModel(sum(SLOTS), ("discrete", 3), hidden=32, n_layers=2)
    obs, act = _data()
    pred = model(obs, act)
    assert pred.delta.shape == (B, T, sum(SLOTS)) and pred.reward.shape == (B, T) and pred.scores is None
    step_pred, state = model.step(model.initial_state(B), obs[:, 2], act[:, 2])
    assert state is None
    torch.testing.assert_close(step_pred.delta, pred.delta[:, 2])
    with pytest.raises(ValueError, match="action kind"):
        DenseMLPModel(4, ("binary", 2))


@pytest.mark.parametrize("d_model, n_layers", [(16, 1), (32, 2), (64, 2)])
def test_slot_transformer_matches_slot_ssm_parameter_count(d_model, n_layers):
    """The paper's comparison: the equivalent Transformer has the slot SSM's size (within 10%)."""
    from cwm_rl.models.factory import make_world_model

    cfg = SlotModelConfig(d_model=d_model, n_layers=n_layers, n_heads=4)
    counts = {
        kind: sum(p.numel() for p in make_world_model(kind, SLOTS, ("discrete", 3), cfg).parameters())
        for kind in ("slot-ssm", "slot-transformer")
    }
    assert abs(counts["slot-transformer"] - counts["slot-ssm"]) / counts["slot-ssm"] < 0.10, counts


def test_transformer_layer_with_feed_forward_steps_like_forward():
    from cwm_rl.models.temporal import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(16, n_heads=4, ffn_hidden=24).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    full, state, steps = attn(x), attn.initial_state(2), []
    for t in range(5):
        y, state = attn.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full)
