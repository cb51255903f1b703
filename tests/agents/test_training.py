"""The training script (``cwm-rl train`` and its Python API): run directory, evaluation protocol, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cwm_rl.agents.evaluation import evaluate_agent
from cwm_rl.agents.random_agent import RandomAgent
from cwm_rl.agents.sb3_baselines import load_hyperparams
from cwm_rl.agents.training import TrainConfig, resolve_config, train
from cwm_rl.cli import main
from cwm_rl.config import ConfigError, load_yaml, to_dict

TINY_MPC = {
    "n_envs": 2,
    "seed_steps": 50,
    "train_every": 50,
    "first_updates": 3,
    "updates": 1,
    "window": 4,
    "batch_size": 4,
    "planner": {"population": 8, "horizon": 2, "iterations": 1},
    "slot": {"d_model": 16},
}


def _read(run):
    return json.loads((run / "metrics.json").read_text())


def test_random_agent_run_writes_a_complete_run_dir(tmp_path):
    cfg = TrainConfig(env_id="cwm/Chemistry-v0", agent="random", steps=100, eval_every=50, eval_episodes=3)
    metrics = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.json", "agent.json", "tb"}
    assert to_dict(load_yaml(TrainConfig, run / "config.yaml")) == to_dict(cfg)  # re-runnable
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert "mpc" not in written and "dyna" not in written  # no planner or Dyna settings a random agent never used
    assert [p["env_steps"] for p in metrics["curve"]] == [50, 100]
    assert {k: v for k, v in metrics.items() if k != "wall_time_s"} == _read(run) | {"config": metrics["config"]}
    assert json.loads((run / "timing.json").read_text())["wall_time_s"] == metrics["wall_time_s"]
    assert metrics["best_eval_return"] == max(p["mean_return"] for p in metrics["curve"])
    # The fixed protocol: the same agent seed scores the same episodes.
    again = evaluate_agent(RandomAgent("cwm/Chemistry-v0", seed=0), "cwm/Chemistry-v0", episodes=3, seed=0)
    assert again["mean_return"] == metrics["curve"][0]["mean_return"]


def test_causal_mpc_run(tmp_path):
    from cwm_rl.agents.model_based import MPCAgent, MPCConfig
    from cwm_rl.config import from_dict

    cfg = TrainConfig(
        env_id="cwm/Chemistry-v0",
        agent="causal-mpc",
        steps=120,
        eval_every=60,
        eval_episodes=2,
        mpc=from_dict(MPCConfig, TINY_MPC),
    )
    cfg.wm_probe_transitions = 200
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["env_steps"] >= 120 and len(metrics["curve"]) == 2
    # The world model is judged at every evaluation, on fresh transitions, with the graph numbers.
    for point in metrics["curve"]:
        assert {"wm_prediction_mse", "wm_open_loop_mse_10", "wm_shd", "wm_f1", "wm_auroc"} <= set(point)
        assert 0.0 <= point["wm_f1"] <= 1.0 and point["wm_shd"] >= 0.0
    assert metrics["wm_f1"] == metrics["curve"][-1]["wm_f1"]
    agent = MPCAgent.load(tmp_path / "run" / "agent.pt", env_id="cwm/Chemistry-v0")
    assert agent.model_ready and agent.config.model == "slot-ssm"


def test_save_data_writes_the_replay_buffer_as_a_dataset(tmp_path):
    from cwm_rl.agents.model_based import MPCConfig
    from cwm_rl.config import from_dict
    from cwm_rl.data import TransitionWindows, load_dataset

    cfg = TrainConfig(
        env_id="cwm/Chemistry-v0",
        agent="mlp-mpc",
        steps=120,
        eval_every=120,
        eval_episodes=1,
        mpc=from_dict(MPCConfig, TINY_MPC),
        wm_probe_transitions=0,
        save_data=True,
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    data = load_dataset(tmp_path / "run" / "data", env_id="cwm/Chemistry-v0")
    arrays = data.arrays
    assert data.meta["n_transitions"] == metrics["env_steps"] == 120
    assert data.meta["policy"] == "mlp-mpc replay buffer" and data.meta["num_envs"] == TINY_MPC["n_envs"]
    # Each episode is a real trajectory, as in collected data.
    same = arrays["episode"][1:] == arrays["episode"][:-1]
    assert np.array_equal(arrays["next_obs"][:-1][same], arrays["obs"][1:][same])
    ended = arrays["terminated"] | arrays["truncated"]
    same_env = arrays["env_index"][1:] == arrays["env_index"][:-1]
    assert ended.any() and ended[:-1][~same & same_env].all()  # in a sub-env, episodes change only after an end
    assert not ended[:-1][same].any()
    windows = TransitionWindows(tmp_path / "run" / "data", window=4, env_id="cwm/Chemistry-v0")
    assert len(windows) > 0 and windows.causal_graph.shape == (windows.n_slots, windows.n_slots + 1)


def test_save_data_is_refused_for_agents_without_trajectories(tmp_path, capsys):
    cfg = TrainConfig(env_id="cwm/Chemistry-v0", agent="random", steps=50, save_data=True)
    with pytest.raises(ConfigError, match="save_data is for the MPC agents"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_never_overwritten(tmp_path):
    cfg = TrainConfig(env_id="cwm/Chemistry-v0", agent="random", steps=20, eval_every=20, eval_episodes=1)
    train(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before


def test_eval_and_compare_commands(tmp_path, capsys):
    runs = []
    for agent, seed in (("random", 0), ("random", 1), ("ppo", 0)):
        cfg = TrainConfig(
            env_id="cwm/Chemistry-v0",
            agent=agent,
            seed=seed,
            steps=64,
            eval_every=32,
            eval_episodes=2,
            sb3_kwargs={"n_envs": 2, "n_steps": 16, "batch_size": 32, "n_epochs": 1},
        )
        train(cfg, tmp_path / f"{agent}{seed}", progress=False)
        runs.append(str(tmp_path / f"{agent}{seed}"))
    assert main(["eval", runs[2], "--episodes", "3", "--env", "cwm/Chemistry-OOD-v0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env_id"] == "cwm/Chemistry-OOD-v0" and len(result["returns"]) == 3
    assert json.loads((tmp_path / "ppo0" / "eval.json").read_text()) == result

    assert main(["compare", *runs, "--out", str(tmp_path / "cmp"), "--threshold", "-1000"]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 0
    random_row = next(line for line in table.splitlines() if "| random |" in line)
    assert "| 2 |" in random_row and random_row.endswith("32, 32 |")  # 2 seeds, both reach -1000 at once
    # Default threshold: the first group's final mean return.
    from cwm_rl.agents.compare import compare_runs

    text = compare_runs(runs[2:], tmp_path / "cmp2")
    final = json.loads((tmp_path / "ppo0" / "metrics.json").read_text())["final_eval_return"]
    assert f"return >= {final:.3f}" in text


def test_eval_and_compare_bad_input(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "not a `cwm-rl train` run directory" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    train_cfg = TrainConfig(env_id="cwm/Chemistry-v0", agent="random", steps=10, eval_every=10, eval_episodes=1)
    from cwm_rl.config import save_yaml

    save_yaml(train_cfg, tmp_path / "half" / "config.yaml")  # a run that never finished
    assert main(["compare", str(tmp_path / "half"), "--out", str(tmp_path / "cmp")]) == 2
    assert "did not finish" in capsys.readouterr().err
    wm_run = tmp_path / "wm"  # a world-model run (cwm-rl wm-train) is pointed at its own command
    wm_run.mkdir()
    (wm_run / "config.yaml").write_text("model: slot-ssm\n")
    (wm_run / "checkpoint.pt").write_bytes(b"")
    assert main(["eval", str(wm_run)]) == 2
    assert f"use `cwm-rl wm-eval {wm_run}`" in capsys.readouterr().err


def test_config_resolution_env_defaults_then_user_overrides(tmp_path):
    from cwm_rl.agents.model_based import env_defaults
    from cwm_rl.agents.training import resolve_config

    pong = resolve_config({"env_id": "cwm/InterventionalPong-v0", "agent": "causal-mpc"})
    assert pong.mpc.planner.horizon == env_defaults("cwm/InterventionalPong-v0")["planner.horizon"] == 12
    chem = resolve_config({"env_id": "cwm/Chemistry-OOD-v0", "agent": "causal-mpc"})  # OOD uses the base entry
    assert chem.mpc.planner.horizon == 5 and chem.mpc.seed_steps == 1000
    mine = resolve_config({"env_id": "cwm/Chemistry-v0", "agent": "causal-mpc", "mpc.planner.horizon": 7})
    assert mine.mpc.planner.horizon == 7
    # A saved config is already resolved: it is re-used as written, whatever the env defaults say now.
    from cwm_rl.config import save_yaml

    save_yaml(mine, tmp_path / "config.yaml")
    again = resolve_config({}, tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(mine)


def test_ctrl_c_stops_cleanly_after_saving_and_the_run_resumes(tmp_path):
    """A real training process gets SIGINT mid-run: it saves a snapshot at the next safe point, says how to
    resume, exits with 130, writes no metrics.json; `--resume` then finishes the run with the curve so far kept."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cwm_rl.cli", "train", "--env", "cwm/InterventionalPong-v0", "--agent", "ppo"]
    cmd += ["--steps", "30000", "--run-dir", str(run), "--json"]
    cmd += ["--set", "eval_every=1024", "--set", "eval_episodes=1", "--set", "wm_probe=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "progress.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at" in err and f"--resume {run}" in err and "Traceback" not in err
    assert (run / "resume.pt").is_file() and not (run / "metrics.json").exists()
    curve = json.loads((run / "progress.json").read_text())["curve"]
    assert curve and curve[-1]["env_steps"] < 30000
    stopped_at = int(err.split("interrupted at ")[1].split(" ")[0].replace(",", ""))
    ppo = load_hyperparams("ppo", "cwm/InterventionalPong-v0")
    assert curve[-1]["env_steps"] <= stopped_at < 30000
    assert stopped_at % (ppo["n_envs"] * ppo["n_steps"]) == 0  # where a PPO rollout starts: an exact snapshot

    assert main(["train", "--resume", str(run), "--json"]) == 0
    done = _read(run)
    assert done["env_steps"] >= 30000
    assert done["curve"][: len(curve)] == [{k: v for k, v in p.items() if k != "wall_time_s"} for p in curve]
    assert not (run / "resume.pt").exists()


def test_resume_bad_input(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a `cwm-rl train` run directory" in capsys.readouterr().err
    cfg = TrainConfig(env_id="cwm/Chemistry-v0", agent="random", steps=10, eval_every=10, eval_episodes=1)
    train(cfg, tmp_path / "done", progress=False)
    before = (tmp_path / "done" / "metrics.json").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "done")]) == 2
    assert "the run finished" in capsys.readouterr().err
    assert (tmp_path / "done" / "metrics.json").read_bytes() == before
    assert main(["train", "--resume", str(tmp_path / "done"), "--set", "steps=20"]) == 2
    assert "drop --env" in capsys.readouterr().err
    assert main(["train", "--env", "cwm/Chemistry-v0"]) == 2
    assert "--run-dir" in capsys.readouterr().err


