"""The slot world model: per-slot temporal mixing (SSM or causal attention) + sparse cross-slot attention.

The design of "Learning Local Causal World Models with State Space Models and Attention" (Petri, Asprino,
Gangemi, 2025): each slot is embedded separately; a temporal mixer runs over time **per slot** with weights shared
across slots (independent slot dynamics); then **cross-attention across slots** at each time step models the
interactions, with the action as an extra key/value token. The attention from child ``i`` to parent ``j`` is the
model's local causal graph of that step. Heads predict each slot's change (in normalised units), the reward and
the termination.

Two temporal mixers give the paper's comparison at equal structure:

* ``"ssm"`` — a Mamba block (:mod:`cwm_rl.models.ssm`), constant-cost recurrent ``step``;
* ``"attention"`` — causal self-attention over time (:mod:`cwm_rl.models.temporal`), a KV-cache ``step``.

Everything is batched as ``(B, T, n_slots, d)``; the mixer sees ``(B * n_slots, T, d)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.attention import SlotCrossAttention, graph_rollout
from cwm_rl.models.temporal import CausalSelfAttention

GRAPH_READOUTS = ("last", "mean", "rollout")


def matched_ffn_hidden(cfg: SlotModelConfig) -> int:
    """Feed-forward width that gives the attention mixer the parameter count of the SSM mixer of ``cfg``."""
    from cwm_rl.models.ssm import make_ssm_block

    ssm = sum(p.numel() for p in make_ssm_block(cfg.d_model, **(cfg.ssm_kwargs or {})).parameters())
    attention = sum(p.numel() for p in CausalSelfAttention(cfg.d_model, cfg.n_heads).parameters())
    d = cfg.d_model
    # A hidden unit costs 2 * d weights + 1 bias; the LayerNorm and the output bias cost 3 * d.
    return max(0, round((ssm - attention - 3 * d) / (2 * d + 1)))


def check_inputs(model: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> None:
    """One-line errors for inputs a world model cannot have been trained on: an observation of another width
    (another env's), a discrete action outside ``[0, n)`` or a continuous action of another width. Every model of
    :mod:`cwm_rl.models` calls it in ``forward`` and ``step``; it reads ``obs_dim``, ``action_kind`` and
    ``action_size``."""
    if obs.shape[-1] != model.obs_dim:
        raise InvalidArgumentError(
            f"observations have {obs.shape[-1]} features but this world model was built for {model.obs_dim}; "
            "pass observations of the env it was trained on (shape (..., obs_dim))"
        )
    if model.action_kind == "discrete":
        if action.numel() and (int(action.min()) < 0 or int(action.max()) >= model.action_size):
            raise InvalidArgumentError(
                f"discrete actions must be in [0, {model.action_size}) (shifted by the action space's start), "
                f"got values in [{int(action.min())}, {int(action.max())}]"
            )
    elif action.shape[-1:] != (model.action_size,):
        raise InvalidArgumentError(
            f"continuous actions must have {model.action_size} components, got shape {tuple(action.shape)}"
        )


def consuming_step(model: nn.Module) -> Callable[..., tuple[Any, Any]]:
    """``model.step_`` when the model has one (it may overwrite the state it is given), else ``model.step``: for
    rollout loops that never reuse a state once the next step has been taken."""
    return getattr(model, "step_", model.step)


class Prediction(NamedTuple):
    """Model outputs for each step ``t`` (predicting ``t + 1``), batched ``(B, T, ...)`` or ``(B, ...)``."""

    delta: torch.Tensor  # (..., obs_dim) predicted change of the observation, normalised units
    reward: torch.Tensor  # (...,)
    termination_logit: torch.Tensor  # (...,)
    scores: torch.Tensor | None  # (..., n, n + 1) edge scores in [0, 1]; None for models without a graph
    penalty: torch.Tensor  # () sparsity penalty


@dataclass
class SlotModelConfig:
    """Architecture of a :class:`SlotWorldModel`.

    Attributes:
        d_model: width of slot embeddings.
        n_layers: blocks of (temporal mixer per slot, cross-slot attention). Default 1: with two, information
            can reach a child through the first layer's edges, so the last layer's graph is not the end-to-end
            one (Pong F1 0.09 with two hard layers, 0.83 with one, same budget).
        n_heads: heads of the cross-slot attention (and of the temporal attention).
        temporal: ``"ssm"`` or ``"attention"``.
        attention: cross-slot attention kind: ``"softmax"``, ``"sigmoid"`` or ``"hard"``. Default ``"hard"``
            (see docs/design_notes.md, "Reading a graph from attention"): soft sigmoid gates can shrink together
            while the output projection grows to compensate, so they closed on every edge and read as an empty
            graph (Pong F1 0.08); hard 0/1 gates cannot be compensated (F1 0.90 with one layer).
        graph_readout: how per-layer scores become the graph: ``"last"`` layer, ``"mean"`` or ``"rollout"``
            (the product across layers).
        mlp_ratio: hidden width of each block's MLP, as a multiple of ``d_model``.
        mlp_layers: hidden layers of each block's MLP (the per-slot network after the cross-slot attention).
            Measured on Pusher2D (d_model 64, 5,000 updates, ``l1``): with one layer the slot SSM never learned
            the push, while three layers planned it with the true reward at -34.0 with every gate open, and at -17.2
            after a dense warm-up. The MLP baseline scored -42.8. See docs/design_notes.md, "Pusher2D, session 14".
            Not the default yet: it is untested in the agents and on the other envs.
        ssm_kwargs: extra arguments of the SSM block (``d_state``, ``expand``, ...).
        resample_closed_action: ``"hard"`` gates only: a closed action edge carries another sample's action, so
            a gate cannot say "the action was no-op" by closing (:class:`SlotCrossAttention`).
        gate_init: initial edge logit of the gated kinds (:class:`SlotCrossAttention`); ``wm-train`` uses 1.0.
        gate_penalty: ``"sigmoid"`` and ``"hard"`` gates: the form of the sparsity penalty. ``"prob"`` (default),
            the mean gate probability (the expected share of open edges); ``"logit"``, the mean ``-log(1 - p)``,
            whose gradient ``p`` keeps pushing a gate that is confidently open where ``"prob"``'s ``p (1 - p)``
            vanishes. Measured on Interventional Pong (d_model 32, 3,000 steps, seed 2, whose gates prune slowest):
            ``"prob"`` at weight 0.02 F1 0.891; ``"logit"`` at 0.02 closed true edges (F1 0.70, recall 0.58), at
            0.005 it reached F1 0.90 at 1,000 steps and then lost precision as training went on (0.85 at 3,000).
        closed_edges: ``"hard"`` gates: ``"keyed"`` (default) or ``"constant"``, whether a closed parent's key still
            shifts the softmax shares of the open edges (a side channel) or enters with a constant logit
            (:class:`~cwm_rl.models.attention.SlotCrossAttention`).
        temporal_ffn: hidden width of the feed-forward network in the ``"attention"`` temporal mixer. ``-1`` (the
            default) sizes it so the model has the parameter count of its ``"ssm"`` twin (the paper's
            equivalent Transformer); ``0`` means attention only.
    """

    d_model: int = 64
    n_layers: int = 1
    n_heads: int = 4
    temporal: str = "ssm"
    attention: str = "hard"
    graph_readout: str = "last"
    mlp_ratio: float = 2.0
    mlp_layers: int = 1
    ssm_kwargs: dict[str, Any] | None = None
    temporal_ffn: int = -1
    resample_closed_action: bool = True
    gate_penalty: str = "prob"
    gate_init: float = 3.0
    closed_edges: str = "keyed"


class _Block(nn.Module):
    """Pre-norm residual block: temporal mixer per slot, cross-slot attention, MLP."""

    def __init__(self, cfg: SlotModelConfig, make_mixer: Callable[[], nn.Module]) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_t = nn.LayerNorm(d)
        self.mixer = make_mixer()
        self.norm_x = nn.LayerNorm(d)
        self.cross = SlotCrossAttention(
            d,
            cfg.n_heads,
            kind=cfg.attention,
            resample_closed_action=cfg.resample_closed_action,
            gate_penalty=cfg.gate_penalty,
            gate_init=cfg.gate_init,
            closed_edges=cfg.closed_edges,
        )
        self.norm_m = nn.LayerNorm(d)
        hidden = int(cfg.mlp_ratio * d)
        if cfg.mlp_layers < 1:
            raise InvalidArgumentError(f"mlp_layers must be at least 1, got {cfg.mlp_layers}")
        layers: list[nn.Module] = []
        width = d
        for _ in range(cfg.mlp_layers):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, d))

    def interact(
        self, h: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-slot attention and MLP on ``h (..., n, d)`` after the temporal mixer."""
        att = self.cross(self.norm_x(h), action, mask)
        h = h + att.out
        h = h + self.mlp(self.norm_m(h))
        return h, att.scores, att.penalty


class SlotWorldModel(nn.Module):
    """Object-slot world model with a local causal graph per transition.

    Args:
        slot_dims: width of each slot in the flat observation, in order (``env.slot_slices``).
        action_spec: ``("discrete", n)`` or ``("continuous", dim)``.
        config: the architecture.
        ground_truth_mask: if True the model is the **oracle**: ``forward``/``step`` take the env's local graph and
            it gates the cross-slot attention (the upper bound on what a learned graph can give).
    """

    def __init__(
        self,
        slot_dims: Sequence[int],
        action_spec: tuple[str, int],
        config: SlotModelConfig | None = None,
        ground_truth_mask: bool = False,
    ) -> None:
        super().__init__()
        cfg = config or SlotModelConfig()
        if cfg.graph_readout not in GRAPH_READOUTS:
            raise InvalidArgumentError(f"graph_readout {cfg.graph_readout!r} is not one of {GRAPH_READOUTS}")
        if cfg.temporal not in ("ssm", "attention"):
            raise InvalidArgumentError(f"temporal mixer {cfg.temporal!r} is not 'ssm' or 'attention'")
        self.config = cfg
        self.slot_dims = tuple(int(w) for w in slot_dims)
        self.n_slots = len(self.slot_dims)
        self.obs_dim = sum(self.slot_dims)
        self.action_kind, self.action_size = action_spec
        self.ground_truth_mask = ground_truth_mask
        d = cfg.d_model

        self.slot_in = nn.ModuleList(nn.Linear(w, d) for w in self.slot_dims)  # each slot embedded separately
        self.slot_id = nn.Parameter(torch.randn(self.n_slots, d) * 0.02)
        if self.action_kind == "discrete":
            self.action_in: nn.Module = nn.Embedding(self.action_size, d)
        elif self.action_kind == "continuous":
            self.action_in = nn.Linear(self.action_size, d)
        else:
            raise InvalidArgumentError(f"action kind {self.action_kind!r} is not 'discrete' or 'continuous'")
        self.blocks = nn.ModuleList(_Block(cfg, self._mixer_factory(cfg)) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d)
        self.slot_out = nn.ModuleList(nn.Linear(d, w) for w in self.slot_dims)
        self.reward_head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.term_head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))

    @staticmethod
    def _mixer_factory(cfg: SlotModelConfig) -> Callable[[], nn.Module]:
        if cfg.temporal == "attention":
            hidden = cfg.temporal_ffn if cfg.temporal_ffn >= 0 else matched_ffn_hidden(cfg)
            return lambda: CausalSelfAttention(cfg.d_model, cfg.n_heads, ffn_hidden=hidden)
        from cwm_rl.models.ssm import make_ssm_block

        return lambda: make_ssm_block(cfg.d_model, **(cfg.ssm_kwargs or {}))

    # ------------------------------------------------------------------ pieces shared by forward and step
    def _embed(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (..., obs_dim)`` -> slots ``(..., n, d)``; action -> ``(..., d)``."""
        check_inputs(self, obs, action)
        parts = torch.split(obs, self.slot_dims, dim=-1)
        slots = torch.stack([enc(p) for enc, p in zip(self.slot_in, parts, strict=True)], dim=-2) + self.slot_id
        if self.action_kind == "discrete":
            act = self.action_in(action.long())
        else:
            act = self.action_in(action.to(obs.dtype))
        return slots, act

    def _heads(self, h: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.norm_out(h)
        delta = torch.cat([head(h[..., i, :]) for i, head in enumerate(self.slot_out)], dim=-1)
        pooled = torch.cat([h.mean(dim=-2), act], dim=-1)
        return delta, self.reward_head(pooled).squeeze(-1), self.term_head(pooled).squeeze(-1)

    def _readout(self, per_layer: list[torch.Tensor]) -> torch.Tensor:
        if self.config.graph_readout == "last":
            return per_layer[-1]
        if self.config.graph_readout == "mean":
            return torch.stack(per_layer).mean(0)
        return graph_rollout(per_layer)

    def _check_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        if self.ground_truth_mask and mask is None:
            raise ValueError("the oracle model needs the ground-truth local graph (mask=...)")
        return mask.bool() if (mask is not None and self.ground_truth_mask) else None

    # ------------------------------------------------------------------ the world-model contract
    def forward(self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None) -> Prediction:
        """Teacher-forced prediction for every step of ``obs (B, T, obs_dim)``, ``action (B, T[, A])``.

        ``obs`` should already be normalised (the trainer owns the statistics); ``mask (B, T, n, n+1)`` is the
        env's local graph, used only by the oracle.
        """
        mask = self._check_mask(mask)
        slots, act = self._embed(obs, action)  # (B, T, n, d), (B, T, d)
        b, t, n, d = slots.shape
        h = slots
        scores, penalties = [], []
        for block in self.blocks:
            seq = block.norm_t(h).permute(0, 2, 1, 3).reshape(b * n, t, d)  # per-slot sequences
            h = h + block.mixer(seq).reshape(b, n, t, d).permute(0, 2, 1, 3)
            h, s, p = block.interact(h, act, mask)
            scores.append(s)
            penalties.append(p)
        delta, reward, term = self._heads(h, act)
        return Prediction(delta, reward, term, self._readout(scores), torch.stack(penalties).mean())

    def initial_state(self, batch: int) -> list[Any]:
        """Recurrent state for ``batch`` imagined trajectories: one mixer state per block."""
        p = next(self.parameters())
        return [blk.mixer.initial_state(batch * self.n_slots, device=p.device, dtype=p.dtype) for blk in self.blocks]

    def step(
        self,
        state: list[Any],
        obs: torch.Tensor,
        action: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        inplace: bool = False,
    ) -> tuple[Prediction, list[Any]]:
        """One step from ``obs (B, obs_dim)`` and ``action (B[, A])``; returns the prediction and the new state.

        ``inplace=True`` lets the temporal mixers overwrite ``state`` instead of allocating a new one (see
        :meth:`step_`); ``state`` must not be used again.
        """
        mask = self._check_mask(mask)
        slots, act = self._embed(obs, action)  # (B, n, d), (B, d)
        b, n, d = slots.shape
        h = slots
        scores, penalties, new_state = [], [], []
        for block, s in zip(self.blocks, state, strict=True):
            y, s = block.mixer.step(block.norm_t(h).reshape(b * n, d), s, inplace=inplace)
            new_state.append(s)
            h = h + y.reshape(b, n, d)
            h, sc, p = block.interact(h, act, mask)
            scores.append(sc)
            penalties.append(p)
        delta, reward, term = self._heads(h, act)
        return Prediction(delta, reward, term, self._readout(scores), torch.stack(penalties).mean()), new_state

    def step_(
        self, state: list[Any], obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[Prediction, list[Any]]:
        """:meth:`step` that consumes ``state``: its tensors are updated in place and returned as the new state.

        The optional in-place member of the world-model contract (PyTorch's trailing-underscore convention): a
        rollout loop that drops each state after the next step calls it through :func:`consuming_step`. Same
        numbers as :meth:`step`; on CPU the SSM's state update is memory-bound, and a fresh state per step cost
        more than the update (an MPC decision on Pong, slot SSM, population 64 x 8 envs: see docs/design_notes.md).
        """
        return self.step(state, obs, action, mask, inplace=True)

    def local_graph(self, scores: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Thresholded bool graph (same layout as the env's) from edge scores."""
        if threshold is None:
            threshold = self.blocks[-1].cross.default_threshold(self.n_slots + 1)
        return scores > threshold
