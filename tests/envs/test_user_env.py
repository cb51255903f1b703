"""A user env registered through exactly the documented path (examples/lamps.py), and a wrong graph caught."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from cwm_rl.envs import StepResult, verify_local_graphs

from .test_contract import test_batched_equals_single as check_batched_equals_single
from .test_contract import test_pickle_and_state_roundtrip as check_pickle_and_state_roundtrip

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lamps.py"


@pytest.fixture(scope="module")
def lamps():
    spec = importlib.util.spec_from_file_location("lamps", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lamps"] = module
    spec.loader.exec_module(module)
    return module


def test_example_registers_a_working_env(lamps):
    env = gym.make("examples/Lamps-v0", render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
    check_batched_equals_single("examples/Lamps-v0")
    check_pickle_and_state_roundtrip("examples/Lamps-v0")
    # Context-specific graph: lamp B reads lamp A only while the wire is connected.
    env.reset(seed=0)
    state = env.unwrapped.get_state()
    state["sim"]["wire"] = np.array([1.0])
    env.unwrapped.set_state(state)
    _, _, _, _, info = env.step(1)
    assert info["local_graph"][1].tolist() == [True, False, True, False]
    state["sim"]["wire"] = np.array([0.0])
    env.unwrapped.set_state(state)
    _, _, _, _, info = env.step(1)
    assert info["local_graph"][1].tolist() == [False, True, True, False]


def test_example_verifies_from_the_cli():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cwm_rl.cli",
            "verify-env",
            "examples/Lamps-v0",
            "--import",
            str(EXAMPLE),
            "--transitions",
            "400",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["passed"] and report["n_transitions"] == 400 and report["missing_edge_violations"] == 0
    assert {(e["child"], e["parent"]) for e in report["edges"]} == {
        ("lamp_a", "lamp_a"),
        ("lamp_a", "action"),
        ("lamp_b", "lamp_a"),
        ("lamp_b", "lamp_b"),
        ("lamp_b", "wire"),
        ("wire", "wire"),
    }


def test_verifier_catches_a_missing_edge(lamps):
    """An env that forgets lamp_b <- lamp_a when the wire is connected must fail verification."""

    class ForgetfulLamps(lamps.LampsEnv):
        def _step_batch(self, state, action, u):
            result = super()._step_batch(state, action, u)
            graph = result.local_graph.copy()
            graph[:, 1, 0] = False
            return StepResult(result.state, result.reward, result.terminated, graph, result.intervened)

    report = verify_local_graphs(ForgetfulLamps(), n_transitions=300, seed=0)
    assert not report.passed
    assert report.missing[1, 0] > 0  # lamp_b <- lamp_a
    assert report.missing.sum() == report.missing[1, 0]
    assert report.examples and report.examples[0]["child"] == "lamp_b" and report.examples[0]["parent"] == "lamp_a"


def test_verifier_catches_an_edge_outside_the_global_graph(lamps):
    class Inconsistent(lamps.LampsEnv):
        def _step_batch(self, state, action, u):
            result = super()._step_batch(state, action, u)
            graph = result.local_graph.copy()
            graph[:, 2, 3] = True  # wire <- action, absent from the global graph
            return StepResult(result.state, result.reward, result.terminated, graph, result.intervened)

    report = verify_local_graphs(Inconsistent(), n_transitions=50, seed=0)
    assert report.outside_global == 50 and not report.passed