def test_config_of_another_agent_kind_gets_the_env_defaults_of_the_new_agent(tmp_path):
    """``--config`` of a random run with ``--set agent=causal-mpc``: the file has no ``mpc`` section, so the
    env's MPC defaults apply (not the bare MPCConfig ones); a section the file does hold is kept."""
    from cwm_rl.agents.model_based import MPCConfig, mpc_config_for

    cfg = TrainConfig(env_id="cwm/Pusher2D-v0", agent="random", steps=10, eval_every=10, eval_episodes=1)
    train(cfg, tmp_path / "random", progress=False)
    mpc = resolve_config({"agent": "causal-mpc"}, tmp_path / "random" / "config.yaml")
    assert to_dict(mpc.mpc) == to_dict(mpc_config_for("causal-mpc", env_id="cwm/Pusher2D-v0"))
    assert mpc.mpc.planner.population == 128  # Pusher2D's entry, not the default 64
    kept = tmp_path / "mpc.yaml"
    kept.write_text(yaml.safe_dump({"env_id": "cwm/Pusher2D-v0", "agent": "causal-mpc", "mpc": {"seed_steps": 7}}))
    assert resolve_config({}, kept).mpc.seed_steps == 7
    assert resolve_config({}, kept).mpc.planner == MPCConfig().planner  # the file's section is used as written


