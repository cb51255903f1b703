"""SB3 baselines behind the agent protocol: hyperparameter files, fit checks, learning, predict, save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from cwm_rl.agents.base import Agent
from cwm_rl.agents.sb3_baselines import (
    SB3_ALGOS,
    SB3Agent,
    algos_for,
    load_hyperparams,
    read_manifest,
)
from cwm_rl.checkpoint import CheckpointError
from cwm_rl.config import ConfigError
from cwm_rl.envs import causal_env_ids
from cwm_rl.errors import InvalidArgumentError, UnknownEnvError

# Tiny settings so each algorithm actually updates its networks within a few hundred steps.
TINY = {
    "ppo": {"n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "a2c": {"n_envs": 2, "n_steps": 8},
    "dqn": {"n_envs": 2, "buffer_size": 1000, "learning_starts": 128, "batch_size": 32, "target_update_interval": 64},
    "sac": {"n_envs": 1, "buffer_size": 1000, "learning_starts": 200, "batch_size": 32},
}
ENV_FOR = {
    "ppo": "cwm/Chemistry-v0",
    "a2c": "cwm/Pusher2D-v0",
    "dqn": "cwm/InterventionalPong-v0",
    "sac": "cwm/Pusher2D-v0",
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny MLPs run fastest on one thread, above all on a shared CPU; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained_ppo() -> SB3Agent:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return SB3Agent("ppo", "cwm/WeightedBlocks-v0", seed=1, hyperparams=TINY["ppo"]).learn(128)
    finally:
        torch.set_num_threads(before)


def _obs_batch(agent: SB3Agent, n: int = 5) -> np.ndarray:
    space = agent.model.observation_space
    space.seed(0)
    return np.stack([space.sample() for _ in range(n)])


def _parameters(agent: SB3Agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in agent.model.policy.state_dict().items()}


# ------------------------------------------------------------------------------------------- learning and predict


@pytest.mark.parametrize("algo", SB3_ALGOS)
def test_each_algo_learns_and_predicts(algo):
    agent = SB3Agent(algo, ENV_FOR[algo], seed=0, hyperparams=TINY[algo])
    assert isinstance(agent, Agent)
    assert (agent.algo, agent.env_id, agent.num_timesteps) == (algo, ENV_FOR[algo], 0)
    assert agent.n_envs == TINY[algo]["n_envs"]
    before = _parameters(agent)
    assert agent.learn(256) is agent
    assert agent.num_timesteps >= 256
    assert any(not torch.equal(before[k], v) for k, v in _parameters(agent).items()), "no parameter was updated"

    actions = agent.predict(_obs_batch(agent, 5))
    space = agent.model.action_space
    if isinstance(space, spaces.Discrete):
        assert actions.shape == (5,) and actions.dtype == np.int64
        assert np.all((actions >= 0) & (actions < space.n))
    else:
        assert actions.shape == (5, *space.shape) and actions.dtype == np.float32
        assert np.all((actions >= space.low) & (actions <= space.high))
    assert agent.predict(_obs_batch(agent, 1)).shape[0] == 1


def test_learn_continues_and_calls_callbacks():
    class Count(BaseCallback):
        calls = 0

        def _on_step(self) -> bool:
            Count.calls += 1
            return True

    agent = SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams=TINY["ppo"])
    agent.learn(128, callback=Count())
    agent.learn(128)
    assert agent.num_timesteps == 256  # continued, not restarted (two rollouts of 2 x 64)
    assert Count.calls == 64  # one call per vectorised step of the first learn()


def test_learning_without_tensorboard_leaves_no_folder_behind(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3 would put its SB3-<time> folders
    agent = SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams=TINY["ppo"])
    agent.learn(128).learn(128)
    assert agent.num_timesteps == 256 and not [p for p in tmp_path.iterdir() if p.name.startswith("SB3-")]


def test_tensorboard_run_continues_across_learn_calls(tmp_path):
    agent = SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams=TINY["ppo"], tensorboard_log=tmp_path / "tb")
    agent.learn(128).learn(128)
    runs = sorted(p for p in (tmp_path / "tb").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("PPO")  # one run, not one per learn() call
    assert any(f.name.startswith("events.out.tfevents") for f in runs[0].iterdir())


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_learn_rejects_bad_budgets(trained_ppo, bad):
    with pytest.raises(InvalidArgumentError, match="total_env_steps"):
        trained_ppo.learn(bad)


def test_predict_rejects_bad_observations(trained_ppo):
    one = _obs_batch(trained_ppo, 1)[0]
    with pytest.raises(InvalidArgumentError, match=r"batch of shape \(n, 15\).*add a batch axis"):
        trained_ppo.predict(one)
    with pytest.raises(InvalidArgumentError, match="got \\(2, 14\\)"):
        trained_ppo.predict(np.zeros((2, 14), np.float32))
    nan = _obs_batch(trained_ppo, 2)
    nan[1, 3] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        trained_ppo.predict(nan)


@pytest.mark.parametrize("algo", ["ppo", "dqn", "sac"])
def test_same_seed_same_policy(algo):
    def run(seed: int) -> SB3Agent:
        return SB3Agent(algo, ENV_FOR[algo], seed=seed, hyperparams=TINY[algo]).learn(256)

    a, b, c = run(7), run(7), run(8)
    pa, pb, pc = _parameters(a), _parameters(b), _parameters(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)  # the seed matters, so the check above can fail
    obs = _obs_batch(a, 8)
    np.testing.assert_array_equal(a.predict(obs), b.predict(obs))


# ----------------------------------------------------------------------------------------------- fit and errors


def test_algos_for_every_suite_env():
    for env_id in causal_env_ids():
        expected = ("ppo", "a2c", "sac") if "Pusher2D" in env_id else ("ppo", "a2c", "dqn")
        assert algos_for(env_id) == expected, env_id


@pytest.mark.parametrize(
    "algo, env_id, message",
    [
        ("dqn", "cwm/Pusher2D-v0", r"^dqn needs a Discrete action space; cwm/Pusher2D-v0 has Box\(.*\); use sac, "),
        ("sac", "cwm/Chemistry-v0", r"^sac needs a Box action space; cwm/Chemistry-v0 has Discrete\(25\); use dqn, "),
        ("ppo2", "cwm/Chemistry-v0", r"unknown SB3 algorithm 'ppo2'; did you mean 'ppo'\? choose one of ppo, a2c"),
    ],
)
def test_misfit_and_unknown_algo(algo, env_id, message):
    with pytest.raises(InvalidArgumentError, match=message) as info:
        SB3Agent(algo, env_id)
    assert "\n" not in str(info.value)
    if algo != "ppo2":
        assert str(info.value).endswith("ppo or a2c")


def test_unknown_env_and_env_kwargs():
    with pytest.raises(UnknownEnvError, match="unknown env id 'cwm/Nope-v0'"):
        SB3Agent("ppo", "cwm/Nope-v0")
    with pytest.raises(UnknownEnvError):
        algos_for("cwm/Nope-v0")
    with pytest.raises(InvalidArgumentError, match="no argument"):
        SB3Agent("ppo", "cwm/Chemistry-v0", env_kwargs={"n_objectz": 3})


# ---------------------------------------------------------------------------------------------- hyperparameters


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "ppo.yaml"
    path.write_text(
        "default: {n_envs: 4, n_steps: 16, gamma: 0.9, ent_coef: 0.1}\n"
        "cwm/Chemistry-v0: {n_steps: 32, gamma: 0.95}\n"
        "cwm/Pusher2D-v0: {gamma: 0.5}\n"
        "cwm/Pusher2D-OOD-v0: {gamma: 0.6}\n"
    )
    return path


def test_merge_order_default_env_overrides(table):
    hp = load_hyperparams("ppo", "cwm/Chemistry-v0", {"n_steps": 64}, path=table)
    assert hp == {"policy": "MlpPolicy", "n_envs": 4, "n_steps": 64, "gamma": 0.95, "ent_coef": 0.1}
    assert load_hyperparams("ppo", "cwm/WeightedBlocks-v0", path=table)["gamma"] == 0.9  # no entry: default
    assert load_hyperparams("ppo", "cwm/Chemistry-OOD-v0", path=table)["gamma"] == 0.95  # OOD -> base entry
    assert load_hyperparams("ppo", "cwm/Pusher2D-OOD-v0", path=table)["gamma"] == 0.6  # its own entry wins


def test_shipped_files_fit_every_env():
    for algo in SB3_ALGOS:
        for env_id in causal_env_ids():
            hp = load_hyperparams(algo, env_id)
            assert hp["policy"] == "MlpPolicy" and hp["n_envs"] >= 1
    assert load_hyperparams("ppo", "cwm/Pusher2D-OOD-v0") == load_hyperparams("ppo", "cwm/Pusher2D-v0")
    assert load_hyperparams("ppo", "cwm/Pusher2D-v0")["ent_coef"] != load_hyperparams("ppo", "Unlisted-v0")["ent_coef"]
    assert load_hyperparams("dqn", "cwm/Chemistry-v0", {"n_envs": 3})["n_envs"] == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rat": 1e-3}, "unknown key 'learning_rat' for ppo; did you mean 'learning_rate'?"),
        ({"buffer_size": 10}, "unknown key 'buffer_size' for ppo"),
        ({"seed": 3}, "'seed' is not a hyperparameter; pass SB3Agent(seed=...) instead"),
        ({"n_steps": 2.5}, "n_steps=2.5 must be an integer"),
        ({"gamma": "high"}, "gamma='high' must be a number"),
        ({"use_sde": 1}, "use_sde=1 must be true or false"),
        ({"n_envs": 0}, "n_envs=0 must be a positive integer"),
        ({"threads": 0}, "threads=0 must be a positive integer"),
        ({"policy": "MlpPolicyy"}, "unknown policy 'MlpPolicyy' for ppo; did you mean 'MlpPolicy'?"),
        ({"policy_kwargs": {"activation_fn": "reluu"}}, "did you mean 'relu'?"),
        ({"policy_kwargs": [64]}, "policy_kwargs=[64] must be a mapping"),
        ([("n_steps", 8)], "overrides must be a mapping"),
    ],
)
def test_bad_hyperparameters(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_hyperparams("ppo", "cwm/Chemistry-v0", overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_learn_and_predict_run_on_the_threads_hyperparameter_and_restore_the_callers():
    seen: list[int] = []

    class _Threads(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(torch.get_num_threads())
            return True

    agent = SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams=TINY["ppo"])
    assert agent.threads == 1 and agent.hyperparams["threads"] == 1  # the shipped default
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        agent.learn(64, callback=_Threads())
        assert set(seen) == {1} and torch.get_num_threads() == 2
        agent.predict(np.zeros((1, 30), np.float32))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_values_sb3_rejects_are_config_errors():
    with pytest.raises(ConfigError, match="ppo rejected its hyperparameters on cwm/Chemistry-v0: .*batch_size"):
        SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams={**TINY["ppo"], "batch_size": 1})


def test_bad_key_in_a_file_names_the_file_and_entry(tmp_path):
    path = tmp_path / "dqn.yaml"
    path.write_text("default: {}\ncwm/Chemistry-v0: {exploration_fractoin: 0.3}\n")
    with pytest.raises(ConfigError, match=r"dqn.yaml \[cwm/Chemistry-v0\]: .*did you mean 'exploration_fraction'"):
        load_hyperparams("dqn", "cwm/Chemistry-OOD-v0", path=path)
    path.write_text("cwm/Chemistry-v0: {}\n")
    with pytest.raises(ConfigError, match="'default' entry"):
        load_hyperparams("dqn", "cwm/Chemistry-v0", path=path)


def test_activation_names_become_classes():
    hp = load_hyperparams("ppo", "cwm/Chemistry-v0", {"policy_kwargs": {"activation_fn": "nn.ReLU", "net_arch": [8]}})
    assert hp["policy_kwargs"] == {"activation_fn": nn.ReLU, "net_arch": [8]}
    agent = SB3Agent("ppo", "cwm/Chemistry-v0", hyperparams={**TINY["ppo"], **hp})
    assert agent.model.policy.activation_fn is nn.ReLU


# ------------------------------------------------------------------------------------------------- save and load


def test_save_load_round_trip(trained_ppo, tmp_path):
    trained_ppo.save(tmp_path / "agent")  # no suffix: ".zip" is appended, as SB3 does
    assert sorted(os.listdir(tmp_path)) == ["agent.zip"]
    manifest = read_manifest(tmp_path / "agent.zip")
    assert (manifest["algo"], manifest["env_id"], manifest["num_timesteps"]) == ("ppo", "cwm/WeightedBlocks-v0", 128)

    loaded = SB3Agent.load(tmp_path / "agent", env_id="cwm/WeightedBlocks-v0")
    assert (loaded.algo, loaded.env_id, loaded.n_envs, loaded.num_timesteps) == ("ppo", "cwm/WeightedBlocks-v0", 2, 128)
    assert loaded.hyperparams == trained_ppo.hyperparams
    obs = _obs_batch(trained_ppo, 16)
    np.testing.assert_array_equal(loaded.predict(obs), trained_ppo.predict(obs))
    assert isinstance(PPO.load(tmp_path / "agent.zip"), PPO)  # still a plain SB3 zip
    assert loaded.learn(128).num_timesteps == 256  # and it keeps learning


def test_load_errors(trained_ppo, tmp_path):
    path = tmp_path / "agent.zip"
    trained_ppo.save(path)
    with pytest.raises(CheckpointError, match="is a ppo agent for cwm/WeightedBlocks-v0, not cwm/Chemistry-v0"):
        SB3Agent.load(path, env_id="cwm/Chemistry-v0")
    with pytest.raises(CheckpointError, match="does not exist"):
        SB3Agent.load(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        SB3Agent.load(tmp_path / "junk.zip")
    trained_ppo.model.save(tmp_path / "plain.zip")
    with pytest.raises(CheckpointError, match="not a cwm_rl SB3 agent"):
        SB3Agent.load(tmp_path / "plain.zip")


def test_failed_save_leaves_previous_file_intact(trained_ppo, tmp_path, monkeypatch):
    path = tmp_path / "agent.zip"
    trained_ppo.save(path)
    before = path.read_bytes()

    def half_write(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("crash mid-write")

    monkeypatch.setattr(trained_ppo.model, "save", half_write)
    with pytest.raises(RuntimeError, match="crash mid-write"):
        trained_ppo.save(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["agent.zip"]

    def disk_full(f, *args, **kwargs):
        f.write(b"PK")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trained_ppo.model, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous file is intact"):
        trained_ppo.save(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["agent.zip"]
