"""End to end: env steps and wall time for ``causal-mpc`` and ``ppo`` to reach a return threshold on Pong.

Usage::

    python benchmarks/end_to_end.py [--seeds 0] [--mpc-steps 6000] [--ppo-steps 100000] [--threshold -1.0]
                                    [--quick] [--json] [--out docs/end_to_end.json]

Each agent is trained with ``cwm-rl train``'s Python API (:func:`cwm_rl.agents.training.train`) at its shipped
defaults (``agents/configs``), evaluated with the fixed protocol (5 deterministic episodes on fixed-seed eval envs)
every tenth of its budget; the world-model probe is off so only the agent is timed. Reported per agent and seed: the
first evaluation at or above ``--threshold`` (env steps and the run's wall time at that evaluation, from
``timing.json``), or "not reached", and the final return. The default threshold, -1.0, is what PPO reaches within
100k steps and far enough above random play that luck does not reach it: random play scores about -3.3 with an
episode std of about 1.6, so a 5-episode mean has a std of about 0.7 (a first try at -2.0 was "reached" by the
untrained `causal-mpc`'s random seed actions at its first evaluation). Runs are sequential, one agent at a time, so
wall times are comparable on one machine; they are single runs, not medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.agents.compare import steps_to_reach  # noqa: E402
from cwm_rl.agents.training import resolve_config, train  # noqa: E402

ENV_ID = "cwm/InterventionalPong-v0"


def run_agent(agent: str, steps: int, seed: int, threshold: float, root: Path) -> dict:
    cfg = resolve_config(
        {"env_id": ENV_ID, "agent": agent, "steps": steps, "seed": seed, "eval_every": max(1, steps // 10)}
        | {"eval_episodes": 5, "wm_probe_transitions": 0}
    )
    run = root / f"{agent}-{seed}"
    metrics = train(cfg, run, progress=False)
    timing = json.loads((run / "timing.json").read_text())
    reached = steps_to_reach(metrics["curve"], threshold)
    wall_at = {p["env_steps"]: p["wall_time_s"] for p in timing["curve"]}
    return {
        "agent": agent,
        "seed": seed,
        "budget": steps,
        "threshold": threshold,
        "steps_to_threshold": reached,
        "wall_s_to_threshold": wall_at.get(reached) if reached is not None else None,
        "final_eval_return": metrics["final_eval_return"],
        "best_eval_return": metrics["best_eval_return"],
        "wall_time_s": timing["wall_time_s"],
        "curve": [(p["env_steps"], p["mean_return"]) for p in metrics["curve"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--mpc-steps", type=int, default=6000)
    parser.add_argument("--ppo-steps", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=-1.0)
    parser.add_argument("--quick", action="store_true", help="1,000 causal-mpc and 20,000 PPO steps, seed 0")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.mpc_steps, args.ppo_steps = [0], 1000, 20_000
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for agent, steps in (("causal-mpc", args.mpc_steps), ("ppo", args.ppo_steps)):
                r = run_agent(agent, steps, seed, args.threshold, Path(tmp))
                results.append(r)
                if not args.json:
                    reached = (
                        f"reached {args.threshold} at {r['steps_to_threshold']:,} steps, "
                        f"{r['wall_s_to_threshold']:.0f} s"
                        if r["steps_to_threshold"] is not None
                        else f"did not reach {args.threshold}"
                    )
                    print(
                        f"{agent:<11} seed {seed}: {steps:>7,} steps in {r['wall_time_s']:.0f} s, {reached}; final "
                        f"return {r['final_eval_return']:.2f} (best {r['best_eval_return']:.2f})",
                        flush=True,
                    )
    machine = {**machine_info(), "torch": torch.__version__}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    payload = {"benchmark": "end_to_end", "env_id": ENV_ID, "machine": machine, "results": results}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
