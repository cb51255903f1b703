"""Build a world model by name: the ids used by ``cwm-rl wm-train --model``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.mlp import DenseMLPModel
from cwm_rl.models.world_model import SlotModelConfig, SlotWorldModel

MODEL_KINDS = ("slot-ssm", "slot-transformer", "mlp", "oracle")


def make_world_model(
    kind: str,
    slot_dims: Sequence[int],
    action_spec: tuple[str, int],
    slot_config: SlotModelConfig | None = None,
    mlp_hidden: int = 256,
    mlp_layers: int = 3,
) -> nn.Module:
    """Return a fresh world model.

    * ``slot-ssm`` — :class:`SlotWorldModel` with the SSM temporal mixer (the main model);
    * ``slot-transformer`` — the same with causal self-attention over time (the paper's equivalent Transformer);
    * ``mlp`` — :class:`DenseMLPModel` (no slots, no graph);
    * ``oracle`` — the slot SSM whose cross-slot attention is gated by the env's true local graph.
    """
    cfg = slot_config or SlotModelConfig()
    if kind == "slot-ssm":
        return SlotWorldModel(slot_dims, action_spec, dataclasses.replace(cfg, temporal="ssm"))
    if kind == "slot-transformer":
        return SlotWorldModel(slot_dims, action_spec, dataclasses.replace(cfg, temporal="attention"))
    if kind == "oracle":
        return SlotWorldModel(slot_dims, action_spec, dataclasses.replace(cfg, temporal="ssm"), ground_truth_mask=True)
    if kind == "mlp":
        return DenseMLPModel(sum(slot_dims), action_spec, hidden=mlp_hidden, n_layers=mlp_layers)
    raise InvalidArgumentError(f"unknown world model {kind!r}; choose one of {MODEL_KINDS}")
