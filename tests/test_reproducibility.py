"""Same seed, same CPU, same versions: every command writes the same ``metrics.json``, byte for byte, and a run
directory holds everything needed to rerun it (``--config RUN_DIR/config.yaml``). Wall-clock times are kept out of
``metrics.json`` (``timing.json`` for ``train``, ``meta.json`` for ``collect``) so the comparison is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cwm_rl.cli import main


def _file(path) -> str:
    return path.read_text()


def test_collect_twice_writes_the_same_dataset(tmp_path):
    argv = ["collect", "--env", "cwm/Chemistry-v0", "--steps", "300", "--num-envs", "4", "--seed", "3", "--json"]
    for name in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    assert _file(tmp_path / "a" / "metrics.json") == _file(tmp_path / "b" / "metrics.json")
    a, b = np.load(tmp_path / "a" / "transitions.npz"), np.load(tmp_path / "b" / "transitions.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    other = tmp_path / "seed4"
    assert main([*argv[:-3], "--seed", "4", "--out", str(other)]) == 0  # and the seed matters
    assert not np.array_equal(np.load(other / "transitions.npz")["obs"], a["obs"])


def test_wm_train_rerun_from_its_config_writes_the_same_metrics(tmp_path):
    data = tmp_path / "data"
    assert main(["collect", "--env", "cwm/Chemistry-v0", "--steps", "300", "--num-envs", "4", "--out", str(data)]) == 0
    argv = ["wm-train", "--model", "slot-ssm", "--data", str(data), "--set", "steps=6", "--set", "window=4"]
    assert main([*argv, "--set", "eval_every=3", "--run-dir", str(tmp_path / "a"), "--json"]) == 0
    again = ["wm-train", "--config", str(tmp_path / "a" / "config.yaml"), "--run-dir", str(tmp_path / "b"), "--json"]
    assert main(again) == 0
    assert _file(tmp_path / "a" / "metrics.json") == _file(tmp_path / "b" / "metrics.json")
    assert "f1" in json.loads(_file(tmp_path / "a" / "metrics.json"))


@pytest.mark.parametrize("agent", ["causal-mpc", "ppo"])
def test_train_rerun_from_its_config_writes_the_same_metrics(tmp_path, agent):
    argv = ["train", "--env", "cwm/Chemistry-v0", "--agent", agent, "--steps", "96", "--json"]
    argv += ["--set", "eval_every=48", "--set", "eval_episodes=2", "--set", "wm_probe_transitions=80"]
    if agent == "ppo":
        argv += ["--set", "sb3_kwargs={n_envs: 2, n_steps: 16, batch_size: 16, n_epochs: 1}"]
    else:
        argv += ["--set", "mpc.seed_steps=32", "--set", "mpc.train_every=32", "--set", "mpc.first_updates=3"]
        argv += ["--set", "mpc.updates=1", "--set", "mpc.n_envs=2", "--set", "mpc.window=4"]
        argv += ["--set", "mpc.planner.population=8", "--set", "mpc.planner.horizon=2"]
    assert main([*argv, "--run-dir", str(tmp_path / "a")]) == 0
    again = ["train", "--config", str(tmp_path / "a" / "config.yaml"), "--run-dir", str(tmp_path / "b"), "--json"]
    assert main(again) == 0
    first = _file(tmp_path / "a" / "metrics.json")
    assert first == _file(tmp_path / "b" / "metrics.json")
    assert "wall_time" not in first
    if agent == "causal-mpc":
        assert "wm_f1" in json.loads(first)  # the world model's metrics are compared too
