"""World-model training: ``cwm-rl wm-train``.

Reads a dataset written by ``cwm-rl collect``, trains one of the world models of :mod:`cwm_rl.models` on
fixed-length windows (teacher-forced), and writes a run directory:

* ``config.yaml`` — the full resolved :class:`WMTrainConfig` (``--config RUN_DIR/config.yaml`` re-runs it);
* ``checkpoint.pt`` — model weights, normaliser and manifest, written atomically at every evaluation;
* TensorBoard events — ``losses/*``, ``val/*`` (prediction error, SHD, F1, AUROC) and ``graphs/*`` heatmaps of the
  predicted vs the true local graph;
* ``metrics.json`` — the final validation metrics.

Targets are normalised: the model sees ``(obs - mean) / std`` and predicts the change ``next_obs - obs`` in units
of its own per-dimension standard deviation, so slots with large and small ranges weigh alike.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from cwm_rl.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from cwm_rl.config import ConfigError, load_yaml, save_yaml, to_dict
from cwm_rl.data import TransitionWindows
from cwm_rl.models.attention import gates_open
from cwm_rl.models.factory import MODEL_KINDS, make_world_model
from cwm_rl.models.world_model import SlotModelConfig
from cwm_rl.wm_evaluation import Normalizer, evaluate_teacher_forced, evaluate_windows

LR_SCHEDULES = ("constant", "cosine")
PREDICTION_LOSSES = ("mse", "l1")


@dataclass
class WMTrainConfig:
    """Everything a world-model training run depends on.

    Attributes:
        env_id: the env the data comes from (checked against the dataset).
        model: ``slot-ssm``, ``slot-transformer``, ``mlp`` or ``oracle``.
        data: dataset directory (``cwm-rl collect --out``).
        seed: seeds torch, the split and the batch order; a CPU run is reproduced exactly.
        window: transitions per training window.
        batch_size: windows per gradient step.
        steps: gradient steps (3,000: on Interventional Pong the graph F1 of the three seeds went from 0.75-0.91 at
            1,500 steps to 0.89-0.91; about 1-2 minutes on 2 cores at the default size).
        lr: AdamW learning rate; ``weight_decay`` its decay.
        lr_schedule: ``constant`` (default), or ``cosine`` (PyTorch's ``CosineAnnealingLR`` from ``lr`` down to
            ``lr / 10`` over ``steps``). Not the default because it helped one seed and hurt another: on
            Interventional Pong, d_model 32, 3,000 steps, graph F1 went 0.894 -> 0.908 for seed 0 but 0.863 -> 0.713
            for seed 2, whose gates were still pruning when the learning rate fell (docs/design_notes.md).
        sparsity_weight: weight of the cross-slot attention's sparsity penalty (0.02: on Pong with hard gates, 0.05
            and 0.5 closed the action edge (F1 0.76, 0.32), 0.02 kept every true edge).
        dense_warmup: the first ``dense_warmup`` gradient steps run with every cross-slot gate open and no
            sparsity penalty, so the slot networks learn to use each parent before the gates prune (0: none). On
            Pusher2D the prediction loss shut the ``box <- agent`` edge before the box's network had learned the push
            (docs/design_notes.md, "Pusher2D, session 14").
        reward_weight: weight of the reward loss; ``termination_weight`` of the termination loss.
        prediction_loss: ``mse`` (default) or ``l1``, the error of the normalised state changes. A squared error
            fits the conditional mean: where the model cannot yet tell whether an event happens (Pusher2D's
            contacts), it predicts a fraction of the event's change every time, and in imagination that phantom
            motion compounds. The absolute error fits the conditional median, which is "no change" while the event
            is the rarer outcome (measured in docs/design_notes.md, "Pusher2D, session 12").
        mask_interventions: leave a slot out of the prediction loss in the transitions where it was intervened on
            (``intervened`` in the data). An exogenous intervention replaces the slot's mechanism with a random
            value, which no model can predict from the past; fitting it anyway pulls every prediction towards the
            mean of the random values (on Interventional Pong, 5% ball resets biased the one-step ball-position
            prediction by about 0.6 court units, see docs/design_notes.md). Masked, the model learns the mechanism,
            which is what imagination and planning need.
        val_fraction: share of episodes held out for validation.
        eval_every: gradient steps between evaluations (and checkpoints).
        threads: torch CPU threads.
        slot: the slot models' architecture (d_model 32 for ``wm-train``, as the agents use: on Interventional
            Pong with ``mask_interventions``, seed 0, 3,000 steps, d_model 32 reached graph F1 0.894 and one-step MSE
            0.447 in 93 s; d_model 64 0.873 and 0.473 in 136 s, and 0.85-0.88 up to 6,000 steps), and gates that
            start at ``gate_init=1.0`` (p = 0.73) instead of 3.0 (p = 0.95): the sparsity penalty then prunes the
            unused edges within about 1,000 steps instead of 3,000 or more (same data, one thread, graph F1 at
            3,000 steps 0.921 vs 0.817 for seed 2, the slowest pruner; seeds 0 and 1 reached 0.94 / 0.93 by 1,500
            steps; docs/design_notes.md). The agents keep 3.0 (not measured there yet).
        mlp_hidden: hidden width of the MLP baseline; ``mlp_layers`` its depth.
    """

    env_id: str = ""
    model: str = "slot-ssm"
    data: str = ""
    seed: int = 0
    window: int = 16
    batch_size: int = 32
    steps: int = 3000
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    sparsity_weight: float = 0.02
    dense_warmup: int = 0
    reward_weight: float = 1.0
    prediction_loss: str = "mse"
    termination_weight: float = 0.1
    mask_interventions: bool = True
    val_fraction: float = 0.1
    eval_every: int = 500
    threads: int = 2
    slot: SlotModelConfig = field(default_factory=lambda: SlotModelConfig(d_model=32, gate_init=1.0))
    mlp_hidden: int = 256
    mlp_layers: int = 3


def check_config(cfg: WMTrainConfig) -> None:
    """Reject values that cannot work, one line each."""
    if cfg.model not in MODEL_KINDS:
        raise ConfigError(f"model={cfg.model!r} is not one of {MODEL_KINDS}")
    for name in ("window", "batch_size", "steps", "eval_every", "threads", "mlp_hidden", "mlp_layers"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a positive integer")
    if cfg.dense_warmup < 0:
        raise ConfigError(f"dense_warmup={cfg.dense_warmup} must be an integer >= 0")
    for name in ("lr", "sparsity_weight", "reward_weight", "termination_weight", "weight_decay"):
        if getattr(cfg, name) < 0 or not np.isfinite(getattr(cfg, name)):
            raise ConfigError(f"{name}={getattr(cfg, name)} must be a finite number >= 0")
    if cfg.prediction_loss not in PREDICTION_LOSSES:
        raise ConfigError(f"prediction_loss={cfg.prediction_loss!r} is not one of {PREDICTION_LOSSES}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule={cfg.lr_schedule!r} is not one of {LR_SCHEDULES}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction={cfg.val_fraction} must be in (0, 1)")
    if not cfg.data:
        raise ConfigError("no dataset given: pass --data DIR (written by `cwm-rl collect`)")


def action_spec_of(meta: dict[str, Any]) -> tuple[str, int]:
    """``("discrete", n)`` or ``("continuous", dim)`` from a dataset's action-space description."""
    space = meta["action_space"]
    if space["kind"] == "discrete":
        return ("discrete", int(space["n"]))
    return ("continuous", int(np.prod(space["shape"])))


