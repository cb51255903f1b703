"""Registration, ids and bad input at the Python API boundary."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from cwm_rl.envs import CausalVectorEnv, make_causal_env, register_causal_env
from cwm_rl.envs.pong import InterventionalPongEnv
from cwm_rl.errors import InvalidActionError, InvalidArgumentError, UnknownEnvError


def test_module_prefixed_id_works_without_import():
    code = (
        "import sys, gymnasium as gym\n"
        "env = gym.make('cwm_rl:cwm/InterventionalPong-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs.shape == (8,) and 'cwm_rl' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_unknown_id_and_kwargs_are_clear_errors():
    with pytest.raises(UnknownEnvError, match="unknown env id 'cwm/Pong-v9'.*cwm/InterventionalPong-v0"):
        make_causal_env("cwm/Pong-v9")
    with pytest.raises(InvalidArgumentError, match=r"has no argument\(s\) \['paddle_speed'\]"):
        make_causal_env("cwm/InterventionalPong-v0", paddle_speed=3)
    for kwargs, name in [
        ({"intervention_prob": 1.2}, "intervention_prob"),
        ({"intervention_prob": float("nan")}, "intervention_prob"),
        ({"winning_score": 0}, "winning_score"),
        ({"winning_score": 2.5}, "winning_score"),
        ({"intervention_targets": ("ball", "net")}, "net"),
        ({"render_mode": "human"}, "render_mode"),
    ]:
        with pytest.raises(InvalidArgumentError, match=name):
            InterventionalPongEnv(**kwargs)


def test_registering_the_same_id_twice():
    register_causal_env("tests/PongAgain-v0", InterventionalPongEnv, max_episode_steps=10)
    register_causal_env("tests/PongAgain-v0", InterventionalPongEnv, max_episode_steps=10)  # re-import: no-op
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_causal_env("tests/PongAgain-v0", CausalVectorEnv)
    venv = gym.make_vec("tests/PongAgain-v0", num_envs=3, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 8)


def test_vector_env_rejects_bad_actions():
    venv = gym.make_vec("cwm/InterventionalPong-v0", num_envs=4, vectorization_mode="vector_entry_point")
    venv.reset(seed=0)
    for actions in (np.array([0, 1, 2]), np.array([0, 1, 2, 3]), np.array([0.0, 1.0, 2.0, 0.0])):
        with pytest.raises(InvalidActionError):
            venv.step(actions)
    cont = gym.make_vec("cwm/Pusher2D-v0", num_envs=2, vectorization_mode="vector_entry_point")
    cont.reset(seed=0)
    for actions in (np.full((2, 2), np.nan), np.full((2, 2), 1.5), np.zeros((2, 3))):
        with pytest.raises(InvalidActionError):
            cont.step(actions)


def test_step_before_reset_and_bad_state():
    env = InterventionalPongEnv()
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(InvalidArgumentError, match="get_state"):
        env.set_state({"sim": {}})


def test_vector_env_partial_reset_mask():
    venv = gym.make_vec("cwm/InterventionalPong-v0", num_envs=3, vectorization_mode="vector_entry_point")
    first, _ = venv.reset(seed=5)
    venv.step(np.array([1, 1, 1]))
    stepped = venv.unwrapped.env._observe_batch(venv.unwrapped._state).copy()
    again, _ = venv.reset(options={"reset_mask": np.array([False, True, False])})
    assert np.array_equal(again[[0, 2]], stepped[[0, 2]])  # untouched sub-envs keep their state
    assert not np.array_equal(again[1], stepped[1])
