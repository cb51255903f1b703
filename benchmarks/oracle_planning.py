"""How well can MPC play with a *perfect* model? The planner's ceiling on Pong and Pusher2D, without any learning.

Usage::

    python benchmarks/oracle_planning.py [--env pong|pusher] [--steps N] [--quick] [--json]
                                         [--out docs/oracle_planning.json]

The shipped planner of the env's MPC agents (``agents/configs/mpc.yaml``: categorical CEM on Pong, CEM on Pusher2D;
``--horizon/--population/--iterations`` override it) plans 8 real envs at once, but candidates are scored with the
env's own batched dynamics (``CausalEnv._step_batch``, the simulator behind ``step``) from the real current state
instead of a learned model. Interventional Pong is stochastic (paddle noise; an intervention in 15% of the steps),
so a candidate's return is a sample; the variants differ in how it is sampled:

* ``independent, 1 sample``: each candidate gets its own noise (what a stochastic simulator gives by default);
* ``common noise, 1 / 4 samples``: all candidates of one env share the same noise draws (common random numbers),
  and the return is averaged over 1 or 4 draws;
* ``mechanism only``: the dynamics without interventions and with the paddles' noise at its mean (0), one draw
  (only a serve after a point is still random, shared by the candidates): what a perfect deterministic world model
  trained with ``mask_interventions`` predicts, so the ceiling of MPC with the agents' kind of model; once with the
  shipped planner and once with a larger one (horizon 20, population 256, 5 iterations).

Pusher2D's only noise moves the distractor, which touches nothing, so there one variant (common noise) is the
perfect model. Reference policies: uniformly random actions, and a hand-written rule: on Pong it moves the paddle
towards the ball's height; on Pusher2D it steers the agent to a point behind the box (on the far side from the goal)
and then drives through the box towards the goal (a crude rule: it does not walk around the box on its way).
Returns are complete episodes (Pong: first to 5 points; Pusher2D: the box on the goal, or 200 steps) in ``--steps``
vector steps. This reads the simulator's internals on purpose: it is a diagnostic of the
planner, not an agent.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.agents.model_based import mpc_config_for  # noqa: E402
from cwm_rl.data import make_vector_env  # noqa: E402
from cwm_rl.envs import pong  # noqa: E402
from cwm_rl.planning import PlannerConfig, make_planner  # noqa: E402

N_ENVS = 8
ENVS = {  # key: env id, default vector steps (Pusher2D's episodes are shorter when the box reaches the goal)
    "pong": ("cwm/InterventionalPong-v0", 1500),
    "pusher": ("cwm/Pusher2D-v0", 600),
}
VARIANTS = {  # env key -> name: (common noise, samples per candidate, mechanism only, larger planner)
    "pong": {
        "independent, 1 sample": (False, 1, False, False),
        "common noise, 1 sample": (True, 1, False, False),
        "common noise, 4 samples": (True, 4, False, False),
        "mechanism only": (True, 1, True, False),
        "mechanism only, horizon 20, population 256, 5 iterations": (True, 1, True, True),
    },
    "pusher": {"common noise, 1 sample": (True, 1, False, False)},
}
LARGER = {"horizon": 20, "population": 256, "iterations": 5}


def true_returns(
    venv,
    actions: torch.Tensor,
    rng: np.random.Generator,
    common: bool,
    samples: int,
    discount: float,
    mechanism: bool = False,
):
    """Discounted returns ``(envs, population)`` of candidate sequences ``(envs, population, horizon[, action_dim])``
    under the env's own dynamics (``mechanism``, Pong only: without interventions and with the paddles' noise at 0)."""
    core = venv.env
    b, p, h = actions.shape[:3]
    seq = actions.reshape(b * p, h, *actions.shape[3:]).numpy()
    total = np.zeros(b * p)
    for _ in range(samples):
        state = {k: np.repeat(v, p, axis=0) for k, v in venv._state.items()}
        alive = np.ones(b * p)
        for t in range(h):
            shape = (b, 1 if common else p, core.n_step_uniforms)
            u = np.broadcast_to(rng.random(shape), (b, p, core.n_step_uniforms)).reshape(b * p, -1)
            if mechanism:
                u = u.copy()
                u[:, pong._U_INTERVENE] = 1.0  # never below intervention_prob
                u[:, [pong._U_LP_NOISE, pong._U_RP_NOISE]] = 0.5  # noise * (2u - 1) = 0
            step = core._step_batch(state, seq[:, t], u)
            state = step.state
            total += alive * discount**t * step.reward / samples
            alive = alive * (1.0 - step.terminated)
    return torch.as_tensor(total.reshape(b, p), dtype=torch.float32)


def play(env_id: str, policy, steps: int, seed: int) -> list[float]:
    """Episode returns of ``policy(venv, obs) -> actions`` over ``steps`` vector steps (complete episodes only)."""
    venv, _ = make_vector_env(env_id, N_ENVS, {})
    obs, _ = venv.reset(seed=seed)
    returns, running = [], np.zeros(N_ENVS)
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = venv.step(policy(venv, obs))
        running += reward
        done = terminated | truncated
        returns += running[done].tolist()
        running[done] = 0.0
        if done.any() and hasattr(policy, "reset"):
            policy.reset(done)
    venv.close()
    return returns


class OraclePlanner:
    """The shipped planner, its candidates scored by the true simulator."""

    def __init__(
        self, config: PlannerConfig, common: bool, samples: int, mechanism: bool, seed: int, discount: float
    ) -> None:
        self.config, self.common, self.samples, self.mechanism = config, common, samples, mechanism
        self.planner = None
        self.rng = np.random.default_rng(seed)
        self.seed, self.discount = seed, discount

    def __call__(self, venv, obs):
        if self.planner is None:
            self.planner = make_planner(venv.single_action_space, self.config, batch=N_ENVS, seed=self.seed)
        return self.planner.plan(
            lambda a: true_returns(venv, a, self.rng, self.common, self.samples, self.discount, self.mechanism)
        )

    def reset(self, done) -> None:
        self.planner.reset(done)


def tracker(venv, obs):
    """Move the right paddle towards the ball's height (a hand-written reference policy)."""
    paddle, ball_y = obs[:, 1], obs[:, 3]
    return np.where(ball_y > paddle + 1.0, 1, np.where(ball_y < paddle - 1.0, 2, 0))


