"""Counterfactual verification of every suite env (in-distribution and OOD ids) over N transitions.

Usage::

    python benchmarks/verify_suite.py [--transitions 10000] [--out docs/verification.json]

The issue's bar: 0 missing-edge violations over 10,000 transitions for every suite env.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from cwm_rl.envs import causal_env_ids, verify_local_graphs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    rows = []
    for env_id in causal_env_ids():
        start = time.perf_counter()
        report = verify_local_graphs(env_id, args.transitions, seed=args.seed)
        d = report.to_dict()
        d["wall_time_s"] = time.perf_counter() - start
        rows.append(d)
        print(
            f"{env_id:<30} violations {report.n_violations:>3}  unused {report.unused_rate():.3f} "
            f"(no self-edges {report.unused_rate(include_self=False):.3f})  {d['wall_time_s']:.0f} s"
        )
    write_json(args.out, {"benchmark": "verify_suite", "machine": machine_info(), "seed": args.seed, "results": rows})
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
