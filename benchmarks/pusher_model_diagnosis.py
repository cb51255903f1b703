"""Why MPC with a learned model plays Pusher2D like random actions, while MPC with the true simulator solves it.

Usage::

    python benchmarks/pusher_model_diagnosis.py [--steps 6000] [--updates 1000] [--episodes 8] [--quick] [--json]
                                                [--grid DATA,MODEL,REWARD_WEIGHT ...] [--agent-runs RUN_DIR ...]
                                                [--out docs/pusher_model_diagnosis.json]

With the true simulator the shipped planner (CEM, horizon 10, population 128, 3 iterations) pushes the box onto the
goal in a few dozen steps (``oracle_planning.py --env pusher``); the model-based agents at 6,000 env steps, and SAC
at 30,000, score like random play (docs/results.md, "Sample efficiency"). This separates the suspects offline, on
``--steps`` transitions from one of two behaviour policies:

* ``random``: uniform actions (what an agent's seed steps collect): the agent touches the box in about 1% of steps;
* ``pushy``: 60% of the steps a force towards the box, else uniform, plus Gaussian noise (sd 0.3): contacts in
  about half the steps, so the model sees pushes.

For each dataset, world models are trained with ``cwm-rl wm-train``'s code (``--updates`` steps, its defaults, one
torch thread) and judged two ways:

* **push probe**: from 256 real states (after 7 uniform steps), both the env and the model run 10 steps of the
  force towards the box; reported are the box's real and imagined displacement after 10 steps, the box and agent
  position errors, and the reward error after 1 and 10 steps;
* **contact probe**: on 10,240 held-out transitions of the pushy policy (256 envs x 40 steps, unseen seeds), the
  one-step error of the box's position, apart for transitions where the real box stays still and where it moves,
  and, for models with a graph, how often the learned ``box <- agent`` and ``box <- action`` edges are on when the
  env's true local edge is on (a contact) and when it is off, and the learned local graphs' F1 against the env's
  (self-edges left out, as in every graph metric here). The box moves only on a contact, so a model must read
  the agent's position to know whether it moves;
* **planning**: the shipped planner plans 8 fixed-seed evaluation episodes (the agents' protocol) with the model's
  rollouts, scoring candidates by the model's reward head (``learned reward``) or by the env's reward function
  applied to the imagined states (``true reward``: isolates the dynamics from the reward head); uniformly random
  actions on the same episodes are the reference.

``reward_weight`` 100 scales the reward loss to about the size of one normalised state dimension (Pusher2D's
reward varies with a standard deviation of about 0.1, so its squared error is about 1% of one dimension's).
``--grid`` replaces the default rows (:data:`MODELS`), e.g. ``--grid pushy,mlp,100 pushy,slot-ssm,100``; a row may
add ``wm-train`` config keys: ``pushy,mlp,100,prediction_loss=l1``. ``--agent-runs RUN_DIR ...`` judges the world
models that finished MPC agent runs left (e.g. ``benchmarks/sample_efficiency.py``'s) with the same probes and
planning: what an agent learned online, next to what the same model learns offline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, report  # noqa: E402

from cwm_rl.agents.evaluation import evaluate_agent  # noqa: E402
from cwm_rl.agents.model_based import mpc_config_for  # noqa: E402
from cwm_rl.causal import HEADLINE, precision_recall_f1  # noqa: E402
from cwm_rl.config import apply_overrides  # noqa: E402
from cwm_rl.data import collect, load_dataset, make_vector_env  # noqa: E402
from cwm_rl.models.attention import edge_mode  # noqa: E402
from cwm_rl.models.factory import MODEL_KINDS  # noqa: E402
from cwm_rl.planning import make_planner  # noqa: E402
from cwm_rl.planning.imagination import Imagination  # noqa: E402
from cwm_rl.wm_training import WMTrainConfig, load_run, train_world_model  # noqa: E402

ENV_ID = "cwm/Pusher2D-v0"
GENERATED = ("random", "pushy")  # the datasets the diagnosis collects itself (any other DATA is a directory)
AGENT, BOX = slice(0, 2), slice(4, 6)  # observation columns
PROBE_STATES, PROBE_STEPS = 256, 10
# (dataset, model kind, reward_weight)
MODELS = [
    ("random", "slot-ssm", 1.0),
    ("random", "mlp", 1.0),
    ("random", "mlp", 100.0),
    ("pushy", "slot-ssm", 1.0),
    ("pushy", "mlp", 1.0),
    ("pushy", "mlp", 100.0),
]


def toward_box(obs: np.ndarray) -> np.ndarray:
    d = obs[:, BOX] - obs[:, AGENT]
    return (d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def pushy_policy(seed: int):
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        a = np.where(rng.random((len(obs), 1)) < 0.6, toward_box(obs), rng.uniform(-1, 1, (len(obs), 2)))
        return np.clip(a + 0.3 * rng.normal(size=a.shape), -1, 1).astype(np.float32)

    return policy


def grid_row(text: str) -> tuple[str, str, float, dict[str, Any]]:
    """``DATA,MODEL,REWARD_WEIGHT[,KEY=VALUE...]`` for ``--grid``: ``pushy,mlp,100`` or
    ``pushy,slot-ssm,100,prediction_loss=l1,sparsity_weight=0.002`` (extra ``wm-train`` config keys). ``DATA`` is
    ``random``, ``pushy`` or a Pusher2D dataset directory (an agent's ``RUN_DIR/data``, ``save_data=true``)."""
    parts = text.split(",")
    if (
        len(parts) < 3
        or (parts[0] not in GENERATED and not (Path(parts[0]) / "meta.json").is_file())
        or parts[1] not in MODEL_KINDS
        or any("=" not in p for p in parts[3:])
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected DATA,MODEL,REWARD_WEIGHT[,KEY=VALUE...] with DATA random, pushy or a dataset "
            f"directory and MODEL {'|'.join(MODEL_KINDS)}, e.g. pushy,mlp,100 or pushy,mlp,100,prediction_loss=l1"
        )
    try:
        weight = float(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: REWARD_WEIGHT {parts[2]!r} is not a number") from None
    extra = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in parts[3:])}
    return parts[0], parts[1], weight, extra


