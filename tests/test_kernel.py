"""CPU tests of kernel.band_attention.

The torch fallback is checked against a float64 masked softmax written here (its own mask code), and
the Triton kernels, run on CPU tensors by Triton's interpreter (conftest sets TRITON_INTERPRET=1 when
there is no GPU), against both. bf16 is left out here: the interpreter's bf16 tl.dot is wrong
(triton issue 11584); tests/test_kernel_gpu.py covers bf16 on a GPU.
"""
import os
import random
import warnings

import pytest
import torch

import baselines
import kernel

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not (INTERPRET and kernel.HAS_TRITON),
                                       reason="Triton on CPU tensors needs TRITON_INTERPRET=1")
if kernel.HAS_TRITON:
    from lib import kernel_launch


# -----------------------------------------------------------------------------
# Helpers shared with tests/test_kernel_gpu.py

def sp_bands(n_head, N, pattern):
    """The spec's band layouts (section 2/3) as nested lists, written independently of model.py."""
    W, R = divmod(N, n_head)
    out = []
    for h in range(n_head):
        Wh = W + (1 if h < R else 0)
        Sh = h * W + min(h, R)
        own = (Sh, Sh + Wh)
        if pattern == "sp_exclusive":
            out.append([own])
        elif pattern == "sp":
            local = (0, Wh + 1)
            out.append([(0, max(local[1], own[1]))] if own[0] <= local[1] else [local, own])
        elif pattern == "window":
            out.append([(0, Wh + 1)])
        elif pattern == "dense":
            out.append([(0, N)])
        else:
            raise ValueError(pattern)
    return out


def random_bands(n_head, N, rng, max_intervals=4):
    """Random sorted disjoint intervals, 0..max_intervals per head (some heads empty), as lists."""
    out = []
    for _ in range(n_head):
        n = rng.randint(0, min(max_intervals, (N + 1) // 2))
        cuts = sorted(rng.sample(range(0, N + 1), 2 * n))
        out.append([(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2) if cuts[i] < cuts[i + 1]])
    return out


def reference(q, k, v, bands, scale=None):
    """float64 masked softmax; rows with no visible key give 0 (differentiable, no NaN)."""
    q, k, v = (t.double() for t in (q, k, v))
    B, H, T, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    i = torch.arange(T, device=q.device)
    dist = i[:, None] - i[None, :]
    mask = torch.zeros(H, T, T, dtype=torch.bool, device=q.device)
    for h, intervals in enumerate(bands):
        for lo, hi in intervals:
            mask[h] |= (dist >= lo) & (dist < hi)
    s = (q @ k.transpose(-1, -2)) * scale
    s = torch.where(mask, s, torch.zeros((), dtype=s.dtype, device=s.device) - 1e300)
    p = torch.softmax(s, dim=-1) * mask  # an empty row softmaxes to uniform, then * 0
    return p @ v


def rel_err(a, b):
    """Relative L2 error; the floor (1e-3 per element in rms) keeps an all-zero reference, e.g. dq at
    T = 1 where the softmax has one entry, from turning rounding noise into a huge ratio."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / (b.norm() + 1e-3 * b.numel() ** 0.5)).item()


def run_with_grads(fn, q, k, v, do):
    # detach() without clone(): a clone of a strided view (fused qkv, broadcast) would be contiguous
    q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
    o = fn(q, k, v)
    o.backward(do)
    return [o.detach(), q.grad, k.grad, v.grad]


def assert_close_to_reference(fn, q, k, v, bands, tol, scale=None):
    """fn's output and dq/dk/dv against the float64 reference, relative L2 error <= tol, all finite."""
    do = torch.randn(q.shape, dtype=q.dtype, device=q.device)
    got = run_with_grads(fn, q, k, v, do)
    ref = run_with_grads(lambda a, b, c: reference(a, b, c, bands, scale), q, k, v, do.double())
    for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref):
        assert g.dtype == q.dtype and g.shape == q.shape, name
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        err = rel_err(g, r)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
    return got


def make_qkv(B, H, T, D, dtype, device="cpu", fused=False):
    """Random q, k, v; fused=True gives the strided views of one (B, T, 3*H*D) qkv projection."""
    if fused:
        qkv = torch.randn(B, T, 3 * H * D, dtype=dtype, device=device)
        return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2)]
    return [torch.randn(B, H, T, D, dtype=dtype, device=device) for _ in range(3)]


