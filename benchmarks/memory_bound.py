"""Memory over a long run: replay and sequence buffers are capped by config, so resident memory stops growing.

Usage::

    python benchmarks/memory_bound.py [--quick] [--out docs/memory_bound.json]

Each run trains one agent through the Python API with a deliberately small buffer cap, so the cap is reached early
(at ``cap_reached_at`` env steps, well before half the run) and the rest shows whether anything else grows: the
process's resident set size (RSS, ``/proc/self/statm``, after ``gc.collect()``) is sampled every ``steps / 20`` env
steps. Reported per run: RSS at 0/25/50/75/100% of the run, the growth over the second half (what a bounded run keeps
near zero: by then the buffer is full, the model has been fitted and the planner has run, so the allocator is warm),
that growth per 10,000 env steps, and the highest RSS in the second half. Runs are sequential in one process, so
later runs start from the earlier runs' allocator high-water mark; each run's growth is measured on its own.

* ``causal-mpc`` on Pong: its :class:`~cwm_rl.agents.sequence_buffer.SequenceBuffer` capped at ``mpc.buffer_size``.
* ``dqn`` on Pong: SB3's ``ReplayBuffer`` capped at ``buffer_size`` (allocated up front by SB3).
* ``ppo`` on Pong with the probe world model (:class:`~cwm_rl.agents.wm_probe.WorldModelProbeCallback`), whose
  sequence buffer is capped at ``ProbeConfig.buffer_size`` (lowered here so the cap is reached).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.agents.training import make_agent, resolve_config  # noqa: E402

PONG = "cwm/InterventionalPong-v0"


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux ``/proc``; the peak from ``resource`` elsewhere)."""
    gc.collect()
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class _Sampler:
    """RSS every ``every`` env steps (the agent's callback)."""

    def __init__(self, every: int) -> None:
        self.every, self.next_at = every, 0
        self.points: list[tuple[int, float]] = []

    def __call__(self, steps: int) -> bool:
        if steps >= self.next_at:
            self.points.append((int(steps), round(rss_mb(), 2)))
            self.next_at = steps + self.every
        return True


def _sb3_callback(sampler: _Sampler, probe: Any = None) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList

    class _Call(BaseCallback):
        def _on_step(self) -> bool:
            return sampler(self.model.num_timesteps)

    return CallbackList([probe, _Call()]) if probe is not None else _Call()


def run_one(name: str, agent_id: str, steps: int, overrides: dict[str, Any], cap: int) -> dict[str, Any]:
    """Train ``agent_id`` on Pong for ``steps`` env steps with the buffer capped at ``cap`` transitions."""
    cfg = resolve_config({"env_id": PONG, "agent": agent_id, "steps": steps, **overrides})
    agent = make_agent(cfg)
    sampler = _Sampler(max(1, steps // 20))
    start = time.perf_counter()
    if agent_id == "causal-mpc":
        agent.learn(steps, callback=lambda a: sampler(a.num_timesteps))
    elif agent_id == "ppo":
        from cwm_rl.agents.wm_probe import ProbeConfig, WorldModelProbeCallback

        probe = WorldModelProbeCallback(PONG, config=ProbeConfig(buffer_size=cap, train_every=2000), seed=0)
        agent.learn(steps, callback=_sb3_callback(sampler, probe))
    else:
        agent.learn(steps, callback=_sb3_callback(sampler))
    sampler(agent.num_timesteps + sampler.every)  # the end point
    wall = time.perf_counter() - start
    if hasattr(agent, "close"):
        agent.close()
    points = sampler.points
    at_cap = next(p for p in points if p[0] >= cap)
    half = next(p for p in points if p[0] >= steps // 2)
    end = points[-1]
    growth = end[1] - half[1]
    return {
        "name": name,
        "agent": agent_id,
        "env_id": PONG,
        "env_steps": int(end[0]),
        "cap_transitions": cap,
        "cap_reached_at": at_cap[0],
        "rss_mb_at": {f"{q}%": next(p for p in points if p[0] >= steps * q // 100)[1] for q in (0, 25, 50, 75)}
        | {"100%": end[1]},
        "max_rss_second_half_mb": max(p[1] for p in points if p[0] >= half[0]),
        "growth_second_half_mb": round(growth, 2),
        "growth_per_10k_steps_mb": round(growth / max(1, end[0] - half[0]) * 10_000, 3),
        "wall_time_s": round(wall, 1),
        "points": points,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="runs 8x shorter (under a minute)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scale = 8 if args.quick else 1
    mpc = {"mpc.planner.population": 64, "mpc.planner.horizon": 8, "mpc.planner.iterations": 2}
    if args.quick:  # a cheaper planner: memory, not planning, is measured
        mpc = {"mpc.planner.population": 16, "mpc.planner.horizon": 4, "mpc.planner.iterations": 1}
    # Fits every 500 env steps (as in mpc.yaml) in both modes: a fit costs the same however short the run.
    mpc |= {"mpc.seed_steps": 1_000 // scale, "mpc.train_every": 500, "mpc.buffer_size": 2_000 // scale}
    runs = [
        ("causal-mpc", "causal-mpc", 12_000 // scale, mpc, 2_000 // scale),
        ("dqn", "dqn", 200_000 // scale, {"sb3_kwargs.buffer_size": 20_000 // scale}, 20_000 // scale),
        ("ppo + probe", "ppo", 200_000 // scale, {}, 20_000 // scale),
    ]
    results = []
    for name, agent_id, steps, overrides, cap in runs:
        r = run_one(name, agent_id, steps, overrides, cap)
        results.append(r)
        if args.json:
            continue
        print(
            f"{name:12s} {r['env_steps']:>8,} steps, cap {cap:>6,} reached at {r['cap_reached_at']:>7,}: RSS (MB) "
            + " / ".join(f"{v:.0f}" for v in r["rss_mb_at"].values())
            + f" at 0/25/50/75/100%; second half {r['growth_second_half_mb']:+.1f} MB "
            f"({r['growth_per_10k_steps_mb']:+.2f} MB / 10k steps; {r['wall_time_s']:.0f} s)",
            flush=True,
        )
    machine = {**machine_info(), "torch": torch.__version__, "threads": 1}
    payload = {"benchmark": "memory_bound", "machine": machine, "quick": args.quick, "results": results}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
