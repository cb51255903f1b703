"""Bad input, tried systematically: one table across the CLI and the Python API.

Every row is something a user can get wrong. A CLI row must exit with code 2 and print exactly one line on stderr
that names the problem (the ``message`` fragment) and no traceback; a Python row must raise a
:class:`cwm_rl.errors.UserError` whose message is one line. Either way the workspace (a dataset, a finished agent
run, a world-model run, an agent checkpoint) is byte-for-byte unchanged afterwards and nothing new appears in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from cwm_rl.agents import MPCAgent, SB3Agent, TrainConfig
from cwm_rl.cli import main
from cwm_rl.config import apply_overrides
from cwm_rl.data import TransitionWindows, collect
from cwm_rl.envs import spec_of
from cwm_rl.errors import UserError

D = "{ws}"  # replaced by the workspace folder

CLI_CASES = [
    # envs and env kwargs
    (["verify-env", "cwm/NoSuchEnv-v0"], "unknown env id"),
    (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "intervention_prob=1.5"], "intervention_prob"),
    (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "speed=3"], "has no argument(s) ['speed']"),
    (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "novalue"], "key=value"),
    (["verify-env", "cwm/Chemistry-v0", "--kwarg", "n_objects=-3"], "n_objects"),
    (["verify-env", "cwm/WeightedBlocks-v0", "--kwarg", "n_objects=0"], "n_objects"),
    (["verify-env", "cwm/InterventionalPong-v0", "--transitions", "0"], "n_transitions"),
    (["verify-env", "cwm/InterventionalPong-v0", "--import", "no/such/file.py"], "no such file"),
    # the demo
    (["demo", "--steps", "0", "--out", f"{D}/demo"], "must be positive"),
    (["demo", "--agent-steps", "10", "--out", f"{D}/demo"], "too small"),
    (["demo", "--set", "agent=ppo", "--out", f"{D}/demo"], "cannot be changed in the demo"),
    (["demo", "--set", "eval_episodes=abc", "--out", f"{D}/demo"], "must be an integer"),
    # collecting data
    (["collect", "--env", "cwm/Nope-v0", "--steps", "10", "--out", f"{D}/new"], "unknown env id"),
    (["collect", "--env", "cwm/Chemistry-v0", "--steps", "-5", "--out", f"{D}/new"], "steps=-5 must be a positive"),
    (["collect", "--env", "cwm/Chemistry-v0", "--steps", "10", "--out", f"{D}/data"], "--overwrite"),
    (["collect", "--env", "cwm/Chemistry-v0", "--steps", "10", "--out", f"{D}/new", "--policy", "nope"], "policy"),
    # world models
    (["wm-train", "--run-dir", f"{D}/new", "--set", "modle=mlp"], "did you mean 'model'"),
    (["wm-train", "--run-dir", f"{D}/new", "--data", f"{D}/data", "--set", "steps=ten"], "must be an integer"),
    (["wm-train", "--run-dir", f"{D}/new"], "no dataset given"),
    (["wm-train", "--run-dir", f"{D}/new", "--data", f"{D}/no/such/dir"], "no/such/dir"),
    (["wm-train", "--run-dir", f"{D}/new", "--config", f"{D}/missing.yaml"], "does not exist"),
    (["wm-train", "--run-dir", f"{D}/new", "--data", f"{D}/empty", "--model", "mlp"], "not a cwm-rl dataset"),
    (["wm-train", "--env", "cwm/Chemistry-v0", "--data", f"{D}/data", "--run-dir", f"{D}/new"], "holds data from"),
    (["wm-train", "--data", f"{D}/data", "--model", "lstm", "--run-dir", f"{D}/new"], "model='lstm' is not one"),
    (["wm-train", "--data", f"{D}/data", "--model", "mlp", "--run-dir", f"{D}/wm"], "already holds a run"),
    (["wm-train", "--data", f"{D}/data", "--set", "slot.attention=l1", "--run-dir", f"{D}/new"], "attention kind 'l1'"),
    (["wm-train", "--data", f"{D}/data", "--set", "slot.gate_penalty=l2", "--run-dir", f"{D}/new"], "gate penalty"),
    (["wm-eval", f"{D}/no/such/run"], "does not exist"),
    (["wm-eval", f"{D}/done"], "is an agent run"),
    (["wm-eval", f"{D}/wm", "--data", f"{D}/empty"], "not a cwm-rl dataset"),
    # training
    (["train", "--env", "cwm/Nope-v0", "--agent", "ppo", "--run-dir", f"{D}/new"], "unknown env id"),
    (["train", "--env", "cwm/Chemistry-v0", "--agent", "dqnn", "--run-dir", f"{D}/new"], "is not one of"),
    (["train", "--env", "cwm/Pusher2D-v0", "--agent", "dqn", "--run-dir", f"{D}/new"], "dqn needs a Discrete"),
    (["train", "--env", "cwm/Chemistry-v0", "--agent", "sac", "--run-dir", f"{D}/new"], "sac needs a Box"),
    (["train", "--env", "cwm/Chemistry-v0", "--steps", "0", "--run-dir", f"{D}/new"], "steps=0 must be a positive"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "mpc.planer.horizon=3", "--run-dir", f"{D}/new"], "did you mean"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "mpc.planner.horizon=0", "--run-dir", f"{D}/new"], "horizon"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "eval_episodes=1.5", "--run-dir", f"{D}/new"], "an integer"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "seed=-1", "--run-dir", f"{D}/new"], "seed=-1 must be >= 0"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "mpc.slot.graph_readout=max", "--run-dir", f"{D}/new"], "'max'"),
    (
        ["train", "--env", "cwm/Chemistry-v0", "--agent", "ppo", "--set", "sb3_kwargs={learning_rat: 0.1}"]
        + ["--run-dir", f"{D}/new"],
        "learning_rate",
    ),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "env_kwargs={n_objects: -2}", "--run-dir", f"{D}/new"], "[2, 12]"),
    (["train", "--env", "cwm/Chemistry-v0", "--set", "wm_probe_transitions=72", "--run-dir", f"{D}/new"], "too few"),
    (["train", "--agent", "ppo", "--run-dir", f"{D}/new"], "no env given"),
    (["train", "--env", "cwm/Chemistry-v0"], "--run-dir"),
    (["train", "--env", "cwm/Chemistry-v0", "--agent", "random", "--run-dir", f"{D}/done"], "already holds a run"),
    (["train", "--resume", f"{D}/missing"], "not a `cwm-rl train` run directory"),
    (["train", "--resume", f"{D}/done"], "the run finished"),
    (["train", "--resume", f"{D}/done", "--set", "steps=20"], "drop --env"),
    # evaluating and comparing agents
    (["eval", f"{D}/missing"], "not a `cwm-rl train` run directory"),
    (["eval", f"{D}/wm"], "use `cwm-rl wm-eval"),
    (["eval", f"{D}/done", "--episodes", "0"], "episodes=0 must be a positive"),
    (["eval", f"{D}/done", "--env", "cwm/Pusher2D-v0"], "observations or actions differ"),
    (["compare", f"{D}/missing", "--out", f"{D}/cmp"], "not a `cwm-rl train` run directory"),
    (["bench", "nope", "--out-dir", f"{D}/bench"], "unknown benchmark(s) ['nope']"),
]


def _mpc_agent(ws):
    return MPCAgent.load(ws / "mpc.pt")


def _user_env_with_a_wrong_graph(ws):
    from gymnasium import spaces

    from cwm_rl.envs import CausalEnv

    class TwoLamps(CausalEnv):
        def __init__(self):
            super().__init__()
            graph = np.ones((2, 2), dtype=bool)  # must be (2, 3): the action column is missing
            self._init_causal({"a": 1, "b": 1}, graph, np.zeros(2), np.ones(2), spaces.Discrete(2))

    TwoLamps()


def _world_model_on_another_env(ws):
    from cwm_rl.models.factory import make_world_model

    model = make_world_model("slot-ssm", [2, 3], ("discrete", 3))
    model(torch.zeros(1, 4, 7), torch.zeros(1, 4, dtype=torch.long))  # 7 features: not this model's env


def _step(env_id, action):
    def run(ws):
        env = gym.make(env_id)
        env.reset(seed=0)
        env.step(action)

    return run


API_CASES = [
    (lambda ws: spec_of("cwm/Nope-v0"), "unknown env id"),
    (_step("cwm/Pusher2D-v0", np.array([np.nan, 0.0], np.float32)), "NaN or inf"),
    (_step("cwm/Pusher2D-v0", np.array([np.inf, 0.0], np.float32)), "NaN or inf"),
    (_step("cwm/Pusher2D-v0", np.array([5.0, 0.0], np.float32)), "outside the action space"),
    (_step("cwm/InterventionalPong-v0", 7), "out of range"),
    (_user_env_with_a_wrong_graph, "causal_graph has shape (2, 2), expected (2, 3)"),
    (_world_model_on_another_env, "observations have 7 features"),
    (lambda ws: _mpc_agent(ws).predict(np.full((2, 8), np.nan, np.float32)), "NaN or inf"),
    (lambda ws: _mpc_agent(ws).predict(np.zeros((2, 3), np.float32)), "observations must have shape"),
    (lambda ws: _mpc_agent(ws).learn(0), "must be a positive integer"),
    (lambda ws: MPCAgent.load(ws / "mpc.pt", env_id="cwm/Pusher2D-v0"), "Pusher2D"),  # another env's agent
    (lambda ws: MPCAgent.load(ws / "data" / "meta.json"), "truncated or corrupt"),
    (lambda ws: SB3Agent("dqn", "cwm/Pusher2D-v0"), "needs a Discrete action space"),
    (lambda ws: SB3Agent("ppo", "cwm/Chemistry-v0", seed=1.5), "seed=1.5 must be an integer"),
    (lambda ws: TransitionWindows(ws / "empty", 4), "not a cwm-rl dataset"),
    (lambda ws: collect("cwm/Chemistry-v0", 0, ws / "new"), "steps=0 must be a positive integer"),
    (lambda ws: apply_overrides(TrainConfig(), {"stepz": 3}), "did you mean 'steps'"),
]


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A dataset, a finished agent run, a world-model run, an empty folder and an MPC agent checkpoint."""
    ws = tmp_path_factory.mktemp("workspace")
    collect = ["collect", "--env", "cwm/InterventionalPong-v0", "--steps", "200", "--num-envs", "4"]
    assert main([*collect, "--out", str(ws / "data")]) == 0
    train = ["train", "--env", "cwm/Chemistry-v0", "--agent", "random", "--steps", "20", "--run-dir", str(ws / "done")]
    assert main([*train, "--set", "eval_every=20", "--set", "eval_episodes=1", "--json"]) == 0
    wm = ["wm-train", "--model", "mlp", "--data", str(ws / "data"), "--run-dir", str(ws / "wm"), "--set", "steps=2"]
    assert main([*wm, "--json"]) == 0
    (ws / "empty").mkdir()
    MPCAgent("cwm/InterventionalPong-v0").save(ws / "mpc.pt")
    return ws


def test_the_table_is_big_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 25


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=[" ".join(a[:2]) for a, _ in CLI_CASES])
def test_cli_bad_input(workspace, capsys, argv, message):
    before = _tree(workspace)
    capsys.readouterr()
    assert main([a.replace(D, str(workspace)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _tree(workspace) == before  # nothing changed, nothing new written


@pytest.mark.parametrize(("call", "message"), API_CASES, ids=[m[:30] for _, m in API_CASES])
def test_python_api_bad_input(workspace, call, message):
    before = _tree(workspace)
    with pytest.raises(UserError) as info:
        call(workspace)
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text
    assert _tree(workspace) == before
