"""Sample efficiency: model-based agents vs the model-free baseline on the same env, 3 seeds, and the OOD twin.

Usage::

    python benchmarks/sample_efficiency.py [--envs pong pusher] [--seeds 0 1 2] [--jobs 2] [--quick]
                                           [--no-variants] [--only ROW ...] [--runs-dir DIR] [--json]
                                           [--out docs/sample_efficiency.json]

Issue 4's claim, measured as it is stated: the model-based agent (``causal-mpc`` or ``causal-dyna``, at a fifth of the
baseline's budget; since session 20 also ``causal-simple``, PPO trained in the world model, at that fifth) should
reach the return that the
model-free baseline (PPO on Interventional Pong, SAC on Pusher2D) reaches at its full budget with at least 5x fewer
env steps, and the causal (slot, sparse-attention) model should beat the dense one (``mlp-mpc``) on the env's OOD
twin. Every run is ``cwm-rl train``'s Python API (:func:`cwm_rl.agents.training.train`) at the shipped defaults
(``agents/configs``), evaluated with the fixed protocol (deterministic episodes on fixed-seed eval envs), the
world-model probe off. Afterwards each saved agent is scored on the ``-OOD-v0`` twin with the same protocol
(:func:`cwm_rl.agents.compare.evaluate_run`).

Reported per env:

* **target**: the baseline's final evaluation return at its full budget, mean over seeds; ``random`` (uniform
  actions, the model-based budget) is run beside them, and the claim counts only when the target is above random
  play's final return (otherwise an untrained agent "reaches" it);
* per agent and seed: final and best return, the first evaluation at or above the target ("steps to target"), the
  OOD return, the wall time;
* per agent: the mean-over-seeds curve's first evaluation at or above the target, and the **speed-up**: baseline
  budget / that step count (the claim needs >= 5); "not reached" when the mean curve never gets there;
* ``curves.png`` and ``comparison.md`` of all runs (:func:`cwm_rl.agents.compare.compare_runs`) in
  ``--runs-dir/<env>/``; with ``--out`` the curves are copied beside the JSON as ``sample_efficiency_<env>.png``
  for docs/results.md.

An env's ``variants`` (in :data:`SETUPS`) are further model-based runs with dotted config overrides, reported in
their own rows (named ``AGENT+...``) and never counted for the claim, which is about the shipped defaults;
``--no-variants`` skips them. An env's ``ood_pairs`` name (causal, dense) variants trained alike, whose OOD gap is
reported as the shipped defaults' is.

Runs are independent processes (``--jobs`` at a time, one torch thread each), so wall times are only comparable
between runs of one invocation. ``--quick`` is a smoke test (tiny budgets, one seed), not a measurement. With
``--envs`` naming only some envs and ``--out`` an existing file, the other envs' results in that file are kept;
every env's summary records the commit, date and machine of the invocation (``measured``). A finished run in
``--runs-dir`` is reused, not retrained, if its whole config is the one asked for (so adding a variant costs only
its own runs); ``--only ROW ...`` runs only those rows and keeps the env's other rows from ``--out``'s file (each
run's record there holds its curve, OOD return and commit); each run directory keeps the
commit that trained it (``bench_commit.txt``) and each row lists its runs' commits (``commits``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, ood_id, report, write_json  # noqa: E402

ENV_REWARD_L1 = {"mpc.reward": "env", "mpc.prediction_loss": "l1"}
LONG_FIT = {"mpc.first_updates": 3000, "mpc.updates": 500}  # 4,500 updates in 6k steps (the default: 1,050)
DEEP_SLOT = {"mpc.slot.d_model": 64, "mpc.slot.mlp_layers": 3}  # session 14's offline fix (a three-layer node net)
# Pusher2D's MPC defaults before session 19 (agents/configs/mpc.yaml then), for the keys its entry has set since:
# the variants below were trained on them, so each one names them and stays the run it was.
PUSHER_MPC_BEFORE_S19 = {
    "mpc.reward": "model",
    "mpc.prediction_loss": "mse",
    "mpc.first_updates": 600,
    "mpc.updates": 150,
    "mpc.slot.d_model": 32,
    "mpc.slot.mlp_layers": 1,
    "mpc.dense_warmup": 0,
    "mpc.reset_every": 0,
}
# (env key) -> env id, the baseline and its budget, the model-based agents and their budget, evaluation episodes
SETUPS: dict[str, dict[str, Any]] = {
    "pong": {
        "env_id": "cwm/InterventionalPong-v0",
        "baseline": ("ppo", 100_000),
        "model_based": (("causal-mpc", "mlp-mpc"), 6_000),
        "dyna": 20_000,  # causal-dyna at a fifth of the baseline's budget: reaching the target at all is >= 5x
        # SimPLe (PPO trained in the world model, session 20) at the same fifth; the MLP twin is its OOD pair
        "simple": (("causal-simple", "mlp-simple"), 20_000),
        "episodes": 5,
        "ood_pairs": (("causal-simple", "mlp-simple"),),
    },
    "pusher": {
        "env_id": "cwm/Pusher2D-v0",
        # SAC's budget was 30,000 steps to session 20, where its return was within 2.3 of random play's; one seed run
        # to 150,000 began to learn after about 120,000 (docs/design_notes.md, "Pusher2D, session 12"), so since
        # session 21 the target is SAC's return at 150,000 steps
        "baseline": ("sac", 150_000),
        "model_based": (("causal-mpc", "mlp-mpc"), 6_000),
        "dyna": 6_000,
        "episodes": 5,
        # Sessions 12-18's steps towards the shipped defaults (since session 19 the last of them,
        # `causal-mpc+env-reward+l1+deep-reset+long-fit`), each on the defaults of its time (`variant_base`): the
        # planner scores imagined states with the env's reward function (PETS-style, knowledge SAC learns from
        # samples) and the model is fitted with an absolute error (docs/design_notes.md, "Pusher2D, session 12").
        "variant_base": ("the MPC defaults before session 19", PUSHER_MPC_BEFORE_S19),
        "variants": {
            # the shipped defaults of sessions 11-18: the model's reward head scores the plans
            **{f"{agent}+defaults-before-s19": (agent, {}) for agent in ("causal-mpc", "mlp-mpc")},
            **{f"{agent}+env-reward+l1": (agent, ENV_REWARD_L1) for agent in ("causal-mpc", "mlp-mpc")},
            # Session 14's offline fix for the slot model (a three-layer node network at d_model 64, a dense
            # warm-up) with the offline diagnosis's update budget; the MLP gets the same budget, so a gap between
            # the two is not the number of updates.
            "causal-mpc+env-reward+l1+deep+long-fit": (
                "causal-mpc",
                {
                    **ENV_REWARD_L1,
                    **LONG_FIT,
                    **DEEP_SLOT,
                    "mpc.dense_warmup": 2500,
                },
            ),
            "mlp-mpc+env-reward+l1+long-fit": ("mlp-mpc", {**ENV_REWARD_L1, **LONG_FIT}),
            # The same slot model with every gate kept open (no penalty, gates start open): the slot layout
            # without the learned sparsity, to tell which of the two keeps the deep variant from pushing.
            "causal-mpc+env-reward+l1+deep-open+long-fit": (
                "causal-mpc",
                {
                    **ENV_REWARD_L1,
                    **LONG_FIT,
                    **DEEP_SLOT,
                    "mpc.sparsity_weight": 0.0,
                    "mpc.slot.gate_init": 10.0,
                },
            ),
            # The sparse deep variant with the penalty held off for one more fit: gates open for the first 3,500
            # updates (the fits at 2,000 and 3,000 env steps), so they close on data with the agent's pushes in it
            # rather than on the seed steps' random play (contacts in about 1% of them; session 17).
            "causal-mpc+env-reward+l1+deep-late+long-fit": (
                "causal-mpc",
                {
                    **ENV_REWARD_L1,
                    **LONG_FIT,
                    **DEEP_SLOT,
                    "mpc.dense_warmup": 3500,
                },
            ),
            # The sparse deep variant with its world model re-initialised every 2,000 env steps (at the fits near
            # 4,000 and 6,000; one due past the run's last step is not made) and refitted from scratch on the whole
            # buffer (warm-up included): the offline fit on the sparse agent's own buffer read `box <- agent` and
            # planned well (session 17), so a model that forgets its first, random-play fit should too (the primacy
            # bias; Nikishin et al. 2022). The MLP below gets the same resets (its OOD pair).
            "causal-mpc+env-reward+l1+deep-reset+long-fit": (
                "causal-mpc",
                {
                    **ENV_REWARD_L1,
                    **LONG_FIT,
                    **DEEP_SLOT,
                    "mpc.dense_warmup": 2500,
                    "mpc.reset_every": 2000,
                },
            ),
            "mlp-mpc+env-reward+l1+reset+long-fit": (
                "mlp-mpc",
                {**ENV_REWARD_L1, **LONG_FIT, "mpc.reset_every": 2000},
            ),
        },
        # (causal, dense) variants trained alike: their OOD gap is reported as the defaults' is
        "ood_pairs": (
            ("causal-mpc+env-reward+l1", "mlp-mpc+env-reward+l1"),
            ("causal-mpc+env-reward+l1+deep+long-fit", "mlp-mpc+env-reward+l1+long-fit"),
            ("causal-mpc+env-reward+l1+deep-late+long-fit", "mlp-mpc+env-reward+l1+long-fit"),
            ("causal-mpc+env-reward+l1+deep-reset+long-fit", "mlp-mpc+env-reward+l1+reset+long-fit"),
        ),
    },
}
QUICK = {"baseline": 2_000, "model_based": 600, "dyna": 600, "simple": 600, "seeds": [0], "episodes": 2}
COMMIT_FILE = "bench_commit.txt"  # in a run directory: the commit that trained it, so a reused run keeps its own
MODEL_BASED_EVALS = 6  # evaluations per model-based run: each one plans every step of every episode
BASELINE_EVALS = 10
SPEEDUP_CLAIM = 5.0
CLAIM_AGENTS = ("causal-mpc", "causal-dyna", "causal-simple")


def git_commit() -> str | None:
    """The commit the runs were made from (``None`` outside a git checkout), so a merged file says what measured
    each env."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


