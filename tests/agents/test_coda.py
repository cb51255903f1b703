"""CoDA: counterfactual transitions from slots the learned local graphs show independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cwm_rl.agents.coda import coda_transitions, components, crosses, node_graph
from cwm_rl.agents.dyna import DynaAgent, check_dyna_config, dyna_config_for
from cwm_rl.config import ConfigError
from cwm_rl.models.world_model import Prediction
from cwm_rl.wm_evaluation import Normalizer

from .test_dyna import TINY as DYNA_TINY

PONG = "cwm/InterventionalPong-v0"


def _graph(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """A local graph ``(1, n, n + 1)`` with child <- parent edges (parent ``n`` is the action)."""
    g = np.zeros((1, n, n + 1), dtype=bool)
    for child, parent in edges:
        g[0, child, parent] = True
    return g


def test_components_follow_edges_in_either_direction():
    # 4 slots + action: 1 <- 0, 2 <- 3, 3 <- action; slot self-edges do not join anything
    g = _graph(4, [(0, 0), (1, 0), (2, 3), (3, 4), (2, 2)])
    reach = components(node_graph(g))[0]
    assert reach[0].tolist() == [True, True, False, False, False]
    assert reach[2].tolist() == [False, False, True, True, True]
    assert reach[4].tolist() == [False, False, True, True, True]  # the action is a node like the slots
    # a chain of four needs two squarings: 0 <- 1 <- 2 <- 3 <- action
    chain = components(node_graph(_graph(4, [(0, 1), (1, 2), (2, 3), (3, 4)])))[0]
    assert chain.all()


def test_crosses_sees_edges_leaving_or_entering_the_part():
    g = _graph(3, [(1, 0), (2, 3)])
    assert not crosses(g, np.array([[True, True, False, False]]))[0]  # {0, 1} | {2, action}
    assert crosses(g, np.array([[True, False, False, False]]))[0]  # 1 <- 0 enters from outside
    assert crosses(g, np.array([[False, True, True, True]]))[0]  # ... and leaves {1, 2, action} for 0


class _ContactModel(torch.nn.Module):
    """3 one-wide slots, Discrete(3) actions. Graph: 1 <- 0 always; 2 <- action always; 2 <- 0 when the two are
    within 1 of each other ("contact"). Reward head: obs[2] + 10 * action."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch)

    def step(self, state, obs, action, mask=None):
        n = obs.shape[0]
        scores = torch.zeros(n, 3, 4)
        scores[:, 1, 0] = 1.0
        scores[:, 2, 3] = 1.0
        scores[:, 2, 0] = ((obs[:, 0] - obs[:, 2]).abs() < 1.0).float()
        reward = obs[:, 2] + 10 * action.float()
        return Prediction(torch.zeros_like(obs), reward, torch.full((n,), -5.0), scores, torch.zeros(())), state

    def local_graph(self, scores, threshold=None):
        return scores > 0.5


def test_coda_swaps_independent_parts_and_drops_swaps_the_graph_forbids():
    norm = Normalizer(torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3))
    rng = np.random.default_rng(0)
    n = 400
    obs = rng.uniform(0, 20, size=(n, 3)).astype(np.float32)
    obs[:, 2] = np.where(np.abs(obs[:, 0] - obs[:, 2]) < 1.0, obs[:, 2] + 2.0, obs[:, 2])  # no real contact
    next_obs = obs + rng.normal(size=(n, 3)).astype(np.float32)
    action = rng.integers(0, 3, size=n)
    data, stats = coda_transitions(_ContactModel(), norm, (1, 1, 1), obs, action, next_obs, np.random.default_rng(1))
    assert stats["pairs"] == n and stats["splittable"] == n  # {0, 1} and {2, action} never touch in real data
    assert 0 < stats["accepted"] < n  # some mixes put slot 2 next to slot 0: dropped
    assert len(data["obs"]) == stats["accepted"]
    # every accepted transition: slots {0, 1} (now and next) from one real transition, {2, action} from another
    key01 = {(o[0], o[1], x[0], x[1]) for o, x in zip(obs, next_obs, strict=True)}
    key2a = {(o[2], x[2], a) for o, x, a in zip(obs, next_obs, action, strict=True)}
    for o, x, a in zip(data["obs"], data["next_obs"], data["action"], strict=True):
        assert (o[0], o[1], x[0], x[1]) in key01 and (o[2], x[2], a) in key2a
        assert abs(o[0] - o[2]) >= 1.0  # no contact in the mixed state
    mixed = [not any((data["obs"][k] == obs).all(1)) for k in range(len(data["obs"]))]
    assert all(mixed)  # never a transition with itself: every state is new
    np.testing.assert_allclose(data["reward"], data["obs"][:, 2] + 10 * data["action"], rtol=1e-6)
    assert not data["terminated"].any()
    # the swapped part is one of the two components, reported per transition
    parts = {tuple(row) for row in data["part"].tolist()}
    assert parts <= {(True, True, False, False), (False, False, True, True)}
    # without the check on the mixed state every split pair is kept, contacts included
    unchecked, stats = coda_transitions(
        _ContactModel(), norm, (1, 1, 1), obs, action, next_obs, np.random.default_rng(1), check_mixed=False
    )
    assert stats["accepted"] == n and (np.abs(unchecked["obs"][:, 0] - unchecked["obs"][:, 2]) < 1.0).any()


