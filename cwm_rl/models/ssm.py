"""Mamba state-space blocks for the slot world model: Mamba-2 (the CPU default) and Mamba-1, in plain PyTorch.

What:
    :class:`Mamba2Block` and :class:`Mamba1Block` are drop-in counterparts of ``mamba_ssm.Mamba2`` and
    ``mamba_ssm.Mamba``: the same constructor arguments, parameter names and shapes, so one ``state_dict`` loads in
    either package and on either backend. Each block maps ``(B, L, d_model) -> (B, L, d_model)`` teacher-forced over
    the whole sequence, and has an explicit recurrent state (:class:`SSMState`: the causal-conv window and the SSM
    state) with a constant-cost :meth:`step` for imagined rollouts. ``forward(x, state)`` starts from a state and
    returns the final one, so a rollout can continue a teacher-forced prefix.

Why Mamba-2 is the default (:func:`make_ssm_block`), by measurement:
    Mamba-1 decays every (channel, state) pair separately, so any parallel form of its scan streams a
    ``(B, L, d_inner, d_state)`` tensor through memory several times and is memory-bound on a CPU. Mamba-2 has one
    scalar decay per head, which turns the scan into matrix products (the chunked "state space duality", SSD):
    matmuls inside chunks and a short recurrence across chunks. ``benchmarks/scan_backends.py`` (one block,
    forward + backward, batch 64, d_model 64, d_state 16, 2 threads, median ms at L = 16 / 64 / 256):

    ==============================================  =====  =====  ======
    Mamba-2, chunked SSD (this module, default)      10.6   29.1   118
    Mamba-1, fused recurrence (this module)          19.3   60.3   229
    Mamba-1, chunked parallel scan (this module)     42.0    311   2566
    mambapy Mamba-1, parallel ``pscan``              42.9    304   1680
    mambapy Mamba-1, sequential                      61.8   1736  23277
    one causal self-attention layer                   3.5   15.4   76.6
    ==============================================  =====  =====  ======

    Mamba-2 is 1.8-2.1x faster than our best Mamba-1 at d_state 16 and 3.3-3.5x at d_state 64, within 1.5-3x of
    attention. For Mamba-1 on a CPU the parallel forms lose: a fused sequential recurrence with a hand-written
    backward (:func:`selective_scan_recurrent`, how mamba-ssm's own CUDA kernel works) keeps one
    ``(B, d_inner, d_state)`` state in cache and beats the parallel scans 5-11x at L >= 64. It beats ``mambapy``
    2-7x (our parallel scan only matches ``mambapy``'s ``pscan`` up to L = 64 and is slower at 256), which is why
    ``mambapy`` is not used; it serves as an optional cross-check in the tests and the benchmark (same parameter
    names, same outputs). The parallel scan stays for GPUs without mamba-ssm (``scan="auto"`` picks it there).

Backends (``backend=`` argument, also an attribute you may change later):
    * ``"auto"`` (default): mamba-ssm's CUDA kernels when ``mamba_ssm`` imports **and** the input is on a CUDA
      device, otherwise the PyTorch path;
    * ``"torch"``: the pure-PyTorch path on any device (Mamba-2: chunked SSD; Mamba-1: see its ``scan`` argument);
    * ``"cuda"``: the kernels or a clear error (install the ``cuda`` extra on a CUDA machine);
    * ``"reference"``: a plain sequential loop over time, for tests and benchmarks only.

    ``mamba_ssm`` is imported lazily, inside a ``try``, the first time a backend is resolved: on a CPU-only machine
    ``import mamba_ssm`` raises, so it is never imported at module import time. The CUDA path calls only the scan
    kernels (``mamba_chunk_scan_combined`` for Mamba-2, ``selective_scan_fn`` for Mamba-1); projections, the causal
    convolution and the gated norm stay in PyTorch (cheap, and identical on both paths), and :meth:`step` is the
    PyTorch recurrence on every device. **The CUDA path was written from mamba-ssm's documented API but could not be
    run where this module was written** (no GPU); ``tests/models/test_ssm.py`` checks it against the PyTorch path
    on the same weights and is skipped without CUDA.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from cwm_rl.errors import InvalidArgumentError

__all__ = [
    "BACKENDS",
    "GatedRMSNorm",
    "Mamba1Block",
    "Mamba2Block",
    "SSMState",
    "cuda_kernels_available",
    "make_ssm_block",
    "resolve_backend",
    "selective_scan_chunked",
    "selective_scan_recurrent",
    "selective_scan_reference",
    "ssd_chunked_scan",
    "ssd_reference_scan",
]

BACKENDS = ("auto", "torch", "cuda", "reference")

_CUDA_EXTRA_HINT = (
    "install the `cuda` extra (pip install 'cwm-rl[cuda]', which builds mamba-ssm) on a machine with CUDA, "
    "or use backend='auto' (falls back to PyTorch) or backend='torch'"
)


class SSMState(NamedTuple):
    """Recurrent state of a Mamba block for ``B`` sequences.

    Attributes:
        conv: the last ``d_conv - 1`` inputs of the causal convolution, ``(B, d_conv - 1, conv_dim)``.
        ssm: the SSM state; Mamba-2: ``(B, nheads, headdim, d_state)``, Mamba-1: ``(B, d_inner, d_state)``.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


# ---------------------------------------------------------------------------------------------------- backends
@functools.lru_cache(maxsize=1)
def _load_kernels() -> tuple[dict[str, Callable[..., Any]] | None, str]:
    """Import mamba-ssm's scan kernels once; ``(kernels, "")`` or ``(None, why not)``. Never raises."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as exc:  # ImportError without the extra; OSError / RuntimeError for a broken CUDA build
        return None, f"{type(exc).__name__}: {exc}"
    return {"selective_scan_fn": selective_scan_fn, "mamba_chunk_scan_combined": mamba_chunk_scan_combined}, ""


def cuda_kernels_available() -> bool:
    """True when mamba-ssm's CUDA kernels import (the ``cuda`` extra is installed and built)."""
    return _load_kernels()[0] is not None