def data_label(data: str) -> str:
    """How a row names its data: ``random``, ``pushy``, or ``data of RUN`` for an agent run's ``RUN/data``."""
    if data in GENERATED:
        return data
    path = Path(data)
    return f"data of {path.parent.name}" if path.name == "data" else path.name


def push_probe(model, norm, seed: int) -> dict[str, float]:
    venv, _ = make_vector_env(ENV_ID, PROBE_STATES, {})
    obs, _ = venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(7):
        obs, *_ = venv.step(rng.uniform(-1, 1, (PROBE_STATES, 2)).astype(np.float32))
    start, real, rewards, actions = obs.copy(), [], [], []
    for _ in range(PROBE_STEPS):
        actions.append(toward_box(obs))
        obs, reward, *_ = venv.step(actions[-1])
        real.append(obs.copy())
        rewards.append(reward)
    venv.close()
    real_obs, real_rew = np.stack(real, 1), np.stack(rewards, 1)
    roll = Imagination(model, norm).rollout(start, torch.as_tensor(np.stack(actions, 1))[:, None])
    imag, imag_rew = roll.obs.numpy(), roll.reward.numpy()
    last = PROBE_STEPS - 1
    return {
        "real_box_moved": float(np.linalg.norm(real_obs[:, last, BOX] - start[:, BOX], axis=1).mean()),
        "imagined_box_moved": float(np.linalg.norm(imag[:, last, BOX] - start[:, BOX], axis=1).mean()),
        "box_error": float(np.linalg.norm(imag[:, last, BOX] - real_obs[:, last, BOX], axis=1).mean()),
        "agent_error": float(np.linalg.norm(imag[:, last, AGENT] - real_obs[:, last, AGENT], axis=1).mean()),
        "reward_error_1": float(np.abs(imag_rew[:, 0] - real_rew[:, 0]).mean()),
        "reward_error_10": float(np.abs(imag_rew[:, last] - real_rew[:, last]).mean()),
        "reward_std": float(real_rew.std()),
    }