# -----------------------------------------------------------------------------
# The fallback against the float64 reference

@pytest.mark.parametrize("T", [1, 5, 37, 70])
@pytest.mark.parametrize("pattern", ["sp", "sp_exclusive", "window", "dense"])
def test_fallback_sp_layouts(T, pattern):
    torch.manual_seed(T)
    H, N = 6, 64  # N not a multiple of H (R > 0); T > N, T < H and ragged T all occur
    bands = sp_bands(H, N, pattern)
    q, k, v = make_qkv(2, H, T, 16, torch.float32)
    assert_close_to_reference(lambda a, b, c: kernel.band_attention(a, b, c, bands, backend="torch"),
                              q, k, v, bands, tol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_fallback_random_intervals(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    H, T = 5, rng.choice([3, 17, 41])
    bands = random_bands(H, 2 * T, rng)
    q, k, v = make_qkv(1, H, T, 8, torch.float64)
    assert_close_to_reference(lambda a, b, c: kernel.band_attention(a, b, c, bands, backend="torch"),
                              q, k, v, bands, tol=1e-10)


def test_fallback_empty_rows_are_zero_with_zero_grad():
    bands = [[(10, 20)], [(0, 1)]]  # head 0: rows i < 10 see nothing
    q, k, v = make_qkv(1, 2, 12, 8, torch.float32)
    q.requires_grad_(True)
    o = kernel.band_attention(q, k, v, bands, backend="torch")
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(q.grad).all()
    assert (o[0, 0, :10] == 0).all() and (q.grad[0, 0, :10] == 0).all()


# -----------------------------------------------------------------------------
# Contract checks

@pytest.mark.parametrize("bad", [
    [[(0, 4)]],                                   # wrong number of heads
    [[(-1, 4)], [(0, 2)]],                        # negative distance
    [[(4, 8), (0, 2)], [(0, 2)]],                 # not sorted
    [[(0, 4), (3, 8)], [(0, 2)]],                 # overlapping
    [[(0, 4, 5)], [(0, 2)]],                      # not a pair
    torch.zeros(2, 1, 2, dtype=torch.float32),    # not integer
    torch.zeros(2, 2, dtype=torch.long),          # wrong rank
])
def test_invalid_bands_raise(bad):
    q, k, v = make_qkv(1, 2, 4, 16, torch.float32)
    for backend in ("torch", "triton"):
        with pytest.raises(ValueError):
            kernel.band_attention(q, k, v, bad, backend=backend)


def test_invalid_backend_and_shapes_raise():
    q, k, v = make_qkv(1, 2, 4, 16, torch.float32)
    with pytest.raises(ValueError):
        kernel.band_attention(q, k, v, [[(0, 4)]] * 2, backend="cuda")
    with pytest.raises(ValueError):
        kernel.band_attention(q, k[:, :, :3], v, [[(0, 4)]] * 2)


def test_bands_tensor_padding_and_tensor_input():
    bands = kernel.normalize_bands([[(0, 2), (5, 9)], [(3, 3)], [(1, 4)]], 3)
    assert bands == (((0, 2), (5, 9)), (), ((1, 4),))
    t = kernel.bands_tensor(bands)
    assert t.shape == (3, 2, 2) and t.dtype == torch.long
    assert kernel.normalize_bands(t, 3) == bands


def test_tensor_bands_are_read_at_every_call():
    # a user's bands tensor is read and checked at each call: a change in place is seen
    t = kernel.bands_tensor((((0, 2),), ((1, 3),)))
    assert kernel.normalize_bands(t, 2) == (((0, 2),), ((1, 3),))
    t[1, 0, 1] = 5
    assert kernel.normalize_bands(t, 2) == (((0, 2),), ((1, 5),))
    t[1, 0, 0] = -1
    with pytest.raises(ValueError, match="negative distance"):
        kernel.normalize_bands(t, 2)
    with pytest.raises(ValueError, match="bands has 2 heads but q has 3"):
        kernel.normalize_bands(kernel.bands_tensor((((0, 2),), ((1, 3),))), 3)


def test_normalized_bands_come_back_as_they_are():
    # the model makes its bands once and passes them at every call: the same tuple comes back, and
    # the checks of an equal tuple run once (a cache by value, not by the object's identity)
    bands = kernel.normalize_bands(kernel.bands_tensor((((0, 2), (4, 6)), ((1, 3),))), 2)
    assert kernel.normalize_bands(bands, 2) == bands and isinstance(bands[0][0], tuple)
    hits = kernel._checked.cache_info().hits
    assert kernel.normalize_bands(tuple(tuple(tuple(p) for p in head) for head in bands), 2) == bands
    assert kernel._checked.cache_info().hits == hits + 1
    with pytest.raises(ValueError, match="bands has 2 heads but q has 3"):
        kernel.normalize_bands(bands, 3)
    with pytest.raises(ValueError, match="sorted and disjoint"):
        kernel.normalize_bands((((4, 6), (0, 2)), ((1, 3),)), 2)


def test_auto_picks_torch_on_cpu(monkeypatch):
    def boom(*args):
        raise AssertionError("auto must not pick the Triton kernel for CPU tensors")
    monkeypatch.setattr(kernel, "triton_band_attention", boom)
    q, k, v = make_qkv(1, 2, 6, 16, torch.float32)
    kernel.band_attention(q, k, v, [[(0, 3)], [(2, 5)]])


# -----------------------------------------------------------------------------
# The Triton kernels under the interpreter (16 x 16 tiles, so small shapes cross many tiles)

def triton_fn(bands, scale=None):
    return lambda a, b, c: kernel.band_attention(a, b, c, bands, scale=scale, backend="triton")


@needs_interpreter
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 5e-3)])
@pytest.mark.parametrize("T,pattern", [(1, "sp"), (5, "sp_exclusive"), (37, "sp"), (70, "sp_exclusive"),
                                       (37, "window"), (70, "dense")])