def split_by_episode(ds: TransitionWindows, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Hold out whole episodes (no window of a validation episode is seen in training)."""
    episodes = ds.window_episodes
    unique = np.unique(episodes)
    if len(unique) < 2:
        raise ConfigError(f"the dataset has {len(unique)} usable episode(s); collect more to hold some out")
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(val_fraction * len(unique)))), len(unique) - 1)
    val_eps = rng.choice(unique, size=n_val, replace=False)
    is_val = np.isin(episodes, val_eps)
    return Subset(ds, np.flatnonzero(~is_val).tolist()), Subset(ds, np.flatnonzero(is_val).tolist())


def world_model_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    norm: Normalizer,
    cfg: WMTrainConfig,
    slot_dims: Sequence[int] | None = None,
    dense: bool = False,
):
    """Total loss and its parts for one batch of windows.

    ``dense=True`` (a dense warm-up step, ``cfg.dense_warmup``) runs the model with every gate open
    (:func:`~cwm_rl.models.attention.gates_open`) and leaves the sparsity penalty out of the total (it is still
    reported).

    With ``cfg.mask_interventions`` (and ``slot_dims`` and ``batch["intervened"]`` given) the prediction loss is the
    mean squared error over the slots that were *not* intervened on in each transition; see
    :class:`WMTrainConfig`.
    """
    obs = norm.obs(batch["obs"])
    target = norm.delta(batch["next_obs"] - batch["obs"])
    mask = batch["local_graph"] if cfg.model == "oracle" else None
    with gates_open(model) if dense else contextlib.nullcontext():
        pred = model(obs, norm.action(batch["action"]), mask)
    kind = cfg.prediction_loss
    if cfg.mask_interventions and slot_dims is not None and "intervened" in batch:
        prediction = mechanism_loss(pred.delta, target, batch["intervened"], slot_dims, kind)
    else:
        prediction = mechanism_loss(pred.delta, target, None, None, kind)
    parts = {
        "prediction": prediction,
        "reward": F.mse_loss(pred.reward, batch["reward"]),
        "termination": F.binary_cross_entropy_with_logits(pred.termination_logit, batch["terminated"].float()),
        "sparsity": pred.penalty,
    }
    total = (
        parts["prediction"]
        + cfg.reward_weight * parts["reward"]
        + cfg.termination_weight * parts["termination"]
        + (0.0 if dense else cfg.sparsity_weight) * parts["sparsity"]
    )
    return total, parts


def make_optimizer(
    model: nn.Module, cfg: WMTrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """AdamW and, for ``lr_schedule="cosine"``, its cosine decay to ``lr / 10`` over ``cfg.steps`` steps."""
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "constant":
        return optim, None
    return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=cfg.steps, eta_min=cfg.lr / 10)


def mechanism_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    intervened: torch.Tensor | None,
    slot_dims: Sequence[int] | None,
    kind: str = "mse",
) -> torch.Tensor:
    """Mean squared (``kind="mse"``) or absolute (``"l1"``) error of ``pred`` vs ``target`` ``(..., obs_dim)`` over
    the entries of slots not intervened on.

    ``intervened`` is ``(..., n_slots)`` bool; each slot's flag covers its ``slot_dims`` entries (``None``: every
    entry counts). If every slot of the batch was intervened on, the loss is 0 (with a gradient), not NaN.
    """
    if kind not in PREDICTION_LOSSES:
        raise ConfigError(f"prediction_loss={kind!r} is not one of {PREDICTION_LOSSES}")
    error = (pred - target).abs() if kind == "l1" else (pred - target) ** 2
    if intervened is None:
        return error.mean()
    keep = (~intervened.bool()).repeat_interleave(torch.as_tensor(list(slot_dims)), dim=-1).to(pred.dtype)
    return (error * keep).sum() / keep.sum().clamp_min(1.0)


def train_world_model(cfg: WMTrainConfig, run_dir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and checkpoint; returns the final metrics (also in ``RUN_DIR/metrics.json``)."""
    check_config(cfg)
    run = Path(run_dir)
    if (run / "config.yaml").exists():
        raise ConfigError(f"run directory {str(run)!r} already holds a run; choose a new --run-dir")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    ds = TransitionWindows(cfg.data, cfg.window, env_id=cfg.env_id or None)  # bad data fails before any write
    cfg.env_id = ds.env_id
    slot_dims = [s.stop - s.start for s in ds.slot_slices.values()]
    action_spec = action_spec_of(ds.meta)
    # a bad architecture (``--set slot.attention=...``) fails here, before any write
    model = make_world_model(cfg.model, slot_dims, action_spec, cfg.slot, cfg.mlp_hidden, cfg.mlp_layers)
    run.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, run / "config.yaml")
    train_set, val_set = split_by_episode(ds, cfg.val_fraction, cfg.seed)
    norm = Normalizer.fit(ds, [int(i) for i in train_set.indices], action_start=ds.meta["action_space"].get("start", 0))
    optim, schedule = make_optimizer(model, cfg)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(train_set) > cfg.batch_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    # Its own generator: iterating a DataLoader without one draws a seed from torch's global RNG, which would make
    # the training run (its Gumbel noise) depend on how often it is evaluated.
    val_loader = DataLoader(val_set, batch_size=max(cfg.batch_size, 64), generator=torch.Generator())
    manifest = {"kind": "world_model", "env_id": ds.env_id, "model": cfg.model, "config": to_dict(cfg)}
    writer = _summary_writer(run)

    from tqdm.auto import tqdm

    # disable=None: a bar on terminals only, so logs and pipes stay clean.
    bar = tqdm(total=cfg.steps, desc=f"wm-train {cfg.model}", disable=None if progress else True, leave=False)
    step, start, metrics = 0, time.perf_counter(), {}
    model.train()
    while step < cfg.steps:
        for batch in loader:
            loss, parts = world_model_loss(model, batch, norm, cfg, slot_dims, dense=step < cfg.dense_warmup)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}; lower lr (now {cfg.lr})")
            optim.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            if schedule is not None:
                schedule.step()
            step += 1
            if writer:
                writer.add_scalar("losses/total", loss.item(), step)
                for k, v in parts.items():
                    writer.add_scalar(f"losses/{k}", v.item(), step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % cfg.eval_every == 0 or step == cfg.steps:
                metrics = evaluate_teacher_forced(model, val_loader, norm, cfg.model == "oracle")
                metrics.update(step=step, train_loss=loss.item(), wall_time_s=time.perf_counter() - start)
                _log_eval(writer, metrics, step, ds.slot_names)
                model.train()
                save_checkpoint(
                    run / "checkpoint.pt",
                    {
                        "model_state": model.state_dict(),
                        "normalizer": norm.state(),
                        "slot_dims": slot_dims,
                        "action_spec": list(action_spec),
                        "slot_names": list(ds.slot_names),
                    },
                    {**manifest, "step": step},
                )
            if step >= cfg.steps:
                break
    bar.close()
    if writer:
        writer.close()
    if "_mean_scores" in metrics:  # the learned vs true graph of the final evaluation, as a picture
        from cwm_rl.plots import graph_heatmaps, save_figure

        fig = graph_heatmaps(
            metrics["_mean_scores"],
            metrics["_true_frequency"],
            ds.slot_names,
            title=f"{cfg.model} on {ds.env_id}, step {step}",
        )
        save_figure(fig, run / "graph.png")
    final = {k: v for k, v in metrics.items() if not k.startswith("_")}
    final.update(env_id=ds.env_id, model=cfg.model, seed=cfg.seed, parameters=_n_params(model))
    deterministic = {k: v for k, v in final.items() if k != "wall_time_s"}
    atomic_write_json(run / "metrics.json", deterministic, sort_keys=True)
    return final


def load_run(run_dir: str | os.PathLike[str]) -> tuple[WMTrainConfig, nn.Module, Normalizer, dict[str, Any]]:
    """Rebuild a trained world model from its run directory (config.yaml + checkpoint.pt)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run directory {str(run)!r} does not exist; pass the --run-dir of a `cwm-rl wm-train` run")
    agent_files = ("agent.pt", "agent.zip", "agent.json", "progress.json")  # what `cwm-rl train` writes
    if not (run / "checkpoint.pt").is_file() and any((run / name).is_file() for name in agent_files):
        raise ConfigError(
            f"{str(run)!r} is an agent run (`cwm-rl train`), not a world-model run; use `cwm-rl eval {run}`"
        )
    cfg = load_yaml(WMTrainConfig, run / "config.yaml")
    ckpt = load_checkpoint(
        run / "checkpoint.pt", expect={"kind": "world_model", "env_id": cfg.env_id, "model": cfg.model}
    )
    action_spec = (ckpt["action_spec"][0], int(ckpt["action_spec"][1]))
    model = make_world_model(cfg.model, ckpt["slot_dims"], action_spec, cfg.slot, cfg.mlp_hidden, cfg.mlp_layers)
    model.load_state_dict(ckpt["model_state"])
    return cfg, model, Normalizer.from_state(ckpt["normalizer"]), ckpt


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    ood_steps: int = 2000,
    horizons: tuple[int, ...] = (1, 5, 10),
) -> dict[str, Any]:
    """``cwm-rl wm-eval``: prediction error at 1/5/10 open-loop steps and local-graph recovery, in distribution
    (the run's held-out episodes, or all of ``data``) and on the env's ``-OOD-`` twin (freshly collected)."""
    import tempfile

    import gymnasium as gym

    from cwm_rl.data import collect

    cfg, model, norm, ckpt = load_run(run_dir)
    torch.set_num_threads(cfg.threads)
    window = max(max(horizons), cfg.window)
    slot_dims, slot_names = ckpt["slot_dims"], ckpt["slot_names"]
    oracle = cfg.model == "oracle"

    def evaluate(ds: TransitionWindows, subset: list[int] | None) -> dict[str, Any]:
        return evaluate_windows(model, norm, ds, slot_dims, slot_names, horizons, oracle, subset)

    results: dict[str, Any] = {"env_id": cfg.env_id, "model": cfg.model, "step": ckpt["manifest"]["step"]}
    ds = TransitionWindows(data or cfg.data, window, stride=window, env_id=cfg.env_id)
    subset = None if data else [int(i) for i in split_by_episode(ds, cfg.val_fraction, cfg.seed)[1].indices]
    results["in_distribution"] = evaluate(ds, subset)
    ood_id = cfg.env_id.replace("-v", "-OOD-v", 1) if "-OOD-" not in cfg.env_id else None
    if ood_id and ood_id in gym.registry and ood_steps > 0:
        with tempfile.TemporaryDirectory() as tmp:
            horizon = ds.meta.get("max_episode_steps")
            collect(
                ood_id,
                ood_steps,
                Path(tmp) / "ood",
                seed=cfg.seed + 10_000,
                num_envs=16,
                max_episode_steps=horizon,
                env_kwargs=ds.meta.get("env_kwargs") or None,
            )
            results["ood"] = evaluate(TransitionWindows(Path(tmp) / "ood", window, stride=window), None)
            results["ood"]["env_id"] = ood_id
    atomic_write_json(Path(run_dir) / "eval.json", results, sort_keys=True)
    return results


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _summary_writer(run: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run))


def _log_eval(writer, metrics: dict[str, Any], step: int, slot_names) -> None:
    if writer is None:
        return
    for k, v in metrics.items():
        if isinstance(v, float) and np.isfinite(v) and not k.startswith("_"):
            writer.add_scalar(f"val/{k}", v, step)
    if "_mean_scores" in metrics:
        from cwm_rl.plots import graph_heatmaps

        fig = graph_heatmaps(metrics["_mean_scores"], metrics["_true_frequency"], slot_names)
        writer.add_figure("graphs/predicted_vs_true", fig, step)
