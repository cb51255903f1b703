"""World-model evaluation inside RL loops: the SB3 probe callback, imagined vs real return, ``wm_*`` for baselines."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from cwm_rl.agents.base import torch_threads
from cwm_rl.agents.sb3_baselines import SB3Agent
from cwm_rl.agents.wm_probe import ProbeConfig, WorldModelProbeCallback, imagined_vs_real_return
from cwm_rl.agents.world_model_learner import EnvLayout
from cwm_rl.cli import main
from cwm_rl.models.world_model import Prediction
from cwm_rl.wm_evaluation import Normalizer

CHEM = "cwm/Chemistry-v0"  # 25-step episodes that end by truncation: terminal observations on every reset
TINY_PPO = {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1}
TINY_RUN_PPO = "sb3_kwargs={n_envs: 2, n_steps: 100, batch_size: 100, n_epochs: 1}"
NO_FIT = ProbeConfig(seed_steps=10**9)  # records only


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks on a shared 2-core machine: one torch thread avoids idle-spinning worker threads."""
    with torch_threads(1):
        yield


def test_probe_stores_exactly_the_transitions_the_env_produced():
    agent = SB3Agent("ppo", CHEM, seed=3, hyperparams=TINY_PPO)
    probe = WorldModelProbeCallback(CHEM, config=NO_FIT)
    agent.learn(128, callback=probe)
    data = probe.buffer.arrays()  # every sub-env step is a real transition here: time-major, then sub-env
    assert len(probe.buffer) == probe.transitions_seen == 128
    assert data["obs"].shape == (128, 30) and data["local_graph"].shape == (128, 6, 7)
    # Replay sub-env 0 independently: SB3 seeds sub-env i with seed + i and resets it unseeded after each episode.
    env = gym.make(CHEM)
    obs, _ = env.reset(seed=3)
    ends = 0
    for k in range(0, 128, 2):
        assert np.allclose(data["obs"][k], obs)
        obs, reward, terminated, truncated, info = env.step(int(data["action"][k]))
        assert np.allclose(data["next_obs"][k], obs)  # the terminal observation at an episode's end, not the reset
        assert data["reward"][k] == pytest.approx(reward)
        assert bool(data["terminated"][k]) == terminated  # a time limit is not a termination
        assert (data["local_graph"][k] == info["local_graph"]).all()
        if terminated or truncated:
            ends += 1
            obs, _ = env.reset()
    assert ends >= 2  # 64 steps of (at most) 25-step episodes: episode ends were crossed
    assert probe.buffer.window_starts().shape[0] > 0 and not probe.ready


def test_probe_record_skips_steps_without_a_local_graph_and_uses_terminal_observations():
    probe = WorldModelProbeCallback(CHEM, config=NO_FIT)
    last = np.zeros((3, 30), np.float32)
    new = np.ones((3, 30), np.float32)
    graph = np.eye(6, 7, dtype=bool)
    hit = np.eye(1, 6, 2, dtype=bool)[0]  # slot 2 was intervened on in the first transition
    infos = [
        {"local_graph": graph, "intervened": hit},
        {"local_graph": graph, "terminal_observation": np.full(30, 7.0), "TimeLimit.truncated": False},
        {},  # e.g. a wrapper that drops the info: not a usable transition
    ]
    local_vars = {
        "new_obs": new,
        "infos": infos,
        "dones": np.array([False, True, False]),
        "actions": np.array([[1], [2], [3]]),
        "rewards": np.array([0.5, 1.0, 2.0]),
    }
    assert probe.record(last, local_vars) == 2
    data = probe.buffer.arrays()
    assert data["next_obs"][0].tolist() == [1.0] * 30 and data["next_obs"][1].tolist() == [7.0] * 30
    assert data["terminated"].tolist() == [False, True] and data["action"].tolist() == [1, 2]
    assert (data["local_graph"] == graph).all() and data["reward"].tolist() == [0.5, 1.0]
    assert data["intervened"].tolist() == [hit.tolist(), [False] * 6]  # no flags in the info: none intervened


