"""The Dyna / MBPO agent: the mixed replay buffer, imagined rollouts, the agent's loop, its checkpoint and the CLI,
at tiny budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from cwm_rl.agents.dyna import DynaAgent, MixedReplayBuffer, dyna_config_for, imagine_rollouts
from cwm_rl.checkpoint import CheckpointError
from cwm_rl.cli import main
from cwm_rl.config import ConfigError
from cwm_rl.wm_evaluation import Normalizer

PONG, PUSHER = "cwm/InterventionalPong-v0", "cwm/Pusher2D-v0"

TINY = {
    "seed_steps": 60,
    "train_every": 40,
    "first_updates": 3,
    "updates": 1,
    "window": 4,
    "batch_size": 4,
    "slot.d_model": 16,
    "rollout_batch": 16,
    "rollout_horizon": 2,
    "model_buffer_size": 200,
    "sb3_kwargs": {"learning_starts": 40, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
}


# ------------------------------------------------------------------------------------------------ the buffer


def _buffer(real_ratio: float, model_buffer_size: int = 100) -> MixedReplayBuffer:
    obs_space = spaces.Box(-10, 10, (2,), np.float32)
    buf = MixedReplayBuffer(50, obs_space, spaces.Discrete(3), "cpu", real_ratio=real_ratio, model_buffer_size=50)
    for _ in range(20):  # real transitions: obs 1, reward 1, action 2, not done
        one = np.ones((1, 2), np.float32)
        buf.add(one, one, np.array([[2]]), np.array([1.0]), np.array([False]), [{}])
    return buf


def test_mixed_buffer_samples_the_configured_share_of_real_data():
    buf = _buffer(real_ratio=0.25)
    only_real = buf.sample(40)  # no imagined data yet: all real
    assert (only_real.observations == 1).all() and len(only_real.rewards) == 40
    # Imagined transitions: obs -1, reward 7, action 0, terminated.
    n = 30
    buf.add_model(-np.ones((n, 2)), -np.ones((n, 2)), np.zeros((n, 1)), np.full(n, 7.0), np.ones(n, bool))
    assert (buf.real_size(), buf.model_size()) == (20, 30)
    batch = buf.sample(40)
    real = (batch.observations == 1).all(1)
    assert real[:10].all() and not real[10:].any()  # exactly round(0.25 * 40) real ones, first
    assert (batch.rewards[:10] == 1).all() and (batch.rewards[10:] == 7).all()
    assert (batch.dones[:10] == 0).all() and (batch.dones[10:] == 1).all()
    assert (batch.actions[:10] == 2).all() and (batch.actions[10:] == 0).all()
    assert batch.next_observations.shape == (40, 2) and batch.actions.dtype == torch.int64
    for ratio, n_real in ((0.0, 0), (1.0, 40), (0.05, 2)):
        buf.real_ratio = ratio
        assert buf.split(40) == (n_real, 40 - n_real)
        assert int((buf.sample(40).observations == 1).all(1).sum()) == n_real


def test_model_buffer_is_a_bounded_fifo():
    buf = _buffer(real_ratio=0.0)
    for start in (0, 40):  # 80 rows into 50 slots: rows 30..79 remain
        rows = np.arange(start, start + 40, dtype=np.float32)
        buf.add_model(np.stack([rows, rows], 1), np.zeros((40, 2)), np.zeros((40, 1)), rows, np.zeros(40))
    assert buf.model_size() == 50
    assert sorted(buf.model_rewards.tolist()) == list(range(30, 80))
    with pytest.raises(ConfigError, match="real_ratio"):
        MixedReplayBuffer(10, spaces.Box(-1, 1, (2,)), spaces.Discrete(2), real_ratio=1.5)


# ------------------------------------------------------------------------------------------------ imagination


class _LineModel(torch.nn.Module):
    """Known dynamics: obs += action; reward = new obs[0]; terminates on its second step; NaN for obs[1] < 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch)

    def step(self, state, obs, action, mask=None):
        from cwm_rl.models.world_model import Prediction

        delta = action.float().unsqueeze(-1).expand_as(obs).clone()
        delta[obs[:, 1] < 0] = float("nan")
        term = torch.where(state == 1, 100.0, -100.0)
        return Prediction(delta, (obs + delta)[:, 0], term, None, torch.zeros(())), state + 1


