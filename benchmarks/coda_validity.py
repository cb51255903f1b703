"""Are CoDA's counterfactual Pong transitions ones the env could have produced? Checked against the simulator.

Usage::

    python benchmarks/coda_validity.py RUN_DIR [RUN_DIR ...] [--transitions 4000] [--seed 0] [--json OUT]

``RUN_DIR`` is a ``causal-dyna`` (or any slot-model agent / ``wm-train``) run on ``cwm/InterventionalPong-v0``.
Pong's simulator state *is* its observation (paddles, ball position and velocity, scores), so a mixed observation
can be stepped by the real dynamics. Random-policy transitions without interventions are mixed by
:func:`cwm_rl.agents.coda.coda_transitions` with the run's model, once with the check on the mixed state (as the
agent runs it) and once without. Each mixed ``(obs, action)`` is then stepped by the env's batched dynamics with no
intervention, and compared:

* **invalid**: the true local graph of the mixed transition joins the swapped part to the rest (a contact or a
  point the mixed transition ignores): the mix is not a transition of the env;
* **ball mismatch**: the ball's next state (deterministic unless a point is scored and it is served again) differs
  from the mixed next state's ball by more than 1e-3;
* **reward**: the model's reward label against the true reward of the mixed state and action.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from cwm_rl.agents.coda import coda_transitions, crosses  # noqa: E402
from cwm_rl.agents.compare import load_agent  # noqa: E402
from cwm_rl.data import make_vector_env  # noqa: E402

ENV_ID = "cwm/InterventionalPong-v0"


def random_transitions(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random-policy transitions of Pong without an intervention (the sources follow the mechanisms)."""
    venv, _ = make_vector_env(ENV_ID, 16, {})
    rng = np.random.default_rng(seed)
    obs, _ = venv.reset(seed=seed)
    out: dict[str, list[np.ndarray]] = {"obs": [], "action": [], "next_obs": []}
    kept = 0
    while kept < n:
        action = rng.integers(0, 3, size=16)
        nxt, _, terminated, truncated, info = venv.step(action)
        ok = ~np.asarray(info["intervened"]).any(axis=1) & ~(terminated | truncated)  # no reset in between
        out["obs"].append(obs[ok])
        out["action"].append(action[ok])
        out["next_obs"].append(nxt[ok])
        kept += int(ok.sum())
        obs = nxt
    venv.close()
    return {k: np.concatenate(v)[:n] for k, v in out.items()}


def true_step(env: Any, obs: np.ndarray, action: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next observation, reward and local graph of the real dynamics from ``obs`` with no intervention."""
    from cwm_rl.envs.pong import _U_INTERVENE, KEYS

    state = {k: obs[:, i].astype(np.float64) for i, k in enumerate(KEYS)}
    u = np.random.default_rng(seed).random((len(obs), env.n_step_uniforms))
    u[:, _U_INTERVENE] = 1.0  # no exogenous intervention
    result = env._step_batch(state, action.astype(np.int64), u)
    nxt = np.stack([result.state[k] for k in KEYS], axis=1)
    return nxt, np.asarray(result.reward), np.asarray(result.local_graph)


def judge(run_dir: str, transitions: int, seed: int) -> list[dict[str, Any]]:
    import gymnasium as gym

    agent, cfg = load_agent(run_dir)
    if cfg.env_id != ENV_ID:
        raise SystemExit(f"{run_dir} is a run on {cfg.env_id}; this check needs {ENV_ID}")
    model, norm, dims = agent.learner.model, agent.learner.norm, agent.layout.slot_dims
    real = random_transitions(transitions, seed)
    env = gym.make(ENV_ID).unwrapped
    rows = []
    for check in (True, False):
        torch.manual_seed(seed)
        data, stats = coda_transitions(
            model, norm, dims, real["obs"], real["action"], real["next_obs"], np.random.default_rng(seed), check
        )
        nxt, reward, graph = true_step(env, data["obs"], data["action"], seed + 1)
        invalid = crosses(graph, data["part"])
        served = np.abs(nxt[:, 2] - data["obs"][:, 2]) > 4.0  # a point: the ball is served from the centre
        ball = (np.abs(nxt[:, 2:6] - data["next_obs"][:, 2:6]).max(1) > 1e-3) & ~served
        rows.append(
            {
                "run": run_dir,
                "check_mixed": check,
                **stats,
                "invalid_share": float(invalid.mean()) if len(invalid) else float("nan"),
                "ball_mismatch_share": float(ball.mean()) if len(ball) else float("nan"),
                "true_point_share": float((reward != 0).mean()) if len(reward) else float("nan"),
                "reward_abs_error": float(np.abs(data["reward"] - reward).mean()) if len(reward) else float("nan"),
                "reward_abs_error_on_points": float(np.abs(data["reward"] - reward)[reward != 0].mean())
                if (reward != 0).any()
                else float("nan"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--transitions", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", help="also write the rows (and the machine) to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for run in args.runs for row in judge(run, args.transitions, args.seed)]
    print(
        "| run | check on mixed state | pairs | split | kept | invalid | ball mismatch | true points "
        "| reward error (on points) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['run']} | {'yes' if r['check_mixed'] else 'no'} | {r['pairs']} | {r['splittable']} "
            f"| {r['accepted']} | {r['invalid_share']:.3f} | {r['ball_mismatch_share']:.3f} "
            f"| {r['true_point_share']:.3f} | {r['reward_abs_error']:.3f} ({r['reward_abs_error_on_points']:.2f}) |"
        )
    if args.json:
        write_json(args.json, {"machine": machine_info(), "env_id": ENV_ID, "rows": rows})


if __name__ == "__main__":
    main()
