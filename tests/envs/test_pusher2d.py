"""Pusher2D: dynamics values and local-graph semantics in hand-built situations, solvability, kwargs errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from cwm_rl.envs import verify_local_graphs
from cwm_rl.envs.pusher2d import BOX_R, CONTACT, MIN_AGENT_DIST, MIN_GOAL_DIST, SUITE_SPEC, Pusher2DEnv
from cwm_rl.errors import InvalidArgumentError

AGENT, BOX, DIST, GOAL, ACT = 0, 1, 2, 3, "a"


def _env(agent, box, dist=((0.1, 0.9, 0.02, 0.0),), goal=(0.2, 0.2), **kwargs) -> Pusher2DEnv:
    """An env set to the given agent / box / distractor rows (x, y, vx, vy) and goal."""
    env = Pusher2DEnv(n_distractors=len(dist), **kwargs)
    env.reset(seed=0)
    state = env.get_state()
    state["sim"] = {
        "agent": np.array([agent], dtype=np.float64),
        "box": np.array([box], dtype=np.float64),
        "dist": np.array([dist], dtype=np.float64).reshape(1, len(dist), 4),
        "goal": np.array([goal], dtype=np.float64),
    }
    env.set_state(state)
    return env


def _rows(graph: np.ndarray) -> dict[int, set]:
    n = graph.shape[0]
    return {i: {(ACT if j == n else j) for j in np.flatnonzero(graph[i])} for i in range(n)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.hypot(v[0], v[1])), 1e-9)


def _scripted(obs: np.ndarray) -> np.ndarray:
    """Go behind the box (detouring around it), then push it towards the goal."""
    p, v, b, g = obs[0:2], obs[2:4], obs[4:6], obs[-2:]
    d = _unit(g - b)
    behind = b - d * (CONTACT + 0.02)
    rel = p - b
    perp = np.array([-d[1], d[0]])
    if np.hypot(*(p - behind)) > 0.05:
        target = behind
        if rel @ d > -0.03 and np.hypot(*rel) < CONTACT + 0.1:
            side = 1.0 if rel @ perp >= 0 else -1.0
            target = b + perp * side * (CONTACT + 0.08) - d * 0.05
        force = 20.0 * (target - p) - 8.0 * v
    else:
        force = _unit(b + d * 0.02 - p)
    return np.clip(force, -1, 1).astype(np.float32)


class TestPusher2D:
    """Selected by ``pytest -k Pusher2D`` together with the contract tests."""

    def test_free_motion_declares_self_and_action_only(self):
        env = _env((0.5, 0.5, 0.0, 0.0), (0.5, 0.2, 0.0, 0.0))
        obs, reward, terminated, _, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
        np.testing.assert_allclose(obs[:4], [0.51, 0.5, 0.01, 0.0], atol=1e-7)
        np.testing.assert_allclose(obs[4:8], [0.5, 0.2, 0.0, 0.0])
        assert _rows(info["local_graph"]) == {AGENT: {AGENT, ACT}, BOX: {BOX}, DIST: {DIST}, GOAL: {GOAL}}
        assert not info["intervened"].any() and not terminated
        assert reward == pytest.approx(-0.3 - 0.1 * np.hypot(0.01, 0.3))

    def test_speed_limit_and_walls(self):
        env = _env((0.5, 0.5, 0.05, 0.05), (0.2, 0.2, 0.0, 0.0))
        obs, *_ = env.step(np.array([1.0, 1.0], dtype=np.float32))
        assert np.hypot(obs[2], obs[3]) == pytest.approx(0.05, rel=1e-6)
        env = _env((0.94, 0.5, 0.05, 0.0), (0.2, 0.2, 0.0, 0.0))
        obs, *_ = env.step(np.array([1.0, 0.0], dtype=np.float32))
        assert obs[0] == pytest.approx(0.95) and obs[2] == 0.0

    def test_contact_is_an_inelastic_collision(self):
        env = _env((0.4, 0.5, 0.03, 0.0), (0.54, 0.5, 0.0, 0.0))
        obs, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
        # The agent reaches 0.424: overlap 0.014, shared equally (equal masses); normal velocities equalised.
        np.testing.assert_allclose(obs[:8], [0.417, 0.5, 0.012, 0.0, 0.547, 0.5, 0.012, 0.0], atol=1e-6)
        rows = _rows(info["local_graph"])
        assert rows[AGENT] == {AGENT, BOX, ACT} and rows[BOX] == {BOX, AGENT, ACT}

    def test_heavier_box_moves_less(self):
        env = _env((0.4, 0.5, 0.03, 0.0), (0.54, 0.5, 0.0, 0.0), box_mass=3.0)
        obs, *_ = env.step(np.zeros(2, dtype=np.float32))
        np.testing.assert_allclose(obs[[0, 2, 4, 6]], [0.4135, 0.006, 0.5435, 0.006], atol=1e-6)

    def test_box_pinned_against_a_wall_pushes_the_agent_out(self):
        env = _env((0.785, 0.5, 0.05, 0.0), (1.0 - BOX_R, 0.5, 0.0, 0.0))
        obs, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
        np.testing.assert_allclose(obs[[0, 2, 4, 6]], [1.0 - BOX_R - CONTACT, 0.0, 1.0 - BOX_R, 0.0], atol=1e-9)
        assert BOX in _rows(info["local_graph"])[AGENT]

    def test_box_slides_with_friction_and_ignores_a_distant_agent(self):
        env = _env((0.2, 0.8, 0.0, 0.0), (0.5, 0.5, 0.02, 0.0))
        obs, _, _, _, info = env.step(np.array([-1.0, 1.0], dtype=np.float32))
        np.testing.assert_allclose(obs[4:8], [0.514, 0.5, 0.014, 0.0], atol=1e-7)
        assert _rows(info["local_graph"])[BOX] == {BOX}

    def test_distractor_passes_through_and_bounces(self):
        env = _env((0.5, 0.5, 0.0, 0.0), (0.65, 0.5, 0.0, 0.0), dist=((0.5, 0.5, 0.02, 0.0), (0.955, 0.3, 0.02, 0.0)))
        obs, _, _, _, info = env.step(np.zeros(2, dtype=np.float32))
        np.testing.assert_allclose(obs[:8], [0.5, 0.5, 0, 0, 0.65, 0.5, 0, 0])  # nothing touched the agent or box
        d0, d1 = obs[8:12], obs[12:16]
        assert np.hypot(d0[2], d0[3]) == pytest.approx(0.02, rel=1e-5)
        assert d1[2] < 0 and d1[0] < 0.96  # reflected off the right wall
        assert _rows(info["local_graph"]) == {0: {0, ACT}, 1: {1}, 2: {2}, 3: {3}, 4: {4}}

    def test_success_terminates_with_bonus(self):
        env = _env((0.2, 0.2, 0.0, 0.0), (0.5, 0.5, 0.0, 0.0), goal=(0.52, 0.5))
        _, reward, terminated, _, _ = env.step(np.zeros(2, dtype=np.float32))
        assert terminated and reward == pytest.approx(10.0 - 0.02 - 0.1 * np.hypot(0.3, 0.3))

    def test_starting_states(self):
        venv = gym.make_vec("cwm/Pusher2D-v0", num_envs=500, vectorization_mode="vector_entry_point")
        obs, _ = venv.reset(seed=0)
        agent, box, dist, goal = obs[:, 0:4], obs[:, 4:8], obs[:, 8:12], obs[:, 12:14]
        assert (agent[:, 2:] == 0).all() and (box[:, 2:] == 0).all()
        assert ((box[:, :2] >= 0.25) & (box[:, :2] <= 0.75)).all()
        assert ((goal >= 0.15) & (goal <= 0.85)).all()
        assert (np.hypot(*(goal - box[:, :2]).T) >= MIN_GOAL_DIST - 1e-6).all()
        assert (np.hypot(*(agent[:, :2] - box[:, :2]).T) >= MIN_AGENT_DIST - 1e-6).all()
        np.testing.assert_allclose(np.hypot(dist[:, 2], dist[:, 3]), 0.02, rtol=1e-5)

    def test_scripted_policy_solves_it_and_random_does_not(self):
        for env_id in ("cwm/Pusher2D-v0", "cwm/Pusher2D-OOD-v0"):
            env = gym.make(env_id)
            env.action_space.seed(0)
            for policy, expected in ((_scripted, 10), (lambda _, e=env: e.action_space.sample(), 0)):
                solved = 0
                for seed in range(10):
                    obs, _ = env.reset(seed=seed)
                    terminated = truncated = False
                    while not (terminated or truncated):
                        obs, _, terminated, truncated, _ = env.step(policy(obs))
                    solved += terminated
                assert solved == expected, env_id

    def test_contact_rich_rollouts_verify(self):
        rng = np.random.default_rng(0)

        def pushing(obs):  # a noisy pushing policy: contacts in about half of the transitions
            return np.clip(_scripted(obs) + rng.uniform(-0.5, 0.5, 2), -1, 1).astype(np.float32)

        report = verify_local_graphs(Pusher2DEnv(), n_transitions=400, seed=0, max_episode_steps=200, policy=pushing)
        assert report.passed, report.table()
        assert report.declared[BOX, AGENT] > 100  # many contacts, all of them confirmed
        assert report.confirmed[BOX, AGENT] == report.declared[BOX, AGENT]

    def test_distractor_count_sets_the_slots(self):
        assert Pusher2DEnv(n_distractors=0).slot_names == ("agent", "box", "goal")
        env = Pusher2DEnv(n_distractors=3)
        assert env.slot_names == ("agent", "box", "distractor0", "distractor1", "distractor2", "goal")
        assert env.observation_space.shape == (22,)
        assert env.causal_graph.sum() == 6 + 1 + 2 + 1  # self-edges, agent<-action, box<-agent/action, agent<-box

    def test_ood_keeps_the_observation_space(self):
        v0, ood = Pusher2DEnv(**SUITE_SPEC["kwargs"]), Pusher2DEnv(**SUITE_SPEC["ood_kwargs"])
        assert v0.observation_space == ood.observation_space
        assert np.array_equal(v0.causal_graph, ood.causal_graph)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"n_distractors": -1},
            {"n_distractors": 5},
            {"n_distractors": 1.5},
            {"box_friction": 1.5},
            {"box_mass": 0.0},
            {"agent_gain": 0.0},
            {"agent_max_speed": 0.2},
            {"distractor_speed": -0.01},
            {"distractor_noise": float("nan")},
            {"goal_radius": "big"},
            {"success_bonus": True},
        ],
    )
    def test_bad_kwargs(self, kwargs):
        with pytest.raises(InvalidArgumentError):
            Pusher2DEnv(**kwargs)


def test_reward_from_the_observation_is_the_step_reward():
    """What ``mpc.reward=env`` scores imagined states with: the step's reward and termination, from ``next_obs``."""
    import torch

    env = gym.make("cwm/Pusher2D-v0", n_distractors=2, goal_radius=0.1)  # goal slot after two distractors
    core = env.unwrapped
    assert core.has_observation_reward
    obs, _ = env.reset(seed=3)
    rng, terminations = np.random.default_rng(0), 0
    for _ in range(3000):
        to_box = obs[4:6] - obs[0:2]  # drive at the box, with noise: it reaches the goal now and then
        action = np.clip(to_box * 20 + rng.normal(0, 0.5, 2), -1, 1).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        r, t = core.reward_from_observation(obs)
        assert r == pytest.approx(reward, abs=1e-6) and bool(t) == terminated
        r_t, t_t = core.reward_from_observation(torch.as_tensor(obs))
        assert r_t.item() == pytest.approx(reward, abs=1e-6) and bool(t_t) == terminated
        terminations += terminated
        if terminated or truncated:
            obs, _ = env.reset()
    assert terminations > 0  # the bonus and the termination were checked too


def test_envs_without_a_reward_function_of_the_observation_say_so():
    pong = gym.make("cwm/InterventionalPong-v0").unwrapped
    assert not pong.has_observation_reward
    with pytest.raises(NotImplementedError, match="no reward function of the observation"):
        pong.reward_from_observation(np.zeros(pong.observation_space.shape, np.float32))
