"""The end-to-end demo run by ``make demo`` (``cwm-rl demo``).

Until the agents land this is the tour of the environment suite: for every suite env it rolls out a random
policy in the natively batched env, aggregates the ground-truth local causal graphs (how often each edge is
active), checks them counterfactually with :func:`cwm_rl.envs.verify_local_graphs`, saves a rendered frame, and
writes ``report.md`` and ``metrics.json`` to the output directory.
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


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", steps: int = 200, num_envs: int = 64, seed: int = 0) -> int:
    """Run the tour and return a process exit code (0 when every env's graphs verify)."""
    if steps < 1 or num_envs < 1:
        raise InvalidArgumentError(f"--steps ({steps}) and --num-envs ({num_envs}) must be positive")
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
    metrics = {
        "seed": seed,
        "steps": steps,
        "num_envs": num_envs,
        "wall_time_s": time.perf_counter() - start,
        "envs": results,
    }
    _atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    _atomic_write(out / "report.md", "\n".join(md))
    print(f"\nreport: {out / 'report.md'}  metrics: {out / 'metrics.json'}  frames: {out}/*.png")
    return 0 if all(r["verification"]["violations"] == 0 for r in results) else 1


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
