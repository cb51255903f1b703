"""Reading trained runs back: ``cwm-rl eval`` (score a saved agent) and ``cwm-rl compare`` (curves and a table).

``compare`` groups run directories by (env, agent, budget), averages their evaluation curves over seeds, and writes
``curves.png`` (mean and spread of the evaluation return vs env steps) and ``comparison.md``: final return
(mean +- std over seeds) and the env steps each group needs to reach a return threshold. The default threshold
is the final mean return of the first group given (list the baseline first: "the return PPO reaches at its full
budget"), so the table reads as sample efficiency against that baseline.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from cwm_rl.checkpoint import atomic_write_text
from cwm_rl.config import ConfigError, flatten, load_yaml
from cwm_rl.envs import spec_of
from cwm_rl.plots import save_figure

from .evaluation import evaluate_agent
from .model_based import MPC_AGENTS, MPCAgent
from .random_agent import RandomAgent
from .sb3_baselines import SB3_ALGOS, SB3Agent
from .training import TrainConfig, checkpoint_name, resolve_config, run_config_dict


def _run_config(run_dir: str | os.PathLike[str]) -> tuple[Path, TrainConfig]:
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{str(run)!r} is not a `cwm-rl train` run directory (no config.yaml)")
    if (run / "checkpoint.pt").is_file() and not (run / "progress.json").is_file():
        raise ConfigError(
            f"{str(run)!r} is a world-model run (`cwm-rl wm-train`), not an agent run; use `cwm-rl wm-eval {run}`"
        )
    return run, load_yaml(TrainConfig, run / "config.yaml")


def load_agent(run_dir: str | os.PathLike[str]) -> tuple[Any, TrainConfig]:
    """The agent saved in a run directory and the run's config."""
    run, cfg = _run_config(run_dir)
    path = run / checkpoint_name(cfg.agent)
    if cfg.agent in MPC_AGENTS:
        return MPCAgent.load(path, env_id=cfg.env_id), cfg
    if cfg.agent in SB3_ALGOS:
        return SB3Agent.load(path, env_id=cfg.env_id), cfg
    from .dyna import DYNA_AGENTS, DynaAgent

    if cfg.agent in DYNA_AGENTS:
        return DynaAgent.load(path, env_id=cfg.env_id), cfg
    from .simple import SIMPLE_AGENTS, SimPLeAgent

    if cfg.agent in SIMPLE_AGENTS:
        return SimPLeAgent.load(path, env_id=cfg.env_id), cfg
    return RandomAgent(cfg.env_id, seed=cfg.seed, env_kwargs=cfg.env_kwargs), cfg


