"""``cwm-rl bench``: run the speed benchmarks of a source checkout's ``benchmarks/`` folder from one command.

The benchmarks are scripts (``benchmarks/<name>.py``, each with ``--quick``, ``--json`` and ``--out``), not part of
the installed package: they measure this code on this machine and write ``docs/<name>.json``, from which
``benchmarks/make_results.py`` regenerates ``docs/results.md``. This module finds the folder next to the package
(an editable install or a checkout on ``sys.path``) and runs the named scripts in order, in this process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from cwm_rl.errors import InvalidArgumentError

BENCHMARKS = {
    "env_throughput": "env steps per second: single env, gym.make, natively batched",
    "scan_backends": "SSM scan backends on CPU: forward + backward of one block per sequence length",
    "wm_throughput": "world-model training throughput vs sequence length: slot SSM vs slot Transformer",
    "imagination_cost": "one imagined step at rollout step 8 vs 512: slot SSM vs slot Transformer",
    "planning_throughput": "ms per MPC decision with each env's default planner",
    "memory_bound": "resident memory over a long run with capped buffers",
    "end_to_end": "env steps and wall time for causal-mpc and ppo to reach a return threshold on Pong",
}
"""The speed benchmarks, in the order ``cwm-rl bench`` runs them (experiments such as ``wm_comparison`` are run
directly)."""

ON_REQUEST = ("end_to_end",)
"""Run only when named (``cwm-rl bench end_to_end``): it trains agents for minutes even with ``--quick``."""


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the source checkout this package was imported from."""
    here = Path(__file__).resolve().parent.parent / "benchmarks"
    if not (here / "_common.py").is_file():
        raise InvalidArgumentError(
            "cwm-rl bench runs the scripts in a source checkout's benchmarks/ folder, which this installation does "
            "not have; clone the repository and install it with `pip install -e .`"
        )
    return here


def import_benchmark(name: str) -> ModuleType:
    """A ``benchmarks/`` script imported as a module (its helpers and ``main``), for tests and notebooks; the
    scripts import their siblings (``_common``) by plain name, so the folder is on ``sys.path`` while it loads."""
    sys.path.insert(0, str(benchmarks_dir()))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def run_benchmarks(
    names: list[str] | None = None, quick: bool = False, as_json: bool = False, out_dir: str | None = None
) -> int:
    """Run ``names`` (default: all of :data:`BENCHMARKS` but :data:`ON_REQUEST`); each prints its table (or JSON)
    and, with ``out_dir``, writes ``<out_dir>/<name>.json``. Returns the first non-zero exit code, else 0."""
    names = list(names or [n for n in BENCHMARKS if n not in ON_REQUEST])
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InvalidArgumentError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    folder = benchmarks_dir()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the scripts share benchmarks/_common.py
    for name in names:
        argv = [*(["--quick"] if quick else []), *(["--json"] if as_json else [])]
        if out_dir:
            argv += ["--out", os.path.join(out_dir, f"{name}.json")]
        if not as_json:
            print(f"\n== {name}: {BENCHMARKS[name]}", flush=True)
        spec = importlib.util.spec_from_file_location(f"cwm_rl_bench_{name}", folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        code = module.main(argv)
        if code:
            return int(code)
    return 0


__all__ = ["BENCHMARKS", "benchmarks_dir", "run_benchmarks"]