def test_imagined_rollouts_follow_the_model_and_stop_at_termination():
    norm = Normalizer(torch.zeros(2), torch.ones(2), torch.zeros(2), torch.ones(2))
    start = np.array([[0.0, 0.0], [10.0, 1.0], [5.0, -1.0]], np.float32)  # the last row's prediction is NaN
    seen = []

    def act(obs):
        seen.append(obs.copy())
        return np.array([1, 2, 1])

    out = imagine_rollouts(_LineModel(), norm, start, act, horizon=4, discrete=True)
    # Two steps per finite rollout (termination predicted on the second, which is kept), none for the NaN row.
    np.testing.assert_array_equal(out["obs"], [[0, 0], [10, 1], [1, 1], [12, 3]])
    np.testing.assert_array_equal(out["next_obs"], [[1, 1], [12, 3], [2, 2], [14, 5]])
    np.testing.assert_array_equal(out["action"], [1, 2, 1, 2])
    np.testing.assert_array_equal(out["reward"], [1, 12, 2, 14])
    np.testing.assert_array_equal(out["terminated"], [False, False, True, True])
    assert len(seen) == 2  # the policy acts on imagined observations, and only while a rollout runs
    np.testing.assert_array_equal(seen[1][:2], [[1, 1], [12, 3]])


@pytest.fixture(scope="module")
def pong_agent():
    logs: dict[str, list[float]] = {}
    log = lambda tag, value, step: logs.setdefault(tag, []).append(value)  # noqa: E731
    agent = DynaAgent(PONG, dyna_config_for("causal-dyna", TINY, env_id=PONG), seed=3, log=log)
    agent.learn(160)  # DQN acts in rounds of train_freq = 4 steps
    return agent, logs


