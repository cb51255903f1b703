"""The ``cwm-rl`` command line.

Subcommands: ``envs`` (list the registered causal envs), ``verify-env`` (counterfactual check of an env's
declared local graphs), ``demo`` (the end-to-end tour run by ``make demo``) and ``collect`` (write a transition
dataset for world-model training).

Errors a user can cause (unknown id, bad keyword, bad value) print one line on stderr and exit with code 2;
``verify-env`` exits 1 when it finds violations.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cwm_rl.errors import InvalidArgumentError, TrainingInterrupted, UserError


def parse_assignments(items: Sequence[str] | None, what: str = "--kwarg") -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML scalars or lists (``0.3``, ``true``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{what} {item!r} is not of the form key=value")
        try:
            out[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise InvalidArgumentError(f"{what} {item!r}: cannot parse the value {raw!r}") from None
    return out


def _cmd_envs(args: argparse.Namespace) -> int:
    from cwm_rl.envs_info import describe_envs, format_env_table

    import_user_modules(args.imports)
    infos = describe_envs(args.namespace)
    if args.json:
        print(json.dumps(infos, indent=2))
    else:
        print(format_env_table(infos, with_graphs=not args.brief))
    return 0


def import_user_modules(items: Sequence[str] | None) -> None:
    """Import modules (dotted names) or Python files so the envs they register become available."""
    import importlib
    import importlib.util
    from pathlib import Path

    for item in items or ():
        if item.endswith(".py") or "/" in item or "\\" in item:
            path = Path(item)
            if not path.is_file():
                raise InvalidArgumentError(f"--import {item}: no such file")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(item)
            except ImportError as e:
                raise InvalidArgumentError(f"--import {item}: {e}") from None


def _cmd_verify_env(args: argparse.Namespace) -> int:
    from cwm_rl.envs import verify_local_graphs

    import_user_modules(args.imports)
    kwargs = parse_assignments(args.kwarg)
    report = verify_local_graphs(
        args.env_id,
        args.transitions,
        seed=args.seed,
        n_perturbations=args.perturbations,
        env_kwargs=kwargs,
    )
    print(report.to_json() if args.json else report.table())
    return 0 if report.passed else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from cwm_rl.agents.demo import run_demo

    return run_demo(
        out_dir=args.out,
        steps=args.steps,
        num_envs=args.num_envs,
        seed=args.seed,
        agent_steps=args.agent_steps,
        baseline_factor=args.baseline_factor,
        overrides=parse_assignments(args.set, "--set"),
    )


def _cmd_collect(args: argparse.Namespace) -> int:
    from cwm_rl.data import collect

    import_user_modules(args.imports)
    result = collect(
        args.env,
        args.steps,
        args.out,
        policy=args.policy,
        seed=args.seed,
        num_envs=args.num_envs,
        env_kwargs=parse_assignments(args.kwarg),
        max_episode_steps=args.max_episode_steps,
        overwrite=args.overwrite,
        progress=True,
    )
    m = result.metrics
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(
            f"collected {m['transitions']} transitions in {m['episodes']} episodes ({m['complete_episodes']} complete) "
            f"of {m['env_id']} with a {m['policy']} policy in {m['num_envs']} batched envs -> {result.path}\n"
            f"mean reward {m['mean_reward']:.4f}; intervention rate {m['intervention_rate']:.3f}; "
            f"{m['mean_local_edges']:.2f} local edges per transition"
        )
    return 0


def _cmd_wm_train(args: argparse.Namespace) -> int:
    from cwm_rl.config import apply_overrides, load_yaml
    from cwm_rl.wm_training import WMTrainConfig, train_world_model

    cfg = load_yaml(WMTrainConfig, args.config) if args.config else WMTrainConfig()
    flags = {
        k: v
        for k, v in (("env_id", args.env), ("model", args.model), ("data", args.data), ("seed", args.seed))
        if v is not None
    }
    cfg = apply_overrides(cfg, {**flags, **parse_assignments(args.set, "--set")})
    metrics = train_world_model(cfg, args.run_dir, progress=not args.json)
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    else:
        graph = f", SHD {metrics['shd']:.3f}, F1 {metrics['f1']:.3f}" if "f1" in metrics else ""
        print(
            f"{cfg.model} on {metrics['env_id']}: validation prediction MSE {metrics['prediction_mse']:.4f}{graph} "
            f"after {metrics['step']} steps -> {args.run_dir}"
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    # The CLI is the application layer: the one core module that reaches into cwm_rl.agents (lazily).
    from cwm_rl.agents.training import resolve_config, resume, train

    if args.resume:
        run_dir = args.resume if isinstance(args.resume, str) else args.run_dir
        if not run_dir:
            raise InvalidArgumentError("--resume needs the run directory: --resume RUN_DIR")
        if args.config or args.set or any(v is not None for v in (args.env, args.agent, args.steps, args.seed)):
            raise InvalidArgumentError(
                "--resume continues a run with its own config.yaml; drop --env/--agent/--steps/--seed/--config/--set"
            )
        return _print_train(resume(run_dir, progress=not args.json), run_dir, args.json)
    if not args.run_dir:
        raise InvalidArgumentError("pass --run-dir DIR (a new directory for the run)")
    flags = {
        k: v
        for k, v in (("env_id", args.env), ("agent", args.agent), ("steps", args.steps), ("seed", args.seed))
        if v is not None
    }
    cfg = resolve_config({**flags, **parse_assignments(args.set, "--set")}, args.config)
    return _print_train(train(cfg, args.run_dir, progress=not args.json), args.run_dir, args.json)


def _print_train(metrics: dict[str, Any], run_dir: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({k: v for k, v in metrics.items() if k != "config"}, indent=2, sort_keys=True))
    else:
        print(
            f"{metrics['agent']} on {metrics['env_id']}: final eval return {metrics['final_eval_return']:.3f} "
            f"(best {metrics['best_eval_return']:.3f}) after {metrics['env_steps']} env steps, "
            f"{metrics['wall_time_s']:.0f} s -> {run_dir}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cwm_rl.agents.compare import evaluate_run
    from cwm_rl.checkpoint import atomic_write_json

    if isinstance(args.render, str):  # a bad GIF path fails before the (possibly long) evaluation
        from cwm_rl.agents.render import check_gif_path

        check_gif_path(args.render)
    result = evaluate_run(args.run_dir, episodes=args.episodes, env_id=args.env)
    if args.render:
        result["render"] = _render_run(args.run_dir, args.render, args.env)
    out = atomic_write_json(Path(args.run_dir) / "eval.json", result)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(
            f"{result['agent']} on {result['env_id']}: mean return {result['mean_return']:.3f} ± "
            f"{result['std_return']:.3f} over {result['episodes']} episodes -> {out}"
        )
        if args.render:
            gif = result["render"]
            print(f"episode GIF: {gif['frames']} frames, return {gif['return']:.3f} -> {gif['path']}")
    return 0


def _render_run(run_dir: str, render: str | bool, env_id: str | None) -> dict[str, Any]:
    """A GIF of the run's agent playing one deterministic episode (``--render [PATH]``, default RUN_DIR/episode.gif)."""
    from cwm_rl.agents.compare import load_agent
    from cwm_rl.agents.render import render_episode_gif

    agent, cfg = load_agent(run_dir)
    try:
        path = render if isinstance(render, str) else Path(run_dir) / "episode.gif"
        return render_episode_gif(agent, env_id or cfg.env_id, path, cfg.env_kwargs, seed=cfg.seed)
    finally:
        if hasattr(agent, "close"):
            agent.close()


