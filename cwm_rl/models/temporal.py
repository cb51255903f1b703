"""Causal self-attention over time: the slot Transformer's temporal mixer (the SSM's counterpart).

Same contract as the SSM blocks, so the slot world model swaps one for the other:

* ``forward(x: (B, L, d)) -> (B, L, d)``, teacher-forced and parallel over time (causal: step t sees 0..t);
* ``initial_state(batch)`` and ``step(x_t: (B, d), state) -> (y_t, state)`` for imagination.

The recurrent state is a key/value cache, so a step costs O(t) and memory grows with the rollout: exactly the
difference with the SSM's constant-cost step that ``benchmarks/`` measures. Positions use rotary embeddings
(RoPE, Su et al. 2021) so the cache needs no re-encoding when it grows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from cwm_rl.errors import InvalidArgumentError


class KVCache(NamedTuple):
    """Keys and values seen so far, ``(B, H, t, d_head)`` each, and the next position."""

    k: torch.Tensor
    v: torch.Tensor
    pos: int


def _rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotate pairs of channels of ``x (B, H, L, d_head)`` by angles that grow with ``positions (L,)``."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]  # (L, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rotated, x[..., 2 * half :]], dim=-1) if x.shape[-1] % 2 else rotated


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over time with rotary positions and a KV-cache ``step``.

    With ``ffn_hidden > 0`` it is a whole Transformer layer: attention, then a position-wise feed-forward network
    on the attended features (``out = a + ffn(norm(x + a))`` with ``a`` the attention output). The slot
    Transformer sizes that network so its parameter count matches the slot SSM's (the paper's "equivalent
    Transformer").

    Args:
        d_model: model width.
        n_heads: attention heads (``d_model`` must be divisible by it).
        ffn_hidden: hidden width of the feed-forward network (0: attention only).
    """

    def __init__(self, d_model: int, n_heads: int = 4, ffn_hidden: int = 0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise InvalidArgumentError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.ffn: nn.Module | None = None
        if ffn_hidden > 0:
            self.ffn_norm = nn.LayerNorm(d_model)
            self.ffn = nn.Sequential(nn.Linear(d_model, ffn_hidden), nn.GELU(), nn.Linear(ffn_hidden, d_model))

    def _feed_forward(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        if self.ffn is None:
            return attended
        return attended + self.ffn(self.ffn_norm(x + attended))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, L, d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass over ``x (B, L, d)``."""
        q, k, v = self._split(x)
        positions = torch.arange(x.shape[1], device=x.device)
        q, k = _rope(q, positions), _rope(k, positions)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._feed_forward(x, self.out_proj(y.transpose(1, 2).reshape(x.shape)))

    def initial_state(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache for ``batch`` sequences."""
        dtype = dtype or self.qkv.weight.dtype
        device = device or self.qkv.weight.device
        empty = torch.zeros(batch, self.n_heads, 0, self.d_head, device=device, dtype=dtype)
        return KVCache(empty, empty.clone(), 0)

    def step(self, x_t: torch.Tensor, state: KVCache, *, inplace: bool = False) -> tuple[torch.Tensor, KVCache]:
        """One time step ``x_t (B, d)``: attend to the cache plus itself, return the output and the grown cache.

        ``inplace`` is accepted for the SSM's interface and changes nothing: a growing cache is a new tensor anyway.
        """
        del inplace
        q, k, v = self._split(x_t.unsqueeze(1))
        position = torch.tensor([state.pos], device=x_t.device)
        q, k = _rope(q, position), _rope(k, position)
        keys = torch.cat([state.k, k], dim=2)
        values = torch.cat([state.v, v], dim=2)
        weights = torch.softmax((q @ keys.transpose(-1, -2)) / math.sqrt(self.d_head), dim=-1)
        y = (weights @ values).transpose(1, 2).reshape(x_t.shape[0], -1)
        return self._feed_forward(x_t, self.out_proj(y)), KVCache(keys, values, state.pos + 1)