def test_agent_mixes_imagined_transitions_from_its_world_model(pong_agent):
    agent, logs = pong_agent
    buf = agent.replay_buffer
    assert agent.algo == "dqn" and agent.model_ready and agent.num_timesteps == 160
    assert agent.model_updates == 3 + 1 + 1  # first fit at 60 steps, refits at 100 and 140
    sizes = [int(v) for v in logs["dyna/imagined_transitions"]]
    n = buf.model_size()
    assert len(sizes) == 3 and sum(sizes) == n == agent.imagined
    assert all(16 <= k <= 2 * 16 for k in sizes)  # 16 rollouts of 1-2 steps per refresh
    assert buf.model_observations.shape[1:] == buf.observations.shape[2:] and buf.model_actions.shape[1] == 1
    # Rollouts start at real states ...
    first = slice(n - sizes[-1], n - sizes[-1] + 16)  # the newest refresh's first steps (made after the last fit)
    obs, act = buf.model_observations[first], buf.model_actions[first, 0]
    real_obs, real_next = buf.observations[: buf.pos, 0], buf.next_observations[: buf.pos, 0]
    rows = [int(np.flatnonzero((real_obs == o).all(1))[0]) for o in obs]
    # ... and their next states, rewards and terminations are the world model's predictions, not real data.
    model, norm = agent.learner.model, agent.learner.norm
    x, a = torch.as_tensor(obs), torch.as_tensor(act)
    with torch.no_grad():
        pred, _ = model.step(model.initial_state(16), norm.obs(x), norm.action(a))
    expected = (x + norm.unnormalize_delta(pred.delta)).numpy()
    np.testing.assert_allclose(buf.model_next_observations[first], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf.model_rewards[first], pred.reward.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(buf.model_dones[first], (pred.termination_logit > 0).float().numpy())
    assert not np.array_equal(buf.model_next_observations[first], real_next[rows])


def test_save_load_round_trip_predicts_identically(pong_agent, tmp_path):
    agent, _ = pong_agent
    path = agent.save(tmp_path / "agent.pt")
    loaded = DynaAgent.load(path, env_id=PONG)
    assert loaded.num_timesteps == agent.num_timesteps and loaded.model_ready and loaded.algo == "dqn"
    assert isinstance(loaded.replay_buffer, MixedReplayBuffer) and loaded.replay_buffer.real_ratio == 0.05
    obs = np.asarray(agent.replay_buffer.observations[:32, 0])
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    for k, v in agent.learner.model.state_dict().items():
        torch.testing.assert_close(loaded.learner.model.state_dict()[k], v, rtol=0, atol=0)
    loaded.learn(20)  # it keeps learning (from empty buffers)
    assert loaded.num_timesteps == agent.num_timesteps + 20
    with pytest.raises(CheckpointError, match="env_id"):
        DynaAgent.load(path, env_id="cwm/Chemistry-v0")


def test_same_seed_same_run_with_sac():
    runs = []
    for _ in range(2):
        agent = DynaAgent(PUSHER, dyna_config_for("causal-dyna", TINY, env_id=PUSHER), seed=1)
        agent.learn(120)
        buf = agent.replay_buffer
        assert agent.algo == "sac" and buf.model_size() > 0
        assert (np.abs(buf.model_actions[: buf.model_size()]) <= 1).all()  # SAC's scaled action units
        runs.append((agent.sb3.model.policy.state_dict(), agent.learner.model.state_dict(), buf, agent))
    (p0, w0, b0, a0), (p1, w1, b1, a1) = runs
    for first, second in ((p0, p1), (w0, w1)):
        for k, v in first.items():
            torch.testing.assert_close(second[k], v, rtol=0, atol=0)
    for name in ("model_observations", "model_next_observations", "model_actions", "model_rewards"):
        np.testing.assert_array_equal(getattr(b0, name), getattr(b1, name))
    obs = np.asarray(b0.observations[:8, 0])
    np.testing.assert_array_equal(a0.predict(obs), a1.predict(obs))


# ------------------------------------------------------------------------------------------------ the CLI


def _tiny_set() -> list[str]:
    out = []
    for key, value in TINY.items():
        out += ["--set", f"dyna.{key}={json.dumps(value)}"]
    return [*out, "--set", "eval_every=80", "--set", "eval_episodes=1", "--set", "wm_probe_transitions=200"]


@pytest.mark.parametrize("env_id", [PONG, PUSHER])
def test_cli_train_end_to_end(tmp_path, capsys, env_id):
    run = tmp_path / "run"
    args = ["train", "--env", env_id, "--agent", "causal-dyna", "--steps", "160", *_tiny_set()]
    assert main([*args, "--run-dir", str(run), "--json"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["agent"] == "causal-dyna" and metrics["env_steps"] == 160
    assert [p["env_steps"] for p in metrics["curve"]] == [80, 160]
    assert {"wm_f1", "wm_open_loop_mse_10"} <= set(metrics)
    assert metrics["config"]["dyna"]["real_ratio"] == 0.05
    from cwm_rl.agents.compare import load_agent

    agent, _ = load_agent(run)
    assert isinstance(agent, DynaAgent) and agent.num_timesteps == 160
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0


def test_env_defaults_then_user_overrides():
    from cwm_rl.agents.training import resolve_config

    pong = resolve_config({"env_id": PONG, "agent": "causal-dyna"})
    assert pong.dyna.rollout_horizon == 2 and pong.dyna.sb3_kwargs == {"learning_starts": 2000}
    assert resolve_config({"env_id": "cwm/Pusher2D-OOD-v0", "agent": "causal-dyna"}).dyna.rollout_horizon == 1
    mine = resolve_config({"env_id": PONG, "agent": "causal-dyna", "dyna.real_ratio": 0.1})
    assert mine.dyna.real_ratio == 0.1 and mine.dyna.rollout_horizon == 2


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["dyna.real_ratio=1.5"], "real_ratio=1.5 must be in [0, 1]"),
        (["dyna.real_ratio=-0.1"], "real_ratio=-0.1 must be in [0, 1]"),
        (["dyna.real_ratio=lots"], "dyna.real_ratio='lots' must be a number"),
        (["dyna.real_ratoi=0.1"], "did you mean 'dyna.real_ratio'"),
        (["dyna.rollout_horizon=0"], "rollout_horizon=0 must be a positive integer"),
        (["dyna.coda_batch=-1"], "coda_batch=-1 must be >= 0"),
        (["dyna.reward_weight=-1"], "reward_weight=-1.0 must be a number >= 0"),
        (["dyna.prediction_loss=huber"], "prediction_loss='huber' is not one of ('mse', 'l1')"),
        (["dyna.coda_batch=1"], "CoDA mixes pairs of transitions"),
        (["dyna.coda_batch=8", "dyna.sb3_kwargs={optimize_memory_usage: true}"], "optimize_memory_usage"),
        (["dyna.algo=sac"], "sac needs a Box action space"),
        (["dyna.algo=ppo"], "algo='ppo' is not one of auto, sac, dqn"),
        (["dyna.sb3_kwargs={gradient_steps: 4}"], "use dyna.utd"),
        (["dyna.sb3_kwargs={learning_rat: 0.1}"], "learning_rate"),
        (["sb3_kwargs={learning_rate: 0.1}"], "--set dyna.sb3_kwargs"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, sets, message):
    run = tmp_path / "run"
    args = ["train", "--env", PONG, "--agent", "causal-dyna", "--run-dir", str(run)]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not run.exists()


def test_dyna_resets_its_world_model_on_schedule():
    """``reset_every=80``: first fit at 60 steps, a refit at 100, a new model fitted with ``first_updates`` at 140."""
    agent = DynaAgent(PONG, dyna_config_for("causal-dyna", {**TINY, "reset_every": 80}, env_id=PONG), seed=3)
    agent.learn(160)
    assert agent.learner.resets == 1 and agent.learner.born_at == 140
    assert agent.model_updates == 3 + 1 + 3 and agent.learner.model_age == 3
    with pytest.raises(ConfigError, match="reset_every=-2 must be >= 0"):
        DynaAgent(PONG, dyna_config_for("causal-dyna", {**TINY, "reset_every": -2}, env_id=PONG), seed=3)
