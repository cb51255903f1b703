"""CoDA in ``causal-dyna``: counterfactual transitions from locally independent slots, against none.

Usage::

    python benchmarks/coda_dyna.py [--env pong] [--seeds 0 1 2] [--steps 20000] [--coda-batch 1000] [--jobs 2]
                                   [--runs-dir runs/coda_dyna] [--quick] [--json] [--out docs/coda_dyna.json]

``causal-dyna`` (DQN on Pong, SAC on Pusher2D, at the shipped defaults of ``agents/configs``) is trained with
``dyna.coda_batch`` 0 and ``--coda-batch`` (:mod:`cwm_rl.agents.coda`: after every world-model refit that many
pairs of real transitions are mixed wherever the learned local graphs split the slots, and the accepted mixes join
the imagined transitions), same seeds, same budget. Reported per run: final and best evaluation return (10
deterministic episodes every tenth of the budget), the mean of the last three evaluations (less noisy than the
final one), the return on the ``-OOD-v0`` twin, and from the run's TensorBoard events the share of pairs the
learned graphs could split and the share accepted after the check on the mixed state (first and last refit).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402
from sample_efficiency import SETUPS, run_one  # noqa: E402


def coda_shares(run_dir: str) -> dict[str, list[float]]:
    """``dyna/coda_*_share`` scalars of a run, in step order (empty without CoDA)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    return {
        key: [e.value for e in events.Scalars(f"dyna/coda_{key}_share")]
        for key in ("splittable", "accepted")
        if f"dyna/coda_{key}_share" in tags
    }


def run(task: dict[str, Any]) -> dict[str, Any]:
    result = run_one(task)
    result["coda_batch"] = task["overrides"]["dyna.coda_batch"]
    result["last3_mean"] = float(np.mean([v for _, v in result["curve"][-3:]]))
    result["coda_shares"] = coda_shares(task["run_dir"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(SETUPS), default="pong")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--coda-batch", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--runs-dir", default="runs/coda_dyna", help="where the runs are kept")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1,500 steps, seed 0, 2 episodes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    seeds, steps, episodes = ([0], 1500, 2) if args.quick else (args.seeds, args.steps, 10)
    env_id = SETUPS[args.env]["env_id"]
    root = Path(args.runs_dir) / ("quick" if args.quick else "full") / args.env
    tasks = [
        {
            "env_id": env_id,
            "agent": "causal-dyna",
            "seed": seed,
            "steps": steps,
            "evals": 10,
            "episodes": episodes,
            "overrides": {"dyna.coda_batch": batch},
            "run_dir": str(root / f"coda{batch}-{seed}"),
        }
        for seed in seeds
        for batch in (0, args.coda_batch)
    ]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        results = sorted(pool.map(run, tasks), key=lambda r: (r["coda_batch"], r["seed"]))
    summary = {}
    for batch in (0, args.coda_batch):
        rs = [r for r in results if r["coda_batch"] == batch]
        summary[str(batch)] = {
            key: [float(np.mean([r[key] for r in rs])), float(np.std([r[key] for r in rs]))]
            for key in ("final_eval_return", "best_eval_return", "last3_mean", "ood_mean_return")
        }
    if not args.json:
        for r in results:
            shares = r["coda_shares"]
            split = (
                f", split {shares['splittable'][0]:.2f}->{shares['splittable'][-1]:.2f}, accepted "
                f"{shares['accepted'][0]:.2f}->{shares['accepted'][-1]:.2f}"
                if shares.get("accepted")
                else ""
            )
            print(
                f"coda_batch {r['coda_batch']:>5} seed {r['seed']}: final {r['final_eval_return']:.2f}, best "
                f"{r['best_eval_return']:.2f}, last 3 {r['last3_mean']:.2f}, OOD {r['ood_mean_return']:.2f}{split}"
            )
        for batch, s in summary.items():
            print(f"coda_batch {batch:>5}: " + ", ".join(f"{k} {m:.2f} ± {sd:.2f}" for k, (m, sd) in s.items()))
    import torch

    machine = {**machine_info(), "torch": torch.__version__, "jobs": args.jobs, "threads_per_job": 1}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    payload = {
        "benchmark": "coda_dyna",
        "quick": args.quick,
        "env_id": env_id,
        "steps": steps,
        "coda_batch": args.coda_batch,
        "machine": machine,
        "wall_s": time.perf_counter() - start,
        "summary": summary,
        "runs": results,
    }
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
