"""The paper-style world-model comparison: slot SSM vs slot Transformer, with and without sparsity, per env.

For each env: collect random-policy data once (seeded), then for every variant and seed train with
``cwm-rl wm-train`` settings and evaluate with ``cwm-rl wm-eval`` (in distribution and on the OOD twin). Writes
JSON that ``benchmarks/make_results.py`` turns into the table of docs/results.md (mean +- std over seeds).

Usage::

    python benchmarks/wm_comparison.py [--envs cwm/InterventionalPong-v0 ...] [--seeds 0 1 2] [--steps 1500]
                                       [--env-steps cwm/InterventionalPong-v0=3000 ...] [--transitions 20000]
                                       [--jobs 2] [--threads 1] [--quick] [--out docs/wm_comparison.json]

``--steps`` is the number of gradient steps for every env, ``--env-steps ID=N`` overrides it per env (by default
Pong, the paper's comparison, gets ``wm-train``'s default of 3,000 and the other envs 1,500, to keep the whole run
near an hour on 2 cores). ``--jobs 2`` trains two runs at once in separate processes, one torch thread each
by default (these small models keep two threads of one run only partly busy). Results depend on the thread count
(float reductions), not on ``--jobs``; the JSON records both.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from cwm_rl.data import collect  # noqa: E402
from cwm_rl.wm_evaluation import SUMMARY_KEYS  # noqa: E402
from cwm_rl.wm_training import WMTrainConfig, evaluate_run, train_world_model  # noqa: E402

SUITE = ["cwm/InterventionalPong-v0", "cwm/Chemistry-v0", "cwm/WeightedBlocks-v0", "cwm/Pusher2D-v0"]
SPARSE = WMTrainConfig().sparsity_weight  # the default of `cwm-rl wm-train`
# variant -> (model, sparsity weight)
VARIANTS = {
    "slot-ssm (sparse)": ("slot-ssm", SPARSE),
    "slot-ssm (dense)": ("slot-ssm", 0.0),
    "slot-transformer (sparse)": ("slot-transformer", SPARSE),
    "slot-transformer (dense)": ("slot-transformer", 0.0),
    "mlp": ("mlp", 0.0),
    "oracle": ("oracle", 0.0),
}
KEYS = (*SUMMARY_KEYS, "parameters")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=SUITE)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500, help="gradient steps per run")
    parser.add_argument(
        "--env-steps",
        nargs="*",
        default=[f"cwm/InterventionalPong-v0={WMTrainConfig().steps}"],
        metavar="ID=N",
        help="per-env gradient steps, overriding --steps",
    )
    parser.add_argument("--transitions", type=int, default=20_000, help="random-policy transitions per env")
    parser.add_argument("--d-model", type=int, default=WMTrainConfig().slot.d_model)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, in separate processes")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: wm-train's; 1 with --jobs)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 steps, 5,000 transitions")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.transitions, args.env_steps = args.seeds[:1], 200, 5000, []
    env_steps = _parse_env_steps(args.env_steps, parser)
    threads = args.threads or (1 if args.jobs > 1 else WMTrainConfig().threads)
    with tempfile.TemporaryDirectory() as tmp:
        tasks = []
        for env_id in args.envs:
            data = Path(tmp) / env_id.replace("/", "_")
            collect(env_id, args.transitions, data, seed=0, num_envs=16)
            for variant in args.variants:
                for seed in args.seeds:
                    steps = env_steps.get(env_id, args.steps)
                    tasks.append((env_id, variant, seed, steps, str(data), tmp, args.d_model, threads))
        if args.jobs > 1:  # each run in its own process, `threads` torch threads each
            with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                runs = list(pool.map(_run, tasks))
        else:
            runs = [_run(task) for task in tasks]
    config = {
        "steps": args.steps,
        "env_steps": env_steps,
        "transitions": args.transitions,
        "seeds": args.seeds,
        "d_model": args.d_model,
        "jobs": args.jobs,
        "threads": threads,
        "quick": args.quick,
        "defaults": dataclasses.asdict(WMTrainConfig()),
    }
    write_json(args.out, {"benchmark": "wm_comparison", "machine": machine_info(), "config": config, "runs": runs})
    return 0


def _run(task: tuple[str, str, int, int, str, str, int, int]) -> dict:
    """Train and evaluate one (env, variant, seed); prints its line and returns its row of the JSON."""
    env_id, variant, seed, steps, data, tmp, d_model, threads = task
    model, sparsity = VARIANTS[variant]
    cfg = WMTrainConfig(
        env_id=env_id,
        model=model,
        data=data,
        seed=seed,
        steps=steps,
        eval_every=steps,
        sparsity_weight=sparsity,
        threads=threads,
        slot=dataclasses.replace(WMTrainConfig().slot, d_model=d_model),  # wm-train's architecture
    )
    run_dir = Path(tmp) / f"{Path(data).name}-{model}-{sparsity}-{seed}"
    start = time.perf_counter()
    train_world_model(cfg, run_dir, progress=False)
    ev = evaluate_run(run_dir, ood_steps=2000)
    row = {
        "env_id": env_id,
        "variant": variant,
        "model": model,
        "sparsity_weight": sparsity,
        "seed": seed,
        "steps": steps,
        "threads": threads,
        "wall_time_s": time.perf_counter() - start,
    }
    for part in ("in_distribution", "ood"):
        if part in ev:
            row[part] = {k: ev[part][k] for k in KEYS if k in ev[part]}
    idm = row["in_distribution"]
    print(
        f"{env_id:<28} {variant:<26} seed {seed}: mse {idm['prediction_mse']:.3f} "
        f"ol10 {idm['open_loop_mse_10']:.3f} shd {idm.get('shd', float('nan')):.2f} "
        f"f1 {idm.get('f1', float('nan')):.3f}  ({row['wall_time_s']:.0f} s)",
        flush=True,
    )
    return row


def _parse_env_steps(items: list[str], parser: argparse.ArgumentParser) -> dict[str, int]:
    out = {}
    for item in items:
        env_id, _, value = item.rpartition("=")
        if not env_id or not value.isdigit() or int(value) < 1:
            parser.error(f"--env-steps {item!r}: expected ID=N with N a positive integer")
        out[env_id] = int(value)
    return out


if __name__ == "__main__":
    sys.exit(main())
