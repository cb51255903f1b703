"""The end-to-end demo run by ``make demo`` (``cwm-rl demo``).

Until the agents land this is the best end-to-end path that exists, in two parts:

1. The environment suite: for every suite env it rolls out a random policy in the natively batched env,
   aggregates the ground-truth local causal graphs (how often each edge is active), checks them counterfactually
   with :func:`cwm_rl.envs.verify_local_graphs` and saves a rendered frame.
2. A world model: it collects random-policy data from Interventional Pong, trains the slot SSM briefly, evaluates
   it (open-loop error, graph recovery in and out of distribution) and saves the learned vs true graph heatmap.

Everything lands in ``report.md`` and ``metrics.json`` in the output directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from cwm_rl.causal import edge_frequency, format_graph
from cwm_rl.checkpoint import atomic_write_text
from cwm_rl.envs import causal_env_ids, verify_local_graphs
from cwm_rl.errors import InvalidArgumentError

SUITE = [i for i in causal_env_ids() if "-OOD-" not in i]


def _tour_env(env_id: str, steps: int, num_envs: int, seed: int, out: Path) -> dict[str, Any]:
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    venv.reset(seed=seed)
    venv.action_space.seed(seed)
    graphs, intervened, rewards, episodes = [], [], [], 0
    for _ in range(steps):
        _, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
        valid = info["_local_graph"]
        graphs.append(info["local_graph"][valid])
        intervened.append(info["intervened"][valid])
        rewards.append(reward[valid])
        episodes += int((terminated | truncated).sum())
    venv.close()
    graphs_arr = np.concatenate(graphs)
    freq = edge_frequency(graphs_arr)

    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=seed)
    frame_path = out / f"{env_id.replace('/', '_')}.png"
    _save_png(frame_path, env.render())
    slot_names = list(env.unwrapped.slot_names)
    global_graph = env.unwrapped.causal_graph
    env.close()

    report = verify_local_graphs(env_id, n_transitions=300, seed=seed)
    return {
        "env_id": env_id,
        "slots": slot_names,
        "transitions": int(len(graphs_arr)),
        "episodes_finished": episodes,
        "mean_reward": float(np.concatenate(rewards).mean()),
        "intervention_rate": float(np.concatenate(intervened).any(axis=1).mean()),
        "mean_local_edges": float(graphs_arr.sum(axis=(1, 2)).mean()),
        "global_edges": int(global_graph.sum()),
        "edge_frequency": freq.round(4).tolist(),
        "verification": {
            "transitions": report.n_transitions,
            "violations": report.n_violations,
            "unused_edge_rate": round(report.unused_rate(), 4),
        },
        "frame": frame_path.name,
        "_freq": freq,
        "_global": global_graph,
    }


def _save_png(path: Path, frame: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, frame)


def _world_model_stage(out: Path, wm_steps: int, seed: int) -> tuple[dict[str, Any], list[str]]:
    """Collect Pong data, train the slot SSM for ``wm_steps`` steps, evaluate it; return metrics and report lines."""
    from cwm_rl.data import collect
    from cwm_rl.models.world_model import SlotModelConfig
    from cwm_rl.wm_training import WMTrainConfig, evaluate_run, train_world_model

    env_id = "cwm/InterventionalPong-v0"
    data, run = out / "pong-data", out / "wm-slot-ssm"
    collect(env_id, 8000, data, seed=seed, num_envs=16, overwrite=True)
    cfg = WMTrainConfig(
        env_id=env_id,
        model="slot-ssm",
        data=str(data),
        seed=seed,
        steps=wm_steps,
        eval_every=wm_steps,
        slot=SlotModelConfig(d_model=32),
    )
    train_world_model(cfg, run, progress=True)
    ev = evaluate_run(run, ood_steps=2000)
    keys = ("open_loop_mse_1", "open_loop_mse_10", "shd", "f1", "auroc")
    rows = [
        f"| {part} | " + " | ".join(f"{ev[part][k]:.3f}" for k in keys) + " |" for part in ("in_distribution", "ood")
    ]
    table = ["| data | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys), *rows]
    print(f"\n== world model: slot-ssm on {env_id}, {wm_steps} training steps")
    print("\n".join(table))
    lines = [
        "## World model: slot SSM on Interventional Pong",
        "",
        f"8,000 random-policy transitions, {wm_steps} training steps (a short demo budget, far from converged). "
        "Headline graph numbers exclude self-edges.",
        "",
        *table,
        "",
        f"![learned vs true graph]({run.name}/graph.png)",
        "",
    ]
    return ev, lines


def run_demo(
    out_dir: str | os.PathLike[str] = "runs/demo",
    steps: int = 200,
    num_envs: int = 64,
    seed: int = 0,
    wm_steps: int = 300,
) -> int:
    """Run the tour and return a process exit code (0 when every env's graphs verify)."""
    if steps < 1 or num_envs < 1 or wm_steps < 0:
        raise InvalidArgumentError(
            f"--steps ({steps}) and --num-envs ({num_envs}) must be positive and --wm-steps ({wm_steps}) >= 0"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    md = ["# cwm-rl demo: the causal environment suite", ""]
    for env_id in SUITE:
        t0 = time.perf_counter()
        res = _tour_env(env_id, steps, num_envs, seed, out)
        results.append(res)
        v = res["verification"]
        table = format_graph(res.pop("_freq"), res["slots"], fmt="freq")
        global_table = format_graph(res.pop("_global"), res["slots"])
        summary = (
            f"{res['transitions']} random-policy transitions in {num_envs} batched envs; "
            f"{res['mean_local_edges']:.1f} local edges per transition of {res['global_edges']} global; "
            f"intervention rate {res['intervention_rate']:.3f}; mean reward {res['mean_reward']:.3f}; "
            f"verification: {v['violations']} violations in {v['transitions']} transitions "
            f"(unused-edge rate {v['unused_edge_rate']:.3f})"
        )
        print(f"\n== {env_id} ({time.perf_counter() - t0:.1f} s)\n{summary}")
        print("global causal graph:\n" + global_table)
        print("how often each local edge is active:\n" + table)
        md += [
            f"## {env_id}",
            "",
            summary,
            "",
            f"![{env_id}]({res['frame']})",
            "",
            "Global causal graph:",
            "",
            "```",
            global_table,
            "```",
            "",
            "Local edge frequency:",
            "",
            "```",
            table,
            "```",
            "",
        ]
    metrics: dict[str, Any] = {"seed": seed, "steps": steps, "num_envs": num_envs, "envs": results}
    if wm_steps:
        metrics["world_model"], wm_lines = _world_model_stage(out, wm_steps, seed)
        md += wm_lines
    metrics["wall_time_s"] = time.perf_counter() - start
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(out / "report.md", "\n".join(md))
    print(f"\nreport: {out / 'report.md'}  metrics: {out / 'metrics.json'}  frames: {out}/*.png")
    return 0 if all(r["verification"]["violations"] == 0 for r in results) else 1
