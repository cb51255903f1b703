"""World-model evaluation: prediction error and local-graph recovery, shared by training and ``cwm-rl wm-eval``.

All graph numbers come from :mod:`cwm_rl.causal` (headline: self-edges excluded, action column included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cwm_rl.causal import edge_frequency, global_graph_metrics, graph_metrics
from cwm_rl.data import TransitionWindows
from cwm_rl.models.world_model import consuming_step

_MIN_STD = 1e-6

SUMMARY_KEYS = (
    "prediction_mse",
    "open_loop_mse_1",
    "open_loop_mse_5",
    "open_loop_mse_10",
    "shd",
    "precision",
    "recall",
    "f1",
    "auroc",
    "shd_with_self",
    "f1_with_self",
)
"""The numbers a summary table shows (``cwm-rl wm-eval``, the comparison benchmark)."""


@dataclass
class Normalizer:
    """Per-dimension statistics: the model sees normalised observations and predicts normalised changes.

    A dimension whose change is constant in the data (Pusher2D's goal, any fixed property of an object) keeps
    raw units when normalised (no division by a zero spread), and :meth:`unnormalize_delta` returns its constant
    change exactly, whatever the model outputs there: otherwise a model's small residual output on a target that
    is always 0 becomes a drift of the fixed value in imagination (measured on Pusher2D: the goal moved about
    0.02 per imagined step, in a unit arena). ``delta_fixed`` marks those dimensions (``None`` in normalisers
    saved before it existed: they keep the old behaviour). ``obs_fixed`` marks the observation dimensions that had
    no spread (kept in raw units as inputs), so :meth:`release_fixed` can give both kinds their real scale once later
    data shows them vary.
    """

    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    delta_mean: torch.Tensor
    delta_std: torch.Tensor
    action_start: int = 0
    delta_fixed: torch.Tensor | None = None
    obs_fixed: torch.Tensor | None = None

    @classmethod
    def fit(cls, ds: TransitionWindows, window_indices: Sequence[int], action_start: int = 0) -> Normalizer:
        """Statistics of the transitions of the episodes that ``window_indices`` (training windows) come from."""
        episodes = np.unique(ds.window_episodes[np.asarray(window_indices, dtype=np.int64)])
        rows = np.concatenate(
            [np.arange(ds.episode_starts[e], ds.episode_starts[e] + ds.episode_lengths[e]) for e in episodes]
        )
        t = ds.transitions
        return cls.from_arrays(t["obs"][rows], t["next_obs"][rows], action_start)

    @classmethod
    def from_arrays(cls, obs: Any, next_obs: Any, action_start: int = 0) -> Normalizer:
        """Statistics of transitions ``obs (n, obs_dim)`` -> ``next_obs`` (numpy arrays or tensors)."""
        obs = torch.as_tensor(np.asarray(obs)).double()
        delta = torch.as_tensor(np.asarray(next_obs)).double() - obs

        def std(x: torch.Tensor) -> torch.Tensor:
            s = x.std(dim=0, unbiased=False)
            return torch.where(s > _MIN_STD, s, torch.ones_like(s)).float()  # constant dims keep raw units

        fixed = delta.std(dim=0, unbiased=False) <= _MIN_STD
        obs_fixed = obs.std(dim=0, unbiased=False) <= _MIN_STD
        return cls(
            obs.mean(0).float(), std(obs), delta.mean(0).float(), std(delta), int(action_start), fixed, obs_fixed
        )

    def release_fixed(self, obs: Any, next_obs: Any) -> list[int]:
        """Stop holding fixed the dimensions whose change is no longer constant in ``obs -> next_obs``; returns them.

        For a normaliser fitted on early data (an agent's seed steps) that later data can contradict. A released
        change dimension gets the mean and spread of its change in ``obs -> next_obs``, and an observation dimension
        that had no spread gets its mean and spread in ``obs``, so both enter the loss and the model on the same
        scale as the others. Kept in raw units instead (as before ``obs_fixed`` existed), a released dimension of
        Pusher2D's box (no contact in the seed steps) moves about 0.01 per step at a contact and not at all
        otherwise, so its squared error counted 1e-4 or less of a normalised dimension's, and its velocity inputs
        were about 1e-2 of the others' scale: the model had no reason to learn pushes. Rescaling them loses nothing
        the model learned: until now their targets were exactly 0 and their inputs constant (no gradient reached the
        weights that read them). Normalisers saved before ``obs_fixed`` existed rescale only the change dimensions.
        """
        if self.delta_fixed is None or len(obs) == 0:
            return []
        obs64 = np.asarray(obs, dtype=np.float64)
        delta = np.asarray(next_obs, dtype=np.float64) - obs64
        if self.obs_fixed is not None and bool(self.obs_fixed.any()):
            dims = self.obs_fixed.nonzero().flatten().numpy()
            spread = obs64[:, dims].std(0)
            varied = dims[spread > _MIN_STD]
            if len(varied):
                self.obs_fixed, self.obs_mean, self.obs_std = (
                    t.clone() for t in (self.obs_fixed, self.obs_mean, self.obs_std)
                )
                self.obs_fixed[varied] = False
                self.obs_mean[varied] = torch.as_tensor(obs64[:, varied].mean(0), dtype=torch.float32)
                self.obs_std[varied] = torch.as_tensor(obs64[:, varied].std(0), dtype=torch.float32)
        dims = self.delta_fixed.nonzero().flatten().numpy()
        if len(dims) == 0:
            return []
        moved = np.abs(delta[:, dims] - self.delta_mean.double().numpy()[dims]).max(0) > _MIN_STD
        released = dims[moved]
        if len(released):
            self.delta_fixed, self.delta_mean, self.delta_std = (
                t.clone() for t in (self.delta_fixed, self.delta_mean, self.delta_std)
            )
            self.delta_fixed[released] = False
            spread = delta[:, released].std(0)
            self.delta_mean[released] = torch.as_tensor(delta[:, released].mean(0), dtype=torch.float32)
            self.delta_std[released] = torch.as_tensor(np.where(spread > _MIN_STD, spread, 1.0), dtype=torch.float32)
        return released.tolist()

    def obs(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.obs_mean) / self.obs_std

    def delta(self, d: torch.Tensor) -> torch.Tensor:
        return (d - self.delta_mean) / self.delta_std

    def unnormalize_delta(self, d: torch.Tensor) -> torch.Tensor:
        """Raw changes from normalised ones; dimensions with a constant change in the data get exactly that."""
        raw = d * self.delta_std + self.delta_mean
        if self.delta_fixed is None:
            return raw
        return torch.where(self.delta_fixed, self.delta_mean, raw)

    def action(self, a: torch.Tensor) -> torch.Tensor:
        """Discrete actions are shifted to start at 0 (``Discrete(n, start)``); continuous ones pass through."""
        return a - self.action_start if not a.is_floating_point() else a

    def state(self) -> dict[str, Any]:
        return {
            "obs_mean": self.obs_mean,
            "obs_std": self.obs_std,
            "delta_mean": self.delta_mean,
            "delta_std": self.delta_std,
            "action_start": self.action_start,
            **({} if self.delta_fixed is None else {"delta_fixed": self.delta_fixed}),
            **({} if self.obs_fixed is None else {"obs_fixed": self.obs_fixed}),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Normalizer:
        return cls(**state)


@torch.no_grad()
def evaluate_teacher_forced(
    model: nn.Module, loader: Iterable[dict[str, torch.Tensor]], norm: Normalizer, oracle: bool = False
) -> dict[str, Any]:
    """One-step (teacher-forced) prediction error and local-graph recovery over ``loader``'s windows.

    Returns floats (``prediction_mse`` in normalised units, ``reward_mse``, ``termination_accuracy`` and, for
    models with a graph, every :func:`cwm_rl.causal.graph_metrics` number) plus ``_mean_scores`` and
    ``_true_frequency`` arrays for heatmaps.
    """
    model.eval()
    sq_err, rew_err, term_ok, count, steps = 0.0, 0.0, 0.0, 0, 0
    scores, truths = [], []
    for batch in loader:
        obs = norm.obs(batch["obs"])
        target = norm.delta(batch["next_obs"] - batch["obs"])
        pred = model(obs, norm.action(batch["action"]), batch["local_graph"] if oracle else None)
        sq_err += float(((pred.delta - target) ** 2).sum())
        count += target.numel()
        rew_err += float(((pred.reward - batch["reward"]) ** 2).sum())
        term_ok += float(((pred.termination_logit > 0) == batch["terminated"]).sum())
        steps += batch["reward"].numel()
        if pred.scores is not None:
            scores.append(pred.scores.flatten(0, 1))
            truths.append(batch["local_graph"].flatten(0, 1))
    if steps == 0:
        raise ValueError("evaluation got no windows")
    out: dict[str, Any] = {
        "prediction_mse": sq_err / count,
        "reward_mse": rew_err / steps,
        "termination_accuracy": term_ok / steps,
    }
    if scores:
        s, t = torch.cat(scores), torch.cat(truths)
        pred_graph = model.local_graph(s)
        out.update(graph_metrics(pred_graph, t, s))
        out.update(global_graph_metrics(pred_graph, t))
        out["edge_frequency"] = np.round(edge_frequency(pred_graph.numpy()), 4).tolist()  # the learned global graph
        out["true_edge_frequency"] = np.round(edge_frequency(t.numpy()), 4).tolist()
        out["_mean_scores"] = s.mean(0).numpy()
        out["_true_frequency"] = edge_frequency(t.numpy())
    return out


@torch.no_grad()
def evaluate_open_loop(
    model: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    norm: Normalizer,
    slot_dims: Sequence[int],
    slot_names: Sequence[str],
    horizons: Sequence[int] = (1, 5, 10),
    oracle: bool = False,
) -> dict[str, float]:
    """Open-loop prediction error: from a real state, roll the model's ``step`` on its own predictions with the
    real actions, and compare with the real observation ``k`` steps later.

    Errors are mean squared errors in normalised observation units, overall (``open_loop_mse_k``) and per slot
    (``open_loop_mse_k/<slot>``). Windows must be at least ``max(horizons)`` transitions long.
    """
    model.eval()
    horizon = max(horizons)
    bounds = np.cumsum([0, *slot_dims])
    sums = {k: torch.zeros(len(slot_dims), dtype=torch.float64) for k in horizons}
    counts = {k: 0 for k in horizons}
    for batch in loader:
        if batch["obs"].shape[1] < horizon:
            raise ValueError(f"open-loop evaluation to {horizon} steps needs windows of >= {horizon} transitions")
        b = batch["obs"].shape[0]
        state = model.initial_state(b)
        obs = batch["obs"][:, 0]
        for t in range(horizon):
            mask = batch["local_graph"][:, t] if oracle else None
            pred, state = consuming_step(model)(state, norm.obs(obs), norm.action(batch["action"][:, t]), mask)
            obs = obs + norm.unnormalize_delta(pred.delta)
            if t + 1 in sums:
                err = (norm.obs(obs) - norm.obs(batch["next_obs"][:, t])) ** 2  # (B, D)
                per_slot = torch.stack([err[:, lo:hi].mean(1) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
                sums[t + 1] += per_slot.sum(1).double()
                counts[t + 1] += b
    out: dict[str, float] = {}
    weights = torch.tensor(slot_dims, dtype=torch.float64) / sum(slot_dims)
    for k in horizons:
        per_slot = sums[k] / max(counts[k], 1)
        out[f"open_loop_mse_{k}"] = float((per_slot * weights).sum())
        for name, v in zip(slot_names, per_slot.tolist(), strict=True):
            out[f"open_loop_mse_{k}/{name}"] = v
    return out


def evaluate_windows(
    model: nn.Module,
    norm: Normalizer,
    ds: TransitionWindows,
    slot_dims: Sequence[int],
    slot_names: Sequence[str],
    horizons: Sequence[int] = (1, 5, 10),
    oracle: bool = False,
    subset: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Teacher-forced and open-loop numbers over the windows of ``ds`` (or the ``subset`` of them)."""
    from torch.utils.data import DataLoader, Subset

    part = Subset(ds, list(subset)) if subset is not None else ds
    loader = DataLoader(part, batch_size=64)
    out = evaluate_teacher_forced(model, loader, norm, oracle)
    out.update(evaluate_open_loop(model, loader, norm, slot_dims, slot_names, horizons, oracle))
    out["windows"] = len(part)
    return {k: v for k, v in out.items() if not k.startswith("_")}