@torch.no_grad()
def contact_probe(model, norm, seed: int) -> dict[str, float]:
    """One-step box error on still / moving boxes, and the learned box edges against the true ones."""
    venv, _ = make_vector_env(ENV_ID, PROBE_STATES, {})
    obs, _ = venv.reset(seed=seed)
    policy = pushy_policy(seed)
    rows: dict[str, list[np.ndarray]] = {"obs": [], "action": [], "next_obs": [], "graph": []}
    for _ in range(40):
        action = policy(obs)
        nxt, _, _, _, info = venv.step(action)
        for key, value in zip(rows, (obs, action, nxt, info["local_graph"]), strict=True):
            rows[key].append(np.asarray(value))
        obs = nxt
    venv.close()
    o, a, n, true = (np.concatenate(v) for v in rows.values())
    x = torch.as_tensor(o)
    pred, _ = model.step(model.initial_state(len(x)), norm.obs(x), norm.action(torch.as_tensor(a)))
    imagined = (x + norm.unnormalize_delta(pred.delta)).numpy()
    error = np.linalg.norm(imagined[:, BOX] - n[:, BOX], axis=1)
    moving = np.linalg.norm(n[:, BOX] - o[:, BOX], axis=1) > 1e-9
    out = {"box_step_error_still": float(error[~moving].mean()), "box_step_error_moving": float(error[moving].mean())}
    if getattr(pred, "scores", None) is not None:
        learned = model.local_graph(pred.scores).numpy()
        for name, parent in (("agent", 0), ("action", -1)):
            on = true[:, 1, parent]
            out[f"box_{name}_edge_when_true"] = float(learned[on, 1, parent].mean())
            out[f"box_{name}_edge_when_false"] = float(learned[~on, 1, parent].mean())
        # the whole local graph, scored as everywhere else (self-edges left out, the action column in)
        out.update({f"graph_{k}": v for k, v in precision_recall_f1(learned, true, **HEADLINE).items()})
    return out


class ModelPlanner:
    """The shipped planner scoring candidates with a world model's rollouts (``predict`` for the eval protocol);
    with ``reward_fn`` the imagined states are scored by it instead of the model's reward head."""

    def __init__(self, model, norm, reward_fn, episodes: int, discount: float) -> None:
        cfg = mpc_config_for("causal-mpc", env_id=ENV_ID)
        venv, _ = make_vector_env(ENV_ID, 1, {})
        self.planner = make_planner(venv.single_action_space, cfg.planner, batch=episodes, seed=0)
        venv.close()
        self.model = model
        self.imagination = Imagination(model, norm, discount, reward_fn=reward_fn)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        with edge_mode(self.model, "learned"):  # as the agents plan
            return self.planner.plan(lambda actions: self.imagination.returns(obs, actions))


def judge(model, norm, args, true_reward, discount: float) -> dict[str, float]:
    """The push and contact probes, then the shipped planner with the model's reward head and with the true one."""
    row = {**push_probe(model, norm, args.seed + 100), **contact_probe(model, norm, args.seed + 200)}
    for label, reward in (("learned_reward", None), ("true_reward", true_reward)):
        start = time.perf_counter()
        planner = ModelPlanner(model, norm, reward, args.episodes, discount)
        result = evaluate_agent(planner, ENV_ID, args.episodes, args.seed)
        row[f"return_{label}"] = result["mean_return"]
        row[f"return_{label}_se"] = result["std_return"] / np.sqrt(args.episodes)
        row[f"plan_s_{label}"] = round(time.perf_counter() - start, 1)
    return row


def agent_row(run_dir: Path, args, true_reward, discount: float) -> dict[str, Any]:
    """An MPC agent's world model as its run left it, judged like a grid row: what the agent learned online."""
    from cwm_rl.agents.compare import load_agent

    agent, cfg = load_agent(run_dir)
    if cfg.env_id != ENV_ID or not hasattr(agent, "learner"):
        raise SystemExit(f"{run_dir}: not a model-based agent's run on {ENV_ID}; give the run directory of one")
    agent.model.eval()
    with torch.no_grad():
        judged = judge(agent.model, agent.norm, args, true_reward, discount)
    return {
        "data": f"agent, {cfg.steps:,} steps",
        "model": run_dir.name,
        "reward_weight": cfg.mpc.reward_weight,
        "overrides": {},
        "prediction_mse": None,  # the agent's own metrics are in its run's metrics.json
        "model_updates": agent.learner.model_updates,
        **judged,
    }


