"""The Mamba blocks: parallel scans == sequential recurrences, forward == step, mamba-ssm names, backends."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from cwm_rl.errors import InvalidArgumentError
from cwm_rl.models.ssm import (
    GatedRMSNorm,
    Mamba1Block,
    Mamba2Block,
    SSMState,
    cuda_kernels_available,
    make_ssm_block,
    resolve_backend,
    selective_scan_chunked,
    selective_scan_recurrent,
    selective_scan_reference,
    ssd_chunked_scan,
    ssd_reference_scan,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mamba2(**kw) -> Mamba2Block:
    torch.manual_seed(0)
    args = {"d_model": 8, "d_state": 4, "headdim": 4, "chunk_size": 4, "backend": "torch"} | kw
    return Mamba2Block(**args)


def _mamba1(**kw) -> Mamba1Block:
    torch.manual_seed(0)
    args = {"d_model": 8, "d_state": 4, "scan_chunk": 4, "backend": "torch"} | kw
    return Mamba1Block(**args)


def _randomise(block: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its init (D = 1, norm = 1, ...) so no term can hide behind a constant."""
    g = _gen(123)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if name not in ("A_log", "dt_bias", "dt_proj.bias"):
                param.add_(0.3 * torch.randn(param.shape, generator=g, dtype=param.dtype))
    return block


BLOCKS = {
    "mamba2": _mamba2,
    "mamba2-groups-dhdim": lambda **kw: _mamba2(ngroups=2, D_has_hdim=True, **kw),
    "mamba2-no-rmsnorm": lambda **kw: _mamba2(rmsnorm=False, **kw),
    "mamba2-norm-before-gate-dt-limit": lambda **kw: _mamba2(norm_before_gate=True, dt_limit=(0.01, 0.5), **kw),
    "mamba2-d_ssm-mlp": lambda **kw: _mamba2(d_ssm=8, **kw),
    "mamba1": _mamba1,  # scan="auto": the fused recurrence on CPU
    "mamba1-parallel": lambda **kw: _mamba1(scan="parallel", **kw),
}


