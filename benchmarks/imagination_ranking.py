"""Does a world model's imagination rank actions the way the real env does? The planning diagnostic.

Usage::

    python benchmarks/imagination_ranking.py RUN_DIR [RUN_DIR ...] [--states 60] [--horizon 20] [--seed 3]
                                             [--edge-modes native learned soft] [--json OUT]

``RUN_DIR`` is a ``cwm-rl train`` run of a model-based agent (``causal-mpc``, ``causal-dyna``, ...) or a
``cwm-rl wm-train`` run. For ``--states`` real states of the run's env, reached by random play, each constant
action sequence of length ``--horizon`` (every discrete action, or for a ``Box`` the corners of ``[-1, 1]^d`` and
zero) is played in the real env from that state (``get_state``/``set_state``, the same noise draws) and imagined
by the model from the same observation. Reported per run: the correlation of imagined and real returns; among the
states where the action matters in the real env, the share whose best imagined action is a best real one (and
what a uniformly random pick would score, ties included); and the share of states where the action matters. On
Pong the states are those with the ball moving towards the agent's paddle (x in 14-22), where the action decides
whether a point is lost.

A planner can only be as good as this ranking: one-step accuracy is not enough when imagined returns do not
follow real ones. See docs/design_notes.md (Agents).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

import cwm_rl  # noqa: E402,F401  (registers the envs)
from cwm_rl.models.attention import EDGE_MODES, edge_mode  # noqa: E402
from cwm_rl.planning.imagination import Imagination  # noqa: E402


def load_model(run_dir: str) -> tuple[str, torch.nn.Module, Any, dict[str, Any]]:
    """(env id, world model, normaliser, env kwargs) of an agent run or a world-model run."""
    run = Path(run_dir)
    if (run / "checkpoint.pt").is_file():
        from cwm_rl.wm_training import load_run

        cfg, model, norm, _ = load_run(run)
        return cfg.env_id, model, norm, {}
    from cwm_rl.agents.compare import load_agent

    agent, cfg = load_agent(run)
    if getattr(agent, "norm", None) is None:
        raise SystemExit(f"{run}: the agent has no fitted world model")
    return cfg.env_id, agent.model, agent.norm, dict(cfg.env_kwargs)


def candidate_actions(space: spaces.Space) -> list[Any]:
    if isinstance(space, spaces.Discrete):
        return [int(space.start) + i for i in range(int(space.n))]
    dim = int(np.prod(space.shape))
    corners = [np.array(c, dtype=np.float32) for c in itertools.product((-1.0, 1.0), repeat=dim)]
    return [*corners, np.zeros(dim, dtype=np.float32)]


def sample_states(env: gym.Env, env_id: str, n: int, seed: int) -> list[tuple[np.ndarray, Any]]:
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    states: list[tuple[np.ndarray, Any]] = []
    pong = "Pong" in env_id
    for _ in range(200_000):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        wanted = (obs[4] > 0 and 14 < obs[2] < 22) if pong else rng.random() < 0.05
        if wanted:
            states.append((obs.copy(), env.get_state()))
            if len(states) == n:
                return states
    raise SystemExit(f"found only {len(states)} states of the wanted kind in {env_id}")


def rank(run_dir: str, n_states: int, horizon: int, seed: int, modes: tuple[str, ...] = ("native",)) -> list[dict]:
    """One row per edge mode (:func:`cwm_rl.models.attention.edge_mode`) of the run's model, on the same states."""
    env_id, model, norm, env_kwargs = load_model(run_dir)
    env = gym.make(env_id, **env_kwargs).unwrapped
    actions = candidate_actions(env.action_space)
    states = sample_states(env, env_id, n_states, seed)
    real = np.zeros((n_states, len(actions)))
    for i, (_, state) in enumerate(states):
        for k, action in enumerate(actions):
            env.set_state(state)
            for _ in range(horizon):
                _, reward, terminated, truncated, _ = env.step(action)
                real[i, k] += reward
                if terminated or truncated:
                    break
    obs = np.stack([o for o, _ in states]).astype(np.float32)
    seqs = torch.as_tensor(np.stack([np.stack([a] * horizon) for a in actions]))  # (k, horizon[, dim])
    seqs = seqs.unsqueeze(0).expand(n_states, *seqs.shape)  # (batch, population=k, horizon[, dim])
    best_real = real == real.max(1, keepdims=True)
    matters = real.max(1) > real.min(1)
    rows = []
    for mode in modes:
        with torch.no_grad(), edge_mode(model, mode):
            imagined = Imagination(model, norm, 1.0).returns(obs, seqs).numpy()
        rows.append(_row(run_dir, env_id, mode, horizon, len(actions), real, imagined, best_real, matters))
    return rows


def _row(run_dir, env_id, mode, horizon, n_actions, real, imagined, best_real, matters) -> dict[str, Any]:
    n_states = len(real)
    hit = best_real[np.arange(n_states), imagined.argmax(1)]
    return {
        "run": str(run_dir),
        "edge_mode": mode,
        "env_id": env_id,
        "states": n_states,
        "horizon": horizon,
        "actions": n_actions,
        "real_mean_return": real.mean(0).round(3).tolist(),
        "imagined_mean_return": imagined.mean(0).round(3).tolist(),
        "correlation": float(np.corrcoef(real.ravel(), imagined.ravel())[0, 1]),
        "best_action_agreement": float(hit[matters].mean()) if matters.any() else float("nan"),
        "chance": float(best_real[matters].mean()) if matters.any() else float("nan"),
        "action_matters": float(matters.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--states", type=int, default=60)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--edge-modes",
        nargs="+",
        choices=EDGE_MODES,
        default=["native"],
        help="imagine with each of these edge modes (learned: the thresholded learned graph gates; soft: no cut)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the rows (and the machine) to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for r in args.runs for row in rank(r, args.states, args.horizon, args.seed, tuple(args.edge_modes))]
    print("| run | env | edge mode | corr. imagined vs real | best-action agreement (chance) | action matters |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['run']} | {r['env_id']} | {r['edge_mode']} | {r['correlation']:.2f} | "
            f"{r['best_action_agreement']:.2f} ({r['chance']:.2f}) | {r['action_matters']:.2f} |"
        )
    if args.json:
        write_json(args.json, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
