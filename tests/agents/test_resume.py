"""Exact resume (``cwm-rl train --resume``): a run interrupted at any point ends with the same ``metrics.json`` as an
uninterrupted one (wall times aside), for every kind of agent; snapshots of another run are refused."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from cwm_rl.agents import training
from cwm_rl.agents.model_based import MPCConfig
from cwm_rl.agents.snapshot import SNAPSHOT_NAME
from cwm_rl.agents.training import TrainConfig, resume, train
from cwm_rl.cli import main
from cwm_rl.config import from_dict, save_yaml

from .test_training import TINY_MPC

SB3_TINY = {
    "ppo": {"n_envs": 2, "n_steps": 16, "batch_size": 16, "n_epochs": 1},
    "dqn": {"n_envs": 2, "learning_starts": 20, "batch_size": 8},
    "sac": {"n_envs": 2, "learning_starts": 20, "batch_size": 8},
}


def _config(agent: str, env_id: str = "cwm/Chemistry-v0", probe: int = 0, **over) -> TrainConfig:
    # reset_every=48: the model-based runs re-initialise their world model at 72 steps, between the snapshot at 64
    # and the crash at 96, so a resumed run must also resume the reset schedule.
    tiny = {**TINY_MPC, "seed_steps": 24, "train_every": 24, "reset_every": 48}
    cfg = TrainConfig(
        env_id=env_id,
        agent=agent,
        steps=96,
        eval_every=32,
        eval_episodes=1,
        wm_probe_transitions=probe,
        sb3_kwargs=SB3_TINY.get(agent, {}),
        mpc=from_dict(MPCConfig, tiny),
    )
    if agent == "causal-dyna":
        cfg.dyna.seed_steps, cfg.dyna.train_every, cfg.dyna.first_updates, cfg.dyna.updates = 24, 24, 3, 1
        cfg.dyna.rollout_batch, cfg.dyna.window, cfg.dyna.batch_size, cfg.dyna.reset_every = 8, 4, 4, 48
        cfg.dyna.sb3_kwargs = {"learning_starts": 20, "batch_size": 8}
    if agent == "causal-simple":
        cfg.simple.seed_steps, cfg.simple.train_every, cfg.simple.first_updates, cfg.simple.updates = 24, 24, 3, 1
        cfg.simple.window, cfg.simple.batch_size, cfg.simple.reset_every, cfg.simple.slot.d_model = 4, 4, 48, 16
        cfg.simple.imagined_envs, cfg.simple.horizon, cfg.simple.imagined_steps = 4, 5, 16
        cfg.simple.ppo_kwargs = {"n_steps": 4, "batch_size": 8, "n_epochs": 1}
    for key, value in over.items():
        setattr(cfg, key, value)
    return cfg


def _metrics_file(run) -> str:
    """``metrics.json`` as written (wall-clock times live in ``timing.json``)."""
    return (run / "metrics.json").read_text()


def _final_weights(run) -> dict[str, torch.Tensor]:
    """The weights in the run's final agent checkpoint: the SB3 policy, or the world model (MPC, Dyna; SimPLe with its
    policy)."""
    from cwm_rl.agents import SB3Agent

    if (run / "agent.zip").is_file():
        return SB3Agent.load(run / "agent.zip").model.policy.state_dict()
    if (run / "agent.pt").is_file():
        data = torch.load(run / "agent.pt", weights_only=False)
        if "ppo_zip" in data:  # SimPLe: the policy trained in imagination as well as the world model
            from stable_baselines3 import PPO

            policy = PPO.load(io.BytesIO(data["ppo_zip"]), device="cpu").policy.state_dict()
            return {**data["model_state"], **{f"ppo.{k}": v for k, v in policy.items()}}
        return data["model_state"]
    return {}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Crash(Exception):
    pass


@pytest.mark.parametrize(
    ("agent", "env_id", "probe"),
    [
        ("causal-mpc", "cwm/Chemistry-v0", 80),  # the world model's metrics compare its weights too
        ("random", "cwm/Chemistry-v0", 0),
        ("ppo", "cwm/Chemistry-v0", 80),  # with the probe world model, which is part of the snapshot
        ("dqn", "cwm/Chemistry-v0", 0),
        ("sac", "cwm/Pusher2D-v0", 0),
        ("causal-dyna", "cwm/Chemistry-v0", 0),
        ("causal-simple", "cwm/Chemistry-v0", 0),
    ],
)
def test_a_crashed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path, monkeypatch, agent, env_id, probe):
    train(_config(agent, env_id, probe), tmp_path / "whole", progress=False)
    assert not (tmp_path / "whole" / SNAPSHOT_NAME).exists()  # removed once the run is done

    evaluate, calls = training._Evaluator.evaluate, []

    def crash_at_third_evaluation(self, agent_):
        calls.append(agent_.num_timesteps)
        if len(calls) == 3:
            raise _Crash  # as if killed: nothing after the last snapshot is kept
        return evaluate(self, agent_)

    monkeypatch.setattr(training._Evaluator, "evaluate", crash_at_third_evaluation)
    with pytest.raises(_Crash):
        train(_config(agent, env_id, probe), tmp_path / "crashed", progress=False)
    monkeypatch.setattr(training._Evaluator, "evaluate", evaluate)
    snapshot = torch.load(tmp_path / "crashed" / SNAPSHOT_NAME, weights_only=False)["manifest"]
    assert 32 <= snapshot["step"] < 96  # it continues from the middle of the run, not from the start

    resumed = resume(tmp_path / "crashed", progress=False)
    assert _metrics_file(tmp_path / "crashed") == _metrics_file(tmp_path / "whole")
    assert _same_weights(_final_weights(tmp_path / "crashed"), _final_weights(tmp_path / "whole"))
    assert resumed["wall_time_s"] > 0


def test_a_run_written_before_a_config_key_existed_resumes_and_an_edit_is_still_refused(tmp_path, monkeypatch, capsys):
    """A run of an older version has no ``mpc.dense_warmup`` in its config.yaml nor in its snapshot's hash; today's
    resolved config has it (default 0, the old behaviour). Resuming accepts the file as written; an edit of it is
    still refused."""
    real = training.run_config_dict

    def older(cfg):  # the config as the previous version wrote and hashed it
        out = real(cfg)
        out["mpc"] = {k: v for k, v in out["mpc"].items() if k != "dense_warmup"}
        return out

    train(_config("causal-mpc"), tmp_path / "whole", progress=False)
    evaluate, calls = training._Evaluator.evaluate, []

    def crash_at_third_evaluation(self, agent_):
        calls.append(1)
        if len(calls) == 3:
            raise _Crash
        return evaluate(self, agent_)

    monkeypatch.setattr(training, "run_config_dict", older)
    monkeypatch.setattr(training._Evaluator, "evaluate", crash_at_third_evaluation)
    with pytest.raises(_Crash):
        train(_config("causal-mpc"), tmp_path / "old", progress=False)
    monkeypatch.undo()
    written = (tmp_path / "old" / "config.yaml").read_text()
    assert "dense_warmup" not in written
    (tmp_path / "old" / "config.yaml").write_text(written.replace("seed: 0", "seed: 1", 1))  # an edit
    assert main(["train", "--resume", str(tmp_path / "old")]) == 2
    assert "different config.yaml" in capsys.readouterr().err
    (tmp_path / "old" / "config.yaml").write_text(written)
    resume(tmp_path / "old", progress=False)
    assert _same_weights(_final_weights(tmp_path / "old"), _final_weights(tmp_path / "whole"))


def test_resume_without_the_global_random_streams_would_differ(tmp_path, monkeypatch):
    """The comparison above can fail: leave out one part of the snapshot (the global random streams SB3 samples
    actions and minibatches from) and PPO's resumed run ends with other weights."""
    whole = train(_config("ppo"), tmp_path / "whole", progress=False)
    evaluate = training._Evaluator.evaluate

    def crash(self, agent_):
        if agent_.num_timesteps >= 64:
            raise _Crash
        return evaluate(self, agent_)

    monkeypatch.setattr(training._Evaluator, "evaluate", crash)
    with pytest.raises(_Crash):
        train(_config("ppo"), tmp_path / "crashed", progress=False)
    monkeypatch.setattr(training._Evaluator, "evaluate", evaluate)
    monkeypatch.setattr(training, "set_global_rng_state", lambda state: None)
    resume(tmp_path / "crashed", progress=False)
    assert whole["env_steps"] == 96
    assert not _same_weights(_final_weights(tmp_path / "crashed"), _final_weights(tmp_path / "whole"))


