"""SimPLe: the imagined VecEnv (episodes from real states, truncation, restarts), the agent's loop, its checkpoint,
its config and the CLI, at tiny budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cwm_rl.agents.imagined_env import ImaginedVecEnv, restart_rows, restartable_state
from cwm_rl.agents.simple import SimPLeAgent, simple_config_for
from cwm_rl.cli import main
from cwm_rl.config import ConfigError
from cwm_rl.models.factory import make_world_model
from cwm_rl.models.world_model import Prediction, SlotModelConfig
from cwm_rl.wm_evaluation import Normalizer

PONG, PUSHER = "cwm/InterventionalPong-v0", "cwm/Pusher2D-v0"

TINY = {
    "seed_steps": 48,
    "train_every": 48,
    "first_updates": 3,
    "updates": 1,
    "window": 4,
    "batch_size": 4,
    "slot.d_model": 16,
    "imagined_envs": 4,
    "horizon": 5,
    "imagined_steps": 32,
    "ppo_kwargs": {"n_steps": 8, "batch_size": 16, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}},
}


class _Drift(torch.nn.Module):
    """A stateless stand-in world model: every step adds the action to each observation entry, reward = action;
    it terminates when the first entry passes 4."""

    def initial_state(self, batch: int) -> None:
        return None

    def step(self, state, obs, action, mask=None):
        a = action.float()
        delta = a[:, None].expand_as(obs)
        term = torch.where(obs[:, 0] + a > 4, 10.0, -10.0)
        return Prediction(delta, a, term, None, torch.zeros(())), None


def _identity_norm(obs_dim: int) -> Normalizer:
    zeros, ones = torch.zeros(obs_dim), torch.ones(obs_dim)
    return Normalizer(zeros, ones, zeros, ones)


def _drift_env(n: int = 3, horizon: int = 3, **kwargs) -> ImaginedVecEnv:
    starts = iter(range(1000))

    def sampler(k, rng):  # start states 0, 1, 2, ... (first entry), so every restart is visible
        return np.array([[next(starts), 0.0] for _ in range(k)], np.float32)

    obs_space = spaces.Box(-100, 100, (2,), np.float32)
    return ImaginedVecEnv(
        _Drift(), _identity_norm(2), obs_space, spaces.Discrete(3), sampler, n, horizon, rng=None, **kwargs
    )


def test_imagined_episodes_follow_the_model_truncate_at_the_horizon_and_restart_from_real_states():
    env = _drift_env(n=3, horizon=3)
    obs = env.reset()
    assert obs[:, 0].tolist() == [0, 1, 2]
    obs, reward, done, infos = env.step(np.array([1, 0, 1]))
    assert obs[:, 0].tolist() == [1, 1, 3] and reward.tolist() == [1, 0, 1] and not done.any()
    obs, reward, done, infos = env.step(np.array([1, 0, 2]))  # env 2: 3 + 2 = 5 > 4 terminates
    assert done.tolist() == [False, False, True]
    assert infos[2]["terminal_observation"][0] == 5 and infos[2]["TimeLimit.truncated"] is False
    assert obs[2, 0] == 3  # restarted at the next real start state
    obs, reward, done, infos = env.step(np.array([0, 0, 0]))  # envs 0 and 1 reach the horizon: truncated
    assert done.tolist() == [True, True, False]
    assert [infos[i]["TimeLimit.truncated"] for i in (0, 1)] == [True, True]
    assert infos[0]["terminal_observation"][0] == 2 and obs[:2, 0].tolist() == [4, 5]
    assert env.steps == 9


def test_a_non_finite_prediction_truncates_the_episode_at_its_last_finite_state():
    env = _drift_env(n=2, horizon=10)
    env.reset()
    env.model.step = lambda state, obs, action, mask=None: (
        Prediction(
            torch.full_like(obs, float("nan")), action.float(), torch.full((len(obs),), -10.0), None, torch.zeros(())
        ),
        None,
    )
    obs, reward, done, infos = env.step(np.array([1, 1]))
    assert done.all() and all(info["TimeLimit.truncated"] for info in infos)
    assert infos[0]["terminal_observation"][0] == 0 and reward.tolist() == [0, 0]


def test_a_state_leaving_the_widened_bounds_ends_the_episode_clipped_into_them():
    # bounds [-100, 100] widened by 0.01 of their range: valid up to 102; the drift adds the action per step
    env = _drift_env(n=3, horizon=10, bounds_margin=0.01)
    env.model.step = lambda state, obs, action, mask=None: (
        Prediction(
            action.float()[:, None] * torch.tensor([50.0, 0.0]),
            torch.ones(len(obs)),
            torch.full((len(obs),), -10.0),
            None,
            torch.zeros(()),
        ),
        None,
    )
    env.reset()  # first entries 0, 1, 2
    obs, reward, done, _ = env.step(np.array([2, 2, 0]))  # 100, 101, 2: all inside
    assert not done.any() and reward.tolist() == [1, 1, 1]
    obs, reward, done, infos = env.step(np.array([0, 1, 0]))  # 100, 151 (outside: ends clipped to 102), 2
    assert done.tolist() == [False, True, False] and infos[1]["TimeLimit.truncated"] is True
    assert infos[1]["terminal_observation"][0] == 102 and reward.tolist() == [1, 1, 1]  # the step's reward stands
    assert (env.episodes, env.invalid) == (1, 1)
    # without a margin, the same step is valid
    plain = _drift_env(n=1, horizon=10)
    plain.model.step = env.model.step
    plain.reset()
    _, _, done, _ = plain.step(np.array([2]))
    _, _, done, _ = plain.step(np.array([2]))  # 200: far outside the bounds, still finite
    assert not done.any() and plain.invalid == 0
    with pytest.raises(ConfigError, match="bounds_margin=-1 must be >= 0"):
        _drift_env(bounds_margin=-1)


def test_restart_rows_zeroes_the_slot_ssm_state_of_the_restarted_episodes_only():
    model = make_world_model("slot-ssm", [1, 1, 4, 2], ("discrete", 3), SlotModelConfig(d_model=16))
    state = restartable_state(model, 3)
    obs, action = torch.randn(3, 8), torch.tensor([0, 1, 2])
    _, state = model.step(state, obs, action)
    before = [leaf.clone() for leaf in torch.utils._pytree.tree_flatten(state)[0]]
    state = restart_rows(state, torch.tensor([False, True, False]))
    for old, new in zip(before, torch.utils._pytree.tree_flatten(state)[0], strict=True):
        per = new.shape[0] // 3
        assert torch.equal(new[per : 2 * per], torch.zeros_like(new[per : 2 * per]))
        assert torch.equal(new[:per], old[:per]) and torch.equal(new[2 * per :], old[2 * per :])
        assert old[per : 2 * per].abs().sum() > 0  # the step had changed it


def test_the_slot_transformer_is_refused_in_one_line():
    model = make_world_model("slot-transformer", [1, 1, 4, 2], ("discrete", 3), SlotModelConfig(d_model=16))
    with pytest.raises(ConfigError, match="cannot restart one imagined episode"):
        restartable_state(model, 2)


@pytest.fixture(scope="module")
def pong_agent():
    agent = SimPLeAgent(PONG, simple_config_for("causal-simple", TINY, env_id=PONG), seed=3)
    agent.learn(104)
    return agent


def test_agent_trains_ppo_in_its_world_model(pong_agent):
    agent = pong_agent
    assert agent.num_timesteps >= 104 and agent.model_ready
    assert agent.policy_rounds == 2  # fits at 48 and 96 steps, each followed by PPO in the model
    assert agent.imagined >= 2 * 32 and agent.ppo.num_timesteps >= 64
    assert len(agent.buffer) >= 104
    actions = agent.predict(np.zeros((5, 8), np.float32))
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1, 2}


def test_save_load_round_trip_predicts_identically(pong_agent, tmp_path):
    path = pong_agent.save(tmp_path / "agent.pt")
    loaded = SimPLeAgent.load(path, env_id=PONG)
    obs = np.random.default_rng(0).uniform(0, 32, (16, 8)).astype(np.float32)
    assert np.array_equal(loaded.predict(obs), pong_agent.predict(obs))
    assert loaded.num_timesteps == pong_agent.num_timesteps and loaded.policy_rounds == 2
    with pytest.raises(Exception, match="Pusher2D|InterventionalPong"):
        SimPLeAgent.load(path, env_id=PUSHER)


def test_same_seed_same_run_on_pusher_with_the_mlp_model():
    def run() -> list[torch.Tensor]:
        cfg = simple_config_for("mlp-simple", {**TINY, "mlp_hidden": 16}, env_id=PUSHER)
        agent = SimPLeAgent(PUSHER, cfg, seed=1)
        agent.learn(64)
        return [p.detach().clone() for p in (*agent.ppo.policy.parameters(), *agent.model.parameters())]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_predict_refuses_bad_observations_in_one_line(pong_agent):
    with pytest.raises(Exception, match=r"shape \(n, 8\)"):
        pong_agent.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(Exception, match="NaN"):
        pong_agent.predict(np.full((2, 8), np.nan, np.float32))


def _tiny_set() -> list[str]:
    out = []
    for key, value in TINY.items():
        out += ["--set", f"simple.{key}={json.dumps(value)}"]
    return [*out, "--set", "eval_every=48", "--set", "eval_episodes=1", "--set", "wm_probe_transitions=200"]


def test_cli_train_end_to_end(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--env", PONG, "--agent", "mlp-simple", "--steps", "96", *_tiny_set()]
    args += ["--set", "simple.mlp_hidden=16"]
    assert main([*args, "--run-dir", str(run), "--json"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["agent"] == "mlp-simple" and metrics["env_steps"] >= 96
    assert [p["env_steps"] for p in metrics["curve"]][0] >= 48
    assert "wm_open_loop_mse_10" in metrics and metrics["config"]["simple"]["model"] == "mlp"
    assert "dyna" not in metrics["config"] and "mpc" not in metrics["config"]
    from cwm_rl.agents.compare import load_agent

    agent, _ = load_agent(run)
    assert isinstance(agent, SimPLeAgent) and agent.policy_rounds == 2
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0


def test_env_defaults_then_user_overrides():
    from cwm_rl.agents.training import resolve_config

    pong = resolve_config({"env_id": PONG, "agent": "causal-simple"})
    assert pong.simple.horizon == 100 and pong.simple.model == "slot-ssm"
    assert pong.simple.ppo_kwargs == {"n_steps": 64, "batch_size": 512, "n_epochs": 4}
    ood = resolve_config({"env_id": "cwm/InterventionalPong-OOD-v0", "agent": "mlp-simple"})
    assert ood.simple.horizon == 100 and ood.simple.model == "mlp"
    mine = resolve_config({"env_id": PONG, "agent": "causal-simple", "simple.horizon": 20})
    assert mine.simple.horizon == 20 and mine.simple.imagined_steps == 200_000


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["simple.horizon=0"], "horizon=0 must be a positive integer"),
        (["simple.imagined_envs=-1"], "imagined_envs=-1 must be a positive integer"),
        (["simple.bounds_margin=-0.5"], "bounds_margin=-0.5 must be >= 0"),
        (["simple.horizn=5"], "did you mean 'simple.horizon'"),
        (["simple.reward=env"], "has no reward function of the observation"),
        (["simple.ppo_kwargs={n_envs: 4}"], "use simple.imagined_envs"),
        (["simple.ppo_kwargs={learning_rat: 0.1}"], "learning_rate"),
        (["simple.ppo_kwargs={batch_size: 1}"], "ppo rejected its hyperparameters"),
        (["sb3_kwargs={learning_rate: 0.1}"], "--set simple.ppo_kwargs"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, sets, message):
    run = tmp_path / "run"
    args = ["train", "--env", PONG, "--agent", "causal-simple", "--run-dir", str(run)]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not run.exists()


def test_reward_env_scores_imagined_states_with_the_envs_reward_function():
    overrides = {**TINY, "mlp_hidden": 16, "reward": "env"}
    agent = SimPLeAgent(PUSHER, simple_config_for("mlp-simple", overrides, env_id=PUSHER), seed=0)
    agent.learn(48)  # the first fit: the model exists
    env = agent._imagined_env()
    env.reset()
    obs, reward, done, _ = env.step(np.zeros((4, 2), np.float32))
    expected, terminated = agent.env.env.reward_from_observation(torch.as_tensor(obs))
    assert not done.any()
    assert np.allclose(reward, np.asarray(expected, np.float32)) and not np.asarray(terminated).any()