def push_rule(venv, obs):
    """Pusher2D: go behind the box (seen from the goal), then push it towards the goal (a hand-written reference)."""
    agent, velocity, box, goal = obs[:, 0:2], obs[:, 2:4], obs[:, 4:6], obs[:, 12:14]
    to_goal = goal - box
    to_goal /= np.maximum(np.linalg.norm(to_goal, axis=1, keepdims=True), 1e-6)
    behind = box - 0.15 * to_goal
    lined_up = np.linalg.norm(behind - agent, axis=1, keepdims=True) < 0.04
    target = np.where(lined_up, goal + 0.1 * to_goal, behind)
    return np.clip(20.0 * (target - agent) - 10.0 * velocity, -1.0, 1.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENVS), default="pong")
    parser.add_argument("--steps", type=int, help="vector steps of 8 envs per policy (pong 1500, pusher 600)")
    parser.add_argument("--horizon", type=int, help="default: the env's shipped MPC planner (mpc.yaml)")
    parser.add_argument("--population", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--quick", action="store_true", help="100 vector steps")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    env_id, default_steps = ENVS[args.env]
    steps = 100 if args.quick else args.steps or default_steps
    torch.set_num_threads(1)
    mpc = mpc_config_for("causal-mpc", env_id=env_id)
    shipped = {"horizon": args.horizon, "population": args.population, "iterations": args.iterations}
    config = dataclasses.replace(mpc.planner, **{k: v for k, v in shipped.items() if v is not None})
    venv, _ = make_vector_env(env_id, 1, {})
    space = venv.single_action_space
    venv.close()
    if config.name == "auto":
        config = dataclasses.replace(config, name="categorical-cem" if args.env == "pong" else "cem")
    space.seed(args.seed)
    policies = {"random": lambda venv, obs: np.stack([space.sample() for _ in range(N_ENVS)])}
    rule_name, rule = ("ball tracker", tracker) if args.env == "pong" else ("push rule", push_rule)
    policies[rule_name] = rule
    for name, (common, samples, mechanism, larger) in VARIANTS[args.env].items():
        cfg = dataclasses.replace(config, **LARGER) if larger else config
        policies[f"oracle MPC, {name}"] = OraclePlanner(cfg, common, samples, mechanism, args.seed, mpc.discount)
    results = []
    for name, policy in policies.items():
        start = time.perf_counter()
        returns = play(env_id, policy, steps, args.seed)
        results.append(
            {
                "policy": name,
                "episodes": len(returns),
                "mean_return": float(np.mean(returns)) if returns else None,
                "std_return": float(np.std(returns)) if returns else None,
                "wall_s": round(time.perf_counter() - start, 1),
            }
        )
        if not args.json:
            r = results[-1]
            mean = f"{r['mean_return']:.2f} ± {r['std_return']:.2f}" if returns else "n/a"
            print(f"{name:<46} {r['episodes']:>4} episodes  return {mean}  ({r['wall_s']:.0f} s)", flush=True)
    payload = {
        "benchmark": "oracle_planning",
        "env_id": env_id,
        "planner": {k: getattr(config, k) for k in ("name", "horizon", "population", "iterations")},
        "larger_planner": LARGER,
        "steps": steps,
        "n_envs": N_ENVS,
        "machine": {**machine_info(), "torch": torch.__version__},
        "results": results,
    }
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