def _train_cmd(run, *extra):
    cmd = [sys.executable, "-m", "cwm_rl.cli", "train", "--env", "cwm/Chemistry-v0", "--agent", "causal-mpc"]
    cmd += ["--steps", "240", "--run-dir", str(run), "--json", "--set", "eval_every=40", "--set", "eval_episodes=1"]
    cmd += ["--set", "wm_probe_transitions=80", "--set", "mpc.seed_steps=40", "--set", "mpc.train_every=40"]
    cmd += ["--set", "mpc.first_updates=4", "--set", "mpc.updates=2", "--set", "mpc.n_envs=2"]
    cmd += ["--set", "mpc.planner.population=16", "--set", "mpc.planner.horizon=3", "--set", "mpc.planner.iterations=1"]
    return cmd + list(extra)


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_metrics(tmp_path):
    """A real `cwm-rl train` process is killed with SIGKILL at random moments (while it plans, fits, evaluates or
    writes a snapshot), resumed each time, and finally ends with the same metrics.json as a run never killed."""
    subprocess.run(_train_cmd(tmp_path / "whole"), check=True, capture_output=True, timeout=300)

    run, rng, kills = tmp_path / "killed", random.Random(7), []
    proc = subprocess.Popen(_train_cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(3):
        # Wait for the run's first snapshot (the interpreter starts in about 2 s; the whole run takes about 11 s on
        # a quiet machine, much longer on a loaded one), then kill at a random moment after it.
        deadline = time.monotonic() + 240
        while not (run / SNAPSHOT_NAME).is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        snapshot = run / SNAPSHOT_NAME
        kills.append(torch.load(snapshot, weights_only=False)["manifest"]["step"] if snapshot.is_file() else 0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cwm_rl.cli", "train", "--resume", str(run), "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert kills and max(kills) > 0, f"killed at snapshot steps {kills}: never mid-run; the test proves nothing"
    assert _metrics_file(run) == _metrics_file(tmp_path / "whole"), f"resumed from snapshots at steps {kills}"


def test_a_bad_snapshot_is_refused_in_one_line_and_kept(tmp_path, capsys):
    cfg = _config("random", steps=64)
    evaluate = training._Evaluator.evaluate
    calls = []

    def crash(self, agent_):
        calls.append(1)
        if len(calls) == 2:
            raise _Crash
        return evaluate(self, agent_)

    training._Evaluator.evaluate = crash
    try:
        with pytest.raises(_Crash):
            train(cfg, tmp_path / "run", progress=False)
    finally:
        training._Evaluator.evaluate = evaluate
    snap = tmp_path / "run" / SNAPSHOT_NAME
    good = snap.read_bytes()

    snap.write_bytes(good[: len(good) // 2])  # truncated (a copy made mid-write, a full disk)
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and len(err.strip().splitlines()) == 1
    assert snap.read_bytes() == good[: len(good) // 2]  # left as it was for the user to inspect

    snap.write_bytes(good)
    original = (tmp_path / "run" / "config.yaml").read_text()
    edited = _config("random", steps=64, seed=5)
    save_yaml(edited, tmp_path / "run" / "config.yaml")
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "different config.yaml" in capsys.readouterr().err
    (tmp_path / "run" / "config.yaml").write_text(original)

    other = _config("random", env_id="cwm/Pusher2D-v0", steps=64)  # a snapshot of another run copied in
    training._Evaluator.evaluate = crash
    calls.clear()
    try:
        with pytest.raises(_Crash):
            train(other, tmp_path / "other", progress=False)
    finally:
        training._Evaluator.evaluate = evaluate
    snap.write_bytes((tmp_path / "other" / SNAPSHOT_NAME).read_bytes())
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "cwm/Pusher2D-v0" in capsys.readouterr().err

    snap.write_bytes(good)
    assert main(["train", "--resume", str(tmp_path / "run"), "--json"]) == 0
    assert not snap.exists() and (tmp_path / "run" / "metrics.json").is_file()


def test_a_full_disk_during_a_snapshot_stops_the_run_in_one_line_and_keeps_the_last_snapshot(
    tmp_path, monkeypatch, capsys
):
    import os

    cfg = _config("random", steps=96)
    saves, real_save = [], torch.save

    def fills_the_disk_on_the_second_snapshot(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"PK")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk_on_the_second_snapshot)
    run = tmp_path / "run"
    assert main(["train", "--config", _yaml(tmp_path, cfg), "--run-dir", str(run)]) == 2
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and "previous file is intact" in err and len(err.splitlines()) == 1
    kept = torch.load(run / SNAPSHOT_NAME, weights_only=False)["manifest"]["step"]
    assert kept == 32  # the first snapshot, intact
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]  # no half-written file left behind
    assert main(["train", "--resume", str(run), "--json"]) == 0  # and the run goes on from it
    assert json.loads((run / "metrics.json").read_text())["env_steps"] == 96


def _yaml(tmp_path, cfg) -> str:
    save_yaml(cfg, tmp_path / "cfg.yaml")
    return str(tmp_path / "cfg.yaml")
