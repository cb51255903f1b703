"""Registry-driven contract tests: every registered ``cwm/*`` id is tested the moment it is registered."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from cwm_rl.envs import CausalEnv, causal_env_ids, verify_local_graphs
from cwm_rl.errors import InvalidActionError

ENV_IDS = causal_env_ids()


def _rollout(env: gym.Env, seed: int, n: int) -> list[tuple]:
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [("reset", obs.copy())]
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((obs.copy(), reward, terminated, truncated, info["local_graph"].copy(), info["intervened"].copy()))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(("reset", obs.copy()))
    return out


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if len(x) != len(y):
            return False
        for u, v in zip(x, y, strict=True):
            if isinstance(u, np.ndarray):
                if not np.array_equal(u, v):
                    return False
            elif u != v:
                return False
    return True


def test_suite_is_registered():
    for name in ("InterventionalPong", "Chemistry", "WeightedBlocks", "Pusher2D"):
        assert f"cwm/{name}-v0" in ENV_IDS
        assert f"cwm/{name}-OOD-v0" in ENV_IDS


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_without_warnings(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env_without_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_slots_and_graph_contract(env_id):
    env = gym.make(env_id)
    causal = env.unwrapped
    assert isinstance(causal, CausalEnv)
    n = len(causal.slot_names)
    assert causal.causal_graph.shape == (n, n + 1) and causal.causal_graph.dtype == bool
    # The slot slices tile the flat float32 observation exactly, in slot order.
    covered = np.concatenate(
        [np.arange(causal.observation_space.shape[0])[causal.slot_slices[s]] for s in causal.slot_names]
    )
    assert np.array_equal(covered, np.arange(causal.observation_space.shape[0]))
    assert causal.observation_space.dtype == np.float32 and len(causal.observation_space.shape) == 1
    for section in (
        "## Description",
        "## Action Space",
        "## Observation Space",
        "## Rewards",
        "## Starting State",
        "## Episode End",
        "## Arguments",
        "## Causal Graph",
    ):
        assert section in type(causal).__doc__, f"{type(causal).__name__} docstring lacks {section}"
    obs, _ = env.reset(seed=3)
    env.action_space.seed(3)
    seen = np.zeros_like(causal.causal_graph)
    for _ in range(300):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        g, iv = info["local_graph"], info["intervened"]
        assert g.shape == (n, n + 1) and g.dtype == bool
        assert iv.shape == (n,) and iv.dtype == bool
        assert not (g & ~causal.causal_graph).any(), "local edge outside the global graph"
        assert not g[iv].any(), "an intervened slot declares parents"
        assert obs in causal.observation_space
        seen |= g
        if terminated or truncated:
            env.reset()
    assert seen.any()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_seeding_determinism(env_id):
    a = _rollout(gym.make(env_id), seed=7, n=200)
    b = _rollout(gym.make(env_id), seed=7, n=200)
    c = _rollout(gym.make(env_id), seed=8, n=200)
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_and_state_roundtrip(env_id):
    env = gym.make(env_id)
    env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(5):
        env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    state = env.unwrapped.get_state()
    actions = [env.action_space.sample() for _ in range(20)]
    ref = [env.unwrapped.step(a) for a in actions]
    got = [clone.unwrapped.step(a) for a in actions]
    env.unwrapped.set_state(state)
    replay = [env.unwrapped.step(a) for a in actions]
    for r, g, p in zip(ref, got, replay, strict=True):
        for other in (g, p):
            assert np.array_equal(r[0], other[0]) and r[1:4] == other[1:4]
            assert np.array_equal(r[4]["local_graph"], other[4]["local_graph"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_batched_equals_single(env_id):
    """Sub-env i of make_vec(seed=s) equals a single env reset with seed s + i, autoreset and truncation included."""
    n_envs, horizon, seed = 6, 25, 11
    venv = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", max_episode_steps=horizon)
    singles = [gym.make(env_id, max_episode_steps=horizon) for _ in range(n_envs)]
    vobs, _ = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        obs, _ = env.reset(seed=seed + i)
        assert np.array_equal(obs, vobs[i])
    venv.action_space.seed(seed)
    done = np.zeros(n_envs, dtype=bool)
    for _ in range(80):
        actions = venv.action_space.sample()
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
        for i, env in enumerate(singles):
            if done[i]:  # next-step autoreset: the vector env resets this sub-env and ignores its action
                obs, _ = env.reset()
                assert np.array_equal(obs, vobs[i]) and vrew[i] == 0 and not vterm[i] and not vtrunc[i]
                assert not vinfo["_local_graph"][i]
                continue
            obs, rew, term, trunc, info = env.step(actions[i])
            assert np.array_equal(obs, vobs[i])
            assert rew == vrew[i] and term == vterm[i] and trunc == vtrunc[i]
            assert vinfo["_local_graph"][i]
            assert np.array_equal(info["local_graph"], vinfo["local_graph"][i])
            assert np.array_equal(info["intervened"], vinfo["intervened"][i])
        done = vterm | vtrunc


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_local_graphs_verify(env_id):
    report = verify_local_graphs(env_id, n_transitions=300, seed=0)
    assert report.n_transitions == 300
    assert report.passed, report.table()
    assert report.declared.sum() > 0 and report.confirmed.sum() > 0


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_rgb_array(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # something is drawn


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_actions_are_rejected(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        bad = [space.n + space.start, -1 + space.start, 0.5, np.nan, "up"]
    else:
        bad = [
            np.full(space.shape, np.nan),
            np.full(space.shape, np.inf),
            space.high + 0.5,
            np.zeros(space.shape[0] + 1),
        ]
    for action in bad:
        with pytest.raises(InvalidActionError):
            env.step(action)


def test_single_env_serves_the_streams_uniforms_across_blocks_resets_and_set_state():
    """The single env draws its step uniforms in blocks; each step must still get exactly its own draws."""
    from cwm_rl.envs.base import UNIFORM_BLOCK
    from cwm_rl.envs.rng import uniforms

    env = gym.make("cwm/InterventionalPong-v0").unwrapped
    env.reset(seed=3)

    def expected() -> np.ndarray:
        counter = np.array([env._counter], dtype=np.uint64)
        return uniforms(env._key, counter, env.n_step_uniforms)

    saved = None
    for t in range(3 * UNIFORM_BLOCK):
        if t == UNIFORM_BLOCK // 2:
            saved = env.get_state()
        if t == UNIFORM_BLOCK + 5:
            env.reset()  # consumes an event: the block must follow the counter
        if t == 2 * UNIFORM_BLOCK:
            env.set_state(saved)  # jumps back into an earlier block
        if t == 2 * UNIFORM_BLOCK + 10:
            env.reset(seed=4)  # a new key
        assert np.array_equal(env._step_uniforms(), expected()), t
        env.step(1)


def test_env_pickled_with_an_array_counter_still_loads():
    """Resume snapshots written before the int counter, the uniform block and Pong's constants keep working."""
    env = gym.make("cwm/InterventionalPong-v0").unwrapped
    env.reset(seed=5)
    ref = [env.step(a) for a in (0, 1, 2)]
    env.reset(seed=5)
    state = dict(env.__dict__)
    state["_counter"] = np.array([env._counter], dtype=np.uint64)
    del state["_block"]
    del state["_c"]  # Pong's 0-d constants are newer too
    old = object.__new__(type(env))
    old.__setstate__(state)
    got = [old.step(a) for a in (0, 1, 2)]
    for r, g in zip(ref, got, strict=True):
        assert np.array_equal(r[0], g[0]) and r[1:4] == g[1:4]
