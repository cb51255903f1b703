"""WeightedBlocks: dynamics values and local-graph semantics in hand-built situations, kwargs errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from cwm_rl.envs import verify_local_graphs
from cwm_rl.envs.weighted_blocks import SUITE_SPEC, WeightedBlocksEnv
from cwm_rl.errors import InvalidArgumentError

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def _env(pos, goal=None, weights=(1.0, 2.0, 3.0), **kwargs) -> WeightedBlocksEnv:
    """An env of len(pos) objects set to the given cells (goals far away unless given)."""
    n = len(pos)
    env = WeightedBlocksEnv(n_objects=n, weights=weights, **kwargs)
    env.reset(seed=0)
    state = env.get_state()
    goal = goal if goal is not None else [(4, 4 - i) if i < 5 else (3, 8 - i) for i in range(n)]
    state["sim"] = {
        "pos": np.array([pos], dtype=np.int64),
        "goal": np.array([goal], dtype=np.int64),
        "weight": np.array([weights], dtype=np.float64),
    }
    env.set_state(state)
    return env


def _act(obj: int, direction: int) -> int:
    return 4 * obj + direction


def _positions(obs: np.ndarray, n: int) -> list[tuple[int, int]]:
    slots = obs.reshape(n, 5)
    return [(int(x), int(y)) for x, y in slots[:, :2]]


def _rows(graph: np.ndarray) -> dict[int, set]:
    n = graph.shape[0]
    return {i: {("a" if j == n else j) for j in np.flatnonzero(graph[i])} for i in range(n)}


class TestWeightedBlocks:
    """Selected by ``pytest -k WeightedBlocks`` together with the contract tests."""

    def test_free_move_declares_mover_and_action_only(self):
        env = _env([(0, 0), (2, 2), (4, 0)])
        obs, _, _, _, info = env.step(_act(0, UP))
        assert _positions(obs, 3) == [(0, 1), (2, 2), (4, 0)]
        assert _rows(info["local_graph"]) == {0: {0, "a"}, 1: {1}, 2: {2}}
        assert not info["intervened"].any()

    def test_heavier_pushes_lighter(self):
        env = _env([(1, 1), (2, 1), (0, 4)], weights=(1.0, 2.0, 3.0))
        obs, _, _, _, info = env.step(_act(1, LEFT))  # obj1 (2) pushes obj0 (1) left
        assert _positions(obs, 3) == [(0, 1), (1, 1), (0, 4)]
        assert _rows(info["local_graph"]) == {0: {0, 1, "a"}, 1: {1, 0, "a"}, 2: {2}}

    def test_lighter_cannot_push_heavier(self):
        env = _env([(1, 1), (2, 1), (0, 4)], weights=(1.0, 2.0, 3.0))
        obs, _, _, _, info = env.step(_act(0, RIGHT))  # obj0 (1) runs into obj1 (2)
        assert _positions(obs, 3) == [(1, 1), (2, 1), (0, 4)]
        assert _rows(info["local_graph"]) == {0: {0, 1, "a"}, 1: {1}, 2: {2}}

    def test_pushing_two_at_once_is_blocked(self):
        env = _env([(1, 1), (2, 1), (3, 1)], weights=(1.0, 2.0, 3.0))
        obs, _, _, _, info = env.step(_act(2, LEFT))  # obj2 pushes obj1, but obj0 is behind it
        assert _positions(obs, 3) == [(1, 1), (2, 1), (3, 1)]
        assert _rows(info["local_graph"]) == {0: {0}, 1: {1, 0}, 2: {2, 1, 0, "a"}}

    def test_walls_block_moves_and_pushes(self):
        env = _env([(0, 0), (1, 0), (3, 3)], weights=(1.0, 2.0, 3.0))
        obs, _, _, _, info = env.step(_act(0, DOWN))  # into the wall
        assert _positions(obs, 3) == [(0, 0), (1, 0), (3, 3)]
        assert _rows(info["local_graph"]) == {0: {0, "a"}, 1: {1}, 2: {2}}
        obs, _, _, _, info = env.step(_act(1, LEFT))  # push obj0 into the wall
        assert _positions(obs, 3) == [(0, 0), (1, 0), (3, 3)]
        assert _rows(info["local_graph"]) == {0: {0}, 1: {1, 0, "a"}, 2: {2}}

    def test_reward_and_success_bonus(self):
        env = _env([(0, 0), (2, 2), (4, 4)], goal=[(0, 1), (2, 2), (4, 4)])
        assert env.observation_space.contains(env._observe_batch(env._state)[0])
        _, reward, terminated, _, _ = env.step(_act(0, RIGHT))  # moves away: distance 2
        assert reward == pytest.approx(-2 / (3 * 2 * 5)) and not terminated
        env.step(_act(0, LEFT))
        _, reward, terminated, _, _ = env.step(_act(0, UP))
        assert reward == 1.0 and terminated

    def test_reset_draws_distinct_cells_and_unsolved_goals(self):
        env = WeightedBlocksEnv(grid_size=3, n_objects=4)
        for seed in range(200):
            obs, _ = env.reset(seed=seed)
            slots = obs.reshape(4, 5)
            assert len({tuple(c) for c in slots[:, :2]}) == 4
            assert len({tuple(c) for c in slots[:, 3:]}) == 4
            assert not np.array_equal(slots[:, :2], slots[:, 3:])
            assert np.array_equal(slots[:, 2], [1, 2, 3, 4])
            assert obs in env.observation_space

    def test_weights_kwargs_and_ood_reversal(self):
        a = WeightedBlocksEnv(n_objects=5, weight_seed=7)
        b = WeightedBlocksEnv(n_objects=5, weight_seed=7)
        assert np.array_equal(a.weights, b.weights) and sorted(a.weights) == [1, 2, 3, 4, 5]
        assert WeightedBlocksEnv(weights=[0.5, 9, 2]).weights.tolist() == [0.5, 9.0, 2.0]
        ood = gym.make("cwm/WeightedBlocks-OOD-v0").unwrapped
        iid = gym.make("cwm/WeightedBlocks-v0").unwrapped
        assert ood.weights.tolist() == iid.weights.tolist()[::-1]
        assert ood.observation_space == iid.observation_space and ood.action_space == iid.action_space
        assert SUITE_SPEC["max_episode_steps"] == 100

    def test_interventions_redraw_a_whole_slot_without_parents(self):
        env = WeightedBlocksEnv(intervention_prob=1.0)
        env.reset(seed=3)
        env.action_space.seed(3)
        n_hit = n_void = 0
        for _ in range(200):
            obs, _, terminated, _, info = env.step(env.action_space.sample())
            graph, hit = info["local_graph"], info["intervened"]
            assert hit.sum() <= 1
            n_hit += hit.any()
            if hit.any():
                assert not graph[hit].any()
                slot = obs.reshape(3, 5)[hit][0]
                assert slot[2] == env.weights[np.flatnonzero(hit)[0]]
            else:  # void: the chosen object's row has every parent
                n_void += 1
                assert graph.all(axis=1).sum() == 1
            assert obs in env.observation_space
            if terminated:
                env.reset()
        assert n_hit > 100 and n_void > 0

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"intervention_prob": 0.3},
            {"grid_size": 3, "n_objects": 4, "intervention_prob": 0.2},
            {"grid_size": 8, "n_objects": 8, "weight_seed": 1},
        ],
    )
    def test_non_default_kwargs_verify(self, kwargs):
        report = verify_local_graphs("cwm/WeightedBlocks-v0", n_transitions=300, env_kwargs=kwargs)
        assert report.passed, report.table()

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"grid_size": 2},
            {"grid_size": 13},
            {"grid_size": 5.0},
            {"n_objects": 1},
            {"n_objects": 9},
            {"grid_size": 3, "n_objects": 5},
            {"weights": (1.0, 2.0)},
            {"weights": (1.0, 1.0, 2.0)},
            {"weights": (1.0, -2.0, 3.0)},
            {"weights": (1.0, float("nan"), 3.0)},
            {"weights": "abc"},
            {"weights": (1, 2, 3), "weight_seed": 0},
            {"weight_seed": -1},
            {"intervention_prob": 1.5},
            {"intervention_prob": True},
            {"render_mode": "human"},
        ],
    )
    def test_bad_kwargs_raise(self, kwargs):
        with pytest.raises(InvalidArgumentError):
            WeightedBlocksEnv(**kwargs)
