"""Env throughput: single-env and natively batched steps per second for every suite env.

Usage::

    python benchmarks/env_throughput.py [--num-envs 1024] [--repeats 5] [--quick] [--out docs/env_throughput.json]

Single env: the unwrapped env and the ``gymnasium.make`` env (with its wrappers), random actions drawn before the
clock starts, episodes reset when they end. Batched: ``gymnasium.make_vec(..., vectorization_mode=
"vector_entry_point")`` with autoreset. Each figure is the median of ``--repeats`` runs, measured alternately.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

import cwm_rl  # noqa: E402,F401
from cwm_rl.envs import causal_env_ids  # noqa: E402


def _single(env: gym.Env, actions: list) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - start)


def _batched(venv: gym.vector.VectorEnv, actions: np.ndarray) -> float:
    venv.reset(seed=0)
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    return actions.shape[0] * actions.shape[1] / (time.perf_counter() - start)


def measure(env_id: str, single_steps: int, batched_steps: int, num_envs: int, repeats: int) -> dict:
    raw = gym.make(env_id).unwrapped
    made = gym.make(env_id)
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    raw.action_space.seed(0)
    venv.action_space.seed(0)
    actions = [raw.action_space.sample() for _ in range(single_steps)]
    batch_actions = np.stack([venv.action_space.sample() for _ in range(batched_steps)])
    runs: dict[str, list[float]] = {"single_unwrapped": [], "single_made": [], "batched": []}
    for _ in range(repeats):  # alternate A/B/C so drift hits all alike
        runs["single_unwrapped"].append(_single(raw, actions))
        runs["single_made"].append(_single(made, actions))
        runs["batched"].append(_batched(venv, batch_actions))
    med = {f"{k}_steps_per_s": statistics.median(v) for k, v in runs.items()}
    ratio = med["batched_steps_per_s"] / med["single_unwrapped_steps_per_s"]
    return {"env_id": env_id, "num_envs": num_envs, **med, "batched_over_single": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (< 1 minute)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    single_steps, batched_steps, repeats = (3000, 20, 3) if args.quick else (20000, 100, args.repeats)
    ids = [i for i in causal_env_ids() if "-OOD-" not in i]
    rows = [measure(i, single_steps, batched_steps, args.num_envs, repeats) for i in ids]
    payload = {"benchmark": "env_throughput", "machine": machine_info(), "quick": args.quick, "results": rows}
    write_json(args.out, payload)
    if args.json:
        import json

        print(json.dumps(payload, indent=2))
    else:
        print(f"{'env':<28} {'single (raw)':>14} {'single (make)':>14} {f'batched x{args.num_envs}':>16} {'ratio':>7}")
        for r in rows:
            print(
                f"{r['env_id']:<28} {r['single_unwrapped_steps_per_s']:>14,.0f} {r['single_made_steps_per_s']:>14,.0f}"
                f" {r['batched_steps_per_s']:>16,.0f} {r['batched_over_single']:>7.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
