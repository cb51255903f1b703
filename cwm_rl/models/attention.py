"""Cross-slot attention whose weights are read as the local causal graph of a transition.

At each time step every slot (a *child*, the query) attends to every slot and to the action token (the *parents*,
keys and values). The attention from child ``i`` to parent ``j`` is the model's score for the edge ``j -> i`` in
this transition, in the env's layout ``(n_slots, n_slots + 1)`` with the action last.

Soft attention is known to give unreliable graphs: a softmax spreads mass over every key and its weights sum to
one, so an L1 penalty on them is a constant. Hence three kinds, selected by ``kind``:

* ``"softmax"`` — standard multi-head attention; sparsity is an **entropy** penalty on each child's attention row
  (low entropy = few parents). Graph score: head-averaged weight.
* ``"sigmoid"`` — each edge has its own soft gate ``sigmoid(score)``; values are mixed by the gates and normalised
  by the number of parents plus one; sparsity is the **L1** of the gates.
* ``"hard"`` — SPARTAN-style (Lei et al. 2025) hard edges: each edge is a Bernoulli(sigmoid(score)) sample drawn
  with the Gumbel-sigmoid trick and a straight-through estimator in training (0/1 in the forward pass, so a cut
  edge really stops information flow), thresholded at 0.5 in evaluation. Sparsity: the expected number of edges
  (mean gate probability). The gate multiplies its edge's softmax weight *after* the softmax (no
  renormalisation over the open parents), so a lone open edge still gets a gradient; see :meth:`_hard_messages`.

For the gated kinds ``gate_penalty="logit"`` replaces the mean gate probability by the mean ``-log(1 - p)``
(``softplus`` of the edge logit), whose gradient does not vanish on a saturated open gate
(:class:`~cwm_rl.models.world_model.SlotModelConfig` has the measurements).

A gated model can pass information *through the gate itself*: a gate that closes exactly when the action is
"no-op" tells the child "the action was no-op" without any message. For the action column of ``"hard"`` gates,
``resample_closed_action`` (default on) therefore gives a closed action edge another sample's action in place of
this one's (a random batch permutation in training, a fixed roll of the batch in evaluation), so closing it hides
which action was taken. Slot parents are not resampled: there "closed" legitimately says "this parent's value is
not in the range where it matters" (a ball far from the goal does not change the score).

A ground-truth mask (the env's ``info["local_graph"]``) can gate any kind: that is the oracle model's upper bound.

Outside training, :attr:`SlotCrossAttention.edge_mode` says how the learned graph gates the messages (the model's
imagination; :func:`edge_mode` sets it on a whole model for a block of code):

* ``"native"`` (default): each kind as it was trained to run: ``"hard"`` thresholded 0/1 gates, ``"sigmoid"`` soft
  gates, ``"softmax"`` plain attention;
* ``"learned"``: the thresholded learned graph gates every kind: an edge at or below the threshold carries nothing
  (``"softmax"``: those weights are dropped and the rest renormalised; ``"sigmoid"``: 0/1 gates);
* ``"soft"``: no thresholding: ``"hard"`` gates are replaced by their probabilities, the others run natively.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from cwm_rl.errors import InvalidArgumentError

KINDS = ("softmax", "sigmoid", "hard")
GATE_PENALTIES = ("prob", "logit")
CLOSED_EDGES = ("keyed", "constant")
EDGE_MODES = ("native", "learned", "soft")


class AttentionOutput(NamedTuple):
    """What :class:`SlotCrossAttention` returns."""

    out: torch.Tensor  # (..., n, d_model) message to each child slot
    scores: torch.Tensor  # (..., n, n + 1) edge scores in [0, 1] (the graph before thresholding)
    penalty: torch.Tensor  # () sparsity penalty of this layer, averaged over edges and batch


class SlotCrossAttention(nn.Module):
    """Children (slots) attend to parents (slots + the action token).

    Args:
        d_model: width of slot and action embeddings.
        n_heads: attention heads (``d_model`` must be divisible by it).
        kind: ``"softmax"``, ``"sigmoid"`` or ``"hard"`` (see the module docstring).
        temperature: Gumbel-sigmoid temperature of ``"hard"`` gates in training.
        threshold: score above which an edge is in the thresholded graph (default: see
            :meth:`default_threshold`).
        gate_init: initial edge logit of gated kinds. Positive (default 3.0, p = 0.95) starts dense and lets the
            sparsity penalty prune: measured on Interventional Pong, gates that start at p = 0.5 drop half the
            parents at random from the first step and the model learned 2.6x worse predictions in 600 steps.
        gate_penalty: ``"prob"`` or ``"logit"`` (gated kinds; see the module docstring).
        resample_closed_action: ``"hard"`` only: a closed action edge carries another sample's action (see the
            module docstring). Measured on Interventional Pong (one layer, sparsity 0.02, 600 steps): the
            action -> right paddle edge scored 0.68 without it (closed for no-op) and 1.0 with it; F1 0.83 -> 0.90.
        closed_edges: ``"hard"`` only: how a closed parent enters the softmax that weighs the open ones.
            ``"keyed"`` (default): with its own key, so the open edges' shares depend on the closed parents'
            states (the side channel in :meth:`_hard_messages`); ``"constant"``: with a constant logit (0), so a
            closed parent's state reaches the child through no path. Not the default: measured on Interventional
            Pong (seed 0, 3,000 steps, d_model 32) graph F1 0.945 keyed, 0.843 constant (recall 0.98 -> 0.81);
            on Pusher2D it did not open the ``box <- agent`` edge either (docs/design_notes.md).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        kind: str = "hard",
        temperature: float = 0.5,
        threshold: float | None = None,
        gate_init: float = 3.0,
        resample_closed_action: bool = True,
        gate_penalty: str = "prob",
        closed_edges: str = "keyed",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise InvalidArgumentError(f"attention kind {kind!r} is not one of {KINDS}")
        if gate_penalty not in GATE_PENALTIES:
            raise InvalidArgumentError(f"gate penalty {gate_penalty!r} is not one of {GATE_PENALTIES}")
        if closed_edges not in CLOSED_EDGES:
            raise InvalidArgumentError(f"closed_edges {closed_edges!r} is not one of {CLOSED_EDGES}")
        self.closed_edges = closed_edges
        self.gate_penalty = gate_penalty
        if d_model % n_heads:
            raise InvalidArgumentError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.kind = kind
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.temperature = temperature
        self.threshold = threshold
        self.resample_closed_action = resample_closed_action and kind == "hard"
        self.edge_mode = "native"  # outside training: see the module docstring
        self.force_open = False  # every gate open, in training too (:func:`gates_open`)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        if kind != "softmax":
            # Edge logits shared by the heads: one gate per edge, as SPARTAN samples one adjacency per layer.
            self.edge_q = nn.Linear(d_model, d_model)
            self.edge_k = nn.Linear(d_model, d_model)
            self.edge_bias = nn.Parameter(torch.full((), float(gate_init)))

    def default_threshold(self, n_parents: int) -> float:
        """0.5 for gates; for softmax, uniform attention ``1 / n_parents`` (an edge gets more than its share)."""
        if self.threshold is not None:
            return self.threshold
        return 0.5 if self.kind != "softmax" else 1.0 / n_parents

    def forward(self, slots: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None) -> AttentionOutput:
        """Attend from ``slots (..., n, d)`` to ``[slots; action] (..., n + 1, d)``.

        Args:
            slots: slot embeddings at time t.
            action: action embedding ``(..., 1, d)`` or ``(..., d)``.
            mask: optional bool ``(..., n, n + 1)``: only these edges may carry information (oracle gating).
        """
        if action.dim() == slots.dim() - 1:
            action = action.unsqueeze(-2)
        parents = torch.cat([slots, action], dim=-2)
        lead = slots.shape[:-2]
        n, m = slots.shape[-2], parents.shape[-2]
        q = self.q_proj(slots).view(*lead, n, self.n_heads, self.d_head).transpose(-3, -2)
        k = self.k_proj(parents).view(*lead, m, self.n_heads, self.d_head).transpose(-3, -2)
        v = self.v_proj(parents).view(*lead, m, self.n_heads, self.d_head).transpose(-3, -2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (..., H, n, m)

        mode = "native" if self.training else getattr(self, "edge_mode", "native")  # (pickled before it existed)
        if self.kind == "softmax":
            if mask is not None:
                logits = logits.masked_fill(~mask.unsqueeze(-3), float("-inf"))
            weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a fully masked row carries nothing
            scores = weights.mean(dim=-3)
            entropy = -(weights * torch.log(weights.clamp_min(1e-12))).sum(-1)
            penalty = entropy.mean() / math.log(m)  # in [0, 1]
            if mode == "learned":  # keep the edges of the thresholded graph, renormalised
                weights = weights * (scores > self.default_threshold(m)).unsqueeze(-3).to(weights.dtype)
                weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
            messages = weights @ v
        else:
            edge_logits = (self.edge_q(slots) @ self.edge_k(parents).transpose(-1, -2)) / math.sqrt(
                slots.shape[-1]
            ) + self.edge_bias
            probs = torch.sigmoid(edge_logits)
            if getattr(self, "force_open", False):  # (pickled before it existed)
                gates = torch.ones_like(probs)
            elif self.kind == "hard":
                gates = probs if mode == "soft" else self._hard_gates(edge_logits, probs)
            elif mode == "learned":
                gates = (probs > self.default_threshold(m)).to(probs.dtype)
            else:
                gates = probs
            if mask is not None:
                gates = gates * mask.to(gates.dtype)
                probs = probs * mask.to(probs.dtype)
            scores = probs
            if getattr(self, "gate_penalty", "prob") == "logit":
                open_cost = nn.functional.softplus(edge_logits)  # -log(1 - p): its gradient p never vanishes
                penalty = (open_cost if mask is None else open_cost * mask.to(open_cost.dtype)).mean()
            else:
                penalty = probs.mean()
            g = gates.unsqueeze(-3)  # (..., 1, n, m), shared by the heads
            if self.kind == "hard":
                messages = self._hard_messages(q, k, v, logits, g, mask)
            else:
                # Mix values by attention restricted to the gated parents; a row with no parent gets no message.
                exp = torch.exp(logits - logits.amax(dim=-1, keepdim=True)) * g
                weights = exp / (exp.sum(-1, keepdim=True) + 1e-9)
                weights = weights * (g.sum(-1, keepdim=True) / (g.sum(-1, keepdim=True) + 1.0))
                messages = weights @ v
        out = messages.transpose(-3, -2).reshape(*lead, n, self.n_heads * self.d_head)
        return AttentionOutput(self.out_proj(out), scores, penalty)

    def _hard_messages(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        logits: torch.Tensor,
        g: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Softmax attention over every parent; each weight is then multiplied by its 0/1 gate.

        The gate acts *after* the softmax: an edge that is the only open one keeps its share, so its gate still gets
        a gradient that says how much the edge matters. Renormalising over the open parents made that gradient
        exactly zero and the gates drifted shut (Pong F1 0.43 -> 0.83 at one layer). Known cost with
        ``closed_edges="keyed"``: the shares of the open parents depend on the closed parents' keys, a side channel
        (see docs/design_notes.md); ``"constant"`` closes it and keeps the lone edge's gradient (the closed
        parents still take their constant share).
        """
        other = self._other_sample(q) if mask is None and self.resample_closed_action else None
        if other is not None:
            # A closed action edge attends to, and reads, another sample's action token instead of this one's.
            closed = 1.0 - g[..., -1:]
            k_act, v_act = k[other][..., -1:, :], v[other][..., -1:, :]
            other_logit = q @ k_act.transpose(-1, -2) / math.sqrt(self.d_head)
            logits = torch.cat([logits[..., :-1], logits[..., -1:] * (1.0 - closed) + other_logit * closed], -1)
        if getattr(self, "closed_edges", "keyed") == "constant":  # (pickled before it existed)
            # A closed parent's logit becomes 0 (a resampled action keeps the other sample's, which says nothing
            # about this sample): the open edges' shares no longer depend on the closed parents' states.
            keep = g if other is None else torch.cat([g[..., :-1], torch.ones_like(g[..., -1:])], -1)
            logits = logits * keep
        if mask is not None:  # oracle: the masked parents are not candidates at all
            logits = logits.masked_fill(~mask.unsqueeze(-3), float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a fully masked row carries nothing
        messages = (weights * g) @ v
        if other is not None:
            messages = messages + (weights[..., -1:] * closed) @ v_act
        return messages

    def _other_sample(self, x: torch.Tensor) -> torch.Tensor | None:
        """For each sample of the leading batch axis, another one (never itself): the batch rolled by a random
        shift in training (batches are shuffled, so the partner is random), by one in evaluation."""
        b = x.shape[0]
        if x.dim() < 4 or b < 2:  # no batch axis, or a batch of one: nothing to take from
            return None
        shift = int(torch.randint(1, b, ())) if self.training else 1
        return torch.roll(torch.arange(b, device=x.device), shift)

    def _hard_gates(self, edge_logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """0/1 gates: Gumbel-sigmoid samples with a straight-through gradient in training, a 0.5 threshold else."""
        if not self.training:
            return (probs > 0.5).to(probs.dtype)
        u = torch.rand_like(edge_logits).clamp(1e-6, 1 - 1e-6)
        noisy = torch.sigmoid((edge_logits + torch.log(u) - torch.log1p(-u)) / self.temperature)
        hard = (noisy > 0.5).to(noisy.dtype)
        return hard + noisy - noisy.detach()


@contextlib.contextmanager
def edge_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Run a block with every :class:`SlotCrossAttention` of ``model`` in ``mode`` (one of :data:`EDGE_MODES`;
    it acts outside training only), then restore each one's previous mode. Models without one are unaffected."""
    if mode not in EDGE_MODES:
        raise InvalidArgumentError(f"edge mode {mode!r} is not one of {EDGE_MODES}")
    layers = [m for m in model.modules() if isinstance(m, SlotCrossAttention)]
    before = [layer.edge_mode for layer in layers]
    for layer in layers:
        layer.edge_mode = mode
    try:
        yield
    finally:
        for layer, previous in zip(layers, before, strict=True):
            layer.edge_mode = previous


@contextlib.contextmanager
def gates_open(model: nn.Module) -> Iterator[None]:
    """Run a block with every gate of every gated :class:`SlotCrossAttention` of ``model`` open (1), in training
    as in evaluation, then restore. A *dense warm-up* trains through it (``dense_warmup`` of the training configs):
    the slot networks learn to use every parent's message before the gates and their penalty start to prune. The
    edge scores are still reported; softmax attention has no gates and is unaffected."""
    layers = [m for m in model.modules() if isinstance(m, SlotCrossAttention)]
    before = [getattr(layer, "force_open", False) for layer in layers]
    for layer in layers:
        layer.force_open = True
    try:
        yield
    finally:
        for layer, previous in zip(layers, before, strict=True):
            layer.force_open = previous


def graph_rollout(per_layer: list[torch.Tensor]) -> torch.Tensor:
    """Compose per-layer edge scores ``(..., n, n + 1)`` into an end-to-end graph (attention rollout).

    Each layer maps parents to children; stacking layers composes those maps. The action is a source that keeps
    itself from layer to layer, so each ``(n, n + 1)`` matrix is extended to ``(n + 1, n + 1)`` with the row
    ``[0 ... 0 1]`` and the product is taken from the last layer to the first (CoDA and SPARTAN read the graph this
    way). The result is clamped to [0, 1].
    """
    if not per_layer:
        raise ValueError("graph_rollout needs at least one layer")
    out = None
    for layer in per_layer:
        n = layer.shape[-2]
        action_row = torch.zeros(*layer.shape[:-2], 1, n + 1, dtype=layer.dtype, device=layer.device)
        action_row[..., 0, n] = 1.0
        square = torch.cat([layer, action_row], dim=-2)
        out = square if out is None else square @ out
    return out[..., :-1, :].clamp(0.0, 1.0)


def sparsity_penalty(penalties: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the layers' penalties (0 when there are none)."""
    return torch.stack(penalties).mean() if penalties else torch.zeros(())


__all__ = [
    "EDGE_MODES",
    "GATE_PENALTIES",
    "KINDS",
    "CLOSED_EDGES",
    "AttentionOutput",
    "SlotCrossAttention",
    "edge_mode",
    "gates_open",
    "graph_rollout",
    "sparsity_penalty",
]
