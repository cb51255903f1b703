"""Which of an OOD twin's changes costs a trained agent its return: each changed env argument alone, then all.

Usage::

    python benchmarks/ood_factors.py RUN_DIR [RUN_DIR ...] [--episodes 5] [--jobs 2] [--json] [--out FILE]

Every ``-OOD-v0`` twin of the suite changes a few constructor arguments of its base env (Pusher2D: the box is three
times heavier and the distractor moves faster). The twins mix two kinds of change: one to a mechanism the agent
must use (the box's response to a push), where a causal model has no more to go on than a dense one, and one to a
part that influences nothing the task depends on (the distractor touches nothing), where a model that has learned
that it touches nothing should lose nothing and a dense model may be misled. A single OOD return cannot tell them
apart; this benchmark does.

For each saved agent (a ``cwm-rl train`` run directory) it scores the agent with the fixed evaluation protocol (the
training script's episodes and seeds) on the base env, on the base env with each changed argument alone, and on the
twin, each from the saved agent freshly loaded. The twin's score is read from the sample-efficiency benchmark's
``ood_eval.json`` where it was taken the same way (replaying it gives the same number at the cost of planning every
step); ``--replay-all`` replays it anyway.
Runs named ``NAME-SEED`` (as the sample-efficiency benchmark names them) are grouped by ``NAME`` and averaged over
seeds. Runs are independent processes, ``--jobs`` at a time, one torch thread each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, ood_id, report  # noqa: E402


def factors(env_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, env id, extra constructor arguments) of each setting: the base env, every argument the twin changes
    alone, the twin."""
    from cwm_rl.envs import spec_of

    base, twin = dict(spec_of(env_id).kwargs), dict(spec_of(ood_id(env_id)).kwargs)
    changed = {k: v for k, v in twin.items() if base.get(k) != v}
    return [
        ("base", env_id, {}),
        *((f"{k}={v}", env_id, {k: v}) for k, v in changed.items()),
        ("OOD twin", ood_id(env_id), {}),
    ]


def group_name(run_dir: str) -> str:
    """``causal-mpc-2`` -> ``causal-mpc``: the sample-efficiency benchmark's run names are ``NAME-SEED``."""
    name = Path(run_dir).name
    return re.sub(r"-\d+$", "", name)


def scored_already(run: Path, episodes: int) -> dict[str, float]:
    """Settings already scored the way this benchmark scores them (the saved agent freshly loaded, the fixed
    protocol), so they need not be replayed (an evaluation plans every step): the twin, in the sample-efficiency
    benchmark's ``ood_eval.json`` (:func:`cwm_rl.agents.compare.evaluate_run`). The training script's final
    evaluation is not reused for the base env: in runs trained before session 21 it ran on the agent as it was
    during training, whose planner's random stream differs from the saved one's, so it can differ a little from a
    replay (since then every evaluation starts the planner afresh: ``MPCAgent.start_evaluation``)."""
    import json

    if (run / "ood_eval.json").is_file():
        ood = json.loads((run / "ood_eval.json").read_text())
        if ood.get("episodes") == episodes:
            return {"OOD twin": float(ood["mean_return"])}
    return {}


def score_run(task: dict[str, Any]) -> dict[str, Any]:
    """Score one saved agent on every setting; runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from cwm_rl.agents.compare import load_agent
    from cwm_rl.agents.evaluation import evaluate_agent

    agent, cfg = load_agent(task["run_dir"])
    env_steps = int(agent.num_timesteps)
    known = {} if task.get("replay_all") else scored_already(Path(task["run_dir"]), task["episodes"])
    scores = {}
    start = time.perf_counter()
    for name, env_id, extra in factors(cfg.env_id):
        if name in known:
            scores[name] = known[name]
            continue
        # every setting from the saved agent as it was: an evaluation may move an agent's random streams
        if agent is None:
            agent, _ = load_agent(task["run_dir"])
        result = evaluate_agent(agent, env_id, task["episodes"], cfg.seed, {**cfg.env_kwargs, **extra})
        scores[name] = result["mean_return"]
        if hasattr(agent, "close"):
            agent.close()
        agent = None
    if agent is not None and hasattr(agent, "close"):  # every setting was read, none replayed
        agent.close()
    return {
        "run_dir": task["run_dir"],
        "group": group_name(task["run_dir"]),
        "env_id": cfg.env_id,
        "agent": cfg.agent,
        "seed": cfg.seed,
        "env_steps": env_steps,
        "scores": scores,
        "wall_s": time.perf_counter() - start,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: mean ± std over seeds of each setting's return, and of its loss against the base env."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    rows = []
    for group, rs in groups.items():
        settings = list(rs[0]["scores"])
        row = {"group": group, "env_id": rs[0]["env_id"], "agent": rs[0]["agent"], "seeds": [r["seed"] for r in rs]}
        for s in settings:
            values = [r["scores"][s] for r in rs]
            drops = [r["scores"][s] - r["scores"]["base"] for r in rs]
            row[s] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
                "change_mean": float(np.mean(drops)),
                "change_std": float(np.std(drops)),
            }
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="`cwm-rl train` run directories (named NAME-SEED to group)")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes per setting (the protocol's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument(
        "--replay-all",
        action="store_true",
        help="replay every setting, also the twin where the run's ood_eval.json holds its score",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: give a positive number of episodes")
    missing = [d for d in args.run_dirs if not (Path(d) / "config.yaml").is_file()]
    if missing:
        parser.error(f"not a finished `cwm-rl train` run (no config.yaml): {', '.join(missing)}")
    tasks = [{"run_dir": str(d), "episodes": args.episodes, "replay_all": args.replay_all} for d in args.run_dirs]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        runs = pool.map(score_run, tasks)
    rows = summarise(runs)
    if not args.json:
        for row in rows:
            cells = ", ".join(
                f"{s} {row[s]['mean']:.2f} ({row[s]['change_mean']:+.2f})" for s in row if isinstance(row[s], dict)
            )
            print(f"{row['group']} ({len(row['seeds'])} seeds): {cells}")
    import torch

    payload = {
        "benchmark": "ood_factors",
        "episodes": args.episodes,
        "machine": {**machine_info(), "torch": torch.__version__, "jobs": args.jobs, "threads_per_job": 1},
        "wall_s": time.perf_counter() - start,
        "factors": {r["env_id"]: [name for name, *_ in factors(r["env_id"])] for r in runs},
        "rows": rows,
        "runs": runs,
    }
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
