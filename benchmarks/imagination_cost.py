"""Imagination cost per step: one batched imagined step early (step 8) vs late (step 512) in a rollout.

Usage::

    python benchmarks/imagination_cost.py [--batch 256] [--horizon 512] [--repeats 5] [--threads 1] [--quick]
                                          [--json] [--out docs/imagination_cost.json]

Planners and Dyna roll the world model forward through its recurrent ``step``. For the slot SSM the state is a fixed
size (a constant cost per step); the slot Transformer's state is a key/value cache that grows by one entry per step,
so step ``t`` attends over ``t`` entries. Each repetition rolls ``batch`` trajectories (random discrete actions,
Interventional Pong's slots, the models of :mod:`benchmarks.wm_throughput`) ``horizon`` steps and times every step;
the figure for "step 8" is the median over steps 8-15 and for "step 512" over the last 8 steps, then the median
over repetitions, which alternate between the models. Reported: ms per step at both points and their ratio.

Target (issue 5): the SSM's ratio step 512 / step 8 at most 1.2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402
from wm_throughput import MODELS, build  # noqa: E402

from cwm_rl.models.world_model import consuming_step  # noqa: E402


@torch.no_grad()
def step_times(model: torch.nn.Module, batch: int, horizon: int, seed: int) -> list[float]:
    """Seconds per step of one ``horizon``-step rollout of ``batch`` trajectories."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, model.obs_dim, generator=g)
    state = model.initial_state(batch)
    step = consuming_step(model)  # the path imagination takes (the SSM updates its state in place)
    times = []
    for _ in range(horizon):
        action = torch.randint(0, model.action_size, (batch,), generator=g)
        start = time.perf_counter()
        pred, state = step(state, obs, action)
        times.append(time.perf_counter() - start)
        obs = obs + pred.delta
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="imagined trajectories per step (a population)")
    parser.add_argument("--horizon", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="horizon 128, batch 64, 2 repeats")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.horizon, args.batch, args.repeats = 128, 64, 2
    if args.horizon < 16:
        parser.error("--horizon must be at least 16 (early and late windows of 8 steps)")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    models = {kind: build(kind).eval() for kind in MODELS}
    early: dict[str, list[float]] = {k: [] for k in MODELS}
    late: dict[str, list[float]] = {k: [] for k in MODELS}
    for r in range(args.repeats):
        for kind, model in models.items():
            t = step_times(model, args.batch, args.horizon, seed=r)
            early[kind].append(statistics.median(t[8:16]))
            late[kind].append(statistics.median(t[-8:]))
    results = []
    for kind in MODELS:
        e, lt = statistics.median(early[kind]), statistics.median(late[kind])
        row = {"model": kind, "batch": args.batch, "ms_step_8": 1e3 * e, f"ms_step_{args.horizon}": 1e3 * lt}
        row["late_over_early"] = lt / e
        results.append(row)
        if not args.json:
            print(
                f"{kind:<17} step 8: {1e3 * e:7.3f} ms, step {args.horizon}: {1e3 * lt:7.3f} ms, "
                f"ratio {lt / e:.2f} (batch {args.batch})",
                flush=True,
            )
    machine = {**machine_info(), "torch": torch.__version__, "threads": args.threads}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    payload = {"benchmark": "imagination_cost", "machine": machine, "horizon": args.horizon, "results": results}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
