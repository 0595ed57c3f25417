"""GPU tests of the Triton band kernel (skipped without CUDA): bf16/fp16/fp32, head dims 16-128,
larger shapes, determinism, O(B*H*T) memory at T = 16384, and torch.compile."""
import random

import pytest
import torch

import baselines
import kernel
from lib import kernel_launch
from test_kernel import (assert_close_to_reference, assert_exact_at_band_edges, check_decode_step, make_qkv,
                         random_bands, rel_err, run_with_grads, sp_bands)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Relative L2 error vs float64: bf16 operands land between 1e-3 and 1e-2; fp32 uses ieee dots.
TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 1e-4}


def triton_fn(bands, scale=None):
    return lambda a, b, c: kernel.band_attention(a, b, c, bands, scale=scale, backend="triton")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("D", [16, 32, 64, 128])
@pytest.mark.parametrize("pattern", ["sp", "sp_exclusive"])
def test_gpu_dtypes_head_dims(tile_path, dtype, D, pattern):
    torch.manual_seed(D)
    H, N, T = 6, 1000, 777  # T ragged against every block size, N % H != 0, bands clipped at T
    bands = sp_bands(H, N, pattern)
    q, k, v = make_qkv(2, H, T, D, dtype, "cuda")
    assert_close_to_reference(triton_fn(bands), q, k, v, bands, TOL[dtype])


@pytest.mark.parametrize("T", [1, 2, 15, 129, 2048])
def test_gpu_lengths_bf16(tile_path, T):
    torch.manual_seed(T)
    H = 12
    bands = sp_bands(H, 2048, "sp_exclusive")  # most rows at short T see nothing
    q, k, v = make_qkv(1, H, T, 64, torch.bfloat16, "cuda")
    assert_close_to_reference(triton_fn(bands), q, k, v, bands, TOL[torch.bfloat16])


