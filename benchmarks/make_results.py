"""Regenerate docs/results.md from the benchmark outputs in docs/*.json. Nothing in results.md is typed by hand.

Usage::

    python benchmarks/env_throughput.py --out docs/env_throughput.json
    python benchmarks/verify_suite.py --out docs/verification.json
    python benchmarks/memory_bound.py --out docs/memory_bound.json      # (and the other benchmarks/*.py --out)
    python benchmarks/intervention_masking.py --seeds 0 1 2 --out docs/intervention_masking.json
    python benchmarks/oracle_planning.py --out docs/oracle_planning.json
    python benchmarks/oracle_planning.py --env pusher --out docs/oracle_planning_pusher.json
    python benchmarks/pusher_model_diagnosis.py --out docs/pusher_model_diagnosis.json  # ~15 min
    python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 --grid pushy,slot-ssm,100 pushy,mlp,100 \
        --out docs/pusher_model_diagnosis_long.json  # ~25 min
    python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 \
        --grid pushy,slot-ssm,100,prediction_loss=l1,KEY=VALUE --out docs/pusher_model_diagnosis_NAME.json  # each
        # row of docs/design_notes.md's "Pusher2D, session 13" (~15 min each); files of one protocol share a table
    python benchmarks/sample_efficiency.py --out docs/sample_efficiency.json   # ~6 h on 2 cores (with variants)
    python benchmarks/sample_efficiency.py --envs pusher --only causal-mpc mlp-mpc \
        --out docs/sample_efficiency.json     # session 19: the new Pusher2D defaults' rows, ~90 min, 3 jobs
    python benchmarks/sample_efficiency.py --envs pong --only ppo causal-simple mlp-simple --seeds 0 1 2 3 4 \
        --out docs/sample_efficiency.json     # session 21: SimPLe rows (and their target) on 5 seeds, ~40 min
    python benchmarks/sample_efficiency.py --envs pusher --only sac \
        --out docs/sample_efficiency.json     # session 21: SAC at 150,000 steps, ~80 min, 3 jobs
    D=runs/sample_efficiency/full/pusher; python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 \
        --agent-runs $D/mlp-mpc+env-reward+l1-0 $D/mlp-mpc+env-reward+l1+long-fit-0 $D/causal-mpc+env-reward+l1-0 \
        $D/causal-mpc+env-reward+l1+deep+long-fit-0 $D/causal-mpc+env-reward+l1+deep+long-fit-2 \
        --out docs/pusher_model_diagnosis_agents.json  # the agents' own models, in the long rows' table (~25 min)
    python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 \
        --agent-runs $D/causal-mpc+env-reward+l1+deep-open+long-fit-0 --out docs/pusher_model_diagnosis_agents_open.json
    python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 \
        --agent-runs $D/causal-mpc+env-reward+l1+deep-late+long-fit-{0,1,2} \
        --out docs/pusher_model_diagnosis_agents_late.json  # (ran as one process per run, the rows joined)
    python benchmarks/pusher_model_diagnosis.py --steps 20000 --updates 5000 \
        --agent-runs $D/causal-mpc+env-reward+l1+deep-reset+long-fit-{0,1,2} \
        --out docs/pusher_model_diagnosis_agents_reset.json  # (one process per run, the rows joined; ~25 min)
    cwm-rl train --env cwm/Pusher2D-v0 --agent causal-mpc --steps 3000 --seed 0 --run-dir deep-open-0-at3000 \
        --set eval_every=1000 --set wm_probe_transitions=0 --set save_data=true --set KEY=VALUE...  # the overrides
        # of sample_efficiency.py's causal-mpc+env-reward+l1+deep-open+long-fit; then (~60 min on a busy machine):
    A=deep-open-0-at3000/data; S=prediction_loss=l1,slot.d_model=64,slot.mlp_layers=3
    python benchmarks/pusher_model_diagnosis.py --updates 4500 \
        --grid $A,slot-ssm,1,$S,slot.gate_init=3.0,dense_warmup=2500 \
        $A,slot-ssm,1,$S,slot.gate_init=10.0,sparsity_weight=0 $A,mlp,1,prediction_loss=l1 \
        --out docs/pusher_model_diagnosis_agentdata.json  # three models on one agent's replay buffer
    cwm-rl train --env cwm/Pusher2D-v0 --agent causal-mpc --steps 6000 --seed 0 --run-dir sparse-save-0 \
        --set eval_every=1000 --set eval_episodes=5 --set wm_probe_transitions=0 --set save_data=true \
        --set KEY=VALUE...  # the overrides of causal-mpc+env-reward+l1+deep+long-fit (the sparse deep agent); then
    A=sparse-save-0/data; python benchmarks/pusher_model_diagnosis.py --updates 4500 --grid (the three rows above, \
        on $A) --out docs/pusher_model_diagnosis_agentdata_sparse.json  # the same three models on its own buffer
    python benchmarks/coda_dyna.py --out docs/coda_dyna.json                   # ~30 min
    python benchmarks/coda_validity.py runs/coda_dyna/full/pong/coda1000-* --json docs/coda_validity.json
    D=runs/sample_efficiency/full/pusher; python benchmarks/ood_factors.py $D/causal-mpc-? $D/mlp-mpc-? \
        --out docs/ood_factors.json                                                # after sample_efficiency.py
    D=runs/sample_efficiency/full/pong; python benchmarks/ood_factors.py $D/causal-simple-? $D/mlp-simple-? \
        $D/ppo-? --episodes 20 --out docs/ood_factors_pong.json                  # session 21
    python benchmarks/ood_model_factors.py --out docs/ood_model_factors.json   # ~30 min
    python benchmarks/ood_model_factors.py --envs cwm/Pusher2D-v0 --models "slot-ssm (sparse, Pusher2D agent's)" \
        "mlp (Pusher2D agent's)" --out X.json  # ~4 min; its runs appended to the file above, summary recomputed
    python benchmarks/make_results.py            # writes docs/results.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
GENERATED = {"random", "pushy"}  # the datasets pusher_model_diagnosis.py collects itself (others: agent buffers)


def _load(name: str) -> dict | None:
    path = DOCS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(m: dict) -> str:
    cpu = ", ".join(filter(None, (m.get("cpu_model"), m["processor"])))  # the model: recorded since session 19
    return f"{m['cpu_count']} CPU cores ({cpu}), Python {m['python']}, numpy {m['numpy']}, Gymnasium {m['gymnasium']}"


def _mean_std(values: list[float], digits: int = 3) -> str:
    import statistics

    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _comparison_section(comparison: dict) -> list[str]:
    cfg = comparison["config"]
    lines = [
        "## World models: slot SSM vs slot Transformer, with and without sparsity",
        "",
        f"`benchmarks/wm_comparison.py`: {cfg['transitions']:,} random-policy transitions per env, the "
        f"gradient steps listed per env, d_model {cfg['d_model']}, mean ± std over the seeds listed per env, on "
        f"{_machine(comparison['machine'])}. *Sparse* = sparsity weight "
        f"{cfg['defaults']['sparsity_weight']} on the cross-slot attention ({cfg['defaults']['slot']['attention']} "
        f"gates, {cfg['defaults']['slot']['n_layers']} layer(s), initial gate logit "
        f"{cfg['defaults']['slot'].get('gate_init', 3.0)}), *dense* = 0. "
        + (
            f"{cfg['jobs']} runs at a time, {cfg['threads']} torch thread(s) each; *wall s* is one run's training "
            "and evaluation. "
            if "jobs" in cfg
            else ""
        )
        + "Intervened slots "
        + (
            "left out of the prediction loss (`mask_interventions`). "
            if cfg["defaults"].get("mask_interventions", False)
            else "*included* in the prediction loss (measured before `mask_interventions` existed; see the "
            "masking section below). "
        )
        + "Prediction MSE is one-step, "
        "teacher-forced, in normalised delta units; open-loop MSE (10 steps) is in "
        'normalised observation units. Graph numbers are per-transition local graphs against `info["local_graph"]`, '
        "headline convention (self-edges excluded, action column included). OOD = the env's `-OOD-v0` twin. These "
        "are state-based numbers; SPARTAN's SHD 1.51 vs 6.37 on pixel-based Interventional Pong is a different "
        "measurement.",
        "",
    ]
    cols = [
        ("in_distribution", "prediction_mse", "pred. MSE"),
        ("in_distribution", "open_loop_mse_10", "open-loop 10"),
        ("in_distribution", "shd", "SHD"),
        ("in_distribution", "f1", "F1"),
        ("in_distribution", "auroc", "AUROC"),
        ("ood", "open_loop_mse_10", "OOD open-loop 10"),
        ("ood", "shd", "OOD SHD"),
        ("ood", "f1", "OOD F1"),
        (None, "wall_time_s", "wall s"),
    ]
    envs = list(dict.fromkeys(r["env_id"] for r in comparison["runs"]))
    for env_id in envs:
        seeds = sorted({r["seed"] for r in comparison["runs"] if r["env_id"] == env_id})
        steps = sorted({r.get("steps", cfg["steps"]) for r in comparison["runs"] if r["env_id"] == env_id})
        lines += [
            f"**`{env_id}`** (seeds {seeds}, {' / '.join(f'{n:,}' for n in steps)} gradient steps)",
            "",
            "| model | " + " | ".join(c[2] for c in cols) + " |",
            "|---|" + "---:|" * len(cols),
        ]
        variants = list(dict.fromkeys(r["variant"] for r in comparison["runs"] if r["env_id"] == env_id))
        for variant in variants:
            rows = [r for r in comparison["runs"] if r["env_id"] == env_id and r["variant"] == variant]
            cells = [
                _mean_std([(r.get(part, {}) if part else r).get(key, float("nan")) for r in rows], 3 if part else 0)
                for part, key, _ in cols
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        sparse = sorted(
            (r for r in comparison["runs"] if r["env_id"] == env_id and r["variant"] == "slot-ssm (sparse)"),
            key=lambda r: r["seed"],
        )
        if sparse:
            per_seed = ", ".join(f"seed {r['seed']} {r['in_distribution'].get('f1', float('nan')):.3f}" for r in sparse)
            lines += ["", f"Slot SSM (sparse), graph F1 per seed: {per_seed}."]
        lines.append("")
    return lines


def _planning_section(planning: dict) -> list[str]:
    m = planning["machine"]
    lines = [
        "## Planning throughput",
        "",
        f"`benchmarks/planning_throughput.py`: one MPC decision for {planning['results'][0]['n_envs']} envs with each "
        f"env's default planner config (`agents/configs/mpc.yaml`), median of alternating repetitions, on "
        f"{_machine(m)}, torch {m['torch']}, {m['threads']} thread(s); load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after.",
        "",
        "| env | world model | planner | population x horizon x iterations | ms / decision | ms / env step "
        "| imagined transitions / s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in planning["results"]:
        lines.append(
            f"| `{r['env_id']}` | {r['model']} | {r['planner']} | {r['population']} x {r['horizon']} x "
            f"{r['iterations']} | {r['ms_per_decision']:,.0f} | {r['ms_per_env_step']:,.1f} "
            f"| {r['imagined_transitions_per_s']:,.0f} |"
        )
    return [*lines, ""]


def _wm_throughput_section(bench: dict) -> list[str]:
    m, params = bench["machine"], bench["parameters"]
    lines = [
        "## World-model training throughput vs sequence length",
        "",
        f"`benchmarks/wm_throughput.py`: one forward + backward pass on {bench['results'][0]['batch']} sequences "
        f"of Interventional Pong, slot SSM ({params['slot-ssm']:,} parameters) vs slot Transformer "
        f"({params['slot-transformer']:,}), median of alternating repetitions, on {_machine(m)}, torch "
        f"{m['torch']}, {m['threads']} thread(s); load average {m['load_before']:.1f} before, {m['load_after']:.1f} "
        "after. Peak memory: growth of the resident set over three steps, each in a fresh process.",
        "",
        "*Mixers alone*: the same ratio for the temporal mixers only (Mamba-2 block vs causal self-attention layer "
        "with its feed-forward network, forward + backward on the input they see in the model); *ceiling*: the "
        "whole-model ratio if the SSM's mixer cost nothing (Transformer step time / the SSM step's time outside its "
        "mixer), the most any temporal mixer could reach with these shared parts.",
        "",
        "| sequence length | slot SSM (transitions/s) | slot Transformer (transitions/s) | SSM / Transformer "
        "| mixers alone | ceiling | peak memory SSM / Transformer (MB) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in bench["results"]:
        ssm, tf = r.get("slot-ssm_peak_mb"), r.get("slot-transformer_peak_mb")
        memory = f"{ssm:,.0f} / {tf:,.0f}" if ssm is not None and tf is not None else "not measured"
        mixers = f"{r['mixer_ssm_over_transformer']:.2f}" if "mixer_ssm_over_transformer" in r else "n/a"
        ceiling = f"{r['ceiling']:.2f}" if r.get("ceiling") is not None else "n/a"
        lines.append(
            f"| {r['length']:,} | {r['slot-ssm_transitions_per_s']:,.0f} "
            f"| {r['slot-transformer_transitions_per_s']:,.0f} | {r['ssm_over_transformer']:.2f} | {mixers} "
            f"| {ceiling} | {memory} |"
        )
    by_len = {r["length"]: r["ssm_over_transformer"] for r in bench["results"]}
    if 64 in by_len and 1024 in by_len:
        lines += [
            "",
            f"Targets (issue 5): SSM at least equal at length 64: **{'met' if by_len[64] >= 1 else 'not met'}** "
            f"({by_len[64]:.2f}); at least 3x faster at 1,024: **{'met' if by_len[1024] >= 3 else 'not met'}** "
            f'({by_len[1024]:.2f}). See docs/design_notes.md, "Performance", for the profile.',
        ]
    return [*lines, ""]


def _imagination_section(bench: dict) -> list[str]:
    m, h = bench["machine"], bench["horizon"]
    lines = [
        "## Imagination cost per step",
        "",
        f"`benchmarks/imagination_cost.py`: one batched imagined step ({bench['results'][0]['batch']} trajectories, "
        f"Interventional Pong) early (step 8) and late (step {h}) in a rollout through the model's recurrent `step`; "
        f"medians over 8 steps and alternating repetitions, on {_machine(m)}, torch {m['torch']}, {m['threads']} "
        "thread(s). The SSM carries a fixed-size state; the Transformer a key/value cache that grows each step.",
        "",
        f"| world model | ms at step 8 | ms at step {h} | step {h} / step 8 |",
        "|---|---:|---:|---:|",
    ]
    for r in bench["results"]:
        lines.append(f"| {r['model']} | {r['ms_step_8']:.2f} | {r[f'ms_step_{h}']:.2f} | {r['late_over_early']:.2f} |")
    ssm = next((r for r in bench["results"] if r["model"] == "slot-ssm"), None)
    if ssm:
        lines += [
            "",
            f"Target (issue 5): the SSM's ratio at most 1.2: **{'met' if ssm['late_over_early'] <= 1.2 else 'not met'}"
            f"** ({ssm['late_over_early']:.2f}).",
        ]
    return [*lines, ""]


def _end_to_end_section(bench: dict) -> list[str]:
    m = bench["machine"]
    threshold = bench["results"][0]["threshold"]
    lines = [
        "## End to end: steps and wall time to a return threshold",
        "",
        f"`benchmarks/end_to_end.py`: `causal-mpc` and `ppo` trained on `{bench['env_id']}` at their shipped "
        "defaults with `cwm-rl train`'s API, evaluated with the fixed protocol (5 deterministic episodes) every "
        f"tenth of the budget; the first evaluation at or above {threshold} counts. One run per agent and seed, one "
        f"at a time, on {_machine(m)}, torch {m['torch']}; load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after.",
        "",
        "| agent | seed | budget (env steps) | steps to threshold | wall time to threshold (s) | final return "
        "| best return | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in bench["results"]:
        steps, wall = r["steps_to_threshold"], r["wall_s_to_threshold"]
        to_threshold = f"{steps:,} | {wall:.0f}" if steps is not None else "not reached | -"
        lines.append(
            f"| {r['agent']} | {r['seed']} | {r['budget']:,} | {to_threshold} | {r['final_eval_return']:.2f} "
            f"| {r['best_eval_return']:.2f} | {r['wall_time_s']:.0f} |"
        )
    return [*lines, ""]


def _gap(summary: dict) -> str:
    """The OOD gap (causal - dense) with its standard error, and whether it stands out of the noise."""
    if "ood_gap" not in summary:
        return ""
    gap, se = summary["ood_gap"], summary["ood_gap_se"]
    verdict = "within the noise" if abs(gap) < 2 * se else "more than two standard errors"
    return f" (gap {gap:+.2f} ± {se:.2f} standard error over seeds: {verdict})"


def _reused_rows(summary: dict) -> list[str]:
    """Which commit trained which rows, where a later invocation reused runs trained at another commit than the
    one it records."""
    here = summary["measured"]["commit"]
    by_commit: dict[str, list[str]] = {}
    for name, a in summary["agents"].items():
        for commit in a.get("commits", []):
            by_commit.setdefault(commit, []).append(name)
    unknown = [name for name, a in summary["agents"].items() if not a.get("commits")]
    if not set(by_commit) - {here} and not unknown:
        return []
    parts = [f"at `{c}`: " + ", ".join(f"`{n}`" for n in names) for c, names in by_commit.items() if c != here]
    if unknown:  # kept from invocations before commits were recorded
        parts.append("at a commit the record does not hold: " + ", ".join(f"`{n}`" for n in unknown))
    if here in by_commit:
        parts.append(f"at `{here}` (this invocation): " + ", ".join(f"`{n}`" for n in by_commit[here]))
    return [f"The rows' runs were trained {'; '.join(parts)}.", ""]


def _ood_factors_section(benches: list[dict]) -> list[str]:
    m = benches[0]["machine"]
    lines = [
        "## OOD twins, one change at a time",
        "",
        "`benchmarks/ood_factors.py`: the sample-efficiency runs' saved agents, scored with the fixed protocol "
        "(deterministic episodes, the training script's evaluation seeds; episodes per setting under each env) on the "
        "base env, on the base env with each argument the `-OOD-v0` twin changes set alone, and on the twin; mean ± "
        "std over seeds, in brackets the change against the base env (mean ± std over seeds of each seed's change). "
        "A causal model should lose nothing where the change is to a part that touches nothing the task needs, and "
        f"may lose like a dense one where a mechanism it uses changes. On {_machine(m)}, torch {m['torch']}.",
        "",
    ]
    for bench in benches:
        for env_id, settings in bench["factors"].items():
            rows = [r for r in bench["rows"] if r["env_id"] == env_id]
            lines += [
                f"**`{env_id}`** ({bench['episodes']} episodes per setting)",
                "",
                "| agent | seeds | " + " | ".join(f"`{s}`" if "=" in s else s for s in settings) + " |",
                "|---|---:|" + "---:|" * len(settings),
            ]
            for r in rows:
                cells = [f"{r[s]['mean']:.2f} ± {r[s]['std']:.2f}" for s in settings[:1]] + [
                    f"{r[s]['mean']:.2f} ± {r[s]['std']:.2f} ({r[s]['change_mean']:+.2f} ± {r[s]['change_std']:.2f})"
                    for s in settings[1:]
                ]
                lines.append(f"| {r['group']} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _ood_model_section(bench: dict) -> list[str]:
    m, cfg = bench["machine"], bench["config"]
    horizon = max(cfg["horizons"])
    key = f"open_loop_mse_{horizon}"
    lines = [
        "## OOD twins, one change at a time: the world models themselves",
        "",
        "`benchmarks/ood_model_factors.py`: the sparse slot SSM (`cwm-rl wm-train`'s defaults), the same model "
        "without its sparsity penalty (dense) and the MLP, "
        f"trained on {cfg['transitions']:,} random-policy transitions of the base env (seeds "
        f"{', '.join(map(str, cfg['seeds']))}), then judged on {cfg['eval_transitions']:,} fresh random-policy "
        "transitions of the base env, of the base env with each argument the `-OOD-v0` twin changes set alone, and of "
        f"the twin (the same seed for each). Cells: {horizon}-step open-loop prediction error per slot (mean squared "
        "error in the base data's normalised units), mean ± std over seeds, and in brackets the mean over seeds of "
        "each seed's ratio to its own base-env error. A change to a part that no other part reads should leave the "
        "other slots' errors where they were in a model that has learned so; a dense model reads every input for "
        f"every output. On {_machine(m)}, torch {m['torch']}."
        + (
            " Rows named *(Pusher2D agent's)* use the world-model settings of Pusher2D's shipped MPC agents (width "
            "64, three-layer node networks, absolute error; `agents/configs/mpc.yaml`)."
            if any("agent's" in name for name in cfg.get("models", {}))
            else ""
        ),
        "",
    ]
    for env_id, settings in bench["factors"].items():
        names = list(settings)
        by_variant = bench["summary"].get(env_id, {})
        lines += [
            f"**`{env_id}`**",
            "",
            "| model | slot | " + " | ".join(f"`{s}`" if "=" in s else s for s in names) + " |",
            "|---|---|" + "---:|" * len(names),
        ]
        for variant, row in by_variant.items():
            cells = row["settings"]
            slots = [k.split("/", 1)[1] for k in cells["base"] if k.startswith(key + "/")]
            for slot in [*slots, None]:
                k = key if slot is None else f"{key}/{slot}"
                values = [
                    f"{cells[s][k]['mean']:.3f} ± {cells[s][k]['std']:.3f}"
                    + (
                        ""
                        if s == "base" or cells[s][k]["ratio_mean"] is None
                        else f" (x{cells[s][k]['ratio_mean']:.2f})"
                    )
                    for s in names
                ]
                lines.append(f"| {variant} | {slot or '**all**'} | " + " | ".join(values) + " |")
        lines.append("")
    return lines


def _variant_settings(overrides: dict, base: dict) -> str:
    """A variant's settings beyond the defaults it was trained on (``base``), as ``with `k=v`, ...``."""
    own = {k: v for k, v in overrides.items() if base.get(k, object()) != v}
    return (" with " + ", ".join(f"`{k}={v}`" for k, v in own.items())) if own else " as they were"


