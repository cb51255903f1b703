"""Planning throughput: how long one MPC decision takes with the default planner config of each env.

Usage::

    python benchmarks/planning_throughput.py [--envs ...] [--models slot-ssm slot-transformer mlp] [--n-envs 8]
                                             [--repeats 5] [--threads 1] [--quick] [--out docs/planning.json]

For each env and world model: an :class:`~cwm_rl.agents.model_based.MPCAgent` with the env's defaults
(``agents/configs/mpc.yaml``), its model fitted for a few steps (speed does not depend on the weights), then
``agent.predict`` on a batch of ``n_envs`` real observations, repeated; candidates alternate (A, B, C, A, ...) and
each figure is the median. Reported: ms per decision (one planning call for all envs), ms per real env step (that
divided by ``n_envs``), and imagined transitions per second (envs x population x horizon x iterations per call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.agents.model_based import MPC_AGENTS, MPCAgent, mpc_config_for  # noqa: E402

AGENT_OF = {model: agent for agent, model in MPC_AGENTS.items()}


def _agent(env_id: str, model: str, n_envs: int, threads: int) -> MPCAgent:
    cfg = mpc_config_for(
        AGENT_OF[model],
        {"n_envs": n_envs, "seed_steps": 64 * n_envs, "first_updates": 5, "threads": threads},
        env_id=env_id,
    )
    agent = MPCAgent(env_id, cfg, seed=0)
    agent.learn(64 * n_envs + n_envs)  # random seed steps, then one fit
    return agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["cwm/InterventionalPong-v0", "cwm/Pusher2D-v0"])
    parser.add_argument("--models", nargs="+", default=list(AGENT_OF), choices=list(AGENT_OF))
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="Pong only, 3 repeats")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.envs, args.repeats = args.envs[:1], 3
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results = []
    for env_id in args.envs:
        agents = {m: _agent(env_id, m, args.n_envs, args.threads) for m in args.models}
        times: dict[str, list[float]] = {m: [] for m in args.models}
        for _ in range(args.repeats):
            for m, agent in agents.items():
                obs = np.asarray(agent._obs)
                start = time.perf_counter()
                agent.predict(obs)
                times[m].append(time.perf_counter() - start)
        for m, agent in agents.items():
            p = agent.config.planner
            per_call = statistics.median(times[m])
            imagined = args.n_envs * p.population * p.horizon * p.iterations
            row = {
                "env_id": env_id,
                "model": m,
                "planner": agent._planner(args.n_envs).__class__.__name__,
                "population": p.population,
                "horizon": p.horizon,
                "iterations": p.iterations,
                "n_envs": args.n_envs,
                "ms_per_decision": 1e3 * per_call,
                "ms_per_env_step": 1e3 * per_call / args.n_envs,
                "imagined_transitions_per_s": imagined / per_call,
            }
            results.append(row)
            if args.json:
                continue
            print(
                f"{env_id:<28} {m:<17} {row['planner']:<15} pop {p.population:>4} H {p.horizon:>3} it {p.iterations}"
                f": {row['ms_per_decision']:8.1f} ms/decision, {row['ms_per_env_step']:6.1f} ms/env step, "
                f"{row['imagined_transitions_per_s']:,.0f} imagined transitions/s",
                flush=True,
            )
    machine = {**machine_info(), "torch": torch.__version__, "threads": args.threads}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    payload = {"benchmark": "planning_throughput", "machine": machine, "results": results}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