@pytest.mark.parametrize("seed,scale", [(0, 0.2), (1, 0.2), (2, -0.2), (3, 0.0)])
def test_gpu_random_intervals(seed, scale):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    H, T = 5, 1500
    bands = random_bands(H, T + 300, rng)
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = make_qkv(2, H, T, 64, dtype, "cuda")
        assert_close_to_reference(triton_fn(bands, scale), q, k, v, bands, TOL[dtype], scale=scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("D", [64, 128])
def test_gpu_tiles_at_a_band_edge(tile_path, dtype, D):
    # test_kernel.py's test_triton_tiles_at_a_band_edge with the GPU's tiles: 32 or 64 rows a side
    # (kernel_launch.KERNEL_CONFIGS; fp32 64 x 32), so a tile's distances run from a multiple of 32 plus 1
    # minus its key rows to that multiple plus its query rows minus 1: edges at lo = 1 and 33 and 65,
    # and at hi = 160 and 192. Not bf16: its tolerance would let a wrong band edge of one head pass.
    torch.manual_seed(D)
    assert_exact_at_band_edges((0, 1, 2, 32, 33, 34, 64, 65, 66), (159, 160, 161, 191, 192, 193), 320, D, dtype,
                               TOL[dtype], "cuda")


def test_gpu_fused_qkv_views_and_fallback_agree():
    torch.manual_seed(3)
    H, T = 12, 1024
    bands = sp_bands(H, T, "sp")
    q, k, v = make_qkv(2, H, T, 64, torch.bfloat16, "cuda", fused=True)
    assert q.stride(-1) == 1 and not q.is_contiguous()
    got = assert_close_to_reference(triton_fn(bands), q, k, v, bands, TOL[torch.bfloat16])
    fb = kernel.band_attention(q, k, v, bands, backend="torch")
    assert rel_err(got[0], fb) < 1e-2
    assert kernel.band_attention(q, k, v, bands).dtype == torch.bfloat16  # auto -> triton on CUDA


def test_gpu_strides_a_descriptor_cannot_take():
    # a broadcast key (batch stride 0) is copied; a size-1 dim's stride (3: not 16-byte aligned) is
    # ignored; a start that is not 16-byte aligned is copied
    torch.manual_seed(5)
    H, T, D = 4, 300, 64
    bands = sp_bands(H, T, "sp")
    q, k, v = make_qkv(2, H, T, D, torch.bfloat16, "cuda")
    kb = torch.randn(1, H, T, D, dtype=torch.bfloat16, device="cuda").expand(2, H, T, D)
    assert_close_to_reference(triton_fn(bands), q, kb, v, bands, TOL[torch.bfloat16])
    q1, k1, v1 = (torch.randn(H * T * D + 3, dtype=torch.bfloat16, device="cuda")[3:]
                  .as_strided((1, H, T, D), (3, T * D, D, 1)) for _ in range(3))
    assert q1.data_ptr() % 16 != 0
    assert_close_to_reference(triton_fn(bands), q1, k1, v1, bands, TOL[torch.bfloat16])


@pytest.fixture(params=["tma", "pointers"])
def tile_path(request, monkeypatch):
    """Each way the loops can stream their tiles, forced whatever the call's size: TMA descriptors,
    or pointers (GPUs before Hopper, and small calls). The launch plans are made again around the test."""
    kernel_launch.plan.cache_clear()
    if request.param == "tma":
        monkeypatch.setattr(kernel_launch, "TMA_MIN_TILES", 0)
    else:
        monkeypatch.setattr(kernel_launch, "tma_on", lambda device: False)
    yield request.param
    kernel_launch.plan.cache_clear()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_tile_paths_on_fused_qkv(tile_path, dtype):
    # TMA descriptors and pointer loads (GPUs before Hopper, small calls) on views of a fused qkv
    torch.manual_seed(6)
    H, T = 12, 1000
    for pattern in ("sp", "sp_exclusive"):
        bands = sp_bands(H, 1024, pattern)
        q, k, v = make_qkv(2, H, T, 64, dtype, "cuda", fused=True)
        assert_close_to_reference(triton_fn(bands), q, k, v, bands, TOL[dtype])


def test_gpu_backward_is_deterministic():
    torch.manual_seed(4)
    H, T = 16, 4096
    bands = sp_bands(H, T, "sp")
    q, k, v = make_qkv(1, H, T, 64, torch.bfloat16, "cuda")
    do = torch.randn_like(q)
    a = run_with_grads(triton_fn(bands), q, k, v, do)
    b = run_with_grads(triton_fn(bands), q, k, v, do)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_gpu_memory_is_linear_in_T():
    B, H, T, D = 1, 16, 16384, 64
    bands = sp_bands(H, T, "sp")
    q, k, v = make_qkv(B, H, T, D, torch.bfloat16, "cuda")
    do = torch.randn_like(q)
    for t in (q, k, v):
        t.requires_grad_(True)
    kernel.band_attention(q, k, v, bands).backward(do)  # compile outside the measurement
    q.grad = k.grad = v.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    o = kernel.band_attention(q, k, v, bands)
    o.backward(do)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    one_tensor = B * H * T * D * 2
    # o, lse, delta, dq, dk, dv (+ an o.grad-sized buffer): a few (B, H, T, D) tensors. One head's
    # T x T bf16 score matrix alone would be 512 MiB, 16x this bound's tensor unit.
    assert extra <= 8 * one_tensor < T * T * 2, f"extra {extra / 2**20:.0f} MiB"


def test_gpu_torch_compile_matches_eager():
    torch.manual_seed(5)
    B, T, H, D = 2, 300, 4, 32
    bands = tuple(tuple(b) for b in sp_bands(H, 256, "sp"))  # T > N: the bands stay at N

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(H * D, 3 * H * D)

        def forward(self, x):
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in self.qkv(x).split(H * D, dim=2))
            return kernel.band_attention(q, k, v, bands).transpose(1, 2).reshape(B, T, H * D)

    m = Attn().cuda()
    x = torch.randn(B, T, H * D, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ye = m(x)
    ye.float().square().sum().backward()
    ge = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    mc = torch.compile(m, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        yc = mc(x)
    yc.float().square().sum().backward()
    assert rel_err(yc, ye) < 1e-2
    for a, b in zip(m.parameters(), ge):
        assert torch.isfinite(a.grad).all() and rel_err(a.grad, b) < 2e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_flex_bands_with_gradients(dtype):
    # the FlexAttention baseline computes the same function, gradients included, empty rows too
    rng = random.Random(7)
    torch.manual_seed(7)
    H, T = 4, 300
    bands = random_bands(H, T, rng)
    q, k, v = make_qkv(2, H, T, 64, dtype, "cuda")
    normalized = kernel.normalize_bands(bands, H)
    assert_close_to_reference(lambda a, b, c: baselines.flex_band_attention(a, b, c, normalized),
                              q, k, v, bands, TOL[dtype])


def test_gpu_flex_bands_replay_from_a_cuda_graph():
    # bench/bench_kernel.py times FlexAttention with the same bands as a CUDA graph of forward +
    # backward: after a first call nothing may copy from the host (a graph cannot record it), and the
    # replay gives the eager result
    torch.manual_seed(3)
    H, T = 4, 256
    bands = kernel.normalize_bands(sp_bands(H, T, "sp"), H)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, H, T, 64, torch.bfloat16, "cuda"))
    do = torch.randn_like(q)

    def step():
        o = baselines.flex_band_attention(q, k, v, bands)
        return (o, *torch.autograd.grad(o, (q, k, v), do))
    eager, captured = eager_and_replayed(step)  # the first call compiles flex, makes the block mask
    for x, y in zip(captured, eager):
        assert torch.equal(x, y)