def _seed_counts(bench: dict) -> str:
    """`` (rows of 3 or 5 seeds: ...)`` where rows were run on different numbers of seeds, else nothing."""
    counts = sorted({len(a["seeds"]) for summary in bench["summaries"].values() for a in summary["agents"].values()})
    if len(counts) < 2:
        return ""
    return (
        f" (rows of {' or '.join(map(str, counts))} seeds: one entry per seed under *steps to target*; the target is "
        "the mean over the baseline's seeds)"
    )


def _sample_efficiency_section(bench: dict) -> list[str]:
    m = bench["machine"]
    lines = [
        "## Sample efficiency: model-based agents vs the model-free baseline, and the OOD twin",
        "",
        "`benchmarks/sample_efficiency.py`: every agent trained with `cwm-rl train`'s API at its shipped defaults "
        "(`agents/configs`), seeds "
        + ", ".join(str(s) for s in sorted({r["seed"] for r in bench["runs"]}))
        + _seed_counts(bench)
        + ", evaluated with the fixed protocol (deterministic episodes on fixed-seed eval envs), then scored on the "
        "env's `-OOD-v0` twin. *Target*: the baseline's final return at its full budget (mean over seeds). "
        "*Speed-up*: baseline budget / the env steps at which the agent's mean-over-seeds curve first reaches the "
        f"target; issue 4 asks for at least {bench['claim_speedup']:.0f}x. Runs {m['jobs']} at a time, one torch "
        f"thread each, on {_machine(m)}, torch {m['torch']}; the runs' wall times add up to "
        f"{sum(r['wall_s'] for r in bench['runs']) / 60:.0f} min (they shared the machine with other jobs, so "
        "compare them only roughly).",
        "",
    ]
    for key, summary in bench["summaries"].items():
        lines += [
            f"**`{summary['env_id']}`**: target {summary['target']:.2f} ({summary['baseline']} at "
            f"{summary['baseline_budget']:,} steps; above random play: "
            f"{'yes' if summary.get('target_above_random', True) else 'no'}). Speed-up claim: "
            f"**{'met' if summary['claim_speedup_met'] else 'not met'}**; causal model beats the dense one on the OOD "
            f"twin: **{'yes' if summary['causal_beats_dense_ood'] else 'no'}**{_gap(summary)}.",
            "",
        ]
        if "measured" in summary:
            lines += [f"Measured {summary['measured']['date']} at commit `{summary['measured']['commit']}`.", ""]
            lines += _reused_rows(summary)
        variants = {name: a for name, a in summary["agents"].items() if a.get("overrides")}
        if variants:
            what, base = summary.get("variant_base") or ("", {})
            lines += [
                "Rows named `AGENT+...` are variants, not the shipped defaults, and do not count for the claim"
                + (
                    f"; they were trained on {what} (" + ", ".join(f"`{k}={v}`" for k, v in base.items()) + "), with"
                    if base
                    else ""
                )
                + ": "
                + "; ".join(
                    f"`{name}` is `{a['agent']}`{_variant_settings(a['overrides'], base)}"
                    for name, a in variants.items()
                )
                + ".",
                "",
            ]
        for pair in summary.get("variant_ood_gaps", []):
            lines += [
                f"OOD twin, `{pair['causal']}` against `{pair['dense']}` (trained alike): causal model "
                f"{'better' if pair['ood_gap'] > 0 else 'not better'}{_gap(pair)}.",
                "",
            ]
        lines += [
            "| agent | budget (env steps) | final return | best return | steps to target (per seed) "
            "| mean curve reaches target | speed-up | OOD return | wall time per run (s) |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for agent, a in summary["agents"].items():
            per_seed = ", ".join("never" if s is None else f"{s:,}" for s in a["steps_to_target_per_seed"])
            reached = a["mean_curve_steps_to_target"]
            reached_text = "never" if reached is None else f"{reached:,}"
            speedup = "-" if a["speedup"] is None else f"{a['speedup']:.1f}x"
            lines.append(
                f"| {agent} | {a['budget']:,} | {a['final_mean']:.2f} ± {a['final_std']:.2f} | {a['best_mean']:.2f} "
                f"| {per_seed} | {reached_text} | {speedup} | {a['ood_mean']:.2f} ± {a['ood_std']:.2f} "
                f"| {a['wall_s_mean']:.0f} |"
            )
        if (DOCS / f"sample_efficiency_{key}.png").is_file():
            lines += ["", f"![learning curves, {summary['env_id']}](sample_efficiency_{key}.png)"]
        lines.append("")
    if not all(summary["claim_speedup_met"] for summary in bench["summaries"].values()):
        lines += [
            'Where the claim is not met, the diagnosis is measured in "The planner\'s ceiling" (what MPC reaches '
            'with a perfect model) and "Pusher2D: what the learned models get wrong" on this page, and discussed in '
            "docs/design_notes.md (Agents).",
            "",
        ]
    return lines


def _coda_section(bench: dict, validity: dict | None) -> list[str]:
    m = bench["machine"]
    lines = [
        "## CoDA in `causal-dyna`: counterfactual transitions from locally independent slots",
        "",
        f"`benchmarks/coda_dyna.py`: `causal-dyna` on `{bench['env_id']}`, {bench['steps']:,} env steps, "
        f"`dyna.coda_batch` 0 and {bench['coda_batch']:,} (pairs mixed after every world-model refit), same seeds; 10 "
        "deterministic evaluation episodes every tenth of the budget; *last 3*: mean of the last three evaluations. "
        "*Split* / *accepted*: share of pairs the learned graphs could split / that passed the check on the mixed "
        f"state, at the first and the last refit. Runs {m['jobs']} at a time on {_machine(m)}, torch {m['torch']}.",
        "",
        "| coda_batch | seed | final return | best return | last 3 | OOD return | split | accepted |",
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in bench["runs"]:
        shares = r["coda_shares"]
        split = f"{shares['splittable'][0]:.2f} -> {shares['splittable'][-1]:.2f}" if shares.get("splittable") else "-"
        accepted = f"{shares['accepted'][0]:.2f} -> {shares['accepted'][-1]:.2f}" if shares.get("accepted") else "-"
        lines.append(
            f"| {r['coda_batch']:,} | {r['seed']} | {r['final_eval_return']:.2f} | {r['best_eval_return']:.2f} "
            f"| {r['last3_mean']:.2f} | {r['ood_mean_return']:.2f} | {split} | {accepted} |"
        )
    for batch, summary in bench["summary"].items():
        cells = ", ".join(f"{k.replace('_', ' ')} {mean:.2f} ± {std:.2f}" for k, (mean, std) in summary.items())
        lines += ["", f"`coda_batch` {int(batch):,}, mean ± std over seeds: {cells}."]
    if validity:
        lines += [
            "",
            "Are the mixes real transitions? `benchmarks/coda_validity.py` mixes 4,000 random-policy Pong "
            "transitions without interventions with each run's model and steps every mix by the env's true dynamics "
            "(no intervention): *invalid* = the true local graph joins the swapped part to the rest; *ball mismatch* "
            "= the mixed next ball differs from the true one (points excluded); *true points* = share of mixes in "
            "which a point is scored.",
            "",
            "| run | check on mixed state | pairs | split | kept | invalid | ball mismatch | true points "
            "| reward error |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in validity["rows"]:
            lines.append(
                f"| `{Path(r['run']).name}` | {'yes' if r['check_mixed'] else 'no'} | {r['pairs']:,} "
                f"| {r['splittable']:,} | {r['accepted']:,} | {r['invalid_share']:.3f} "
                f"| {r['ball_mismatch_share']:.3f} | {r['true_point_share']:.3f} | {r['reward_abs_error']:.3f} |"
            )
    return [*lines, ""]


def _masking_section(bench: dict) -> list[str]:
    m = bench["machine"]
    lines = [
        "## World-model loss: leaving intervened slots out",
        "",
        f"`benchmarks/intervention_masking.py`: {bench['transitions']:,} random-policy transitions of "
        f"`{bench['env_id']}` per seed, the default slot SSM trained {bench['train_steps']:,} steps twice on the same "
        "data and seed, with `mask_interventions` off and on. Graph F1/SHD on held-out episodes (headline "
        "convention). Imagination: 20 steps of one constant action from 256 states of an intervention-free env, "
        "imagined vs real; mean absolute error of the ball slot (x, y, vx, vy; court units) and the right paddle, and "
        f"the correlation of imagined and real 20-step returns. On {_machine(m)}, torch {m['torch']}.",
        "",
        "| seed | masked | F1 | SHD | ball error @ 1 / 5 / 10 / 20 steps | right paddle @ 1 / 10 | return corr. |",
        "|---:|---|---:|---:|---|---|---:|",
    ]
    for r in bench["results"]:
        err = r["abs_error"]
        ball = " / ".join(f"{err[h]['ball']:.2f}" for h in ("1", "5", "10", "20"))
        paddle = " / ".join(f"{err[h]['right_paddle']:.2f}" for h in ("1", "10"))
        lines.append(
            f"| {r['seed']} | {'yes' if r['mask_interventions'] else 'no'} | {r['f1']:.3f} | {r['shd']:.3f} "
            f"| {ball} | {paddle} | {r['return_correlation']:.2f} |"
        )
    return [*lines, ""]


def _oracle_section(benches: list[dict]) -> list[str]:
    lines = [
        "## The planner's ceiling: MPC with the true simulator",
        "",
        "`benchmarks/oracle_planning.py`: the env's shipped MPC planner (`agents/configs/mpc.yaml`) plans "
        f"{benches[0]['n_envs']} real envs and scores candidates with the env's own batched dynamics from the real "
        "state (no learning). On Pong candidates get independent noise, or common noise for all candidates of an env "
        "(1 or 4 draws averaged), or the mechanism only (no interventions, paddle noise at 0: what a perfect "
        "deterministic model trained with `mask_interventions` predicts), also with a larger planner. On Pusher2D the "
        "only noise moves the distractor, which touches nothing, so common noise is the perfect model. Hand-written "
        "references: a ball tracker on Pong; on Pusher2D a push rule (get behind the box, then push it towards the "
        "goal). Complete episodes, mean ± std.",
        "",
    ]
    for bench in benches:
        m, pl = bench["machine"], bench["planner"]
        lines += [
            f"**`{bench['env_id']}`**: {pl['name']}, horizon {pl['horizon']}, population {pl['population']}, "
            f"{pl['iterations']} iterations; {bench['steps']:,} vector steps per policy, on {_machine(m)}, "
            f"torch {m['torch']}.",
            "",
            "| policy | episodes | return | wall time (s) |",
            "|---|---:|---:|---:|",
        ]
        for r in bench["results"]:
            ret = f"{r['mean_return']:.2f} ± {r['std_return']:.2f}" if r["episodes"] else "n/a"
            lines.append(f"| {r['policy']} | {r['episodes']} | {ret} | {r['wall_s']:.0f} |")
        lines.append("")
    return lines


def _num(value: float | None, digits: int) -> str:
    """A number to ``digits`` decimals, or ``-`` where a row has none."""
    return "-" if value is None else f"{value:.{digits}f}"


def _with_overrides(row: dict) -> str:
    """The model's name, with the row's extra ``wm-train`` keys (``--grid ...,KEY=VALUE``) if any."""
    extra = row.get("overrides") or {}
    return row["model"] + (f" ({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def _same_protocol(benches: list[dict]) -> list[dict]:
    """Diagnosis runs with one protocol (data, training steps, episodes, seed: the same datasets and random-play
    reference) as one table: each ``--grid`` invocation's rows, in file order, after the first one's."""
    merged: dict[tuple, dict] = {}
    for bench in benches:
        key = (bench["env_id"], bench["steps"], bench["updates"], bench["episodes"], bench["seed"])
        if key in merged:
            first = merged[key]
            first["results"] = first["results"] + bench["results"]
            first["contact_rate"] = {**first["contact_rate"], **bench["contact_rate"]}
        else:
            merged[key] = dict(bench)
    return list(merged.values())


def _pusher_diagnosis_section(benches: list[dict]) -> list[str]:
    lines = ["## Pusher2D: what the learned models get wrong", ""]
    for bench in _same_protocol(benches):
        m = bench["machine"]
        rate = bench["contact_rate"]
        data = []
        if "random" in rate:
            data.append(f"uniformly random actions (the agent touches the box in {rate['random']:.1%} of steps)")
        if "pushy" in rate:
            data.append(
                "a *pushy* policy (a force towards the box 60% of the time, plus noise: contacts in "
                f"{rate['pushy']:.1%})"
            )
        data = [f"{bench['steps']:,} transitions from {' or from '.join(data)}"] if data else []
        for name in sorted(set(rate) - GENERATED):  # an agent run's replay buffer (`data of RUN`)
            n = bench.get("transitions", {}).get(name)  # files written before the count was recorded lack it
            data.append(
                f"the {f'{n:,} ' if n else ''}transitions of `{name}` (an agent run's replay buffer as `save_data` "
                f"writes it; contacts in {rate[name]:.1%})"
            )
        contact = any("box_step_error_still" in r for r in bench["results"])
        f1 = any("graph_f1" in r for r in bench["results"])
        lines += [
            "`benchmarks/pusher_model_diagnosis.py "
            + (f"--steps {bench['steps']} " if GENERATED & set(rate) else "")  # generated data only
            + f"--updates {bench['updates']}`: "
            f"`{bench['env_id']}`, {', or '.join(data) or 'no dataset'}; world models trained "
            f"with `wm-train`'s code for {bench['updates']:,} steps. *Push probe*: 256 real states, 10 steps of a "
            "force towards the box in the env and in the model: the box's mean displacement (real vs imagined) and "
            "the mean reward error after 1 and 10 steps. "
            + (
                "*Contact probe*: on held-out pushy transitions, the one-step error of the box's position where the "
                "real box stays still and where it moves, and how often the learned `box <- agent` / "
                "`box <- action` edges are on when the true edge is on (a contact) / off"
                + (
                    ", and the learned local graphs' F1 (precision / recall) against the env's, self-edges left out. "
                    if f1
                    else ". "
                )
                if contact
                else ""
            )
            + "*Planning*: the shipped planner (CEM, horizon 10, population 128) plays "
            f"{bench['episodes']} fixed-seed evaluation episodes with the model, scoring by its reward head or by the "
            f"env's reward function on the imagined states; random actions on the same episodes score "
            f"{bench['random_return']:.1f} ± {bench['random_return_se']:.1f}, MPC with the true simulator about -2 "
            f"(the previous section). Returns are mean ± standard error. On {_machine(m)}, torch {m['torch']}."
            + (
                " Rows whose data is `agent, N steps` judge the world model a finished agent run left "
                "(`--agent-runs`, the sample-efficiency benchmark's runs named in the model column): what the agent "
                "learned online from its own transitions."
                if any(r.get("model_updates") is not None for r in bench["results"])
                else ""
            ),
            "",
            "| data | model | reward weight | one-step MSE | box moved: real / imagined | reward error @1 / @10 "
            + (
                "| box error still / moving | learned box <- agent: contact / none | box <- action: contact / none "
                if contact
                else ""
            )
            + ("| graph F1 (P / R) " if f1 else "")
            + "| return, learned reward | return, true reward |",
            "|---|---|---:|---:|---|---|" + ("---|---|---|" if contact else "") + ("---|" if f1 else "") + "---:|---:|",
        ]
        for r in bench["results"]:
            probe = ""
            if contact:
                probe = f"| {r['box_step_error_still']:.4f} / {r['box_step_error_moving']:.4f} "
                for name in ("agent", "action"):
                    if f"box_{name}_edge_when_true" in r:
                        probe += f"| {r[f'box_{name}_edge_when_true']:.2f} / {r[f'box_{name}_edge_when_false']:.2f} "
                    else:
                        probe += "| - "
            if f1:
                probe += (
                    f"| {r['graph_f1']:.2f} ({r['graph_precision']:.2f} / {r['graph_recall']:.2f}) "
                    if "graph_f1" in r
                    else "| - "
                )
            lines.append(
                f"| {r['data']} | {_with_overrides(r)} | {r['reward_weight']:g} | {_num(r['prediction_mse'], 3)} "
                f"| {r['real_box_moved']:.3f} / {r['imagined_box_moved']:.3f} "
                f"| {r['reward_error_1']:.3f} / {r['reward_error_10']:.3f} "
                + probe
                + f"| {r['return_learned_reward']:.1f} ± {r['return_learned_reward_se']:.1f} "
                f"| {r['return_true_reward']:.1f} ± {r['return_true_reward_se']:.1f} |"
            )
        lines.append("")
    return lines


def _memory_section(memory: dict) -> list[str]:
    m = memory["machine"]
    lines = [
        "## Memory over a long run",
        "",
        f"`benchmarks/memory_bound.py`{' --quick' if memory.get('quick') else ''}: each agent trains on Pong with "
        "a small buffer cap, reached before half the run; the process's resident memory (RSS) is sampled every 5% "
        f"of the run, on {_machine(m)}, torch {m['torch']}. By the second half the buffers are full and the model "
        "and planner warm, so growth there is what an unbounded buffer, a leak or an ever-growing log would show.",
        "",
        "| agent | env steps | buffer cap (transitions) | cap reached at | RSS at 0 / 25 / 50 / 75 / 100% (MB) "
        "| growth over the second half (MB) | per 10k steps (MB) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in memory["results"]:
        lines.append(
            f"| {r['name']} | {r['env_steps']:,} | {r['cap_transitions']:,} | {r['cap_reached_at']:,} "
            f"| {' / '.join(f'{v:.0f}' for v in r['rss_mb_at'].values())} "
            f"| {r['growth_second_half_mb']:+.1f} | {r['growth_per_10k_steps_mb']:+.2f} |"
        )
    return [*lines, ""]


def main() -> int:
    lines = ["# Results", "", "Generated by `benchmarks/make_results.py` from the JSON files beside this page.", ""]
    throughput = _load("env_throughput.json")
    if throughput:
        lines += [
            "## Environment throughput",
            "",
            f"Measured on {_machine(throughput['machine'])}. Median of alternating repetitions "
            "(`benchmarks/env_throughput.py`). Single env: random actions, resets included; *make* adds Gymnasium's "
            'wrappers. Batched: the native vector env (`vectorization_mode="vector_entry_point"`).',
            "",
            "| env | single env, raw (steps/s) | single env, `gym.make` (steps/s) | batched (env-steps/s) "
            "| batched / single |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in throughput["results"]:
            lines.append(
                f"| `{r['env_id']}` | {r['single_unwrapped_steps_per_s']:,.0f} | {r['single_made_steps_per_s']:,.0f} "
                f"| {r['batched_steps_per_s']:,.0f} (x{r['num_envs']}) | {r['batched_over_single']:.0f} |"
            )
        pong = next((r for r in throughput["results"] if r["env_id"] == "cwm/InterventionalPong-v0"), None)
        if pong:
            single, batched = pong["single_unwrapped_steps_per_s"], pong["batched_steps_per_s"]
            lines += [
                "",
                "Targets for `cwm/InterventionalPong-v0` (issue 2): batched >= 1,000,000 env-steps/s: "
                f"**{'met' if batched >= 1e6 else 'not met'}** ({batched:,.0f}); single env >= 30,000 steps/s: "
                f"**{'met' if single >= 3e4 else 'not met'}** ({single:,.0f}).",
                "",
                "The single env *is* the batched numpy implementation run on a batch of one, so single and batched "
                "envs give bit-identical transitions by construction and the dynamics exist once. A step is a few "
                "dozen numpy calls on length-1 arrays, so its cost is numpy's per-call overhead (0.25-1 us each). "
                "What keeps it low (see docs/design_notes.md): the uniforms of 64 steps are drawn in one call, "
                "constants are 0-d arrays, rare events (bounces, hits, points, interventions) are tested with "
                "`np.count_nonzero` and computed only when some sub-env has them. The other envs have not had this "
                "treatment yet. For throughput use the batched env: at 1,024 sub-envs it is one to two orders of "
                "magnitude faster per env-step.",
            ]
        lines.append("")
    verification = _load("verification.json")
    if verification:
        lines += [
            "## Verified local causal graphs",
            "",
            f"`benchmarks/verify_suite.py` (= `cwm-rl verify-env ID` per id), seed {verification['seed']}, on "
            f"{_machine(verification['machine'])}. A *violation* is a child that changed under a one-slot "
            "counterfactual perturbation without a declared edge; the *unused-edge rate* is the share of declared "
            "edge instances that no perturbation confirmed.",
            "",
            "| env | transitions | violations | unused-edge rate | unused, excluding self-edges |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in verification["results"]:
            lines.append(
                f"| `{r['env_id']}` | {r['n_transitions']:,} | {r['n_violations']} | {r['unused_edge_rate']:.3f} "
                f"| {r['unused_edge_rate_excluding_self_edges']:.3f} |"
            )
        lines.append("")
    scans = _load("scan_backends.json")
    if scans:
        names = scans["candidates"]
        m = scans["machine"]
        lines += [
            "## SSM scan backends (CPU)",
            "",
            f"`benchmarks/scan_backends.py`: forward + backward of one block, median ms, batch "
            f"{scans['config'].get('batch', '?')}, d_model {scans['config'].get('d_model', '?')}, d_state "
            f"{scans['config'].get('d_state', '?')}, on {m.get('cpu_count', '?')} cores, torch {m.get('torch', '?')}, "
            f"{m.get('threads', '?')} threads. In brackets: time relative to `{scans['baseline']}` (our CPU default). "
            "`attention` is one causal Transformer layer of the same width, for reference.",
            "",
            "| seq len | " + " | ".join(f"`{n}`" for n in names) + " |",
            "|---:|" + "---:|" * len(names),
        ]
        for r in scans["results"]:
            base = r["ms"][scans["baseline"]]
            cells = [
                f"{r['ms'][n]:,.1f} ({r['ms'][n] / base:.1f}x)" if r["ms"].get(n) is not None else "skipped"
                for n in names
            ]
            lines.append(f"| {r['length']} | " + " | ".join(cells) + " |")
        lines.append("")
    comparison = _load("wm_comparison.json")
    if comparison:
        lines += _comparison_section(comparison)
    masking = _load("intervention_masking.json")
    if masking:
        lines += _masking_section(masking)
    planning = _load("planning_throughput.json")
    if planning:
        lines += _planning_section(planning)
    wm_throughput = _load("wm_throughput.json")
    if wm_throughput:
        lines += _wm_throughput_section(wm_throughput)
    imagination = _load("imagination_cost.json")
    if imagination:
        lines += _imagination_section(imagination)
    oracle = [b for b in (_load("oracle_planning.json"), _load("oracle_planning_pusher.json")) if b]
    if oracle:
        lines += _oracle_section(oracle)
    # The offline grids first, the agents' own models last (they are judged against the offline rows).
    first = ["pusher_model_diagnosis.json", "pusher_model_diagnosis_long.json"]
    last = sorted(f.name for f in DOCS.glob("pusher_model_diagnosis_agents*.json"))
    rest = sorted(f.name for f in DOCS.glob("pusher_model_diagnosis_*.json") if f.name not in first + last)
    names = first + rest + last
    pusher = [_load(name) for name in names]
    pusher = [b for b in pusher if b and not b["quick"]]
    if pusher:
        lines += _pusher_diagnosis_section(pusher)
    end_to_end = _load("end_to_end.json")
    if end_to_end:
        lines += _end_to_end_section(end_to_end)
    coda = _load("coda_dyna.json")
    if coda and not coda["quick"]:
        lines += _coda_section(coda, _load("coda_validity.json"))
    sample_efficiency = _load("sample_efficiency.json")
    if sample_efficiency and not sample_efficiency["quick"]:
        lines += _sample_efficiency_section(sample_efficiency)
    factors = [_load(f.name) for f in sorted(DOCS.glob("ood_factors*.json"))]
    if factors:
        lines += _ood_factors_section(factors)
    model_factors = _load("ood_model_factors.json")
    if model_factors and not model_factors["config"]["quick"]:
        lines += _ood_model_section(model_factors)
    memory = _load("memory_bound.json")
    if memory:
        lines += _memory_section(memory)
    out = DOCS / "results.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
