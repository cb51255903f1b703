"""World models under each change of an OOD twin, slot by slot: causal (sparse slot SSM) vs dense (slot, MLP).

Usage::

    python benchmarks/ood_model_factors.py [--envs cwm/InterventionalPong-v0 cwm/Pusher2D-v0] [--seeds 0 1 2]
                                           [--transitions 20000] [--eval-transitions 4000] [--jobs 2] [--quick]
                                           [--json] [--out docs/ood_model_factors.json]

Issue 4 asks the causal model to beat the dense one on the env's OOD twin. The agents' OOD returns
(``sample_efficiency.py``, ``ood_factors.py``) mix the model with a planner or a policy and carry the noise of a few
evaluation episodes; this benchmark asks the models themselves. A twin changes a few constructor arguments of its
base env; some change a mechanism the other parts depend on (Pusher2D's heavier box, Pong's slower paddles), others
a part that influences none of the rest (Pusher2D's faster distractor; Pong's interventions on the score, a slot
no other slot reads). A model that has learned which slots drive which should predict the untouched slots as well
after such a change as before it; a dense model, whose every output reads every input, may not, where the change
takes the changed slot's values outside what it was trained on.

For each env: random-policy data of the base env (``--transitions``, seed 0, as ``wm_comparison.py``), and per seed
the sparse slot SSM (``cwm-rl wm-train``'s defaults), the same model without the sparsity penalty and the dense
MLP trained on it (Pong: wm-train's default steps; the other envs: 1,500, as ``wm_comparison.py``). Then for each
setting (the base env, each argument the twin changes set alone, all of them: the twin; :func:`ood_factors.factors`)
fresh random-policy transitions (``--eval-transitions``, seed 10,000, the same for every setting), and ``cwm-rl
wm-eval``'s open-loop prediction error at 1, 5 and 10 steps per slot (mean squared error in the base data's
normalised observation units).
Runs are independent processes, ``--jobs`` at a time, one torch thread each.
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
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402
from ood_factors import factors  # noqa: E402

from cwm_rl.data import collect  # noqa: E402
from cwm_rl.wm_training import WMTrainConfig, evaluate_run, train_world_model  # noqa: E402

ENVS = ["cwm/InterventionalPong-v0", "cwm/Pusher2D-v0"]
# name -> (model, sparsity weight, other WMTrainConfig settings; "slot" holds SlotModelConfig settings).
# By default: the causal model, the same slot model without its sparsity penalty (is it the graph or the slots?),
# the dense MLP.
MODELS: dict[str, tuple[str, float, dict[str, Any]]] = {
    "slot-ssm (sparse)": ("slot-ssm", WMTrainConfig().sparsity_weight, {}),
    "slot-ssm (dense)": ("slot-ssm", 0.0, {}),
    "mlp": ("mlp", 0.0, {}),
}
# Named with --models only: the world-model settings of Pusher2D's shipped MPC agents (agents/configs/mpc.yaml:
# width 64, three-layer node networks, absolute error; not its dense warm-up of 2,500 updates, longer than this fit)
AGENT_FIT = {"prediction_loss": "l1"}
EXTRA_MODELS: dict[str, tuple[str, float, dict[str, Any]]] = {
    "slot-ssm (sparse, Pusher2D agent's)": (
        "slot-ssm",
        WMTrainConfig().sparsity_weight,
        {**AGENT_FIT, "slot": {"d_model": 64, "mlp_layers": 3}},
    ),
    "mlp (Pusher2D agent's)": ("mlp", 0.0, AGENT_FIT),
}
HORIZONS = (1, 5, 10)
EVAL_SEED = 10_000
QUICK = {"seeds": [0], "transitions": 3000, "eval_transitions": 1000, "steps": 100}


def train_steps(env_id: str) -> int:
    """Gradient steps per env, as ``wm_comparison.py``'s defaults: Pong wm-train's own, the others 1,500."""
    return WMTrainConfig().steps if env_id == "cwm/InterventionalPong-v0" else 1500


def settings_data(env_id: str, n: int, root: Path) -> dict[str, str]:
    """Collect ``n`` random-policy transitions per setting (the base env id with the setting's arguments, so every
    dataset is the base env's as far as ``wm-eval`` is concerned); the twin gets every changed argument."""
    out: dict[str, str] = {}
    named = factors(env_id)
    changed = {k: v for name, _, extra in named if name not in ("base", "OOD twin") for k, v in extra.items()}
    for name, _, extra in named:
        kwargs = changed if name == "OOD twin" else extra
        path = root / f"{env_id.replace('/', '_')}-{len(out)}"
        collect(env_id, n, path, seed=EVAL_SEED, num_envs=16, env_kwargs=kwargs or None)
        out[name] = str(path)
    return out


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (env, model, seed) on the base env's data, then evaluate it on every setting's data."""
    torch.set_num_threads(1)
    model, sparsity, extra = {**MODELS, **EXTRA_MODELS}[task["variant"]]
    extra = dict(extra)
    slot = dataclasses.replace(WMTrainConfig().slot, **extra.pop("slot", {}))
    cfg = WMTrainConfig(
        env_id=task["env_id"],
        model=model,
        data=task["data"],
        seed=task["seed"],
        steps=task["steps"],
        eval_every=task["steps"],
        sparsity_weight=sparsity,
        threads=1,
        slot=slot,
        **extra,
    )
    run_dir = Path(task["tmp"]) / f"{Path(task['data']).name}-{_slug(task['variant'])}-{task['seed']}"
    start = time.perf_counter()
    train_world_model(cfg, run_dir, progress=False)
    settings = {}
    for name, data in task["settings"].items():
        ev = evaluate_run(run_dir, data, ood_steps=0, horizons=HORIZONS)["in_distribution"]
        settings[name] = {k: v for k, v in ev.items() if k.startswith("open_loop_mse_") and isinstance(v, float)}
    wall = time.perf_counter() - start
    base = settings["base"]
    print(
        f"{task['env_id']:<28} {task['variant']:<18} seed {task['seed']}: open-loop 10 "
        + " / ".join(f"{name} {s['open_loop_mse_10']:.3f}" for name, s in settings.items())
        + f" (base {base['open_loop_mse_10']:.3f}; {wall:.0f} s)",
        flush=True,
    )
    return {
        "env_id": task["env_id"],
        "variant": task["variant"],
        "seed": task["seed"],
        "steps": task["steps"],
        "settings": settings,
        "wall_s": wall,
    }


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per env, model, setting and key: mean and std over seeds, and the mean over seeds of each seed's ratio to
    its own base-env error (how much the setting costs that model; ``None`` where the base error is 0)."""
    out: dict[str, Any] = {}
    for r in runs:
        out.setdefault(r["env_id"], {}).setdefault(r["variant"], []).append(r)
    summary: dict[str, Any] = {}
    for env_id, by_variant in out.items():
        summary[env_id] = {}
        for variant, rs in by_variant.items():
            cells: dict[str, Any] = {}
            for name in rs[0]["settings"]:
                for key in rs[0]["settings"][name]:
                    values = [r["settings"][name][key] for r in rs]
                    bases = [r["settings"]["base"][key] for r in rs]
                    ratios = [v / b for v, b in zip(values, bases, strict=True)] if min(bases) > 1e-9 else None
                    cells.setdefault(name, {})[key] = {  # no ratio for a slot the model predicts exactly (a constant)
                        "mean": float(np.mean(values)),
                        "std": float(np.std(values)),
                        "ratio_mean": float(np.mean(ratios)) if ratios else None,
                        "ratio_std": float(np.std(ratios)) if ratios else None,
                    }
            summary[env_id][variant] = {"seeds": [r["seed"] for r in rs], "settings": cells}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=[*MODELS, *EXTRA_MODELS], help="world models to compare"
    )
    parser.add_argument("--transitions", type=int, default=20_000, help="base-env training transitions per env")
    parser.add_argument("--eval-transitions", type=int, default=4000, help="transitions per setting")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 seed, tiny data, 100 steps")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.transitions, args.eval_transitions = (
            QUICK["seeds"],
            QUICK["transitions"],
            QUICK["eval_transitions"],
        )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = []
        for env_id in args.envs:
            data = Path(tmp) / env_id.replace("/", "_")
            collect(env_id, args.transitions, data, seed=0, num_envs=16)
            settings = settings_data(env_id, args.eval_transitions, Path(tmp) / "eval")
            steps = QUICK["steps"] if args.quick else train_steps(env_id)
            for variant in args.models:
                for seed in args.seeds:
                    tasks.append(
                        {
                            "env_id": env_id,
                            "variant": variant,
                            "seed": seed,
                            "steps": steps,
                            "data": str(data),
                            "settings": settings,
                            "tmp": tmp,
                        }
                    )
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_one, tasks))
    payload = {
        "benchmark": "ood_model_factors",
        "machine": {**machine_info(), "torch": torch.__version__},
        "config": {
            "transitions": args.transitions,
            "eval_transitions": args.eval_transitions,
            "eval_seed": EVAL_SEED,
            "seeds": args.seeds,
            "horizons": list(HORIZONS),
            "models": {name: list({**MODELS, **EXTRA_MODELS}[name]) for name in args.models},
            "jobs": args.jobs,
            "quick": args.quick,
            "defaults": dataclasses.asdict(WMTrainConfig()),
        },
        "factors": {env_id: {name: extra for name, _, extra in factors(env_id)} for env_id in args.envs},
        "summary": summarise(runs),
        "runs": runs,
        "wall_s": time.perf_counter() - start,
    }
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
