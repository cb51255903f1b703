"""World-model training throughput vs sequence length: slot SSM vs slot Transformer, side by side.

Usage::

    python benchmarks/wm_throughput.py [--lengths 16 64 256 1024 4096] [--batch 8] [--repeats 5] [--threads 2]
                                       [--quick] [--json] [--out docs/wm_throughput.json]

Both models are :func:`cwm_rl.models.factory.make_world_model` at their defaults on Interventional Pong's slots (the
Transformer's feed-forward width is matched so the parameter counts are within 10%; both counts are reported). One
measurement is a training step's forward and backward pass on ``batch`` sequences of ``length`` steps (loss: mean
square of the predicted deltas, reward and termination logits plus the sparsity penalty); repetitions alternate
between the models (A, B, A, B, ...) and each figure is the median. Reported per length: transitions per second
(``batch x length / time``) for each model, their ratio (SSM / Transformer, above 1: the SSM is faster), and peak
memory: each (model, length) runs three steps in a fresh Python process that reports its peak resident set size
minus its size just before the first step (Linux: the peak is reset through ``/proc/self/clear_refs``), so imports
and weights are not counted.

Targets (issue 5): the SSM at least as fast at length 64 and at least 3x faster at 1024 (linear vs quadratic cost in
time), with memory growing about linearly in the length.

The two models differ only in their temporal mixer (a Mamba-2 block vs a causal self-attention layer with its
feed-forward network); slot embedding, cross-slot attention, MLP and heads are the same. So each length also times
the mixers alone (forward and backward on the ``(batch x slots, length, d_model)`` input they see inside the model,
alternating as above) and reports two derived figures:

* ``mixer_ssm_over_transformer``: the same ratio for the mixers alone (linear vs quadratic in time, without the
  shared parts);
* ``ceiling``: the whole-model ratio the SSM would reach if its mixer cost nothing,
  ``T_transformer / (T_ssm - T_ssm_mixer)``: where that is below a target, no SSM can meet it at these sizes,
  because the shared parts already take longer than the Transformer's whole step divided by the target.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.models.factory import make_world_model  # noqa: E402

ENV_ID = "cwm/InterventionalPong-v0"
MODELS = ("slot-ssm", "slot-transformer")


def pong_layout() -> tuple[list[int], tuple[str, int]]:
    """Slot widths and action spec of Interventional Pong."""
    import gymnasium as gym

    import cwm_rl  # noqa: F401  (registers the envs)

    env = gym.make(ENV_ID).unwrapped
    dims = [s.stop - s.start for s in env.slot_slices.values()]
    return dims, ("discrete", int(env.action_space.n))


def build(kind: str) -> torch.nn.Module:
    dims, action = pong_layout()
    torch.manual_seed(0)
    return make_world_model(kind, dims, action)


def train_step(model: torch.nn.Module, obs: torch.Tensor, action: torch.Tensor) -> None:
    """One forward + backward pass (gradients are discarded: no optimiser step, same cost for both)."""
    pred = model(obs, action)
    loss = pred.delta.square().mean() + pred.reward.square().mean() + pred.termination_logit.square().mean()
    (loss + pred.penalty).backward()
    model.zero_grad(set_to_none=True)


def mixer_step(mixer: torch.nn.Module, x: torch.Tensor) -> None:
    """Forward + backward of one temporal mixer alone (gradients discarded, as in :func:`train_step`)."""
    mixer(x).square().mean().backward()
    mixer.zero_grad(set_to_none=True)


def mixer_input(model: torch.nn.Module, batch: int, length: int) -> torch.Tensor:
    """What the mixer sees inside the model: ``(batch * n_slots, length, d_model)``."""
    g = torch.Generator().manual_seed(length + 1)
    d_model = model.blocks[0].norm_t.normalized_shape[0]
    return torch.randn(batch * model.n_slots, length, d_model, generator=g)


def batch_of(model: torch.nn.Module, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(length)
    obs = torch.randn(batch, length, model.obs_dim, generator=g)
    action = torch.randint(0, model.action_size, (batch, length), generator=g)
    return obs, action


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_peak(kind: str, batch: int, length: int, threads: int) -> float:
    """In this process: peak RSS growth (MB) of three training steps over the RSS just before them. Linux: the
    peak (``VmHWM``) is reset first through ``/proc/self/clear_refs``, so earlier peaks (imports) do not hide it."""
    torch.set_num_threads(threads)
    model = build(kind)
    obs, action = batch_of(model, batch, length)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    for _ in range(3):
        train_step(model, obs, action)
    return (_status_kb("VmHWM") - before) / 1024


def peak_memory_mb(kind: str, batch: int, length: int, threads: int) -> float | None:
    """:func:`measure_peak` in a fresh Python process (None where ``/proc`` cannot reset the peak)."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import wm_throughput as w\n"
        f"print(json.dumps(w.measure_peak({kind!r}, {batch}, {length}, {threads})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="lengths 16 64 256, 3 repeats, no memory processes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats = [n for n in args.lengths if n <= 256], 3
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    models = {kind: build(kind) for kind in MODELS}
    params = {kind: sum(p.numel() for p in m.parameters()) for kind, m in models.items()}
    results = []
    for length in args.lengths:
        steps = {}
        for kind, m in models.items():
            steps[kind] = functools.partial(train_step, m, *batch_of(m, args.batch, length))
            mixer = m.blocks[0].mixer
            steps[f"{kind}_mixer"] = functools.partial(mixer_step, mixer, mixer_input(m, args.batch, length))
        for step in steps.values():
            step()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) for name, t in times.items()}
        row: dict = {"length": length, "batch": args.batch}
        for kind in MODELS:
            row[f"{kind}_transitions_per_s"] = args.batch * length / median[kind]
            row[f"{kind}_mixer_ms"] = 1e3 * median[f"{kind}_mixer"]
            if not args.quick:
                peak = peak_memory_mb(kind, args.batch, length, args.threads)
                row[f"{kind}_peak_mb"] = None if peak is None else round(peak, 1)
        row["ssm_over_transformer"] = row["slot-ssm_transitions_per_s"] / row["slot-transformer_transitions_per_s"]
        row["mixer_ssm_over_transformer"] = median["slot-transformer_mixer"] / median["slot-ssm_mixer"]
        shared = median["slot-ssm"] - median["slot-ssm_mixer"]  # noise can make it tiny or negative: no figure
        row["ceiling"] = median["slot-transformer"] / shared if shared > 0.05 * median["slot-ssm"] else None
        results.append(row)
        if not args.json:
            mem = (
                f"; peak memory {row['slot-ssm_peak_mb']} vs {row['slot-transformer_peak_mb']} MB"
                if not args.quick
                else ""
            )
            print(
                f"length {length:>5}: slot-ssm {row['slot-ssm_transitions_per_s']:>9,.0f} transitions/s, "
                f"slot-transformer {row['slot-transformer_transitions_per_s']:>9,.0f}, "
                f"ratio {row['ssm_over_transformer']:.2f} (mixers alone {row['mixer_ssm_over_transformer']:.2f}, "
                f"ceiling {row['ceiling'] or float('nan'):.2f}){mem}",
                flush=True,
            )
    machine = {**machine_info(), "torch": torch.__version__, "threads": args.threads}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    payload = {"benchmark": "wm_throughput", "machine": machine, "parameters": params, "results": results}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