def _check_backend_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"unknown SSM backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "cuda" and not cuda_kernels_available():
        raise InvalidArgumentError(
            f"backend='cuda' needs mamba-ssm's CUDA kernels, which are not importable ({_load_kernels()[1]}): "
            + _CUDA_EXTRA_HINT
        )
    return backend


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The path a block takes for input ``x``: ``"cuda"``, ``"torch"`` or ``"reference"``.

    Args:
        backend: ``"auto"``, ``"torch"``, ``"cuda"`` or ``"reference"``.
        x: the input; ``"auto"`` picks the kernels only for CUDA tensors and only if they import.

    Raises:
        InvalidArgumentError: an unknown name, or ``"cuda"`` without the kernels or with a non-CUDA input.
    """
    _check_backend_name(backend)
    if backend == "auto":
        return "cuda" if (x.is_cuda and cuda_kernels_available()) else "torch"
    if backend == "cuda" and not x.is_cuda:
        raise InvalidArgumentError(
            f"backend='cuda' needs the block and its input on a CUDA device, got {x.device}: "
            "move the model with .cuda() or use backend='auto'"
        )
    return backend


# ---------------------------------------------------------------------------------------------------- shared parts
def _causal_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal convolution over time (``nn.Conv1d(groups=D, padding=W-1)`` truncated to ``L``).

    Args:
        x: ``(B, L, D)``.
        weight: ``(D, 1, W)`` (the ``conv1d.weight`` of mamba-ssm).
        bias: ``(D,)`` or None.
        conv_state: the previous ``W - 1`` inputs ``(B, W - 1, D)``, or None for zeros.

    Returns:
        The pre-activation output ``(B, L, D)`` and the new window ``(B, W - 1, D)`` (the last ``W - 1`` inputs).
    """
    width = weight.shape[-1]
    if conv_state is None:
        padded = F.pad(x, (0, 0, width - 1, 0))
    else:
        padded = torch.cat([conv_state.to(x.dtype), x], dim=1)
    y = F.conv1d(padded.transpose(1, 2), weight, bias, groups=weight.shape[0]).transpose(1, 2)
    return y, padded[:, padded.shape[1] - (width - 1) :]