def test_triton_sp_layouts(dtype, tol, T, pattern):
    torch.manual_seed(T)
    H, N = 6, 64
    bands = sp_bands(H, N, pattern)
    q, k, v = make_qkv(1, H, T, 16, dtype)
    got = assert_close_to_reference(triton_fn(bands), q, k, v, bands, tol)
    # and against the fallback, which is what the model uses on CPU
    ref = kernel.band_attention(q, k, v, bands, backend="torch")
    assert rel_err(got[0], ref) <= tol


@needs_interpreter
@pytest.mark.parametrize("seed,scale", [(0, 0.3), (1, 2.0), (2, -0.7), (3, 0.0)])  # any real scale is legal
def test_triton_random_intervals(seed, scale):
    rng = random.Random(100 + seed)
    torch.manual_seed(seed)
    H, T = 3, rng.choice([19, 50])
    bands = random_bands(H, T + 8, rng)
    q, k, v = make_qkv(1, H, T, 32, torch.float32)
    assert_close_to_reference(triton_fn(bands, scale=scale), q, k, v, bands, tol=1e-4, scale=scale)


def assert_exact_at_band_edges(lows, highs, T, D, dtype, tol, device="cpu"):
    """One head per band [lo, hi), lo in lows and hi in highs; each head's output and gradients
    against the float64 reference on their own (one bad head is diluted in an error over all)."""
    pairs = [(lo, hi) for lo in lows for hi in highs]
    bands = [[p] for p in pairs]
    q, k, v = make_qkv(1, len(bands), T, D, dtype, device)
    do = torch.randn_like(q)
    got = run_with_grads(triton_fn(bands), q, k, v, do)
    ref = run_with_grads(lambda a, b, c: reference(a, b, c, bands), q, k, v, do.double())
    errors = [(name, pairs[h], rel_err(g[:, h], r[:, h]))
              for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref) for h in range(len(pairs))]
    wrong = [(name, band, f"{err:.1e}") for name, band, err in errors if not err <= tol]
    assert not wrong, f"(gradient, band, relative error) beyond {tol:.0e}: {wrong}"