def eager_and_replayed(step, no_sync=False):
    """step()'s outputs from its first call, and from a CUDA graph of it replayed once (all on a side
    stream, as autograd wants for a captured backward). no_sync: the calls after the first may not
    synchronize with the host."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        eager = [t.clone() for t in step()]
        if no_sync:
            torch.cuda.set_sync_debug_mode("error")
        try:
            step()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                captured = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        graph.replay()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return eager, captured


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("pattern", ["sp", "random"])
def test_gpu_band_decode_kernel(dtype, D, pattern):
    # the decode kernel (reads the bands in place) and the gathering reference, against float64
    H, T = 12, 1000
    bands = sp_bands(H, T, "sp") if pattern == "sp" else random_bands(H, T, random.Random(D))
    q, k, v = make_qkv(3, H, T, D, dtype, "cuda")
    for backend in ("triton", "torch"):
        check_decode_step(kernel.normalize_bands(bands, H), q, k, v, backend, 2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_direct_launches_equal_the_jit(tile_path, dtype):
    # The first call of a shape goes through Triton's JIT, the next ones straight to the compiled
    # binary (kernel_launch.launch): the results are bitwise the same, and an input that specializes
    # differently (a start that is not 16-byte aligned, another T) gets its own binary, not a wrong one.
    torch.manual_seed(7)
    H, T = 6, 333
    bands = sp_bands(H, 400, "sp")
    q, k, v = make_qkv(2, H, T, 64, dtype, "cuda")
    do = torch.randn_like(q)
    first = run_with_grads(triton_fn(bands), q, k, v, do)
    plans = [kernel_launch.plan(kind, kernel.normalize_bands(bands, H), 2, T, 64, dtype, q.device)
             for kind in ("fwd", "dq", "dkdv")]
    assert all(len(p.launchers) == 1 and p.meta["TMA_TILES"] == (tile_path == "tma") for p in plans)
    again = run_with_grads(triton_fn(bands), q, k, v, do)
    assert all(len(p.launchers) == 1 for p in plans)  # served by the kept launchers
    for x, y in zip(first, again):
        assert torch.equal(x, y)
    for T2, offset in ((333, 8), (200, 0)):  # misaligned by 16 bytes (8 bf16), and a new length
        q2, k2, v2 = (torch.randn(2 * H * T2 * 64 + offset, dtype=dtype, device="cuda")[offset:].view(2, H, T2, 64)
                      for _ in range(3))
        assert_close_to_reference(triton_fn(bands), q2, k2, v2, bands, TOL[dtype])
        assert_close_to_reference(triton_fn(bands), q2, k2, v2, bands, TOL[dtype])  # the direct launch


@pytest.mark.parametrize("pattern", ["sp", "sp_exclusive", "dense"])
def test_gpu_cuda_graph_capture_and_tensor_bands(pattern):
    # band_attention forward + backward captured in a CUDA graph, with the bands as the model passes
    # them (normalized) or as a CPU tensor: no host sync per call (after the first), replay equals
    # eager. A CUDA tensor is read on the host at every call (a sync), so it cannot be captured; eagerly
    # it gives the same result.
    torch.manual_seed(8)
    H, T = 8, 512
    nested = sp_bands(H, T, pattern)
    as_tuple = kernel.normalize_bands(nested, H)
    q, k, v = make_qkv(2, H, T, 64, torch.bfloat16, "cuda")
    assert torch.equal(kernel.band_attention(q, k, v, kernel.bands_tensor(as_tuple).cuda()),
                       kernel.band_attention(q, k, v, as_tuple))
    for bands in (kernel.bands_tensor(as_tuple), as_tuple):
        q, k, v = (t.requires_grad_() for t in make_qkv(2, H, T, 64, torch.bfloat16, "cuda"))
        do = torch.randn_like(q)

        def step():
            o = kernel.band_attention(q, k, v, bands)
            return (o, *torch.autograd.grad(o, (q, k, v), do))
        eager, captured = eager_and_replayed(step, no_sync=True)  # the first call makes the plans
        for x, y in zip(captured, eager):
            assert torch.equal(x, y)