def test_coda_needs_a_model_with_a_graph():
    norm = Normalizer(torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3))
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="needs a world model with a local causal graph"):
        coda_transitions(torch.nn.Linear(1, 1), norm, (1, 1, 1), x, np.zeros(2, int), x, np.random.default_rng(0))


TINY = DYNA_TINY | {"rollout_horizon": 1, "model_buffer_size": 400}  # test_dyna's tiny Dyna agent


class _PongGraphModel(_ContactModel):
    """Pong's usual local graph (no contact, no point): left paddle <- ball, right paddle <- action, self-edges.
    A young model's graph is still dense (every slot reads the action), so nothing would split; this one stands
    in for a trained model so the agent's plumbing is what is tested. Reward head: 0.25."""

    def step(self, state, obs, action, mask=None):
        n = obs.shape[0]
        scores = torch.zeros(n, 4, 5)
        for child, parent in ((0, 0), (0, 2), (1, 1), (1, 4), (2, 2), (3, 3)):
            scores[:, child, parent] = 1.0
        return Prediction(
            torch.zeros_like(obs), torch.full((n,), 0.25), torch.full((n,), -5.0), scores, torch.zeros(())
        ), state


def test_dyna_agent_adds_counterfactual_transitions_made_of_real_slot_transitions():
    logs: dict[str, list[float]] = {}
    log = lambda tag, value, step: logs.setdefault(tag, []).append(value)  # noqa: E731
    agent = DynaAgent(PONG, dyna_config_for("causal-dyna", TINY | {"coda_batch": 64}, env_id=PONG), seed=5, log=log)
    agent.learn(160)
    assert [int(v) for v in logs["dyna/coda_transitions"]] == [0, 0, 0]  # the young model's graph is dense
    assert logs["dyna/coda_splittable_share"] == [0.0, 0.0, 0.0]
    agent.learner.model = _PongGraphModel()
    before = agent.replay_buffer.model_size()
    added = agent.augment()
    buf = agent.replay_buffer
    assert added == 64 == agent.counterfactual  # {left, ball}, {right, action}, {score}: every pair splits
    assert buf.model_size() == before + added
    assert logs["dyna/coda_accepted_share"][-1] == logs["dyna/coda_splittable_share"][-1] == 1.0
    cf = slice(before, before + added)
    np.testing.assert_array_equal(buf.model_rewards[cf], 0.25)  # the model's reward head
    # Each slot of a counterfactual transition moves as in some real transition, and the action stays with the
    # right paddle it moved.
    real_obs, real_next = buf.observations[: buf.pos, 0], buf.next_observations[: buf.pos, 0]
    real_act = buf.actions[: buf.pos, 0, 0]
    edges = np.cumsum([0, *agent.layout.slot_dims])
    for o, x, a in zip(
        buf.model_observations[cf], buf.model_next_observations[cf], buf.model_actions[cf, 0], strict=True
    ):
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            same = (real_obs[:, lo:hi] == o[lo:hi]).all(1) & (real_next[:, lo:hi] == x[lo:hi]).all(1)
            if k == 1:
                same &= real_act == a
            assert same.any()
    new = [not (real_obs == o).all(1).any() for o in buf.model_observations[cf]]
    assert np.mean(new) > 0.5  # most are states the agent never visited


def test_coda_with_the_mlp_model_is_a_config_error():
    cfg = dyna_config_for("causal-dyna", {"model": "mlp", "coda_batch": 8}, env_id=PONG)
    with pytest.raises(ConfigError, match="coda_batch needs a world model with a local causal graph"):
        check_dyna_config(cfg)