@needs_interpreter
def test_triton_tiles_at_a_band_edge():
    # A tile skips the band mask when all its (query, key) distances lie in [lo, hi). With 16 x 16
    # tiles those distances run from a multiple of 16 minus 15 to it plus 15, so the test of that is
    # exact only if some band's lo is such a lower end (1, 17) and some band's hi is one past such an
    # upper end (32, 48), with neighbours on either side; the band must be two tiles wide for a tile to
    # fit. The sp layouts and random bands above seldom make one. tests/test_kernel_gpu.py does the
    # same with the GPU's tiles.
    torch.manual_seed(0)
    assert_exact_at_band_edges((0, 1, 2, 16, 17, 18), (31, 32, 33, 47, 48, 49), 64, 16, torch.float32, 1e-4)


@needs_interpreter
def test_triton_empty_rows_zero_output_and_grad():
    bands = [[(20, 40)], [(0, 3), (30, 31)]]  # head 0: rows < 20 empty; T = 24 clips both bands
    q, k, v = make_qkv(1, 2, 24, 16, torch.float32)
    got = assert_close_to_reference(triton_fn(bands), q, k, v, bands, tol=1e-4)
    o, dq, dk, dv = got
    assert (o[0, 0, :20] == 0).all() and (dq[0, 0, :20] == 0).all()
    assert (dk[0, 0, 4:] == 0).all() and (dv[0, 0, 4:] == 0).all()  # keys j > T-1-20 seen by no row


