"""The Transformer's temporal mixer: causal, and its KV-cache step equals the parallel forward."""

from __future__ import annotations

import pytest
import torch

from cwm_rl.models.temporal import CausalSelfAttention


@pytest.mark.parametrize("length", [1, 7, 20])
def test_step_by_step_equals_parallel_forward(length):
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, n_heads=4).double()
    x = torch.randn(3, length, 16, dtype=torch.float64)
    full = attn(x)
    state = attn.initial_state(3)
    steps = []
    for t in range(length):
        y, state = attn.step(x[:, t], state)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-10, rtol=1e-10)
    assert state.pos == length and state.k.shape == (3, 4, length, 4)


def test_causal_and_position_aware():
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, n_heads=2)
    x = torch.randn(2, 10, 16)
    y = attn(x)
    later = x.clone()
    later[:, 6:] += 1.0
    torch.testing.assert_close(attn(later)[:, :6], y[:, :6])  # the future never leaks into the past
    swapped = x.clone()
    swapped[:, [0, 1]] = x[:, [1, 0]]
    assert not torch.allclose(attn(swapped)[:, 2], y[:, 2])  # order matters (rotary positions)


def test_bad_width():
    with pytest.raises(ValueError, match="divisible"):
        CausalSelfAttention(10, n_heads=4)
