"""SSM scan backends on CPU: forward + backward time of a Mamba block for each way of running the scan.

Usage::

    python benchmarks/scan_backends.py [--lengths 16 64 256] [--repeats 7] [--threads 2] [--quick]
                                       [--out docs/scan_backends.json] [--json]

Candidates (batch 64, d_model 64, d_state 16, expand 2, d_conv 4; one block; loss = mean square of the output):

* ``mamba2`` — :func:`cwm_rl.models.ssm.make_ssm_block` (the world model's default: Mamba-2, chunked SSD);
* ``mamba1`` — :class:`cwm_rl.models.ssm.Mamba1Block` as it runs on CPU: the fused recurrence with a hand-written
  backward (``scan="recurrent"``);
* ``mamba1-par`` — the same block with ``scan="parallel"``: the chunked doubling scan, parallel over time;
* ``mamba2-seq`` / ``mamba1-seq`` — the same blocks with ``backend="reference"`` (a Python loop over time);
* ``mambapy`` / ``mambapy-seq`` — ``mambapy.mamba.MambaBlock`` (parallel ``pscan`` / sequential), only when the
  optional ``mambapy`` package imports; it gets our Mamba-1 weights (same parameter names) and its output is
  checked against ours first;
* ``attention`` — one causal self-attention layer (:class:`cwm_rl.models.temporal.CausalSelfAttention`), the
  slot Transformer's temporal mixer, as the yardstick.

Repetitions alternate between candidates (A, B, C, A, B, C, ...) so drift hits all alike; each figure is the median.
A candidate slower than ``--budget`` seconds per call at one length is skipped at the longer ones. The machine, torch
version, thread count and the load average before and after are recorded: other processes on a 2-core machine
inflate every number.
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
from _common import machine_info, write_json  # noqa: E402

from cwm_rl.models.ssm import Mamba1Block, make_ssm_block  # noqa: E402

BATCH, D_MODEL = 64, 64
BASELINE = "mamba2"


def _candidates(d_state: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    blocks: dict[str, torch.nn.Module] = {
        "mamba2": make_ssm_block(D_MODEL, d_state=d_state, backend="torch"),
        "mamba1": Mamba1Block(D_MODEL, d_state=d_state, backend="torch", scan="recurrent"),
        "mamba1-par": Mamba1Block(D_MODEL, d_state=d_state, backend="torch", scan="parallel"),
        "mamba2-seq": make_ssm_block(D_MODEL, d_state=d_state, backend="reference"),
        "mamba1-seq": Mamba1Block(D_MODEL, d_state=d_state, backend="reference"),
    }
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        pass
    else:
        for name, pscan in (("mambapy", True), ("mambapy-seq", False)):
            block = MambaBlock(MambaConfig(d_model=D_MODEL, n_layers=1, d_state=d_state, pscan=pscan))
            block.load_state_dict(blocks["mamba1"].state_dict())  # same names and shapes as mamba_ssm.Mamba
            blocks[name] = block
        x = torch.randn(2, 16, D_MODEL)
        with torch.no_grad():
            diff = (blocks["mambapy"](x) - blocks["mamba1"](x)).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f"mambapy and our Mamba-1 disagree on the same weights (max |diff| {diff:.2e})")
    try:
        from cwm_rl.models.temporal import CausalSelfAttention
    except ImportError:
        pass
    else:
        blocks["attention"] = CausalSelfAttention(D_MODEL, n_heads=4)
    return blocks


def _fwd_bwd(block: torch.nn.Module, x: torch.Tensor) -> float:
    block.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    block(x).square().mean().backward()
    return time.perf_counter() - start


def measure(length: int, blocks: dict[str, torch.nn.Module], repeats: int, skip: set[str]) -> dict[str, float | None]:
    """Median fwd+bwd milliseconds per candidate at one sequence length, repetitions alternating."""
    x = torch.randn(BATCH, length, D_MODEL, generator=torch.Generator().manual_seed(length), requires_grad=True)
    active = [name for name in blocks if name not in skip]
    runs: dict[str, list[float]] = {name: [] for name in active}
    for name in active:  # warm-up (allocator, oneDNN kernels)
        _fwd_bwd(blocks[name], x)
    for rep in range(repeats):
        order = active if rep % 2 == 0 else active[::-1]
        for name in order:
            runs[name].append(_fwd_bwd(blocks[name], x))
    return {name: (1000 * statistics.median(runs[name]) if name in runs else None) for name in blocks}


def _table(rows: list[dict], names: list[str]) -> str:
    head = f"{'seq len':>7} | " + " | ".join(f"{n:>12}" for n in names)
    lines = [head, "-" * len(head)]
    for row in rows:
        base = row["ms"][BASELINE]
        cells = []
        for n in names:
            ms = row["ms"][n]
            cells.append(f"{'skipped':>12}" if ms is None else f"{ms:7.1f} {ms / base:4.1f}x")
        lines.append(f"{row['length']:>7} | " + " | ".join(cells))
    lines.append(f"(median ms of forward + backward, batch {BATCH}, d_model {D_MODEL}; Nx = time / {BASELINE})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--d-state", type=int, default=16, help="SSM state size of every candidate")
    parser.add_argument("--budget", type=float, default=3.0, help="skip a candidate at longer lengths past this (s)")
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 1 s budget (< 1 minute)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    repeats, budget = (3, 1.0) if args.quick else (args.repeats, args.budget)
    torch.set_num_threads(args.threads)

    blocks = _candidates(args.d_state)
    load_before = os.getloadavg()
    rows, skip = [], set()
    started = time.perf_counter()
    for length in sorted(args.lengths):
        ms = measure(length, blocks, repeats, skip)
        rows.append({"length": length, "ms": ms})
        skip |= {name for name, v in ms.items() if v is not None and v > 1000 * budget}
        if not args.json:
            print(f"  L={length}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    payload = {
        "benchmark": "scan_backends",
        "machine": machine_info() | {"torch": torch.__version__, "threads": torch.get_num_threads()},
        "load_average_before_after": [load_before, os.getloadavg()],
        "config": {"batch": BATCH, "d_model": D_MODEL, "d_state": args.d_state, "repeats": repeats},
        "quick": args.quick,
        "baseline": BASELINE,
        "candidates": list(blocks),
        "results": rows,
    }
    write_json(args.out, payload)
    if args.json:
        import json

        print(json.dumps(payload, indent=2))
    else:
        m = payload["machine"]
        print(f"{m['cpu_count']} cores, {m['processor']}, torch {m['torch']}, {m['threads']} threads", end="")
        print(f", d_state {args.d_state}")
        print(_table(rows, list(blocks)))
        print(f"load average before / after: {load_before[0]:.2f} / {payload['load_average_before_after'][1][0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