def _conv_step(
    x_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of :func:`_causal_conv`: ``x_t (B, D)`` and the window ``(B, W-1, D)`` -> ``(B, D)``, new window."""
    window = torch.cat([conv_state.to(x_t.dtype), x_t.unsqueeze(1)], dim=1)  # (B, W, D)
    # Multiply and sum, not einsum: einsum returned a (D, B)-strided view, and every later op of the step (the
    # state update most of all) ran on transposed operands; this form is contiguous and measured 1.7x faster itself.
    y = (window * weight.squeeze(1).t()).sum(1)
    if bias is not None:
        y = y + bias
    return y, window[:, 1:]


def _compute_dtype(param: torch.Tensor) -> torch.dtype:
    """Decay maths in at least float32 (as mamba-ssm does: ``-exp(A_log.float())``), float64 stays float64."""
    return torch.promote_types(param.dtype, torch.float32)


class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate, as ``mamba_ssm.ops.triton.layernorm_gated.RMSNorm`` (one ``weight``, no bias).

    ``norm_before_gate=False`` (Mamba-2's default): ``rmsnorm(x * silu(z)) * weight``; ``True``:
    ``rmsnorm(x) * weight * silu(z)``. The RMS is taken over groups of ``group_size`` channels.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.group_size = group_size or hidden_size
        if hidden_size % self.group_size:
            raise InvalidArgumentError(f"hidden_size={hidden_size} is not divisible by group_size={self.group_size}")
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(_compute_dtype(x))
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.to(x.dtype))
        groups = x.unflatten(-1, (-1, self.group_size))
        x = (groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + self.eps)).flatten(-2) * self.weight
        if z is not None and self.norm_before_gate:
            x = x * F.silu(z.to(x.dtype))
        return x.to(dtype)


# ---------------------------------------------------------------------------------------------------- Mamba-2 scans
def _heads_of_groups(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """``(b, G, n) -> (b, H, n)``: head ``h`` reads group ``h // (H / G)`` as in mamba-ssm (a view when G = 1)."""
    b, groups, n = t.shape
    return t.unsqueeze(2).expand(b, groups, nheads // groups, n).reshape(b, nheads, n)


def ssd_chunked_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2's scan in its chunked "state space duality" form (Dao & Gu 2024, the SSD minimal listing).

    The recurrence, per head ``h`` (scalar decay) and channel ``p``::

        state_t = exp(dt_t * A) * state_{t-1} + dt_t * x_t B_t^T      # (headdim, d_state)
        y_t     = state_t C_t

    Inside a chunk of ``Q`` steps it is a masked ``(Q, Q)`` matmul (attention-like, decays as a lower-triangular
    segment-sum matrix); each chunk's contribution to the state is another matmul; the states entering the chunks
    come from a short recurrence across chunks, written as one ``(c+1, c+1)`` decay matrix product. All exponents
    are <= 0, so nothing overflows. Any ``L`` works: the tail is padded with ``dt = 0`` (no decay, no input), which
    leaves the final state unchanged.

    Args:
        x: ``(b, L, nheads, headdim)``.
        dt: ``(b, L, nheads)``, positive (after softplus).
        A: ``(nheads,)``, negative.
        B, C: ``(b, L, ngroups, d_state)``.
        chunk_size: chunk length ``Q`` (shorter sequences use one chunk of length ``L``).
        initial_state: ``(b, nheads, headdim, d_state)`` or None for zeros.

    Returns:
        ``y (b, L, nheads, headdim)`` (without the ``D`` skip) and the final state ``(b, nheads, headdim, d_state)``.
    """
    b, length, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g  # heads per group; head h reads group h // r (as in mamba-ssm)
    dtype = torch.promote_types(x.dtype, A.dtype)
    q = max(1, min(chunk_size, length))
    pad = (-length) % q
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (length + pad) // q
    dt, A = dt.to(dtype), A.to(dtype)

    # chunk-major layouts with the group structure explicit: heads (g, r), steps (c, q)
    a_cs = (dt * A).view(b, c, q, g, r).permute(0, 1, 3, 4, 2).cumsum(-1)  # (b, c, g, r, q) log-decay, <= 0
    xdt = (x.to(dtype) * dt.unsqueeze(-1)).view(b, c, q, g, r, p).permute(0, 1, 3, 4, 2, 5)  # (b, c, g, r, q, p)
    Bg = B.to(dtype).view(b, c, q, g, n).transpose(2, 3)  # (b, c, g, q, n)
    Cg = C.to(dtype).view(b, c, q, g, n).transpose(2, 3)

    # 1. inside each chunk: y_i = sum_{j <= i} (C_i . B_j) exp(a_cs_i - a_cs_j) dt_j x_j
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((a_cs.unsqueeze(-1) - a_cs.unsqueeze(-2)).masked_fill(~causal, -math.inf))  # (b,c,g,r,q,q)
    y = ((Cg @ Bg.transpose(-1, -2)).unsqueeze(3) * decay) @ xdt  # (b, c, g, r, q, p)

    # 2. each chunk's contribution to the state at its end: sum_j exp(a_cs_last - a_cs_j) dt_j x_j B_j^T
    to_end = torch.exp(a_cs[..., -1:] - a_cs).unsqueeze(-1)  # (b, c, g, r, q, 1)
    chunk_states = torch.einsum("bcgrqp,bcgqn->bcgrpn", xdt * to_end, Bg)

    # 3. across chunks: the state entering chunk k is sum_{j <= k} exp(sum of chunk decays j..k-1) s_j, where
    #    s_0 is the initial state and s_j (j >= 1) the contribution of chunk j - 1; one (c+1, c+1) matmul.
    if initial_state is None:
        s0 = chunk_states.new_zeros(b, 1, g, r, p, n)
    else:
        s0 = initial_state.to(dtype).view(b, 1, g, r, p, n)
    s = torch.cat([s0, chunk_states], dim=1).permute(0, 2, 3, 1, 4, 5).reshape(b, g, r, c + 1, p * n)
    totals = F.pad(a_cs[..., -1], (0, 0, 0, 0, 1, 0)).permute(0, 2, 3, 1).cumsum(-1)  # (b, g, r, c + 1)
    causal_c = torch.ones(c + 1, c + 1, dtype=torch.bool, device=x.device).tril()
    across = torch.exp((totals.unsqueeze(-1) - totals.unsqueeze(-2)).masked_fill(~causal_c, -math.inf))
    entering = (across @ s).view(b, g, r, c + 1, p, n)  # [:, :, :, k]: the state before chunk k (k = c: final)
    final_state = entering[:, :, :, c].reshape(b, h, p, n)
    entering = entering[:, :, :, :c].permute(0, 3, 1, 2, 4, 5)  # (b, c, g, r, p, n)

    # 4. the entering state seen from inside each chunk: y_i += exp(a_cs_i) C_i state^T
    y = y + torch.einsum("bcgqn,bcgrpn->bcgrqp", Cg, entering) * torch.exp(a_cs).unsqueeze(-1)

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, c * q, h, p)[:, :length]
    return y, final_state


def _ssd_step(
    state: torch.Tensor,
    x_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the Mamba-2 recurrence: ``state (b,h,p,n)``, ``x_t (b,h,p)``, ``dt_t (b,h)``, ``B_t/C_t (b,g,n)``.

    ``inplace`` overwrites ``state`` (see :meth:`Mamba2Block.step`)."""
    h = x_t.shape[1]
    Bh, Ch = _heads_of_groups(B_t, h), _heads_of_groups(C_t, h)  # (b, h, n)
    # At most one new tensor, updated in place by a fused multiply-add: the broadcast outer product plus a separate
    # add measured 2-5x slower at imagination batch sizes (2,048 slot sequences) on CPU.
    decay = torch.exp(dt_t * A)[..., None, None]
    state = state.mul_(decay) if inplace else state * decay
    state.addcmul_((dt_t.unsqueeze(-1) * x_t).unsqueeze(-1), Bh.unsqueeze(-2))
    return (state @ Ch.unsqueeze(-1)).squeeze(-1), state


def ssd_reference_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 0,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Mamba-2 recurrence as a plain loop over time (same arguments as :func:`ssd_chunked_scan`)."""
    del chunk_size  # accepted for a uniform signature
    b, length, h, p = x.shape
    n = B.shape[-1]
    dtype = torch.promote_types(x.dtype, A.dtype)
    state = x.new_zeros(b, h, p, n, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    ys = []
    for t in range(length):
        y_t, state = _ssd_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


# ---------------------------------------------------------------------------------------------------- Mamba-1 scans
def _doubling_scan_(a: torch.Tensor, b: torch.Tensor, dim: int) -> None:
    """In place, the inclusive scan of ``h_t = a_t h_{t-1} + b_t`` (``h_{-1} = 0``) along ``dim``.

    On return ``b`` holds ``h`` and ``a`` the cumulative products of the decays. Hillis-Steele doubling:
    ``ceil(log2 L)`` elementwise passes; products of decays in (0, 1] only, so it cannot overflow (unlike a
    ``cumsum(log a)`` / ``exp`` form, which overflows when the decays are strong).
    """
    length = a.shape[dim]
    k = 1
    while k < length:
        a_hi, a_lo = a.narrow(dim, k, length - k), a.narrow(dim, 0, length - k)
        b_hi, b_lo = b.narrow(dim, k, length - k), b.narrow(dim, 0, length - k)
        carried = a_hi * b_lo  # read the old values before writing (the slices overlap)
        a_hi.copy_(a_hi * a_lo)
        b_hi.add_(carried)
        k *= 2


def _linear_scan_forward(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t`` along dim 1 of ``(batch, L, ...)`` tensors, no autograd, chunked.

    Doubling inside chunks of ``chunk`` steps, then the same scan over the chunk ends, then one pass that adds each
    chunk's entering state. Work ``O(L log chunk)``, no Python loop over time.
    """
    batch, length = a.shape[:2]
    rest = a.shape[2:]
    q = max(1, min(chunk, length))
    pad = (-length) % q
    h = b.clone()
    if h0 is not None:
        h[:, 0].addcmul_(a[:, 0], h0)
    cum = a.clone()
    if pad:  # identity steps: a = 1, b = 0
        h = torch.cat([h, h.new_zeros(batch, pad, *rest)], dim=1)
        cum = torch.cat([cum, cum.new_ones(batch, pad, *rest)], dim=1)
    c = (length + pad) // q
    h = h.view(batch, c, q, *rest)
    cum = cum.view(batch, c, q, *rest)
    _doubling_scan_(cum, h, dim=2)
    if c > 1:
        ends_a, ends_h = cum[:, :, -1].clone(), h[:, :, -1].clone()
        _doubling_scan_(ends_a, ends_h, dim=1)  # ends_h[:, k] = true state at the end of chunk k
        h[:, 1:].addcmul_(cum[:, 1:], ends_h[:, :-1].unsqueeze(2))
    return h.view(batch, c * q, *rest)[:, :length]


class _LinearScan(torch.autograd.Function):
    """``h = scan(a, b, h0)`` with a hand-written backward: the adjoint of a linear recurrence is the same
    recurrence run backwards, so the backward is one more scan and saves only ``a`` and ``h``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunk: int) -> torch.Tensor:
        with torch.no_grad():
            h = _linear_scan_forward(a, b, h0, chunk)
        ctx.chunk = chunk
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(a, h, h0 if h0 is not None else torch.empty(0))
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors
        # g_t = dLoss/dh_t in total = grad_h_t + a_{t+1} g_{t+1}: a scan over the reversed sequence.
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        g = _linear_scan_forward(a_next.flip(1), grad_h.flip(1), None, ctx.chunk).flip(1)
        if ctx.has_h0:
            h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], dim=1)
        else:
            h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        grad_a = g * h_prev if ctx.needs_input_grad[0] else None
        grad_h0 = a[:, 0] * g[:, 0] if (ctx.has_h0 and ctx.needs_input_grad[2]) else None
        return grad_a, g, grad_h0, None


def selective_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 16,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1's selective scan, parallel over time (chunked doubling scan, hand-written backward).

    The recurrence, per channel ``d`` and state ``n``::

        state_t = exp(dt_t A) * state_{t-1} + dt_t x_t B_t      # (d_inner, d_state), A: (d_inner, d_state)
        y_t     = state_t C_t

    Args:
        x, dt: ``(b, L, d_inner)`` (``dt`` after softplus).
        A: ``(d_inner, d_state)``, negative.
        B, C: ``(b, L, d_state)``.
        chunk_size: chunk length of the doubling scan (a speed knob only; results do not depend on it).
        initial_state: ``(b, d_inner, d_state)`` or None for zeros.

    Returns:
        ``y (b, L, d_inner)`` (without the ``D`` skip and the gate) and the final state ``(b, d_inner, d_state)``.
    """
    dtype = torch.promote_types(x.dtype, A.dtype)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    decay = torch.exp(dt.unsqueeze(-1) * A)  # (b, L, d, n)
    inputs = (dt * x).unsqueeze(-1) * B.unsqueeze(2)  # (b, L, d, n)
    h0 = None if initial_state is None else initial_state.to(dtype)
    states = _LinearScan.apply(decay, inputs, h0, int(chunk_size))
    y = (states @ C.unsqueeze(-1)).squeeze(-1)
    return y, states[:, -1]


class _SelectiveScanRecurrent(torch.autograd.Function):
    """Mamba-1's recurrence fused by hand, the way mamba-ssm's CUDA kernel does it: a sequential loop whose per-step
    tensors ``(b, d_inner, d_state)`` stay in cache, updated in place (no per-step allocation, no autograd graph);
    the backward recomputes the states from checkpoints every ``every`` steps and runs the adjoint recurrence."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        h0: torch.Tensor | None,
        every: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, d = x.shape
        dtx = dt * x
        h = x.new_zeros(b, d, A.shape[-1]) if h0 is None else h0.clone()
        decay = torch.empty_like(h)
        ys = x.new_empty(length, b, d)
        checkpoints = x.new_empty(math.ceil(length / every), *h.shape)
        for t in range(length):
            if t % every == 0:
                checkpoints[t // every].copy_(h)
            torch.mul(dt[:, t, :, None], A, out=decay)
            h.mul_(decay.exp_()).addcmul_(dtx[:, t, :, None], B[:, t, None, :])
            torch.matmul(h, C[:, t, :, None], out=ys[t].unsqueeze(-1))
        ctx.every, ctx.has_h0 = every, h0 is not None
        ctx.save_for_backward(x, dt, A, B, C, checkpoints)
        return ys.transpose(0, 1), h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor | None, grad_h: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        x, dt, A, B, C, checkpoints = ctx.saved_tensors
        every = ctx.every
        b, length, d = x.shape
        n = A.shape[-1]
        dtx = dt * x
        g = grad_h.clone() if grad_h is not None else x.new_zeros(b, d, n)  # dLoss/dh_t, accumulated from the future
        if grad_y is None:
            grad_y = x.new_zeros(b, length, d)
        hs, decays = x.new_empty(every, b, d, n), x.new_empty(every, b, d, n)
        tmp, grad_A = x.new_empty(b, d, n), x.new_zeros(b, d, n)
        grad_dtx, grad_la = x.new_empty(length, b, d), x.new_empty(length, b, d)
        grad_B, grad_C = x.new_empty(length, b, n), x.new_empty(length, b, n)
        for k in reversed(range(checkpoints.shape[0])):
            t0, t1 = k * every, min(length, (k + 1) * every)
            prev = checkpoints[k]
            for i, t in enumerate(range(t0, t1)):  # recompute this stretch's states
                torch.mul(dt[:, t, :, None], A, out=decays[i])
                decays[i].exp_()
                torch.mul(decays[i], prev, out=hs[i]).addcmul_(dtx[:, t, :, None], B[:, t, None, :])
                prev = hs[i]
            for i in reversed(range(t1 - t0)):
                t = t0 + i
                g.addcmul_(grad_y[:, t, :, None], C[:, t, None, :])  # y_t = h_t C_t
                torch.matmul(grad_y[:, t, None, :], hs[i], out=grad_C[t].unsqueeze(1))
                torch.matmul(dtx[:, t, None, :], g, out=grad_B[t].unsqueeze(1))  # h_t = decay_t h_{t-1} + dtx_t B_t
                torch.matmul(g, B[:, t, :, None], out=grad_dtx[t].unsqueeze(-1))
                torch.mul(g, hs[i - 1] if i else checkpoints[k], out=tmp).mul_(decays[i])  # dLoss/d(dt_t A)
                grad_A.addcmul_(tmp, dt[:, t, :, None])
                torch.sum(tmp.mul_(A), dim=-1, out=grad_la[t])
                g.mul_(decays[i])  # on to dLoss/dh_{t-1}
        grad_dtx = grad_dtx.transpose(0, 1)
        grad_dt = grad_la.transpose(0, 1) + grad_dtx * x
        grad_h0 = g if ctx.has_h0 else None
        return grad_dtx * dt, grad_dt, grad_A.sum(0), grad_B.transpose(0, 1), grad_C.transpose(0, 1), grad_h0, None


def selective_scan_recurrent(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 16,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1's selective scan as a fused recurrence with a hand-written backward (the CPU default).

    Same arguments and results as :func:`selective_scan_chunked`; ``chunk_size`` is the checkpoint interval of the
    backward's recomputation. On a CPU this beats every form we measured (whole block at L = 256: 2.6x the plain
    autograd loop, 11x the chunked doubling scan, ``benchmarks/scan_backends.py``): a parallel Mamba-1 scan streams a
    ``(b, L, d_inner, d_state)`` tensor through memory several times, while the recurrence touches one
    ``(b, d_inner, d_state)`` state that stays in cache. On a GPU without mamba-ssm the parallel form is the choice.
    """
    dtype = torch.promote_types(x.dtype, A.dtype)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    h0 = None if initial_state is None else initial_state.to(dtype)
    y, final = _SelectiveScanRecurrent.apply(x, dt, A, B, C, h0, max(1, int(chunk_size)))
    return y, final


def _selective_step(
    state: torch.Tensor,
    x_t: torch.Tensor,
    dt_t: torch.Tensor,
    A: torch.Tensor,
    B_t: torch.Tensor,
    C_t: torch.Tensor,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Mamba-1 step: ``state (b,d,n)``, ``x_t/dt_t (b,d)``, ``A (d,n)``, ``B_t/C_t (b,n)``; ``inplace``
    overwrites ``state``."""
    decay = torch.exp(dt_t.unsqueeze(-1) * A)
    state = state.mul_(decay) if inplace else state * decay
    state.addcmul_((dt_t * x_t).unsqueeze(-1), B_t.unsqueeze(1))
    return (state @ C_t.unsqueeze(-1)).squeeze(-1), state


def selective_scan_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 0,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1's recurrence as a plain loop over time (same arguments as :func:`selective_scan_chunked`)."""
    del chunk_size
    dtype = torch.promote_types(x.dtype, A.dtype)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    b, length, d = x.shape
    state = x.new_zeros(b, d, A.shape[-1]) if initial_state is None else initial_state.to(dtype)
    ys = []
    for t in range(length):
        y_t, state = _selective_step(state, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


# ---------------------------------------------------------------------------------------------------- blocks
def _inverse_softplus_dt(size: int, dt_min: float, dt_max: float, floor: float, **factory: Any) -> torch.Tensor:
    """A bias whose softplus is log-uniform in ``[dt_min, dt_max]`` (mamba-ssm's dt initialisation)."""
    dt = torch.exp(torch.rand(size, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class _MambaBase(nn.Module):
    """What both blocks share: backend choice, input checks, the ``forward(x, state)`` return convention."""

    d_model: int
    conv1d: nn.Conv1d

    def _init_backend(self, backend: str) -> None:
        self.backend = _check_backend_name(backend)

    def _check_input(self, x: torch.Tensor, ndim: int) -> None:
        if x.ndim != ndim or x.shape[-1] != self.d_model:
            want = "(B, L, d_model)" if ndim == 3 else "(B, d_model)"
            raise ValueError(
                f"{type(self).__name__} expects input of shape {want} with d_model={self.d_model}, got {tuple(x.shape)}"
            )

    def _check_state(self, state: SSMState, batch: int) -> None:
        if not isinstance(state, SSMState) or state.conv.shape[0] != batch or state.ssm.shape[0] != batch:
            raise ValueError(
                f"{type(self).__name__}: state must be the SSMState of {batch} sequences (see initial_state), "
                f"got {type(state).__name__}"
            )

    def _conv(self, xc: torch.Tensor, state: SSMState | None) -> tuple[torch.Tensor, torch.Tensor]:
        y, window = _causal_conv(xc, self.conv1d.weight, self.conv1d.bias, None if state is None else state.conv)
        return F.silu(y), window

    def extra_repr(self) -> str:
        scan = f", scan={self.scan!r}" if hasattr(self, "scan") else ""
        return f"d_model={self.d_model}, d_state={self.d_state}, backend={self.backend!r}{scan}"


class Mamba2Block(_MambaBase):
    """Mamba-2 block (``mamba_ssm.Mamba2``'s arguments, parameter names and shapes), chunked-SSD PyTorch path.

    Parameters (``H = nheads = d_ssm / headdim``, ``G = ngroups``, ``N = d_state``, ``conv_dim = d_ssm + 2 G N``):
    ``in_proj.weight (2 d_inner + 2 G N + H, d_model)`` (order ``[z, x, B, C, dt]``), ``conv1d.weight
    (conv_dim, 1, d_conv)``, ``conv1d.bias (conv_dim,)``, ``dt_bias (H,)``, ``A_log (H,)``, ``D (H,)`` (or
    ``(d_ssm,)`` with ``D_has_hdim``), ``norm.weight (d_ssm,)`` (gated RMSNorm, when ``rmsnorm``),
    ``out_proj.weight (d_model, d_inner)``.

    Args:
        d_model ... chunk_size: as ``mamba_ssm.Mamba2``. ``use_mem_eff_path``, ``layer_idx`` and
            ``sequence_parallel`` are accepted and ignored; tensor parallelism (``process_group``) is unsupported.
        backend: ``"auto"``, ``"torch"``, ``"cuda"`` or ``"reference"`` (see the module docstring).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        d_ssm: int | None = None,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        use_mem_eff_path: bool = True,
        layer_idx: int | None = None,
        process_group: Any = None,
        sequence_parallel: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        del use_mem_eff_path, sequence_parallel
        factory = {"device": device, "dtype": dtype}
        if process_group is not None:
            raise InvalidArgumentError("Mamba2Block does not support tensor parallelism (process_group)")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.headdim = headdim
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        self.ngroups = ngroups
        if self.d_ssm % headdim:
            raise InvalidArgumentError(f"d_ssm={self.d_ssm} (expand * d_model) is not divisible by headdim={headdim}")
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups:
            raise InvalidArgumentError(f"nheads={self.nheads} is not divisible by ngroups={ngroups}")
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise InvalidArgumentError(f"A_init_range={A_init_range} must satisfy 0 < low <= high")
        self.D_has_hdim, self.rmsnorm, self.norm_before_gate = D_has_hdim, rmsnorm, norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.chunk_size = chunk_size
        self.layer_idx = layer_idx
        self._init_backend(backend)

        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads  # [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **factory)
        conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias, **factory
        )
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(self.nheads, dt_min, dt_max, dt_init_floor, **factory))
        self.dt_bias._no_weight_decay = True
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_ssm if D_has_hdim else self.nheads, device=device))
        self.D._no_weight_decay = True
        if rmsnorm:
            self.norm = GatedRMSNorm(
                self.d_ssm, eps=1e-5, norm_before_gate=norm_before_gate, group_size=self.d_ssm // ngroups, **factory
            )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # ---------------------------------------------------------------- pieces
    @property
    def conv_dim(self) -> int:
        return self.d_ssm + 2 * self.ngroups * self.d_state

    def _split_proj(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d_mlp = self.d_inner - self.d_ssm
        return torch.split(zxbcdt, [d_mlp, d_mlp, self.d_ssm, self.conv_dim, self.nheads], dim=-1)

    def _split_xbc(self, xbc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gn = self.ngroups * self.d_state
        x, B, C = torch.split(xbc, [self.d_ssm, gn, gn], dim=-1)
        return (
            x.unflatten(-1, (self.nheads, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.to(_compute_dtype(self.A_log)))

    def _dt(self, dt_raw: torch.Tensor) -> torch.Tensor:
        dt = F.softplus(dt_raw.to(_compute_dtype(dt_raw)) + self.dt_bias)
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(min=self.dt_limit[0], max=self.dt_limit[1])
        return dt

    def _D(self) -> torch.Tensor:
        return self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D.unsqueeze(-1)

    def _output(self, y: torch.Tensor, z: torch.Tensor, z0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Gate / norm, the optional gated-MLP part, and the output projection; ``y (..., d_ssm)``."""
        y = y.to(z.dtype)
        y = self.norm(y, z) if self.rmsnorm else y * F.silu(z)
        if z0.shape[-1]:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y)

    # ---------------------------------------------------------------- the contract
    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SSMState:
        """Zero state for ``batch`` sequences (defaults: the parameters' device and dtype)."""
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        conv = torch.zeros(batch, self.d_conv - 1, self.conv_dim, device=device, dtype=dtype)
        ssm = torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device, dtype=_compute_dtype(conv))
        return SSMState(conv, ssm)

    def forward(
        self, x: torch.Tensor, state: SSMState | None = None, *, return_state: bool | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, SSMState]:
        """Teacher-forced pass over ``x (B, L, d_model)``, parallel over time.

        Args:
            x: the input sequence.
            state: start from this state (e.g. after a prefix); None starts from zeros.
            return_state: also return the final state; defaults to ``state is not None``.

        Returns:
            ``y (B, L, d_model)``, or ``(y, final_state)``.
        """
        self._check_input(x, 3)
        if state is not None:
            self._check_state(state, x.shape[0])
        want_state = state is not None if return_state is None else return_state
        path = resolve_backend(self.backend, x)
        batch, length, _ = x.shape
        z0, x0, z, xbc, dt_raw = self._split_proj(self.in_proj(x))
        xbc, window = self._conv(xbc, state)
        xs, B, C = self._split_xbc(xbc)
        h0 = None if state is None else state.ssm
        if path == "cuda":
            y, final = self._scan_cuda(xs, dt_raw, B, C, h0)
        else:
            scan = ssd_chunked_scan if path == "torch" else ssd_reference_scan
            y, final = scan(xs, self._dt(dt_raw), self._A(), B, C, self.chunk_size, h0)
            y = y + xs.to(y.dtype) * self._D()
        out = self._output(y.reshape(batch, length, self.d_ssm), z, z0, x0)
        return (out, SSMState(window.clone(), final)) if want_state else out

    def _scan_cuda(
        self, xs: torch.Tensor, dt_raw: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mamba-ssm's fused SSD kernel (softplus, dt_bias, dt_limit and the D skip inside). NOT RUN HERE: no GPU."""
        kernel = _load_kernels()[0]["mamba_chunk_scan_combined"]  # type: ignore[index]
        extra = {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}
        y, final = kernel(
            xs.contiguous(),
            dt_raw.contiguous(),
            -torch.exp(self.A_log.float()),
            B.contiguous(),
            C.contiguous(),
            chunk_size=self.chunk_size,
            D=self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D,
            z=None,
            dt_bias=self.dt_bias,
            initial_states=None if h0 is None else h0.float().contiguous(),
            dt_softplus=True,
            return_final_states=True,
            **extra,
        )
        return y, final

    def step(self, x_t: torch.Tensor, state: SSMState, *, inplace: bool = False) -> tuple[torch.Tensor, SSMState]:
        """One time step ``x_t (B, d_model)`` -> ``(y_t (B, d_model), new_state)``; constant cost per step.

        ``inplace=True`` updates ``state.ssm`` in place and returns it as the new state's: the caller gives the old
        state up (imagination does, see :meth:`SlotWorldModel.step_`). It saves allocating a fresh state per step,
        8 MB at a planning batch of 512 Pong rollouts, which cost more than the update itself on CPU.
        """
        self._check_input(x_t, 2)
        self._check_state(state, x_t.shape[0])
        z0, x0, z, xbc, dt_raw = self._split_proj(self.in_proj(x_t))
        xbc, window = _conv_step(xbc, self.conv1d.weight, self.conv1d.bias, state.conv)
        xs, B, C = self._split_xbc(F.silu(xbc))
        dtype = _compute_dtype(state.ssm)
        y, ssm = _ssd_step(
            state.ssm.to(dtype),
            xs.to(dtype),
            self._dt(dt_raw).to(dtype),
            self._A().to(dtype),
            B.to(dtype),
            C.to(dtype),
            inplace,
        )
        y = y + xs.to(dtype) * self._D()
        return self._output(y.flatten(-2), z, z0, x0), SSMState(window, ssm)


MAMBA1_SCANS = ("auto", "recurrent", "parallel")


class Mamba1Block(_MambaBase):
    """Mamba-1 block (``mamba_ssm.Mamba``'s arguments, parameter names and shapes), chunked-scan PyTorch path.

    Parameters (``R = dt_rank``, ``N = d_state``): ``in_proj.weight (2 d_inner, d_model)`` (order ``[x, z]``),
    ``conv1d.weight (d_inner, 1, d_conv)``, ``conv1d.bias (d_inner,)``, ``x_proj.weight (R + 2N, d_inner)`` (order
    ``[dt, B, C]``), ``dt_proj.weight (d_inner, R)``, ``dt_proj.bias (d_inner,)``, ``A_log (d_inner, N)``,
    ``D (d_inner,)``, ``out_proj.weight (d_model, d_inner)``.

    Args:
        d_model ... dtype: as ``mamba_ssm.Mamba`` (``use_fast_path`` and ``layer_idx`` are accepted and ignored).
        backend: ``"auto"``, ``"torch"``, ``"cuda"`` or ``"reference"`` (see the module docstring).
        scan: the PyTorch path's scan: ``"recurrent"`` (:func:`selective_scan_recurrent`, fastest on CPU),
            ``"parallel"`` (:func:`selective_scan_chunked`) or ``"auto"``: recurrent on CPU, parallel elsewhere.
        scan_chunk: chunk length of the parallel scan / checkpoint interval of the recurrent one (speed only).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
        scan: str = "auto",
        scan_chunk: int = 16,
    ) -> None:
        super().__init__()
        del use_fast_path
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.layer_idx = layer_idx
        if scan not in MAMBA1_SCANS:
            raise InvalidArgumentError(f"unknown Mamba-1 scan {scan!r}: choose one of {', '.join(MAMBA1_SCANS)}")
        self.scan, self.scan_chunk = scan, scan_chunk
        self._init_backend(backend)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise InvalidArgumentError(f"dt_init={dt_init!r} is not 'random' or 'constant'")
        with torch.no_grad():
            self.dt_proj.bias.copy_(_inverse_softplus_dt(self.d_inner, dt_min, dt_max, dt_init_floor, **factory))
        self.dt_proj.bias._no_reinit = True
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)  # S4D-real
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def _A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.to(_compute_dtype(self.A_log)))

    def _x_dbl(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``dt`` before its bias and softplus, ``B``, ``C`` from the conv output."""
        dt, B, C = torch.split(self.x_proj(xs), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def _dt(self, dt_raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(dt_raw.to(_compute_dtype(dt_raw)) + self.dt_proj.bias)

    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SSMState:
        """Zero state for ``batch`` sequences (defaults: the parameters' device and dtype)."""
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        conv = torch.zeros(batch, self.d_conv - 1, self.d_inner, device=device, dtype=dtype)
        ssm = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=_compute_dtype(conv))
        return SSMState(conv, ssm)

    def forward(
        self, x: torch.Tensor, state: SSMState | None = None, *, return_state: bool | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, SSMState]:
        """Teacher-forced pass over ``x (B, L, d_model)``; same arguments and returns as :meth:`Mamba2Block.forward`.

        On the CUDA path a given ``state`` sends the scan to PyTorch (``selective_scan_fn`` takes no initial state).
        """
        self._check_input(x, 3)
        if state is not None:
            self._check_state(state, x.shape[0])
        want_state = state is not None if return_state is None else return_state
        path = resolve_backend(self.backend, x)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs, window = self._conv(xs, state)
        dt_raw, B, C = self._x_dbl(xs)
        if path == "cuda" and state is None:
            y, final = self._scan_cuda(xs, dt_raw, B, C, z)
        else:
            if path == "reference":
                scan = selective_scan_reference
            elif self.scan == "parallel" or (self.scan == "auto" and x.device.type != "cpu"):
                scan = selective_scan_chunked
            else:
                scan = selective_scan_recurrent
            y, final = scan(
                xs, self._dt(dt_raw), self._A(), B, C, self.scan_chunk, None if state is None else state.ssm
            )
            y = (y + xs.to(y.dtype) * self.D) * F.silu(z.to(y.dtype))
        out = self.out_proj(y.to(x.dtype))
        return (out, SSMState(window.clone(), final)) if want_state else out

    def _scan_cuda(
        self, xs: torch.Tensor, dt_raw: torch.Tensor, B: torch.Tensor, C: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mamba-ssm's selective-scan kernel (softplus, bias, D skip and gate inside). NOT RUN HERE: no GPU.

        Layouts as in ``mamba_ssm.Mamba.forward``: ``(b, d, l)`` for x, dt and z, ``(b, n, l)`` for B and C.
        The kernel's final state carries no gradient (mamba-ssm's documented limitation).
        """
        kernel = _load_kernels()[0]["selective_scan_fn"]  # type: ignore[index]
        y, final = kernel(
            xs.transpose(1, 2).contiguous(),
            dt_raw.transpose(1, 2).contiguous(),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z.transpose(1, 2).contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=True,
        )
        return y.transpose(1, 2), final

    def step(self, x_t: torch.Tensor, state: SSMState, *, inplace: bool = False) -> tuple[torch.Tensor, SSMState]:
        """One time step ``x_t (B, d_model)`` -> ``(y_t (B, d_model), new_state)``; constant cost per step
        (``inplace``: as :meth:`Mamba2Block.step`)."""
        self._check_input(x_t, 2)
        self._check_state(state, x_t.shape[0])
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)
        xs, window = _conv_step(xs, self.conv1d.weight, self.conv1d.bias, state.conv)
        xs = F.silu(xs)
        dt_raw, B, C = self._x_dbl(xs)
        dtype = _compute_dtype(state.ssm)
        y, ssm = _selective_step(
            state.ssm.to(dtype),
            xs.to(dtype),
            self._dt(dt_raw).to(dtype),
            self._A().to(dtype),
            B.to(dtype),
            C.to(dtype),
            inplace,
        )
        y = (y + xs.to(dtype) * self.D) * F.silu(z.to(dtype))
        return self.out_proj(y.to(x_t.dtype)), SSMState(window, ssm)


# ---------------------------------------------------------------------------------------------------- factory
SSM_KINDS = ("mamba2", "mamba1")


def make_ssm_block(d_model: int, kind: str = "mamba2", **kwargs: Any) -> nn.Module:
    """The temporal mixer of the slot world model: a Mamba-2 block by default (fastest on CPU, see above).

    Defaults suited to small world models (override any through ``kwargs``): Mamba-2 with ``d_state=16``,
    ``chunk_size=32`` and ``headdim`` the largest of 16 / 8 / 4 / 2 / 1 that divides ``expand * d_model`` (so a
    16-wide model still gets 2 heads); Mamba-1 with ``mamba_ssm.Mamba``'s own defaults. To load the weights into
    mamba-ssm, build ``mamba_ssm.Mamba2``/``Mamba`` with the same arguments.

    Args:
        d_model: model width.
        kind: ``"mamba2"`` or ``"mamba1"``.
        **kwargs: constructor arguments of :class:`Mamba2Block` / :class:`Mamba1Block` (including ``backend``).
    """
    if kind == "mamba2":
        d_inner = kwargs.get("expand", 2) * d_model
        d_ssm = kwargs.get("d_ssm") or d_inner
        kwargs.setdefault("headdim", next(hd for hd in (16, 8, 4, 2, 1) if d_ssm % hd == 0))
        kwargs.setdefault("d_state", 16)
        kwargs.setdefault("chunk_size", 32)
        return Mamba2Block(d_model, **kwargs)
    if kind == "mamba1":
        return Mamba1Block(d_model, **kwargs)
    raise InvalidArgumentError(f"unknown SSM kind {kind!r}: choose one of {', '.join(SSM_KINDS)}")
