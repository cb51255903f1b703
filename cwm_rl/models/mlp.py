"""Dense MLP baseline: no slots, no graph, no memory — the observation and the action in, the change out.

The lower bound of the comparison: a world model with no structure. It keeps the world-model contract
(``forward``/``initial_state``/``step`` returning :class:`~cwm_rl.models.world_model.Prediction`) so trainers,
evaluators and planners treat every model alike; its ``scores`` are ``None`` (graph metrics do not apply).
"""

from __future__ import annotations

import torch
from torch import nn

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.world_model import Prediction, check_inputs


class DenseMLPModel(nn.Module):
    """``[obs, action] -> (delta, reward, termination)`` with a few hidden layers.

    Args:
        obs_dim: observation width.
        action_spec: ``("discrete", n)`` (one-hot input) or ``("continuous", dim)``.
        hidden: hidden width.
        n_layers: hidden layers.
    """

    def __init__(self, obs_dim: int, action_spec: tuple[str, int], hidden: int = 256, n_layers: int = 3) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.action_kind, self.action_size = action_spec
        if self.action_kind not in ("discrete", "continuous"):
            raise InvalidArgumentError(f"action kind {self.action_kind!r} is not 'discrete' or 'continuous'")
        layers: list[nn.Module] = []
        width = obs_dim + self.action_size
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, obs_dim + 2)

    def _action_features(self, action: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.action_kind == "discrete":
            return nn.functional.one_hot(action.long(), self.action_size).to(dtype)
        return action.to(dtype)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None) -> Prediction:
        """Predict every step of ``obs (..., obs_dim)`` independently (``mask`` is ignored: no graph)."""
        check_inputs(self, obs, action)
        out = self.out(self.trunk(torch.cat([obs, self._action_features(action, obs.dtype)], dim=-1)))
        delta, reward, term = out[..., : self.obs_dim], out[..., self.obs_dim], out[..., self.obs_dim + 1]
        return Prediction(delta, reward, term, None, torch.zeros((), device=obs.device))

    def initial_state(self, batch: int) -> None:
        """The MLP is memoryless: no state."""
        return None

    def step(
        self, state: None, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[Prediction, None]:
        """One step; identical to ``forward`` on a single time step."""
        return self.forward(obs, action), None