def evaluate_run(
    run_dir: str | os.PathLike[str], episodes: int = 10, env_id: str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Score the saved agent with the fixed protocol (on ``env_id``, e.g. the OOD twin, if given)."""
    if episodes < 1:
        raise ConfigError(f"episodes={episodes} must be a positive integer")
    agent, cfg = load_agent(run_dir)
    target = env_id or cfg.env_id
    if target != cfg.env_id:
        _check_same_spaces(cfg.env_id, target, cfg.env_kwargs)
    result = evaluate_agent(agent, target, episodes, cfg.seed if seed is None else seed, cfg.env_kwargs)
    result.update(env_id=target, agent=cfg.agent, env_steps=int(agent.num_timesteps), episodes=episodes)
    if hasattr(agent, "close"):
        agent.close()
    return result


def _check_same_spaces(trained_on: str, target: str, env_kwargs: dict[str, Any]) -> None:
    """An agent can be scored on another env (the OOD twin) only if observations and actions look the same."""
    import gymnasium as gym

    spec_of(target)  # UnknownEnvError with the known ids
    envs = [gym.make(env_id, **env_kwargs) for env_id in (trained_on, target)]
    try:
        same = all(
            getattr(envs[0], space) == getattr(envs[1], space) for space in ("observation_space", "action_space")
        )
    finally:
        for env in envs:
            env.close()
    if not same:
        raise ConfigError(
            f"the agent was trained on {trained_on}, whose observations or actions differ from {target}'s; "
            f"evaluate it on {trained_on} or its -OOD- twin"
        )


Group = tuple[str, str, int, tuple[tuple[str, str], ...]]  # env, agent, budget, the rest of the config


def _settings(cfg: TrainConfig) -> tuple[tuple[str, str], ...]:
    """The run's config as sorted (dotted key, value) pairs, without what differs between seeds of one
    experiment (``seed``) or is already in the group key (``env_id``, ``agent``, ``steps``)."""
    config = {k: v for k, v in run_config_dict(cfg).items() if k not in ("seed", "env_id", "agent", "steps")}
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flatten(config).items()))


def _curves(run_dirs: list[str]) -> dict[Group, list[dict[str, Any]]]:
    """Finished runs grouped by (env, agent, configured env-step budget, the rest of the config): the seeds of one
    experiment. Runs of one agent with different budgets or settings are different experiments (a baseline given
    ten times the data, a planner scoring with the env's reward)."""
    groups: dict[Group, list[dict[str, Any]]] = defaultdict(list)
    for run_dir in run_dirs:
        run, cfg = _run_config(run_dir)
        if not (run / "metrics.json").is_file():
            raise ConfigError(f"{str(run)!r} has no metrics.json: the run did not finish")
        metrics = json.loads((run / "metrics.json").read_text())
        groups[(metrics["env_id"], metrics["agent"], int(cfg.steps), _settings(cfg))].append(metrics)
    return groups


def _labels(groups: list[Group]) -> dict[Group, str]:
    """Each group's name: its agent id, plus its budget and the settings that tell it apart from the other groups
    of the same env and agent and are not the env's defaults for that agent (``mlp-mpc (mpc.reward=env)``; a key
    one group changes is not repeated, at its default value, in every other group's name). Two groups never get one
    name: where they differ, at least one of them is off the defaults."""
    labels = {}
    for group in groups:
        env_id, agent, budget, settings = group
        twins = [g for g in groups if g[:2] == (env_id, agent)]
        label = agent
        if len({g[2] for g in twins}) > 1:
            label += f" @ {budget:,} steps"
        shared = set.intersection(*(set(g[3]) for g in twins))
        defaults = set(_settings(resolve_config({"env_id": env_id, "agent": agent})))
        differing = [f"{k}={json.loads(v)}" for k, v in settings if (k, v) not in shared and (k, v) not in defaults]
        if differing:
            label += f" ({', '.join(differing)})"
        labels[group] = label
    return labels


def steps_to_reach(curve: list[dict[str, Any]], threshold: float) -> int | None:
    """Env steps of the first evaluation whose mean return is >= ``threshold`` (None if never)."""
    for point in curve:
        if point["mean_return"] >= threshold:
            return int(point["env_steps"])
    return None


def compare_runs(run_dirs: list[str], out_dir: str | os.PathLike[str], threshold: float | None = None) -> str:
    """Write ``curves.png`` and ``comparison.md`` to ``out_dir``; returns the Markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise ConfigError("give at least one run directory to compare")
    groups = _curves(run_dirs)
    labels = _labels(list(groups))
    first_key, first = next(iter(groups.items()))
    source = "given"
    if threshold is None:
        threshold = float(np.mean([m["final_eval_return"] for m in first]))
        source = (
            f"the final mean return of {labels[first_key]} ({first_key[2]:,} steps) on {first_key[0]}, the first group"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [
        f"Threshold: return >= {threshold:.3f} ({source}).",
        "",
        "| env | agent | seeds | env steps | final return | best return | steps to threshold (per seed) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for group, runs in groups.items():
        env_id, label = group[0], labels[group]
        steps = sorted({p["env_steps"] for m in runs for p in m["curve"]})
        table = np.array([[_at(m["curve"], s) for s in steps] for m in runs])  # (seeds, points)
        mean, std = np.nanmean(table, 0), np.nanstd(table, 0)
        ax.plot(steps, mean, label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        finals = [m["final_eval_return"] for m in runs]
        bests = [m["best_eval_return"] for m in runs]
        reach = [steps_to_reach(m["curve"], threshold) for m in runs]
        rows.append(
            f"| {env_id} | {label} | {len(runs)} | {max(m['env_steps'] for m in runs):,} | "
            f"{np.mean(finals):.3f} ± {np.std(finals):.3f} | {np.mean(bests):.3f} | "
            f"{', '.join('never' if r is None else f'{r:,}' for r in reach)} |"
        )
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    # below the axes: labels that name a run's settings are long, and inside they would hide the curves
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), fontsize="small", frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, out / "curves.png")
    text = "\n".join(rows) + "\n"
    atomic_write_text(out / "comparison.md", text)
    return text


def _at(curve: list[dict[str, Any]], steps: int) -> float:
    """The latest evaluation at or before ``steps`` (NaN before the first)."""
    values = [p["mean_return"] for p in curve if p["env_steps"] <= steps]
    return values[-1] if values else float("nan")


__all__ = ["compare_runs", "evaluate_run", "load_agent", "steps_to_reach"]