def print_row(row: dict[str, Any]) -> None:
    print(
        f"{row['data']:>6} {row['model']:>8} rw {row['reward_weight']:>5g} {row['overrides'] or ''}  "
        f"box moved real {row['real_box_moved']:.3f} imagined {row['imagined_box_moved']:.3f}  one-step box error "
        f"still {row['box_step_error_still']:.4f} moving {row['box_step_error_moving']:.4f}  "
        f"reward err {row['reward_error_1']:.3f}/{row['reward_error_10']:.3f}  "
        f"return learned {row['return_learned_reward']:.1f} true {row['return_true_reward']:.1f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000, help="transitions per dataset")
    parser.add_argument("--updates", type=int, default=1000, help="world-model training steps")
    parser.add_argument("--episodes", type=int, default=8, help="evaluation episodes per planning row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny data, training and evaluation (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument(
        "--grid", nargs="+", type=grid_row, help="rows DATA,MODEL,REWARD_WEIGHT[,KEY=VALUE...] (default: MODELS)"
    )
    parser.add_argument(
        "--agent-runs",
        nargs="+",
        metavar="RUN_DIR",
        help="also judge the world models of finished MPC agent runs on Pusher2D (their last checkpoint)",
    )
    args = parser.parse_args(argv)
    rows_to_run = args.grid or ([] if args.agent_runs else [(*row, {}) for row in MODELS])
    if args.quick:
        args.steps, args.updates, args.episodes = 600, 20, 2
    torch.set_num_threads(1)
    venv, _ = make_vector_env(ENV_ID, 1, {})
    true_reward = venv.env.reward_from_observation  # the env's reward of the imagined state (what mpc.reward=env uses)
    venv.close()
    discount = mpc_config_for("causal-mpc", env_id=ENV_ID).discount
    rows: list[dict[str, Any]] = []
    contact: dict[str, float] = {}
    transitions: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in zip(GENERATED, ("random", pushy_policy(args.seed)), strict=True):
            if name not in {row[0] for row in rows_to_run}:
                continue
            collect(ENV_ID, args.steps, Path(tmp) / name, policy=policy, seed=args.seed)
        data_dirs = {d: Path(tmp) / d if d in GENERATED else Path(d) for d, *_ in rows_to_run}
        for name, where in data_dirs.items():
            graph = load_dataset(where, env_id=ENV_ID).arrays["local_graph"]
            contact[data_label(name)] = float(graph[:, 1, 0].mean())  # agent -> box: a contact in this step
            transitions[data_label(name)] = len(graph)
        for data, kind, reward_weight, extra in rows_to_run:
            run = Path(tmp) / f"run-{kind}-{reward_weight:g}-{len(rows)}"
            overrides = {"steps": args.updates, "reward_weight": reward_weight, "threads": 1, "seed": args.seed}
            overrides.update(extra)
            cfg = apply_overrides(
                WMTrainConfig(data=str(data_dirs[data]), env_id=ENV_ID, model=kind), overrides, where="benchmark"
            )
            start = time.perf_counter()
            metrics = train_world_model(cfg, run, progress=False)
            train_s = time.perf_counter() - start
            _, model, norm, _ = load_run(run)
            row = {
                "data": data_label(data),
                "model": kind,
                "reward_weight": reward_weight,
                "overrides": extra,
                "prediction_mse": metrics["prediction_mse"],
                "train_s": round(train_s, 1),
                **judge(model, norm, args, true_reward, discount),
            }
            rows.append(row)
            if not args.json:
                print_row(row)
    for run_dir in args.agent_runs or ():
        rows.append(agent_row(Path(run_dir), args, true_reward, discount))
        if not args.json:
            print_row(rows[-1])
    space = make_vector_env(ENV_ID, 1, {})[0].single_action_space
    space.seed(args.seed)
    uniform = SimpleNamespace(predict=lambda obs, deterministic=True: np.stack([space.sample() for _ in obs]))
    random_play = evaluate_agent(uniform, ENV_ID, args.episodes, args.seed)
    payload = {
        "benchmark": "pusher_model_diagnosis",
        "random_return": random_play["mean_return"],
        "random_return_se": random_play["std_return"] / np.sqrt(args.episodes),
        "env_id": ENV_ID,
        "steps": args.steps,
        "updates": args.updates,
        "episodes": args.episodes,
        "seed": args.seed,
        "quick": args.quick,
        "contact_rate": contact,
        "transitions": transitions,
        "machine": {**machine_info(), "torch": torch.__version__},
        "results": rows,
    }
    report(payload, args.json, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