class DifferentRun(Exception):
    """A run directory holds a run of another config. (Not SystemExit: in a pool worker that ends the worker, and
    the pool then waits for its result forever.)"""


def flat_keys(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of a nested config's leaves."""
    keys = []
    for k, v in node.items():
        keys += flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}"]
    return keys


def flat_get(node: Any, key: str) -> Any:
    """A nested config's value at a dotted key (None where there is none)."""
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def run_one(task: dict[str, Any]) -> dict[str, Any]:
    """Train one (env, agent, seed), then score it on the OOD twin; runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    from cwm_rl.agents.compare import evaluate_run
    from cwm_rl.agents.training import resolve_config, run_config_dict, train

    run = Path(task["run_dir"])
    label = task.get("label", task["agent"])
    overrides = {
        "env_id": task["env_id"],
        "agent": task["agent"],
        "steps": task["steps"],
        "seed": task["seed"],
        "eval_every": max(1, task["steps"] // task["evals"]),
        "eval_episodes": task["episodes"],
        "wm_probe_transitions": 0,
        **task.get("overrides", {}),  # dotted keys, e.g. {"dyna.coda_batch": 1000}
    }
    if (run / "metrics.json").is_file():  # a finished run of an earlier invocation: reuse it if it is the same
        import yaml

        kept = yaml.safe_load((run / "config.yaml").read_text())

        # the whole resolved config, not only the keys set here: a run of earlier shipped defaults is another run
        wanted = run_config_dict(resolve_config(overrides))  # as train writes config.yaml
        differ = [
            k for k in flat_keys(wanted) if k != "wm_probe_transitions" and flat_get(kept, k) != flat_get(wanted, k)
        ]
        if differ:
            raise DifferentRun(
                f"{run} holds a different run ({', '.join(differ[:4])} differ); give another --runs-dir or remove it"
            )
        metrics = json.loads((run / "metrics.json").read_text())
        commit = (run / COMMIT_FILE).read_text().strip() if (run / COMMIT_FILE).is_file() else None
    else:
        metrics = train(resolve_config(overrides), run, progress=False)
        commit = task.get("commit")
        if commit:
            (run / COMMIT_FILE).write_text(commit + "\n")
    train_s = json.loads((run / "timing.json").read_text())["wall_time_s"]  # the run's own, also when reused
    ood_file = run / "ood_eval.json"  # kept, so a rerun that adds agents does not re-plan every episode
    if ood_file.is_file():
        ood = json.loads(ood_file.read_text())
    else:
        ood = evaluate_run(run, episodes=task["episodes"], env_id=ood_id(task["env_id"]))
        write_json(ood_file, ood)
    return {
        "env_id": task["env_id"],
        "agent": task["agent"],
        "label": label,
        "overrides": task.get("overrides", {}),
        "seed": task["seed"],
        "budget": task["steps"],
        "run_dir": str(run),
        "final_eval_return": metrics["final_eval_return"],
        "best_eval_return": metrics["best_eval_return"],
        "curve": [(p["env_steps"], p["mean_return"]) for p in metrics["curve"]],
        "ood_mean_return": ood["mean_return"],
        "ood_returns": ood["returns"],
        "wall_s": train_s,
        "commit": commit,  # the code that trained it (None: unknown, a run kept from before this was recorded)
    }


def mean_curve(runs: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Mean over seeds of the k-th evaluation, at the latest env step any seed took it (the schedule is the same,
    but vector envs overshoot it by a few steps that differ between seeds)."""
    n = min(len(r["curve"]) for r in runs)
    return [(max(r["curve"][k][0] for r in runs), float(np.mean([r["curve"][k][1] for r in runs]))) for k in range(n)]