def test_compare_keeps_runs_of_one_agent_with_different_settings_apart(tmp_path):
    """Seeds of one experiment are averaged; the same agent with another setting is its own row, named by it."""
    from cwm_rl.agents.compare import compare_runs

    runs = []
    for name, seed, episodes in (("a0", 0, 1), ("a1", 1, 1), ("b0", 0, 2), ("c0", 0, 5)):  # 5: the default
        cfg = TrainConfig(
            env_id="cwm/Chemistry-v0", agent="random", steps=20, eval_every=10, eval_episodes=episodes, seed=seed
        )
        train(cfg, tmp_path / name, progress=False)
        runs.append(str(tmp_path / name))
    rows = [line for line in compare_runs(runs[:3], tmp_path / "cmp").splitlines() if line.startswith("| cwm/")]
    assert len(rows) == 2
    assert "| random (eval_episodes=1) | 2 |" in rows[0] and "| random (eval_episodes=2) | 1 |" in rows[1]
    # A group at the defaults is named by its agent id alone, not by the other groups' key at its default value.
    names = [line.split(" | ")[1] for line in compare_runs(runs, tmp_path / "cmp3").splitlines() if "| cwm/" in line]
    assert names == ["random (eval_episodes=1)", "random (eval_episodes=2)", "random"]
    single = compare_runs(runs[:2], tmp_path / "cmp1").splitlines()
    assert any("| random | 2 |" in line for line in single)  # nothing to tell apart: the plain agent id
