"""Does leaving intervened slots out of the world-model loss help? Graph recovery and clean multi-step imagination.

Usage::

    python benchmarks/intervention_masking.py [--seeds 0] [--transitions 20000] [--train-steps 3000]
                                              [--quick] [--json] [--out docs/intervention_masking.json]

For each seed: collect ``--transitions`` random-policy transitions of Interventional Pong (interventions on, as
always), train the default slot SSM with ``cwm-rl wm-train``'s API twice, with ``mask_interventions`` on and off
(same data, same seed, nothing else changed), and measure

* graph recovery on the held-out episodes (``metrics.json``: headline F1 and SHD, as in docs/results.md);
* **clean imagination**: from 256 states of a second env with ``intervention_prob=0`` (fresh seeds), each env keeps
  one random constant action for 20 steps in the real env, and the model imagines the same 20 steps. Reported: mean
  absolute error per slot (court units) after 1, 5, 10 and 20 steps, and the correlation of imagined and real
  20-step returns. Envs whose episode ends inside the 20 steps are left out from that step on.

The mechanism (what the world is when nobody intervenes) is what a planner needs; the interventions' random values
are not predictable from the past, and fitting them pulls predictions towards their mean.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from cwm_rl.data import collect, make_vector_env  # noqa: E402
from cwm_rl.planning.imagination import Imagination  # noqa: E402
from cwm_rl.wm_training import WMTrainConfig, load_run, train_world_model  # noqa: E402

ENV_ID = "cwm/InterventionalPong-v0"
HORIZONS = (1, 5, 10, 20)
N_STATES = 256


def clean_rollouts(run_dir: Path, seed: int) -> dict:
    """Imagined vs real (intervention-free) constant-action rollouts from ``N_STATES`` states."""
    _, model, norm, ckpt = load_run(run_dir)
    imagination = Imagination(model, norm, discount=1.0)
    venv, _ = make_vector_env(ENV_ID, N_STATES, {"intervention_prob": 0.0})
    rng = np.random.default_rng(seed + 500)
    obs, _ = venv.reset(seed=seed + 300_000)
    for _ in range(int(rng.integers(5, 15))):  # move away from the serve
        obs, *_ = venv.step(rng.integers(0, 3, N_STATES))
    horizon = max(HORIZONS)
    actions = np.repeat(rng.integers(0, 3, (N_STATES, 1)), horizon, axis=1)
    real_obs, real_rew, alive = [], [], []
    running = np.ones(N_STATES, dtype=bool)
    for t in range(horizon):
        nxt, reward, terminated, truncated, _ = venv.step(actions[:, t])
        alive.append(running.copy())
        real_obs.append(nxt)
        real_rew.append(np.where(running, reward, 0.0))
        running &= ~(terminated | truncated)
    venv.close()
    real_obs, real_rew, alive = np.stack(real_obs, 1), np.stack(real_rew, 1), np.stack(alive, 1)
    roll = imagination.rollout(obs, torch.as_tensor(actions)[:, None])
    pred_obs, pred_rew = roll.obs.numpy(), roll.reward.numpy()
    slices = {name: (s.start, s.stop) for name, s in zip(ckpt["slot_names"], _slices(ckpt["slot_dims"]), strict=True)}
    error = {}
    for h in HORIZONS:
        keep = alive[:, h - 1]
        diff = np.abs(pred_obs[keep, h - 1] - real_obs[keep, h - 1])
        error[str(h)] = {name: float(diff[:, a:b].mean()) for name, (a, b) in slices.items()}
    full = alive[:, -1]
    corr = float(np.corrcoef(pred_rew[full].sum(1), real_rew[full].sum(1))[0, 1])
    return {"abs_error": error, "return_correlation": corr, "states": int(full.sum())}


def _slices(dims: list[int]) -> list[slice]:
    edges = np.cumsum([0, *dims])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def run_seed(seed: int, transitions: int, train_steps: int, root: Path) -> list[dict]:
    data = root / f"data-{seed}"
    collect(ENV_ID, transitions, data, seed=seed, num_envs=16)
    rows = []
    for mask in (False, True):
        run = root / f"wm-{seed}-{'mask' if mask else 'plain'}"
        cfg = WMTrainConfig(env_id=ENV_ID, data=str(data), seed=seed, steps=train_steps, mask_interventions=mask)
        cfg.eval_every = train_steps
        metrics = train_world_model(cfg, run, progress=False)
        rows.append(
            {
                "seed": seed,
                "mask_interventions": mask,
                "f1": metrics["f1"],
                "shd": metrics["shd"],
                **clean_rollouts(run, seed),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="4,000 transitions, 500 training steps, seed 0")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.transitions, args.train_steps = [0], 4000, 500
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            results += run_seed(seed, args.transitions, args.train_steps, Path(tmp))
    payload = {
        "benchmark": "intervention_masking",
        "env_id": ENV_ID,
        "transitions": args.transitions,
        "train_steps": args.train_steps,
        "machine": {**machine_info(), "torch": torch.__version__},
        "results": results,
    }
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print("seed  masked    F1    SHD  ball err @1/5/10/20 steps     paddle(R) err @1/10   return corr")
        for r in results:
            ball = "/".join(f"{r['abs_error'][str(h)]['ball']:.2f}" for h in HORIZONS)
            pad = "/".join(f"{r['abs_error'][str(h)]['right_paddle']:.2f}" for h in (1, 10))
            print(
                f"{r['seed']:>4}  {str(r['mask_interventions']):>6}  {r['f1']:.3f}  {r['shd']:.3f}  {ball:<26}"
                f"  {pad:<20}  {r['return_correlation']:.2f}"
            )
    write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
