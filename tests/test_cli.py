"""The ``cwm-rl`` command line: listing, verification, the demo, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["verify-env", "cwm/NoSuchEnv-v0"], "unknown env id"),
        (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "intervention_prob=1.5"], "intervention_prob"),
        (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "speed=3"], "has no argument(s) ['speed']"),
        (["verify-env", "cwm/InterventionalPong-v0", "--kwarg", "novalue"], "key=value"),
        (["verify-env", "cwm/Chemistry-v0", "--kwarg", "n_objects=-3"], "n_objects"),
        (["verify-env", "cwm/WeightedBlocks-v0", "--kwarg", "n_objects=0"], "n_objects"),
        (["verify-env", "cwm/InterventionalPong-v0", "--transitions", "0"], "n_transitions"),
        (["verify-env", "cwm/InterventionalPong-v0", "--import", "no/such/file.py"], "no such file"),
        (["demo", "--steps", "0"], "must be positive"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


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
    assert main(["demo", "--steps", "10", "--num-envs", "4", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    ids = [e["env_id"] for e in metrics["envs"]]
    assert "cwm/InterventionalPong-v0" in ids and len(ids) == 4
    for env in metrics["envs"]:
        assert env["verification"]["violations"] == 0
        assert env["transitions"] > 0 and (tmp_path / env["frame"]).is_file()
    assert (tmp_path / "report.md").read_text().startswith("# cwm-rl demo")