@pytest.mark.parametrize(
    ("algo", "env_id", "action_shape"),
    [("dqn", CHEM, (60,)), ("sac", "cwm/Pusher2D-v0", (60, 2))],
)
def test_probe_records_off_policy_agents_too(algo, env_id, action_shape):
    hyper = {"learning_starts": 30, "buffer_size": 500, "batch_size": 16}
    agent = SB3Agent(algo, env_id, seed=0, hyperparams=hyper)
    probe = WorldModelProbeCallback(env_id, config=NO_FIT)
    agent.learn(60, callback=probe)
    data = probe.buffer.arrays()
    assert data["action"].shape == action_shape and len(probe.buffer) == 60
    space = agent.model.action_space
    if algo == "sac":  # the env's (unscaled) actions, not SAC's [-1, 1] buffer actions
        assert (data["action"] >= space.low).all() and (data["action"] <= space.high).all()
    # Consecutive transitions chain up (one sub-env): a step's next observation is the next step's observation,
    # except across episode ends (Chemistry: every 25 steps or at its goal; Pusher2D: 200 steps or at its goal).
    chained = np.isclose(data["next_obs"][:-1], data["obs"][1:]).all(axis=1)
    assert (~chained).sum() <= 60 // 25 + data["terminated"].sum()


def test_probe_fits_and_is_judged_like_the_model_based_agent_without_changing_the_agent():
    cfg = ProbeConfig(seed_steps=100, first_updates=8, updates=2, train_every=100, window=10, batch_size=8)
    agent = SB3Agent("ppo", CHEM, seed=0, hyperparams=TINY_PPO)
    logged: list[tuple] = []
    probe = WorldModelProbeCallback(CHEM, config=cfg, log=lambda *a: logged.append(a))
    assert probe.metrics(100) == {}  # nothing before the first fit
    agent.learn(256, callback=probe)
    assert probe.ready and probe.fits == 2 and probe.model_updates == 8 + 2
    assert {"world_model/prediction", "world_model/sparsity"} <= {tag for tag, *_ in logged}
    m = probe.metrics(200)
    assert {"open_loop_mse_1", "open_loop_mse_5", "open_loop_mse_10", "shd", "f1", "auroc"} <= set(m)
    assert all(np.isfinite(v) and v >= 0 for v in m.values())
    assert 0.0 <= m["f1"] <= 1.0 and 0.0 <= m["shd"] <= 6 * 7
    # The probe only reads: the same seed learns the same policy with and without it.
    plain = SB3Agent("ppo", CHEM, seed=0, hyperparams=TINY_PPO)
    plain.learn(256)
    for a, b in zip(agent.model.policy.parameters(), plain.model.policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_real_return_is_the_envs_sum_of_rewards():
    layout = EnvLayout.for_env(CHEM)
    model = _ConstantModel(layout, reward=0.0, termination_logit=-50.0)
    norm = _identity_norm(30)
    policy = lambda obs: np.full(len(obs), 4, dtype=np.int64)  # noqa: E731
    out = imagined_vs_real_return(model, norm, policy, CHEM, horizon=6, starts=3, seed=11)
    expected = []
    for i in range(3):  # independently: one env per start, reset with seed + i, rewards until the episode ends
        env = gym.make(CHEM)
        env.reset(seed=11 + i)
        total, ended, steps = 0.0, False, 0
        while not ended and steps < 6:
            _, reward, terminated, truncated, _ = env.step(4)
            total, ended, steps = total + float(reward), terminated or truncated, steps + 1
        expected.append(total)
    assert min(expected) < max(expected)  # action 4 reaches the goal at once from some starts only
    assert out["real_return"] == pytest.approx(np.mean(expected))
    assert out["imagined_return"] == pytest.approx(0.0)
    assert out["return_gap"] == pytest.approx(-out["real_return"])


def test_imagined_return_follows_predicted_rewards_terminations_and_real_time_limits():
    layout = EnvLayout.for_env(CHEM)
    policy = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    norm = _identity_norm(30)
    alive = _ConstantModel(layout, reward=0.5, termination_logit=-50.0)
    assert imagined_vs_real_return(alive, norm, policy, CHEM, horizon=4, starts=2)["imagined_return"] == 2.0
    ends = _ConstantModel(layout, reward=0.5, termination_logit=50.0)  # the first reward counts, then it ended
    assert imagined_vs_real_return(ends, norm, policy, CHEM, horizon=4, starts=2)["imagined_return"] == 0.5
    # A 25-step episode: from step 20, the real time limit cuts the imagined rollout after 5 of 10 steps.
    cut = imagined_vs_real_return(alive, norm, policy, CHEM, horizon=10, starts=2, burn_in=20)
    assert cut["imagined_return"] == pytest.approx(2.5)
    # The policy acts on imagined observations: a model that moves every observation by +1 per step.
    seen: list[float] = []
    drift = _ConstantModel(layout, reward=0.0, termination_logit=-50.0, delta=1.0)
    record = lambda obs: seen.append(float(obs[0, 0])) or np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    imagined_vs_real_return(drift, norm, record, CHEM, horizon=3, starts=1)
    assert seen[-3:] == pytest.approx([seen[0], seen[0] + 1.0, seen[0] + 2.0])


def test_ppo_training_run_logs_world_model_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--env", CHEM, "--agent", "ppo", "--steps", "2400", "--run-dir", str(run), "--json"]
    sets = [
        "eval_every=1200",
        "eval_episodes=2",
        "wm_probe_transitions=200",
        TINY_RUN_PPO,
    ]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    first, last = metrics["curve"]
    assert not any(k.startswith("wm_") for k in first)  # 1200 steps: the probe has not been fitted yet
    keys = {"wm_open_loop_mse_1", "wm_open_loop_mse_5", "wm_open_loop_mse_10", "wm_shd", "wm_f1"}
    keys |= {"wm_imagined_return", "wm_real_return", "wm_return_gap"}
    assert keys <= set(last) and 0.0 <= last["wm_f1"] <= 1.0
    assert last["wm_return_gap"] == pytest.approx(last["wm_imagined_return"] - last["wm_real_return"])
    assert metrics["wm_f1"] == last["wm_f1"]  # the final world model, as for model-based agents
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"world_model_eval/f1", "world_model_eval/return_gap", "world_model/prediction"} <= tags
    # Off: no probe, no wm_* keys.
    off = tmp_path / "off"
    args = ["train", "--env", CHEM, "--agent", "ppo", "--steps", "2400", "--run-dir", str(off), "--json"]
    assert main([*args, *[x for s in [*sets, "wm_probe=false"] for x in ("--set", s)]]) == 0
    assert not any(k.startswith("wm_") for k in json.loads((off / "metrics.json").read_text())["curve"][-1])