def _cmd_compare(args: argparse.Namespace) -> int:
    from cwm_rl.agents.compare import compare_runs

    print(compare_runs(args.run_dirs, args.out, threshold=args.threshold), end="")
    print(f"curves: {Path(args.out) / 'curves.png'}  table: {Path(args.out) / 'comparison.md'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from cwm_rl.bench import run_benchmarks

    return run_benchmarks(args.names, quick=args.quick, as_json=args.json, out_dir=args.out_dir)


def _cmd_wm_eval(args: argparse.Namespace) -> int:
    from cwm_rl.wm_evaluation import SUMMARY_KEYS
    from cwm_rl.wm_training import evaluate_run

    results = evaluate_run(args.run_dir, args.data, ood_steps=args.ood_steps)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print(f"{results['model']} on {results['env_id']} (step {results['step']})")
    parts = [p for p in ("in_distribution", "ood") if p in results]
    print(f"{'metric':<20}" + "".join(f"{p:>18}" for p in parts))
    for k in (*SUMMARY_KEYS, "global_shd", "global_f1"):
        if k in results["in_distribution"]:
            print(f"{k:<20}" + "".join(f"{results[p].get(k, float('nan')):>18.4f}" for p in parts))
    if "edge_frequency" in results["in_distribution"]:
        print(
            "global graphs (learned vs true edge frequencies, rows = children): --json, keys edge_frequency and "
            "true_edge_frequency"
        )
    return 0


def _add_import_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE_OR_FILE",
        help="import a module or .py file first, so the envs it registers exist (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cwm-rl",
        description="Causal model-based RL toolkit: environments with known local causal graphs.",
    )
    from cwm_rl import __version__

    parser.add_argument("--version", action="version", version=f"cwm-rl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("envs", help="list registered causal envs: slots, action space, global graph")
    p.add_argument("--namespace", default="cwm", help="Gymnasium namespace to list (default: cwm)")
    p.add_argument("--brief", action="store_true", help="one line per env, no graphs")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _add_import_argument(p)
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser(
        "verify-env",
        help="replay transitions counterfactually and check the env's declared local graphs",
        description="Perturb each parent slot (and the action) of every transition, replay it with the same random "
        "stream, and count children that change without a declared edge (missing-edge violations). Exit code 0: "
        "no violation; 1: violations found; 2: bad input.",
    )
    p.add_argument("env_id", help="registered env id, e.g. cwm/InterventionalPong-v0")
    p.add_argument("--transitions", type=int, default=10_000, help="transitions to verify (default 10000)")
    p.add_argument("--perturbations", type=int, default=1, help="perturbations per parent and transition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kwarg", action="append", metavar="KEY=VALUE", help="env constructor argument (repeatable)")
    _add_import_argument(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_verify_env)

    p = sub.add_parser(
        "demo",
        help="end-to-end demo on CPU: every suite env and its verified graphs, then causal-mpc vs ppo on Pong",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--steps", type=int, default=200, help="batched steps per env (default 200)")
    p.add_argument("--num-envs", type=int, default=64, help="sub-environments per batched env (default 64)")
    p.add_argument(
        "--agent-steps", type=int, default=3000, help="env steps for causal-mpc and ppo (default 3000; 0: skip them)"
    )
    p.add_argument(
        "--baseline-factor", type=int, default=30, help="also train ppo for this many times --agent-steps (default 30)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a `cwm-rl train` config key of every agent run, e.g. --set mpc.planner.population=32",
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "collect",
        help="roll a policy out in an env's batched vector env and write a transition dataset",
        description="Write DIR/meta.json, DIR/transitions.npz and DIR/metrics.json (format: docs/data_format.md): "
        "obs, action, reward, next obs, terminated, truncated, local graph and intervened flags per transition, "
        "episode-contiguous. Exit code 0: written; 2: bad input.",
    )
    p.add_argument("--env", required=True, metavar="ID", help="registered env id, e.g. cwm/InterventionalPong-v0")
    p.add_argument("--steps", type=int, required=True, help="total transitions to store (over all sub-envs)")
    p.add_argument("--policy", default="random", help="behaviour policy (default: random)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--seed", type=int, default=0, help="sub-env i is reset with seed + i (default 0)")
    p.add_argument("--num-envs", type=int, default=16, help="sub-environments stepped together (default 16)")
    p.add_argument("--kwarg", action="append", metavar="KEY=VALUE", help="env constructor argument (repeatable)")
    p.add_argument("--max-episode-steps", type=int, default=None, metavar="M", help="truncation horizon")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in DIR")
    _add_import_argument(p)
    p.add_argument("--json", action="store_true", help="print the dataset's metrics as JSON")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser(
        "wm-train",
        help="train a world model on a collected dataset",
        description="Train slot-ssm | slot-transformer | mlp | oracle on windows of a `cwm-rl collect` dataset. "
        "Writes RUN_DIR/config.yaml, checkpoint.pt, metrics.json and TensorBoard events.",
    )
    p.add_argument("--env", help="env id the data must come from")
    p.add_argument("--model", help="slot-ssm, slot-transformer, mlp or oracle")
    p.add_argument("--data", metavar="DIR", help="dataset directory (cwm-rl collect --out)")
    p.add_argument("--run-dir", required=True, metavar="DIR", help="where to write the run")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", metavar="FILE", help="YAML config (e.g. an earlier RUN_DIR/config.yaml)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set steps=500 --set slot.attention=softmax",
    )
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON (no progress bar)")
    p.set_defaults(func=_cmd_wm_train)

    p = sub.add_parser(
        "wm-eval",
        help="evaluate a trained world model: open-loop error and local-graph recovery, ID and OOD",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `cwm-rl wm-train` run directory")
    p.add_argument("--data", metavar="DIR", help="evaluate on this dataset instead of the run's held-out episodes")
    p.add_argument("--ood-steps", type=int, default=2000, help="fresh transitions of the env's OOD twin (0: skip)")
    p.add_argument("--json", action="store_true", help="print every number as JSON (also saved to RUN_DIR/eval.json)")
    p.set_defaults(func=_cmd_wm_eval)

    p = sub.add_parser(
        "train",
        help="train an agent (causal-mpc, causal-dyna, causal-simple, transformer-mpc, mlp-mpc, mlp-simple, ppo, a2c, "
        "dqn, sac, random) on an env",
        description="Train an agent with periodic evaluation on separate eval envs. Writes RUN_DIR/config.yaml, "
        "the agent checkpoint, metrics.json and TensorBoard events (tb/).",
    )
    p.add_argument("--env", help="a registered env id (see `cwm-rl envs`)")
    p.add_argument(
        "--agent",
        help="causal-mpc, causal-dyna, causal-simple, transformer-mpc, mlp-mpc, mlp-simple, ppo, a2c, dqn, sac or "
        "random",
    )
    p.add_argument("--steps", type=int, help="real env steps to train for")
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir", metavar="DIR", help="where to write the run (must be new)")
    p.add_argument("--config", metavar="FILE", help="YAML config (e.g. an earlier RUN_DIR/config.yaml)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set eval_every=2000 --set mpc.planner.horizon=8",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN_DIR",
        help="continue a stopped or killed run (RUN_DIR, or --run-dir) from its last snapshot (resume.pt) to its "
        "configured steps; the result equals an uninterrupted run's",
    )
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON (no progress bar)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained agent with the fixed protocol (writes RUN_DIR/eval.json)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `cwm-rl train` run directory")
    p.add_argument("--episodes", type=int, default=10, help="deterministic episodes on fixed-seed eval envs")
    p.add_argument("--env", help="evaluate on another env id, e.g. the -OOD-v0 twin")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--render",
        nargs="?",
        const=True,
        metavar="PATH",
        help="also save a GIF of one deterministic episode (at most 300 frames) to PATH (default RUN_DIR/episode.gif)",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "compare",
        help="learning curves (PNG) and a Markdown table over several runs",
        description="Group runs by (env, agent), average over seeds; list the baseline first: its final return "
        "is the default threshold for 'steps to threshold'.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write curves.png and comparison.md")
    p.add_argument("--threshold", type=float, help="return threshold (default: the first group's final return)")
    p.set_defaults(func=_cmd_compare)

    from cwm_rl.bench import BENCHMARKS

    p = sub.add_parser(
        "bench",
        help="run the speed benchmarks (a source checkout's benchmarks/), each a table or JSON",
        description="Benchmarks: " + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()) + ". Ratios are measured "
        "side by side in one run (alternating repetitions, medians); the machine is recorded.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"which to run (default: all but end_to_end): {', '.join(BENCHMARKS)}"
    )
    p.add_argument("--quick", action="store_true", help="short versions (about 2 minutes for all on 2 cores)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--out-dir", metavar="DIR", help="also write DIR/<name>.json (docs/ feeds docs/results.md)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as e:
        print(f"cwm-rl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"cwm-rl {args.command}: {e}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