def first_at_or_above(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((s for s, v in curve if v >= target), None)


def summarise(env_key: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    setup = SETUPS[env_key]
    baseline, budget = setup["baseline"][0], max(r["budget"] for r in runs if r["agent"] == setup["baseline"][0])
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_agent.setdefault(r.get("label", r["agent"]), []).append(r)
    target = float(np.mean([r["final_eval_return"] for r in by_agent[baseline]]))
    agents = {}
    for agent, rs in by_agent.items():
        curve = mean_curve(rs)
        reached = first_at_or_above(curve, target)
        finals = [r["final_eval_return"] for r in rs]
        oods = [r["ood_mean_return"] for r in rs]
        agents[agent] = {
            "agent": rs[0]["agent"],
            "overrides": rs[0].get("overrides", {}),  # non-empty: a variant, not the shipped defaults
            "seeds": [r["seed"] for r in rs],
            "budget": rs[0]["budget"],
            "final_mean": float(np.mean(finals)),
            "final_std": float(np.std(finals)),
            "best_mean": float(np.mean([r["best_eval_return"] for r in rs])),
            "ood_mean": float(np.mean(oods)),
            "ood_std": float(np.std(oods)),
            "steps_to_target_per_seed": [first_at_or_above(r["curve"], target) for r in rs],
            "mean_curve": curve,
            "mean_curve_steps_to_target": reached,
            "speedup": (budget / reached) if reached else None,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in rs])),
            "commits": sorted({r["commit"] for r in rs if r.get("commit")}),
        }
    # issue 4: "causal-mpc (or causal-dyna)" reaches the target >= 5x sooner: the best of the causal agents counts
    # (causal-simple is the Dyna family's on-policy member: PPO trained on imagined data)
    speedups = {a: agents[a]["speedup"] for a in CLAIM_AGENTS if a in agents and agents[a]["speedup"]}
    claim = max(speedups.values(), default=None)
    random_final = agents["random"]["final_mean"] if "random" in agents else None
    above_random = random_final is None or target > random_final
    return {
        "env_id": setup["env_id"],
        "baseline": baseline,
        "baseline_budget": budget,
        "target": target,
        "agents": agents,
        # (what, dotted overrides): the defaults the variants were trained on, where those have changed since
        "variant_base": list(setup["variant_base"]) if "variant_base" in setup else None,
        "target_above_random": bool(above_random),
        "claim_agent": max(speedups, key=speedups.get) if speedups else None,
        # reaching a target random play also reaches says nothing: the claim needs a baseline that learned
        "claim_speedup_met": bool(claim is not None and claim >= SPEEDUP_CLAIM and above_random),
        "causal_beats_dense_ood": (
            agents["causal-mpc"]["ood_mean"] > agents["mlp-mpc"]["ood_mean"]
            if {"causal-mpc", "mlp-mpc"} <= agents.keys()
            else None
        ),
        **ood_gap(agents),
        "variant_ood_gaps": [
            {"causal": causal, "dense": dense, **ood_gap(agents, causal, dense)}
            for causal, dense in setup.get("ood_pairs", ())
            if {causal, dense} <= agents.keys()
        ],
    }