def test_model_based_agents_log_imagined_vs_real_return(tmp_path):
    from cwm_rl.agents.model_based import MPCConfig
    from cwm_rl.agents.training import TrainConfig, train
    from cwm_rl.config import from_dict

    from .test_training import TINY_MPC

    cfg = TrainConfig(env_id=CHEM, agent="causal-mpc", steps=120, eval_every=120, eval_episodes=1)
    cfg.mpc, cfg.wm_probe_transitions = from_dict(MPCConfig, TINY_MPC), 200
    point = train(cfg, tmp_path / "run", progress=False)["curve"][-1]
    assert {"wm_f1", "wm_imagined_return", "wm_real_return", "wm_return_gap"} <= set(point)
    assert np.isfinite(point["wm_imagined_return"]) and np.isfinite(point["wm_real_return"])


# ----------------------------------------------------------------------------------------------------- helpers


def _identity_norm(dim: int) -> Normalizer:
    z, one = torch.zeros(dim), torch.ones(dim)
    return Normalizer(z, one, z.clone(), one.clone())


class _ConstantModel(nn.Module):
    """A world model that predicts a fixed reward, termination logit and observation change at every step."""

    def __init__(self, layout, reward: float, termination_logit: float, delta: float = 0.0) -> None:
        super().__init__()
        self.dim = sum(layout.slot_dims)
        self.reward, self.logit, self.delta = reward, termination_logit, delta

    def initial_state(self, batch: int) -> None:
        return None

    def step(self, state, obs, action, mask=None):
        n = obs.shape[0]
        pred = Prediction(
            torch.full((n, self.dim), self.delta),
            torch.full((n,), self.reward),
            torch.full((n,), self.logit),
            None,
            torch.zeros(()),
        )
        return pred, state
