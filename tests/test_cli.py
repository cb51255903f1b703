"""The ``cwm-rl`` command line: listing, verification, the demo, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cwm_rl.cli import main
from cwm_rl.envs import causal_env_ids


def test_envs_lists_every_registered_id(capsys):
    assert main(["envs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed] == causal_env_ids()
    pong = next(e for e in listed if e["id"] == "cwm/InterventionalPong-v0")
    assert pong["slots"] == {"left_paddle": 1, "right_paddle": 1, "ball": 4, "score": 2}
    assert pong["action_space"] == "Discrete(3)"
    assert pong["causal_graph"][0] == [1, 0, 1, 0, 0]  # left_paddle <- left_paddle, ball
    assert main(["envs"]) == 0
    text = capsys.readouterr().out
    assert "cwm/Pusher2D-v0" in text and "global causal graph" in text


def test_verify_env_json(capsys):
    assert main(["verify-env", "cwm/InterventionalPong-v0", "--transitions", "150", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["n_transitions"] == 150 and report["n_replays"] == 150 * 5


def test_console_script_exit_code_without_traceback():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cwm_rl.cli",
            "verify-env",
            "cwm/InterventionalPong-v0",
            "--kwarg",
            "paddle_max_step=-1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "paddle_max_step" in out.stderr and "Traceback" not in out.stderr


def test_demo_writes_a_report(tmp_path, capsys):
    assert main(["demo", "--steps", "10", "--num-envs", "4", "--agent-steps", "0", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    ids = [e["env_id"] for e in metrics["envs"]]
    assert "cwm/InterventionalPong-v0" in ids and len(ids) == 4
    for env in metrics["envs"]:
        assert env["verification"]["violations"] == 0
        assert env["transitions"] > 0 and (tmp_path / env["frame"]).is_file()
    assert (tmp_path / "report.md").read_text().startswith("# cwm-rl demo")
    assert "agents" not in metrics


def test_demo_trains_and_compares_the_agents(tmp_path, capsys):
    """The agent part at a tiny budget: causal-mpc and ppo runs, the comparison and the graph heatmap; a re-run
    replaces the demo's own runs, and a directory the demo did not write is refused."""
    args = ["demo", "--steps", "5", "--num-envs", "2", "--agent-steps", "300", "--baseline-factor", "2"]
    tiny = {
        "eval_episodes": 1,
        "wm_probe_transitions": 200,
        "mpc.n_envs": 4,
        "mpc.first_updates": 30,
        "mpc.updates": 10,
        "mpc.planner.population": 8,
        "mpc.planner.iterations": 1,
        "mpc.planner.horizon": 3,
        "sb3_kwargs.n_steps": 32,
        "sb3_kwargs.batch_size": 64,
    }
    for key, value in tiny.items():
        args += ["--set", f"{key}={value}"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["agents"]
    assert set(metrics) == {"ppo-2x", "ppo", "causal-mpc", "random"}
    assert metrics["random"]["env_steps"] == 0 and metrics["random"]["final_eval_return"] <= 0
    assert metrics["ppo-2x"]["env_steps"] >= 600 and metrics["causal-mpc"]["env_steps"] >= 300
    assert 0 <= metrics["causal-mpc"]["wm_f1"] <= 1
    graph = np.array(metrics["causal-mpc"]["graph"]["true_frequency"])
    assert graph.shape == (4, 5) and graph[1, 4] > 0.8  # action -> right paddle unless it was intervened on
    assert graph[0, 3] == 0.0  # the score never drives the left paddle
    for name in ("comparison/curves.png", "comparison/comparison.md", "causal-mpc-graph.png"):
        assert (tmp_path / name).is_file(), name
    table = (tmp_path / "comparison" / "comparison.md").read_text()
    assert "ppo @ 600 steps" in table and "ppo @ 300 steps" in table and "causal-mpc" in table
    report = (tmp_path / "report.md").read_text()
    assert "## Agents on cwm/InterventionalPong-v0" in report and "causal-mpc-graph.png" in report
    assert "| random (no training) | 0 |" in report

    other = tmp_path / "other"
    (other / "runs" / "ppo").mkdir(parents=True)
    (other / "runs" / "ppo" / "config.yaml").write_text("keep me")
    assert main([*args, "--out", str(other)]) == 2
    assert "not written by the demo" in capsys.readouterr().err
    assert (other / "runs" / "ppo" / "config.yaml").read_text() == "keep me"


def test_collect_wm_train_wm_eval_from_the_cli(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "collect",
                "--env",
                "cwm/InterventionalPong-v0",
                "--steps",
                "600",
                "--out",
                str(data),
                "--num-envs",
                "4",
                "--max-episode-steps",
                "40",
            ]
        )
        == 0
    )
    assert "collected 600 transitions" in capsys.readouterr().out
    assert (
        main(
            [
                "wm-train",
                "--env",
                "cwm/InterventionalPong-v0",
                "--model",
                "slot-transformer",
                "--data",
                str(data),
                "--run-dir",
                str(run),
                "--set",
                "steps=10",
                "--set",
                "eval_every=10",
                "--set",
                "window=10",
                "--set",
                "slot.d_model=16",
                "--set",
                "slot.n_layers=1",
                "--json",
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out)
    assert trained["step"] == 10 and "f1" in trained
    assert main(["wm-eval", str(run), "--ood-steps", "400", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    for part in ("in_distribution", "ood"):
        assert {"open_loop_mse_1", "open_loop_mse_5", "open_loop_mse_10", "shd", "f1", "auroc"} <= set(ev[part])
        assert "open_loop_mse_10/ball" in ev[part]
    assert ev["ood"]["env_id"] == "cwm/InterventionalPong-OOD-v0"
    assert json.loads((run / "eval.json").read_text()) == ev


def test_bench_runs_a_benchmark_and_prints_json(tmp_path, capsys):
    assert main(["bench", "wm_throughput", "--quick", "--json", "--out-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "wm_throughput.json").read_text())
    assert [r["length"] for r in printed["results"]] == [16, 64, 256]
    ssm, transformer = printed["parameters"]["slot-ssm"], printed["parameters"]["slot-transformer"]
    assert abs(ssm - transformer) / transformer < 0.1  # the comparison is at matched size
    for r in printed["results"]:
        assert r["slot-ssm_transitions_per_s"] > 0 and r["slot-transformer_transitions_per_s"] > 0
        ratio = r["slot-ssm_transitions_per_s"] / r["slot-transformer_transitions_per_s"]
        assert r["ssm_over_transformer"] == pytest.approx(ratio)