@needs_interpreter
def test_triton_double_backward_is_refused():
    # The kernels' gradients are not themselves differentiable: a gradient of a gradient (a gradient
    # penalty) must fail loudly, not come out as if that term were zero.
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 9, 16, torch.float32))
    o = kernel.band_attention(q, k, v, [[(0, 3)], [(1, 6)]], backend="triton")
    (dq,) = torch.autograd.grad(o.pow(2).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        dq.pow(2).sum().backward()


@needs_interpreter
def test_triton_blocks_without_program_get_zeros(monkeypatch):
    # Blocks that see no key get no program (kernel_launch.schedule): a neighbour writes their zeros. Fresh
    # outputs are poisoned with NaN here, so a row nobody writes shows up.
    def poison(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t
    for name in ("empty", "empty_like", "empty_strided"):  # kernel.py makes its outputs with these
        monkeypatch.setattr(torch, name, lambda *a, make=getattr(torch, name), **kw: poison(make(*a, **kw)))
    # head 0 sees nothing, head 1 only rows >= 40 (2 of 4 query blocks empty), head 2 only rows >= 60
    bands = [[(70, 80)], [(40, 45)], [(0, 2), (60, 61)]]
    q, k, v = make_qkv(2, 3, 64, 16, torch.float32)
    assert torch.empty_strided((2,), (1,)).isnan().all()  # the poison is in place
    o, dq, dk, dv = assert_close_to_reference(triton_fn(bands), q, k, v, bands, tol=1e-4)
    assert (o[:, 0] == 0).all() and (dk[:, 0] == 0).all() and (o[:, 1, :40] == 0).all()
    assert (dq[:, 1, :40] == 0).all() and (dk[:, 1, 24:] == 0).all() and (dv[:, 1, 24:] == 0).all()


@needs_interpreter
@pytest.mark.parametrize("shape", [(1, 2, 0, 16), (0, 2, 5, 16), (1, 0, 5, 16)])
def test_triton_empty_batch_or_sequence(shape):
    # nothing to compute: an empty output and empty gradients, as the fallback gives (no launch)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    o = kernel.band_attention(q, k, v, [[(0, 3)], [(1, 4)]][:shape[1]], backend="triton")
    o.sum().backward()
    assert o.shape == shape and q.grad.shape == shape and k.grad.shape == shape


@pytest.mark.skipif(not kernel.HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("side", ["q", "k"])
@pytest.mark.parametrize("seed", range(6))
def test_schedule_covers_every_row_once(side, seed):
    # Each head's rows are owned by exactly one program (its block) or zero-filled by exactly one,
    # every block that visits a tile has a program, and the longest programs come first.
    rng = random.Random(seed)
    H, T = rng.randint(1, 6), rng.choice([1, 15, 16, 47, 200])
    BM, BN = rng.choice([(16, 16), (64, 64), (32, 64), (64, 32)])
    bands = kernel.normalize_bands(random_bands(H, T + 20, rng) if seed else sp_bands(H, T, "sp_exclusive"), H)
    rows = (BM if side == "q" else BN)
    schedule, tiles = kernel_launch.schedule(bands, T, BM, BN, side, "cpu")
    jobs = schedule.tolist()
    mask = kernel.band_mask(bands, T)                                   # (H, T, T), [h, query, key]
    seen = mask.any(-1) if side == "q" else mask.any(-2)                # rows of this side with a pair
    owned = torch.zeros(H, T, dtype=torch.long)
    # each row carries its head's intervals clipped to [0, T], padded with [0, 0) to the widest head
    clipped = [[(lo, min(hi, T)) for lo, hi in head if lo < min(hi, T)] for head in bands]
    K = max(1, max(len(c) for c in clipped))
    padded = [[x for pair in c + [(0, 0)] * (K - len(c)) for x in pair] for c in clipped]
    for h, r0, z0, z1, *intervals in jobs:
        assert intervals == padded[h]
        owned[h, r0:r0 + rows] += 1
        owned[h, z0:z1] += 1
    assert (owned == 1).all()
    launched = {(h, r0) for h, r0, *_ in jobs}
    for h in range(H):
        for r0 in range(0, T, rows):
            if seen[h, r0:r0 + rows].any():
                assert (h, r0) in launched
    lengths = [kernel_launch.block_tiles(bands[h], T, BM, BN, side, r0) + -(-(z1 - z0) // rows)
               for h, r0, z0, z1, *_ in jobs]  # a block of zero-filled rows counts as a tile
    assert lengths == sorted(lengths, reverse=True) and sum(lengths) == tiles


@needs_interpreter
def test_triton_non_contiguous_fused_qkv():
    torch.manual_seed(1)
    H = 4
    bands = sp_bands(H, 48, "sp")
    q, k, v = make_qkv(2, H, 33, 16, torch.float32, fused=True)
    assert not q.is_contiguous()
    assert_close_to_reference(triton_fn(bands), q, k, v, bands, tol=1e-4)
    # last-dim stride != 1 (transposed head dim) is copied, still right
    qt = torch.randn(2, H, 16, 33).transpose(-1, -2)
    assert_close_to_reference(triton_fn(bands), qt, k, v, bands, tol=1e-4)
    # what a TMA descriptor cannot take: a broadcast key (batch stride 0) and a start that is not
    # 16-byte aligned are copied; a size-1 dim's stride (here 3) does not matter
    kb = torch.randn(1, H, 33, 16).expand(2, H, 33, 16)
    assert_close_to_reference(triton_fn(bands), q, kb, v, bands, tol=1e-4)
    q1, k1, v1 = (torch.randn(H * 33 * 16 + 3)[3:].as_strided((1, H, 33, 16), (3, 33 * 16, 16, 1)) for _ in range(3))
    assert q1.data_ptr() % 16 != 0
    assert_close_to_reference(triton_fn(bands), q1, k1, v1, bands, tol=1e-4)


@pytest.fixture
def fresh_plans():
    """Launch plans remember their tile path (TMA or pointers): a test that forces one gets new plans."""
    kernel_launch.plan.cache_clear()
    yield
    kernel_launch.plan.cache_clear()


@needs_interpreter
@pytest.mark.parametrize("fused", [False, True])
def test_triton_pointer_loads_without_tma(monkeypatch, fresh_plans, fused):
    # GPUs before Hopper, and short calls on Hopper, stream the tiles through strided pointers
    # instead of TMA descriptors
    monkeypatch.setattr(kernel_launch, "tma_on", lambda device: False)
    torch.manual_seed(7)
    H = 4
    for T, pattern in ((37, "sp"), (50, "sp_exclusive")):
        bands = sp_bands(H, 48, pattern)
        q, k, v = make_qkv(2, H, T, 16, torch.float32, fused=fused)
        assert_close_to_reference(triton_fn(bands), q, k, v, bands, tol=1e-4)


def test_dkdv_config_with_tiny_stat_tiles_is_refused(monkeypatch):
    # 16-query dK/dV steps would stream 64-byte LSE/Delta TMA boxes, which fault on the GPU; the host
    # refuses them with a message instead of a sticky CUDA error
    monkeypatch.setattr(kernel_launch, "interpreting", lambda: False)
    tiny = dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=3)
    monkeypatch.setitem(kernel_launch.KERNEL_CONFIGS, "dkdv", {64: {kernel_launch.BIG: tiny}})
    with pytest.raises(ValueError, match="BLOCK_M=16"):
        kernel_launch.launch_config("dkdv", 64, torch.bfloat16, 1024, tma=True)
    assert kernel_launch.launch_config("dkdv", 64, torch.bfloat16, 1024, tma=False)["BLOCK_M"] == 16


@needs_interpreter
def test_triton_outputs_in_bthd_order_and_custom_ops_check():
    # o and dq/dk/dv come in (B, T, H, D) memory order: the model's y.transpose(1, 2) and the grads of
    # the fused qkv views are then views, so autograd keeps no second copy of o. The operators that
    # torch.compile's graphs call must declare those strides in their fake implementations (opcheck
    # compares). They have no autograd of their own (_BandAttention's is traced around them), so
    # opcheck gets inputs that do not require grad.
    bands = sp_bands(2, 20, "sp")
    q, k, v = (t.detach().requires_grad_() for t in make_qkv(1, 2, 20, 16, torch.float32, fused=True))
    out = kernel.band_attention(q, k, v, bands, backend="triton")
    out.backward(torch.randn_like(out))
    assert out.transpose(1, 2).is_contiguous()
    bands = kernel.normalize_bands(bands, 2)  # what crosses the operators' schema, as it is
    q, k, v = (t.detach() for t in (q, k, v))
    o, lse = torch.ops.band_attention.fwd(q, k, v, bands, 0.25)
    for op, args in ((torch.ops.band_attention.fwd.default, (q, k, v, bands, 0.25)),
                     (torch.ops.band_attention.bwd.default, (torch.randn_like(o), q, k, v, o, lse, bands, 0.25))):
        result = torch.library.opcheck(op, args)
        assert set(result.values()) == {"SUCCESS"}, result


@needs_interpreter
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_runs_the_operators_and_matches_the_reference(backend):
    # Under torch.compile the launches go through the operators band_attention::fwd / ::bwd (dynamo
    # cannot trace Triton's launcher): their outputs and gradients must be the eager kernel's. Ragged T
    # and an sp_exclusive head with rows that see nothing; the graphs must hold both operators.
    torch.manual_seed(11)
    bands = sp_bands(3, 40, "sp_exclusive")
    q, k, v = make_qkv(2, 3, 45, 16, torch.float32, fused=True)
    from torch._dynamo.testing import AotEagerAndRecordGraphs
    recorder = AotEagerAndRecordGraphs()
    compiled = torch.compile(lambda a, b, c: kernel.band_attention(a, b, c, bands, backend="triton"),
                             backend=recorder if backend == "aot_eager" else backend, fullgraph=True)
    torch._dynamo.reset()
    assert_close_to_reference(compiled, q, k, v, bands, tol=1e-5)
    if backend == "aot_eager":
        assert "band_attention.fwd" in "".join(g.code for g in recorder.fw_graphs)
        assert "band_attention.bwd" in "".join(g.code for g in recorder.bw_graphs)


@needs_interpreter
def test_the_model_traces_as_one_graph_without_warnings():
    # torch.compile(model, fullgraph=True) needs the attention call traceable without a graph break,
    # and nothing should warn every user who compiles (dynamo warns when it traces an lru_cache)
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=4, n_embd=64, block_size=32, vocab_size=97, dropout=0.0, attn="sp",
                      attn_backend="triton"))
    x = torch.randint(0, 97, (2, 32))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # not "error", which raises inside torch code that dynamo traces
        explained = torch._dynamo.explain(m)(x, x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    assert [str(w.message) for w in shown] == []


@needs_interpreter
def test_triton_head_dim_64_and_tensor_bands():
    torch.manual_seed(2)
    bands = torch.tensor([[[0, 9], [0, 0]], [[3, 5], [11, 30]]])
    q, k, v = make_qkv(1, 2, 29, 64, torch.float16)
    nested = [[(0, 9)], [(3, 5), (11, 30)]]
    assert_close_to_reference(triton_fn(bands), q, k, v, nested, tol=5e-3)


@needs_interpreter
def test_triton_rejects_unsupported_head_dim():
    q, k, v = make_qkv(1, 1, 4, 24, torch.float32)
    with pytest.raises(ValueError):
        kernel.band_attention(q, k, v, [[(0, 4)]], backend="triton")


# -----------------------------------------------------------------------------
# FlexAttention with the same bands (a baseline; PyTorch runs its backward on GPUs only)

def test_flex_bands_forward_matches_reference():
    rng = random.Random(3)
    bands = random_bands(3, 37, rng) + [sp_bands(1, 37, "dense")[0]]
    q, k, v = make_qkv(2, 4, 37, 16, torch.float32)
    with torch.no_grad():
        out = baselines.flex_band_attention(q, k, v, kernel.normalize_bands(bands, 4))
    assert torch.isfinite(out).all()
    assert rel_err(out, reference(q, k, v, bands)) < 1e-5


def check_decode_step(bands, q, k, v, backend, tol):
    """Decode steps at several positions (int and tensor) over a cache whose slots after pos hold NaN
    (never read) equal row pos of full band attention in float64."""
    H, T = q.shape[1], q.shape[2]
    full = reference(q, k, v, bands)
    for pos in (0, 1, 17, T // 2, T - 1):
        cache_k, cache_v = k.clone(), v.clone()
        cache_k[:, :, pos + 1:] = float("nan")
        cache_v[:, :, pos + 1:] = float("nan")
        for p in (pos, torch.tensor(pos, device=q.device)):  # a tensor, as the CUDA-graph step passes it
            step = kernel.band_decode_attention(q[:, :, pos:pos + 1], cache_k, cache_v, bands, p,
                                                q.shape[-1] ** -0.5, backend=backend)
            assert step.shape == (q.shape[0], H, 1, q.shape[-1]) and step.dtype == q.dtype
            assert torch.isfinite(step).all()
            torch.testing.assert_close(step.double(), full[:, :, pos:pos + 1], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend,dtype", [("torch", torch.float32),
                                           pytest.param("triton", torch.float32, marks=needs_interpreter),
                                           pytest.param("triton", torch.float16, marks=needs_interpreter)])
@pytest.mark.parametrize("seed", range(4))
def test_band_decode_reads_the_last_row(seed, backend, dtype):
    # random intervals, some heads empty or starting after pos (no visible key: 0), and the SP layouts
    rng = random.Random(seed)
    H, T = 5, 40
    bands = random_bands(H, T, rng) if seed < 3 else sp_bands(H, T, "sp")
    q, k, v = make_qkv(2, H, T, 16, dtype)
    check_decode_step(kernel.normalize_bands(bands, H), q, k, v, backend, 1e-5 if dtype == torch.float32 else 2e-3)