# ---------------------------------------------------------------------------------------------------- scans
@pytest.mark.parametrize("length", [1, 5, 16, 37])
@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_scan_matches_sequential_reference(length, chunk, with_state):
    g = _gen(length)
    b, h, p, groups, n = 2, 4, 3, 2, 5
    x = torch.randn(b, length, h, p, generator=g, dtype=F64)
    dt = torch.rand(b, length, h, generator=g, dtype=F64)
    A = -3 * torch.rand(h, generator=g, dtype=F64)
    B, C = (torch.randn(b, length, groups, n, generator=g, dtype=F64) for _ in range(2))
    h0 = torch.randn(b, h, p, n, generator=g, dtype=F64) if with_state else None
    y, state = ssd_chunked_scan(x, dt, A, B, C, chunk, h0)
    y_ref, state_ref = ssd_reference_scan(x, dt, A, B, C, chunk, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, state_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_scan_gradients_are_exact(with_state):
    """11 chunks of 3 steps (the last one padded): every input, the initial state included, gets the
    finite-difference gradient through the chunk, across-chunk and padding paths."""
    g = _gen(3)
    b, length, h, p, groups, n = 2, 31, 2, 2, 1, 3
    x = torch.randn(b, length, h, p, generator=g, dtype=F64)
    dt = torch.rand(b, length, h, generator=g, dtype=F64)
    A = -torch.rand(h, generator=g, dtype=F64)
    B, C = (torch.randn(b, length, groups, n, generator=g, dtype=F64) for _ in range(2))
    h0 = torch.randn(b, h, p, n, generator=g, dtype=F64)
    inputs = [t.requires_grad_() for t in (x, dt, A, B, C, h0)]

    def both_outputs(x, dt, A, B, C, h0):
        return ssd_chunked_scan(x, dt, A, B, C, 3, h0 if with_state else None)

    assert torch.autograd.gradcheck(both_outputs, inputs)


@pytest.mark.parametrize("scan", [selective_scan_chunked, selective_scan_recurrent])
@pytest.mark.parametrize("length", [1, 5, 16, 37])
@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_selective_scans_match_sequential_reference(scan, length, chunk, with_state):
    g = _gen(length)
    b, d, n = 2, 6, 5
    x, dt = torch.randn(b, length, d, generator=g, dtype=F64), torch.rand(b, length, d, generator=g, dtype=F64)
    A = -3 * torch.rand(d, n, generator=g, dtype=F64)
    B, C = (torch.randn(b, length, n, generator=g, dtype=F64) for _ in range(2))
    h0 = torch.randn(b, d, n, generator=g, dtype=F64) if with_state else None
    y, state = scan(x, dt, A, B, C, chunk, h0)
    y_ref, state_ref = selective_scan_reference(x, dt, A, B, C, chunk, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, state_ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("scan", [selective_scan_chunked, selective_scan_recurrent])
@pytest.mark.parametrize("with_state", [False, True])
def test_selective_scan_hand_written_backwards_are_exact(scan, with_state):
    g = _gen(1)
    b, length, d, n = 2, 7, 3, 2
    x, dt = torch.randn(b, length, d, generator=g, dtype=F64), torch.rand(b, length, d, generator=g, dtype=F64)
    A = -torch.rand(d, n, generator=g, dtype=F64)
    B, C = (torch.randn(b, length, n, generator=g, dtype=F64) for _ in range(2))
    h0 = torch.randn(b, d, n, generator=g, dtype=F64)
    inputs = [t.requires_grad_() for t in (x, dt, A, B, C, h0)]

    def both_outputs(x, dt, A, B, C, h0):  # y and the final state, both differentiated
        return scan(x, dt, A, B, C, 3, h0 if with_state else None)

    assert torch.autograd.gradcheck(both_outputs, inputs)


def test_scans_stay_finite_under_strong_decay():
    """Large dt * |A| would overflow a cumsum/exp form of the scan in float32; ours only multiplies decays."""
    g = _gen(2)
    b, length, d, n = 1, 64, 4, 16
    x = torch.randn(b, length, d, generator=g)
    dt = torch.full((b, length, d), 20.0)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B, C = (torch.randn(b, length, n, generator=g) for _ in range(2))
    y_ref, _ = selective_scan_reference(x, dt, A, B, C)
    for scan in (selective_scan_chunked, selective_scan_recurrent):
        y, _ = scan(x, dt, A, B, C, 64)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    y2, _ = ssd_chunked_scan(x.view(b, length, 2, 2), dt[..., :2], A[:2, 0], B[:, :, None], C[:, :, None], 64)
    y2_ref, _ = ssd_reference_scan(x.view(b, length, 2, 2), dt[..., :2], A[:2, 0], B[:, :, None], C[:, :, None])
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y2, y2_ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("name", list(BLOCKS))
def test_parallel_forward_equals_step_by_step(name):
    block = _randomise(BLOCKS[name]()).double()
    length = 11  # not a multiple of the chunk length (4)
    x = torch.randn(3, length, 8, generator=_gen(3), dtype=F64)
    y = block(x)
    state = initial = block.initial_state(3)
    for t in range(length):
        y_t, state = block.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, t], atol=1e-10, rtol=1e-10)
    assert [s.shape for s in state] == [s.shape for s in initial]  # constant-size state: constant cost per step
    _, final = block(x, return_state=True)
    torch.testing.assert_close(final.conv, state.conv, atol=1e-12, rtol=0)
    torch.testing.assert_close(final.ssm, state.ssm, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", ["mamba2", "mamba1", "mamba1-parallel"])
def test_float32_forward_equals_step_within_1e_5(name):
    block = _randomise(BLOCKS[name]())
    x = torch.randn(2, 9, 8, generator=_gen(4))
    y = block(x)
    state = block.initial_state(2)
    for t in range(9):
        y_t, state = block.step(x[:, t], state)
        torch.testing.assert_close(y_t, y[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("split", [1, 3, 6])
def test_forward_with_carried_state_equals_forward_on_concatenation(name, split):
    block = _randomise(BLOCKS[name]()).double()
    x = torch.randn(2, 10, 8, generator=_gen(5), dtype=F64)
    y_full, final_full = block(x, return_state=True)
    y_a, state = block(x[:, :split], return_state=True)
    y_b, final = block(x[:, split:], state)  # a given state returns the final one too
    torch.testing.assert_close(torch.cat([y_a, y_b], dim=1), y_full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(final.ssm, final_full.ssm, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(final.conv, final_full.conv, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["mamba2", "mamba2-groups-dhdim", "mamba1", "mamba1-parallel"])
def test_reference_backend_equals_parallel_backend(name):
    block = _randomise(BLOCKS[name]()).double()
    x = torch.randn(2, 13, 8, generator=_gen(6), dtype=F64)
    y = block(x)
    block.backend = "reference"
    torch.testing.assert_close(block(x), y, atol=1e-10, rtol=1e-10)


def test_gated_rmsnorm_formula():
    norm = GatedRMSNorm(6, eps=1e-5, group_size=3)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x, z = torch.randn(2, 6, generator=_gen(7)), torch.randn(2, 6, generator=_gen(8))
    gated = (x * torch.nn.functional.silu(z)).view(2, 2, 3)
    want = (gated / torch.sqrt(gated.square().mean(-1, keepdim=True) + 1e-5)).view(2, 6) * norm.weight
    torch.testing.assert_close(norm(x, z), want)


# ---------------------------------------------------------------------------------------------------- mamba-ssm names
# Derived from state-spaces/mamba, mamba_ssm/modules/mamba2.py (Mamba2.__init__; its gated RMSNorm is
# mamba_ssm/ops/triton/layernorm_gated.py, a weight and no bias): d_model=64, defaults d_state=128, expand=2,
# headdim=64, ngroups=1, d_conv=4 -> d_inner=128, nheads=2, in_proj out = 2*128 + 2*1*128 + 2 = 514,
# conv_dim = 128 + 2*128 = 384.
MAMBA2_D64 = {
    "dt_bias": (2,),
    "A_log": (2,),
    "D": (2,),
    "in_proj.weight": (514, 64),
    "conv1d.weight": (384, 1, 4),
    "conv1d.bias": (384,),
    "norm.weight": (128,),
    "out_proj.weight": (64, 128),
}
# Derived from state-spaces/mamba, mamba_ssm/modules/mamba_simple.py (Mamba.__init__): d_model=64, defaults
# d_state=16, expand=2, d_conv=4, dt_rank="auto" = ceil(64 / 16) = 4 -> d_inner=128, x_proj out = 4 + 2*16 = 36.
MAMBA1_D64 = {
    "A_log": (128, 16),
    "D": (128,),
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (36, 128),
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "out_proj.weight": (64, 128),
}


@pytest.mark.parametrize(("cls", "expected"), [(Mamba2Block, MAMBA2_D64), (Mamba1Block, MAMBA1_D64)])
def test_state_dict_names_and_shapes_match_mamba_ssm(cls, expected):
    block = cls(64)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == expected


def test_initialisation_follows_mamba_ssm():
    m2, m1 = Mamba2Block(64), Mamba1Block(64)
    a2 = torch.exp(m2.A_log)
    assert ((a2 >= 1) & (a2 <= 16)).all()  # A_init_range (1, 16)
    dt = torch.nn.functional.softplus(m2.dt_bias)
    assert ((dt >= 1e-3 - 1e-6) & (dt <= 0.1 + 1e-6)).all()  # dt_min, dt_max
    torch.testing.assert_close(torch.exp(m1.A_log), torch.arange(1.0, 17.0).repeat(128, 1))  # S4D-real
    assert (m1.D == 1).all() and (m2.D == 1).all() and (m2.norm.weight == 1).all()


# ---------------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", list(BLOCKS))
def test_gradients_reach_every_parameter(name):
    block = _randomise(BLOCKS[name]())
    x = torch.randn(2, 9, 8, generator=_gen(9), requires_grad=True)
    block(x).square().mean().backward()
    for pname, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [Mamba2Block, Mamba1Block])
def test_checkpoint_loads_across_backends(cls):
    kw = {"d_state": 8, "headdim": 8} if cls is Mamba2Block else {"d_state": 8}
    torch.manual_seed(0)
    src = _randomise(cls(16, backend="torch", **kw))
    buffer = io.BytesIO()
    torch.save(src.state_dict(), buffer)
    torch.manual_seed(1)
    dst = cls(16, backend="auto", **kw)
    buffer.seek(0)
    dst.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 7, 16, generator=_gen(10))
    torch.testing.assert_close(dst(x), src(x))
    back = cls(16, backend="torch", **kw)
    back.load_state_dict(dst.state_dict())
    torch.testing.assert_close(back(x), src(x))


# ---------------------------------------------------------------------------------------------------- backends
def test_auto_uses_pytorch_on_cpu():
    assert resolve_backend("auto", torch.zeros(1)) == "torch"
    assert resolve_backend("torch", torch.zeros(1)) == "torch"


def test_mamba_ssm_is_never_imported_for_cpu_work():
    """``import mamba_ssm`` raises on CPU-only installs, so neither the import nor a CPU forward may touch it."""
    code = (
        "import sys, torch; from cwm_rl.models.ssm import make_ssm_block; "
        "make_ssm_block(8, headdim=4)(torch.zeros(1, 3, 8)); make_ssm_block(8, kind='mamba1')(torch.zeros(1, 3, 8)); "
        "sys.exit('mamba_ssm' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.skipif(cuda_kernels_available(), reason="mamba-ssm's kernels are installed here")
@pytest.mark.parametrize("cls", [Mamba2Block, Mamba1Block])
def test_cuda_backend_without_kernels_is_a_clear_error(cls):
    kw = {"headdim": 8} if cls is Mamba2Block else {}
    with pytest.raises(InvalidArgumentError, match=r"backend='cuda'.*`cuda` extra"):
        cls(16, backend="cuda", **kw)


def test_unknown_backend_and_kind_are_clear_errors():
    with pytest.raises(InvalidArgumentError, match="unknown SSM backend"):
        Mamba2Block(16, headdim=8, backend="triton")
    with pytest.raises(InvalidArgumentError, match="unknown SSM kind"):
        make_ssm_block(16, kind="s4")
    with pytest.raises(InvalidArgumentError, match="headdim"):
        Mamba2Block(16, headdim=64)
    with pytest.raises(InvalidArgumentError, match="unknown Mamba-1 scan"):
        Mamba1Block(16, scan="fft")


def test_bad_input_shapes_are_reported():
    block = _mamba2()
    with pytest.raises(ValueError, match=r"\(B, L, d_model\) with d_model=8"):
        block(torch.zeros(2, 5, 7))
    with pytest.raises(ValueError, match=r"\(B, d_model\)"):
        block.step(torch.zeros(2, 1, 8), block.initial_state(2))
    with pytest.raises(ValueError, match="SSMState of 3 sequences"):
        block.step(torch.zeros(3, 8), block.initial_state(2))


def test_mamba1_matches_mambapy_on_the_same_weights():
    """An independent implementation (optional ``mambapy``, same parameter names) agrees with ours."""
    mambapy = pytest.importorskip("mambapy.mamba")
    ours = _randomise(Mamba1Block(16, d_state=8))
    theirs = mambapy.MambaBlock(mambapy.MambaConfig(d_model=16, n_layers=1, d_state=8))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 12, 16, generator=_gen(12))
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-4)


def test_make_ssm_block_defaults_fit_small_models():
    block = make_ssm_block(16)
    assert isinstance(block, Mamba2Block) and block.nheads == 2 and block.d_state == 16
    assert isinstance(make_ssm_block(16, kind="mamba1"), Mamba1Block)
    x = torch.randn(4, 5, 16, generator=_gen(11))
    y = block(x)
    assert y.shape == x.shape
    state = block.initial_state(4)
    assert isinstance(state, SSMState)
    assert state.conv.shape == (4, 3, block.conv_dim) and state.ssm.shape == (4, 2, 16, 16)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_kernels_available()), reason="needs CUDA and mamba-ssm's kernels"
)
@pytest.mark.parametrize("cls", [Mamba2Block, Mamba1Block])
def test_cuda_kernels_match_pytorch_path_on_the_same_weights(cls):
    torch.manual_seed(0)
    kw = {"headdim": 32, "chunk_size": 64} if cls is Mamba2Block else {}
    torch_block = _randomise(cls(64, d_state=16, backend="torch", **kw)).cuda()
    cuda_block = cls(64, d_state=16, backend="cuda", **kw).cuda()
    cuda_block.load_state_dict(torch_block.state_dict())
    x = torch.randn(4, 100, 64, device="cuda")
    y_ref, state_ref = torch_block(x, return_state=True)
    y, state = cuda_block(x, return_state=True)
    torch.testing.assert_close(y, y_ref, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(state.ssm, state_ref.ssm, atol=2e-3, rtol=2e-3)
    y.square().mean().backward()
    y_ref.square().mean().backward()
    for (name, p), q in zip(cuda_block.named_parameters(), torch_block.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=5e-3, rtol=5e-2, msg=name)