def ood_gap(agents: dict[str, Any], causal: str = "causal-mpc", dense: str = "mlp-mpc") -> dict[str, float]:
    """OOD return of the causal minus the dense model's agent and its standard error over seeds (Welch)."""
    if not {causal, dense} <= agents.keys():
        return {}
    a, b = agents[causal], agents[dense]
    var = sum(x["ood_std"] ** 2 / max(1, len(x["seeds"]) - 1) for x in (a, b))  # np.std is the population std
    return {"ood_gap": a["ood_mean"] - b["ood_mean"], "ood_gap_se": float(np.sqrt(var))}


def plot_curves(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> None:
    """Every row's mean-over-seeds curve against env steps (log scale: the baseline's budget is 5-17x the model-based
    agents'), the shipped defaults solid with their seeds' range shaded, variants dashed, the target dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cwm_rl.plots import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = matplotlib.colormaps["tab20"].colors
    for i, (label, a) in enumerate(summary["agents"].items()):
        steps, mean = zip(*a["mean_curve"], strict=True)
        shipped = not a["overrides"]
        style = {"color": colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20], "linewidth": 2.0 if shipped else 1.2}
        ax.plot(steps, mean, linestyle="-" if shipped else "--", label=f"{label} ({len(a['seeds'])} seeds)", **style)
        if shipped:
            values = np.array([[c[1] for c in r["curve"][: len(steps)]] for r in runs if r["label"] == label])
            ax.fill_between(steps, values.min(0), values.max(0), color=style["color"], alpha=0.12, linewidth=0)
    ax.axhline(summary["target"], color="grey", linestyle=":", linewidth=1.2, label=f"target {summary['target']:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{summary['env_id']}: solid = shipped defaults (shaded: range over seeds), dashed = variants")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", frameon=False)
    save_figure(fig, path)


def rows_of(setup: dict[str, Any], variants: bool = True) -> list[tuple[str, str, dict[str, Any], int, int, str]]:
    """An env's rows: (label, agent id, dotted overrides, env steps, evaluations, budget role)."""
    mb_steps = setup["model_based"][1]
    baseline = setup["baseline"][0]
    rows = [(baseline, baseline, {}, setup["baseline"][1], BASELINE_EVALS, "baseline")]
    rows += [(agent, agent, {}, mb_steps, MODEL_BASED_EVALS, "model_based") for agent in setup["model_based"][0]]
    rows.append(("causal-dyna", "causal-dyna", {}, setup["dyna"], BASELINE_EVALS, "dyna"))  # SB3 acting: cheap
    if "simple" in setup:  # a policy acts, as the baselines: evaluations are cheap
        rows += [(agent, agent, {}, setup["simple"][1], BASELINE_EVALS, "simple") for agent in setup["simple"][0]]
    rows.append(("random", "random", {}, mb_steps, MODEL_BASED_EVALS, "model_based"))  # the floor
    if variants:
        base = setup.get("variant_base", ("", {}))[1]  # the defaults a variant was trained on, where they changed
        for label, (agent, overrides) in setup.get("variants", {}).items():
            rows.append((label, agent, {**base, **overrides}, mb_steps, MODEL_BASED_EVALS, "model_based"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=sorted(SETUPS), default=sorted(SETUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--runs-dir", default="runs/sample_efficiency", help="where the runs and curves are kept")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny budgets, seed 0, 2 episodes")
    parser.add_argument(
        "--no-variants", dest="variants", action="store_false", help="only the shipped defaults (no SETUPS variants)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="ROW",
        help="run only these rows (agent ids or variant names); the env's other rows are kept from --out's file",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    kept = json.loads(Path(args.out).read_text()) if args.out and Path(args.out).is_file() else {}
    for r in kept.get("runs", []):
        r.setdefault("label", r["agent"])  # runs recorded before variants existed: the agent id is the row
    if args.only:
        known = {label for key in args.envs for label, *_ in rows_of(SETUPS[key], args.variants)}
        unknown = sorted(set(args.only) - known)
        if unknown:
            parser.error(f"--only: no row named {', '.join(unknown)} in {', '.join(args.envs)}; rows: {sorted(known)}")
        if args.quick or not kept:
            parser.error("--only keeps the other rows from --out's file: give --out an existing results file")
    seeds = QUICK["seeds"] if args.quick else args.seeds
    root = Path(args.runs_dir) / ("quick" if args.quick else "full")
    commit = git_commit()  # before this run writes anything (its own outputs would read as a dirty tree)
    tasks = []
    for env_key in args.envs:
        setup = SETUPS[env_key]
        for label, agent, overrides, steps, evals, role in rows_of(setup, args.variants):
            if args.only and label not in args.only:
                continue
            for seed in seeds:
                tasks.append(
                    {
                        "env_key": env_key,
                        "env_id": setup["env_id"],
                        "agent": agent,
                        "label": label,
                        "overrides": overrides,
                        "seed": seed,
                        "steps": QUICK[role] if args.quick else steps,
                        "evals": evals,
                        "episodes": QUICK["episodes"] if args.quick else setup["episodes"],
                        "run_dir": str(root / env_key / f"{label}-{seed}"),
                        "commit": commit,
                    }
                )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, args.jobs)) as pool:
        results = []
        runs = pool.imap_unordered(run_one, tasks)
        while True:
            try:
                r = next(runs)
            except StopIteration:
                break
            except DifferentRun as e:
                print(f"sample_efficiency: {e}", file=sys.stderr)
                return 2
            results.append(r)
            if not args.json:
                print(
                    f"{r['env_id']} {r['label']:<11} seed {r['seed']}: {r['budget']:>7,} steps in {r['wall_s']:.0f} s,"
                    f" final {r['final_eval_return']:.2f} (best {r['best_eval_return']:.2f}), OOD "
                    f"{r['ood_mean_return']:.2f}",
                    flush=True,
                )
    from cwm_rl.agents.compare import compare_runs

    summaries, all_runs = {}, []
    for env_key in args.envs:
        setup = SETUPS[env_key]
        fresh = [r for r in results if r["env_id"] == setup["env_id"]]
        # --only: the env's other rows as --out's file holds them (each run's record keeps its curve and commit)
        carried = [
            r
            for r in kept.get("runs", [])
            if args.only and r["env_id"] == setup["env_id"] and r["label"] not in args.only
        ]
        order = {label: i for i, (label, *_) in enumerate(rows_of(setup, args.variants))}
        stale = sorted({r["label"] for r in carried if r["label"] not in order})
        if stale:
            print(
                f"{setup['env_id']}: dropped kept rows that are not this invocation's (--no-variants, or no longer in "
                f"SETUPS): {', '.join(stale)}",
                file=sys.stderr,
            )
        env_runs = sorted(
            (r for r in fresh + carried if r["label"] in order), key=lambda r: (order[r["label"]], r["seed"])
        )
        all_runs += env_runs
        summaries[env_key] = summary = summarise(env_key, env_runs)
        if fresh:  # curves.png and comparison.md of this invocation's runs, beside them
            compare_runs([r["run_dir"] for r in fresh], root / env_key, threshold=summary["target"])
        if args.out and not args.quick:  # the learning curves of every row, beside the JSON, for docs/results.md
            plot_curves(summary, env_runs, Path(args.out).parent / f"sample_efficiency_{env_key}.png")
        if not args.json:
            print(f"\n{summary['env_id']}: target {summary['target']:.2f} ({summary['baseline']} final, mean)")
            for agent, a in summary["agents"].items():
                speed = f"{a['speedup']:.1f}x" if a["speedup"] else "not reached"
                print(
                    f"  {agent:<11} {a['budget']:>7,} steps: final {a['final_mean']:.2f} ± {a['final_std']:.2f}, "
                    f"OOD {a['ood_mean']:.2f} ± {a['ood_std']:.2f}, mean curve reaches target at "
                    f"{a['mean_curve_steps_to_target']} ({speed})"
                )
    import torch

    machine = {**machine_info(), "torch": torch.__version__, "jobs": args.jobs, "threads_per_job": 1}
    machine["load_before"], machine["load_after"] = load_before, os.getloadavg()[0]
    measured = {"commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": machine}
    for summary in summaries.values():
        summary["measured"] = measured
    payload = {
        "benchmark": "sample_efficiency",
        "quick": args.quick,
        "machine": machine,
        "wall_s": time.perf_counter() - start,
        "claim_speedup": SPEEDUP_CLAIM,
        "summaries": summaries,
        "runs": sorted(all_runs, key=lambda r: (r["env_id"], r["label"], r["seed"])),
    }
    if args.out and not args.quick and kept:  # keep the envs this invocation did not rerun
        redone = {SETUPS[k]["env_id"] for k in args.envs}
        for key, summary in kept.get("summaries", {}).items():
            if key not in summaries:
                payload["summaries"][key] = summary
        payload["runs"] = [r for r in kept.get("runs", []) if r["env_id"] not in redone] + payload["runs"]
        payload["summaries"] = {k: payload["summaries"][k] for k in sorted(payload["summaries"])}
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
