"""
Band attention: every head attends to the keys whose causal distance lies in its own set of intervals.

    band_attention(q, k, v, bands, scale=None, backend="auto") -> Tensor

q, k, v are (B, H, T, D). `bands` is an integer tensor (H, K, 2): row [lo, hi) of head h is a
half-open interval of distances d = i - j, and key j is visible to query i iff lo <= d < hi for one
of the head's intervals. Within a head the non-empty intervals are sorted and disjoint; empty rows
(hi <= lo) are padding, so heads with fewer intervals fit in one tensor. A query with no visible key
gets output 0 and zero gradient (never NaN).

Read this file in order:
1. `band_attention` and the bands: the contract, checked once, and the one form of the bands from
   there on (a tuple per head of (lo, hi) pairs), which the model makes once and passes at every call.
2. The reference: a plain PyTorch masked softmax (`torch_band_attention`), for CPUs, tests and small
   T. Every fast path is tested against it.
3. The Triton kernels: the forward (FlashAttention-2 with the key loop bounded by the bands) and the
   two backward kernels, each inner loop with its steps labelled.
4. The autograd function that joins them (`_BandAttention`, called by `triton_band_attention`), and
   what each pass launches.
5. Generation's one-token step (`band_decode_attention`).
What makes the launches fast (the schedule of programs, TMA tiles, launch configs, direct launches)
is in lib/kernel_launch.py; docs/kernel.md explains each idea with its measured effect.

backend: "torch" (the reference), "triton" (the fused kernels; CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1), or "auto" (triton for CUDA tensors when triton imports and the head dim is a
power of two in [16, 128], else torch). `TRITON_INTERPRET=1 python kernel.py` runs the Triton kernels
on a CPU against the reference: put a print() or breakpoint() in a kernel to watch it work.
"""

import functools
import math

import torch
import torch.nn.functional as F

try:  # triton is a Linux-only dependency; without it the torch backend still works everywhere
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the platform
    HAS_TRITON = False
if HAS_TRITON:  # the launch machinery needs triton; a missing lib/kernel_launch.py is an error, not a fallback
    from lib import kernel_launch as launch

BACKENDS = ("auto", "torch", "triton")
LOG2E = 1.4426950408889634


# -----------------------------------------------------------------------------
# 1. The entry point, and the bands

def band_attention(q, k, v, bands, scale=None, backend="auto"):
    """Attention of q over k, v where head h sees key j from query i iff i - j lies in one of
    bands[h]'s [lo, hi) intervals. q, k, v: (B, H, T, D); returns q's shape and dtype."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not (q.dim() == 4 and q.shape == k.shape == v.shape):
        raise ValueError("q, k, v must all have shape (B, H, T, D); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError("q, k, v must share one dtype and one device")
    bands = normalize_bands(bands, q.shape[1])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if backend == "auto":
        backend = "triton" if (q.is_cuda and triton_supports(q)) else "torch"
    if backend == "torch":
        return torch_band_attention(q, k, v, bands, scale)
    if not HAS_TRITON:
        raise ValueError("backend='triton' needs the triton package (Linux); use backend='torch'")
    return triton_band_attention(q, k, v, bands, scale)


def normalize_bands(bands, n_head):
    """The bands in the one form the rest of this file uses: a tuple (one per head) of tuples of
    non-empty (lo, hi) intervals, sorted and disjoint. Being hashable, it keys the caches of masks and
    launch plans, and torch.compile treats it as a constant.

    Accepts the (H, K, 2) integer tensor of the contract, or the same nested as Python sequences, and
    raises ValueError on anything that is not H sorted lists of disjoint intervals of non-negative
    distances. Normalized bands come back as they are (the check of an equal tuple is cached). A
    tensor is read on the host at every call (on a GPU that waits for the GPU): make the bands once,
    as the model does, and pass the result.
    """
    if isinstance(bands, torch.Tensor):
        if bands.is_floating_point() or bands.is_complex() or bands.dtype == torch.bool:
            raise ValueError(f"bands must be an integer tensor, got dtype {bands.dtype}")
        if bands.dim() != 3 or bands.shape[-1] != 2:
            raise ValueError(f"bands must have shape (n_head, K, 2), got {tuple(bands.shape)}")
        bands = bands.tolist()
    if torch.compiler.is_compiling():  # constants, checked once as the model is traced (dynamo would
        return _count_heads(_checked.__wrapped__(_as_tuples(bands)), n_head)  # warn about tracing the cache)
    try:
        out = _checked(bands)  # the model's own bands, a tuple of tuples: no copy, one cache lookup
    except TypeError:  # lists inside: unhashable
        out = _checked(_as_tuples(bands))
    return _count_heads(out, n_head)


def _as_tuples(bands):
    """Nested sequences (heads, intervals, pairs) as nested tuples, which can key a cache."""
    try:
        return tuple([tuple([tuple(pair) for pair in head]) for head in bands])  # lists: faster than generators
    except TypeError:
        raise ValueError("bands must be nested as (n_head, K, 2): per head, a list of (lo, hi) pairs") from None


def _count_heads(out, n_head):
    """The bands, once they are seen to have one entry a head."""
    if len(out) != n_head:
        raise ValueError(f"bands has {len(out)} heads but q has {n_head}")
    return out


@functools.lru_cache(maxsize=256)
def _checked(bands):
    out = []
    for h, intervals in enumerate(bands):
        kept = []
        for pair in intervals:
            if len(pair) != 2:
                raise ValueError(f"head {h}: interval {pair} is not a (lo, hi) pair")
            lo, hi = int(pair[0]), int(pair[1])
            if hi <= lo:
                continue  # empty: padding
            if lo < 0:
                raise ValueError(f"head {h}: interval [{lo}, {hi}) has a negative distance "
                                 "(keys after the query); attention here is causal, lo must be >= 0")
            if kept and lo < kept[-1][1]:
                raise ValueError(f"head {h}: intervals must be sorted and disjoint, "
                                 f"got [{kept[-1][0]}, {kept[-1][1]}) before [{lo}, {hi})")
            kept.append((lo, hi))
        out.append(tuple(kept))
    return tuple(out)


def bands_tensor(bands, T=None):
    """The (H, K, 2) int64 tensor of normalized bands, padding short heads with empty [0, 0) rows.
    With T, every interval is clipped to distances < T first (an interval beyond T becomes [0, 0))."""
    if T is not None:
        bands = tuple(tuple((lo, min(hi, T)) for lo, hi in head if lo < min(hi, T)) for head in bands)
    K = max([1] + [len(b) for b in bands])  # no heads: K = 1, zero rows
    rows = [list(b) + [(0, 0)] * (K - len(b)) for b in bands]
    return torch.tensor(rows, dtype=torch.long).view(len(bands), K, 2)


def band_mask(bands, T, device=None, Tk=None, q_start=0):
    """(H, T, Tk) boolean mask: [h, i, j] is True iff key j is visible to query i in head h.

    Queries sit at positions q_start .. q_start + T - 1 and keys at 0 .. Tk - 1 (Tk defaults to T):
    a KV-cache decode step is the last rows of the full mask.
    """
    Tk = T if Tk is None else Tk
    b = bands_on(bands, str(torch.device(device or "cpu")))     # (H, K, 2)
    i = torch.arange(q_start, q_start + T, device=device)
    j = torch.arange(Tk, device=device)
    d = (i[:, None] - j[None, :])[None, None]                   # (1, 1, T, Tk) distances i - j
    lo, hi = b[..., 0, None, None], b[..., 1, None, None]       # (H, K, 1, 1)
    return ((lo <= d) & (d < hi)).any(dim=1)


@functools.lru_cache(maxsize=64)
def bands_on(bands, device):
    """bands_tensor on a device (a string), made once: masks, decode steps and FlexAttention ask for it
    in every layer, and a CUDA graph cannot record the copy to the GPU."""
    return bands_tensor(bands).to(device)


# -----------------------------------------------------------------------------
# 2. The reference: a PyTorch masked softmax

def torch_band_attention(q, k, v, bands, scale):
    """The reference: the (H, T, T) band mask and a masked softmax."""
    return masked_attention(q, k, v, band_mask(bands, q.shape[-2], q.device), scale)


def masked_attention(q, k, v, mask, scale):
    """Softmax attention restricted to `mask`, computed in float32; the result has q's dtype. Rows
    with no visible key give 0 with zero gradient."""
    p = masked_softmax(q, k, mask, scale)
    with torch.autocast(q.device.type, enabled=False):
        return (p @ v.to(p.dtype)).to(q.dtype)


def masked_softmax(q, k, mask, scale):
    """Attention probabilities (B, H, Tq, Tk) restricted to `mask` (broadcastable, True = visible),
    in float32 (float64 stays float64, autocast or not). Rows with no visible key are 0."""
    ct = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        att = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale
        # A large finite negative instead of -inf: a row with no visible key then gives a finite
        # uniform softmax, which the final `* mask` zeroes, with zero gradient; -inf would give NaN.
        att = att.masked_fill(~mask, torch.finfo(ct).min)
        return torch.softmax(att, dim=-1) * mask


# -----------------------------------------------------------------------------
# 3. The Triton kernels: FlashAttention-2 with the key loop bounded by the bands
#
# A program owns one block of BLOCK_M queries (forward, dQ) or of BLOCK_N keys (dK/dV) of one
# (batch, head), and loops over the tiles of the other side that its head's intervals reach. For an
# interval [lo, hi), query rows [m0, m0 + BLOCK_M) see the keys in [m0 - hi + 1, m0 + BLOCK_M - lo),
# and key rows [n0, n0 + BLOCK_N) are seen by the queries in [n0 + lo, n0 + BLOCK_N - 1 + hi).
# No other tile is ever loaded: that is where SPAttention's saving comes from.
# A tile visited for one interval is masked to that interval only. Intervals are disjoint, so a tile
# that straddles two is visited twice and each (query, key) pair still counts once.
# Scores are kept in log2 units, s2 = (q . k) * scale * log2(e), so that exp2 (one hardware
# instruction) replaces exp; the saved log-sum-exp LSE is in the same units: p = exp2(s2 - LSE).
# Which block a program owns, and its head's intervals, come from a schedule row made on the host
# (kernel_launch.schedule). The tiles a loop streams arrive through TMA descriptors (Hopper GPUs, long
# passes: TMA_TILES) or through pointers, as the launch plan decides (kernel_launch.plan).

if HAS_TRITON:

    @triton.jit
    def _program_block(SCHEDULE, B, H, ROWS: tl.constexpr, N_INTERVALS: tl.constexpr):
        """This program's work, from its schedule row (kernel_launch.schedule): row pid // B, for batch
        pid % B (a row's batches run side by side). Returns b, h, the block's first row, b * H + h, the
        rows [fill_start, fill_end) it zero-fills, and where the row's N_INTERVALS intervals [lo, hi)
        of head h start."""
        job = SCHEDULE + (tl.program_id(0) // B) * (4 + 2 * N_INTERVALS)
        b = tl.program_id(0) % B
        h = tl.load(job)
        r0 = tl.multiple_of(tl.load(job + 1), ROWS)
        return b, h, r0, b * H + h, tl.load(job + 2), tl.load(job + 3), job + 4

    @triton.jit
    def _key_range(m0, lo, hi, T, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """First (BLOCK_N-aligned) and end key index that query rows [m0, m0 + BLOCK_M) see in [lo, hi)."""
        start = tl.maximum(m0 - hi + 1, 0)
        end = tl.minimum(m0 + BLOCK_M - lo, T)
        end = tl.where(hi > lo, end, 0)  # padding interval [0, 0): no block at all
        return (start // BLOCK_N) * BLOCK_N, end

    @triton.jit
    def _tile_mask(offs_m, offs_n, lo, hi):
        """(BLOCK_M, BLOCK_N) visibility of an edge tile: distance i - j in [lo, hi), as one unsigned
        compare an element (i - j - lo wraps around to a huge number below lo). No test against T is
        needed: lo >= 0 keeps every key past T from the rows before T; the forward and dQ never store
        the rows past T, and in dK/dV those rows' q and dO are zero, so they add nothing."""
        d = offs_m[:, None] - offs_n[None, :] - lo
        return d.to(tl.uint32, bitcast=True) < (hi - lo).to(tl.uint32, bitcast=True)

    @triton.jit
    def _load_rows(src, b, h, r0, T, stride_b, stride_h, stride_t,
                   ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, TMA_TILES: tl.constexpr):
        """Rows r0 .. r0 + ROWS - 1 of head h of batch b of a (B, H, T, D) tensor, zero past T. src is
        a TMA descriptor when TMA_TILES (Hopper's copy engine does the addresses and bounds), else a
        pointer."""
        if TMA_TILES:
            tile = src.load([b, h, r0, 0]).reshape(ROWS, HEAD_DIM)
        else:
            rows = r0 + tl.arange(0, ROWS)
            ptrs = (src + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
                    + rows[:, None] * stride_t + tl.arange(0, HEAD_DIM)[None, :])
            tile = tl.load(ptrs, mask=rows[:, None] < T, other=0.0)
        return tile

    @triton.jit
    def _fill_rows(X, stride_t, fill_start, fill_end, value, ROWS: tl.constexpr, COLS: tl.constexpr):
        """X[fill_start:fill_end, :COLS] = value, X offset to one (batch, head): the rows of blocks that
        got no program (they see no key)."""
        cols = tl.arange(0, COLS)
        for r0 in range(fill_start, fill_end, ROWS):
            rows = r0 + tl.arange(0, ROWS)
            tl.store(X + rows[:, None] * stride_t + cols[None, :],
                     tl.full([ROWS, COLS], value, X.dtype.element_ty), mask=rows[:, None] < fill_end)

    @triton.jit
    def _band_fwd_kernel(
        Q,                                         # (B, H, T, D) queries, any strides with last-dim stride 1
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        O,                                         # (B, H, T, D) output
        LSE,                                       # (B*H, T) fp32 output (row stride stride_l): log2-sum-exp of each row
        SCHEDULE,                                  # int32 schedule rows (h, m0, fill_start, fill_end, intervals)
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q (elements)
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_ob, stride_oh, stride_ot,           # strides of O
        stride_l,                                  # row stride of LSE (T padded to 16 bytes, for TMA)
        B, H, T,                                   # batch, heads, sequence length
        N_INTERVALS: tl.constexpr,                 # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D, a power of two >= 16
        BLOCK_M: tl.constexpr,                     # queries per program
        BLOCK_N: tl.constexpr,                     # keys per inner-loop step
        DOT_PRECISION: tl.constexpr,               # "ieee" for fp32 inputs (no silent tf32), else "tf32" (unused by 16-bit dots)
        TMA_TILES: tl.constexpr,                   # whether K_SRC and V_SRC are TMA descriptors (the plan's choice)
    ):
        b, h, m0, bh, fill_start, fill_end, intervals = _program_block(SCHEDULE, B, H, BLOCK_M, N_INTERVALS)
        # int64 base offsets: B * H * T * D can pass 2**31.
        Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        O += b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh

        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)   # running row max (log2 units)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)                 # running row sum of exp2
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

        for iv in range(N_INTERVALS):
            lo = tl.load(intervals + 2 * iv)
            hi = tl.load(intervals + 2 * iv + 1)
            start, end = _key_range(m0, lo, hi, T, BLOCK_M, BLOCK_N)
            for n0 in range(start, end, BLOCK_N):
                n0 = tl.multiple_of(n0, BLOCK_N)
                cols = n0 + offs_n
                # -- load the key and value tiles (zeros past T) --
                k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA_TILES)
                v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA_TILES)
                # -- raw scores; only tiles that cross an edge of the interval need the mask --
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
                inside = (m0 - n0 - BLOCK_N + 1 >= lo) & (m0 + BLOCK_M - 1 - n0 < hi)
                if not inside:
                    s = tl.where(_tile_mask(offs_m, cols, lo, hi), s, float("-inf"))
                # -- online softmax in log2 units; the scale is applied to the row max and folded into
                #    one FMA an element (s * scale - m). A row that has seen no key yet keeps m = -inf,
                #    so use 0 as its reference to get p = 0 and alpha = 0 instead of exp2(-inf + inf) --
                m_new = tl.maximum(m_i, tl.max(s, 1) * sm_scale_log2)
                m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = tl.math.exp2(m_i - m_ref)
                p = tl.math.exp2(s * sm_scale_log2 - m_ref[:, None])
                l_i = l_i * alpha + tl.sum(p, 1)
                # -- accumulate P @ V --
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
                m_i = m_new

        # A row with no visible key (l = 0) gives O = 0 and LSE = +inf, which makes p = 0 in the backward.
        empty = l_i == 0.0
        acc = acc / tl.where(empty, 1.0, l_i)[:, None]
        lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
        tl.store(LSE + bh.to(tl.int64) * stride_l + offs_m, lse, mask=offs_m < T)
        tl.store(O + offs_m[:, None] * stride_ot + offs_d[None, :], acc.to(O.dtype.element_ty),
                 mask=offs_m[:, None] < T)
        # Rows of the blocks that got no program (they see no key): O = 0, LSE = +inf. Done last: stores
        # ahead of the loop would hold back its first loads (the compiler keeps loads behind stores).
        _fill_rows(O, stride_ot, fill_start, fill_end, 0.0, BLOCK_M, HEAD_DIM)
        _fill_rows(LSE + bh.to(tl.int64) * stride_l, 1, fill_start, fill_end, float("inf"), BLOCK_M, 1)

    @triton.jit
    def _load_stats(src, bh, r0, T, stride_l, ROWS: tl.constexpr, TMA_TILES: tl.constexpr):
        """LSE or Delta of rows r0 .. r0 + ROWS - 1 of (batch, head) bh, zero past T. Past T, q and dO are
        zero too, so those rows' P^T = exp2(0 - 0) = 1 meets zero dO (dV) and zero dP^T - Delta (dK):
        they add nothing, with no mask. TMA_TILES: one copy a tile instead of a load a thread and element."""
        if TMA_TILES:
            stats = src.load([bh, r0]).reshape(ROWS)
        else:
            rows = r0 + tl.arange(0, ROWS)
            stats = tl.load(src + bh.to(tl.int64) * stride_l + rows, mask=rows < T, other=0.0)
        return stats

    @triton.jit
    def _band_bwd_dq_kernel(
        Q, DO,                                     # (B, H, T, D) queries and dO, last-dim stride 1
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        O,                                         # (B, H, T, D) forward output, in DQ's layout (kernel_launch.bthd_empty)
        DQ,                                        # (B, H, T, D) output
        LSE,                                       # (B*H, T) fp32 from the forward
        DELTA,                                     # (B*H, T) fp32 output: rowsum(dO * O), read by the dK/dV kernel after
        SCHEDULE,                                  # int32 schedule rows (h, m0, fill_start, fill_end, intervals)
        sm_scale,                                  # scale (dQ = scale * dS K)
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q
        stride_dob, stride_doh, stride_dot,        # strides of dO
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_gb, stride_gh, stride_gt,           # strides of DQ and O (the same layout)
        stride_l,                                  # row stride of LSE and DELTA
        B, H, T,                                   # batch, heads, sequence length
        N_INTERVALS: tl.constexpr,                 # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D
        BLOCK_M: tl.constexpr,                     # queries per program
        BLOCK_N: tl.constexpr,                     # keys per inner-loop step
        DOT_PRECISION: tl.constexpr,               # "ieee" for fp32 inputs
        TMA_TILES: tl.constexpr,                   # whether K_SRC and V_SRC are TMA descriptors
    ):
        # One program owns a query block: the same key range and schedule as the forward.
        # It also makes Delta = rowsum(dO * O) for its rows (it loads dO anyway), which saves the
        # usual separate pre-pass launch; the dK/dV kernel runs after it.
        b, h, m0, bh, fill_start, fill_end, intervals = _program_block(SCHEDULE, B, H, BLOCK_M, N_INTERVALS)
        Q += b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        DO += b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
        DQ += b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh

        offs_m = m0 + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        rows = offs_m[:, None] < T
        q = tl.load(Q + offs_m[:, None] * stride_qt + offs_d[None, :], mask=rows, other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=rows, other=0.0)
        o = tl.load(O + b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh
                    + offs_m[:, None] * stride_gt + offs_d[None, :], mask=rows, other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + bh.to(tl.int64) * stride_l + offs_m, delta, mask=offs_m < T)
        lse = tl.load(LSE + bh.to(tl.int64) * stride_l + offs_m, mask=offs_m < T, other=float("inf"))
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

        for iv in range(N_INTERVALS):
            lo = tl.load(intervals + 2 * iv)
            hi = tl.load(intervals + 2 * iv + 1)
            start, end = _key_range(m0, lo, hi, T, BLOCK_M, BLOCK_N)
            for n0 in range(start, end, BLOCK_N):
                n0 = tl.multiple_of(n0, BLOCK_N)
                cols = n0 + offs_n
                # -- load the key and value tiles (zeros past T) --
                k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA_TILES)
                v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA_TILES)
                # -- both products first: the tensor cores compute dP = dO V^T during the exp2 of S = Q K^T --
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
                dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                # -- recompute P from the saved LSE; mask only the edge tiles --
                p = tl.math.exp2(s * sm_scale_log2 - lse[:, None])
                inside = (m0 - n0 - BLOCK_N + 1 >= lo) & (m0 + BLOCK_M - 1 - n0 < hi)
                if not inside:
                    p = tl.where(_tile_mask(offs_m, cols, lo, hi), p, 0.0)
                # -- dS = P * (dP - Delta); dQ += dS K --
                ds = p * (dp - delta[:, None])
                dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

        dq *= sm_scale
        tl.store(DQ + offs_m[:, None] * stride_gt + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=rows)
        # Rows of the blocks that got no program: dQ = 0, and Delta = 0 so that no row holds garbage
        # (last, as in the forward).
        _fill_rows(DQ, stride_gt, fill_start, fill_end, 0.0, BLOCK_M, HEAD_DIM)
        _fill_rows(DELTA + bh.to(tl.int64) * stride_l, 1, fill_start, fill_end, 0.0, BLOCK_M, 1)

    @triton.jit
    def _band_bwd_dkdv_kernel(
        Q_SRC, DO_SRC,                             # Q and dO (B, H, T, D): TMA descriptors of [1, 1, BLOCK_M, D] tiles, or pointers
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        DK, DV,                                    # (B, H, T, D) outputs, in one layout
        LSE_SRC, DELTA_SRC,                        # (B*H, T) fp32 LSE and rowsum(dO * O) (from the dQ kernel): TMA
                                                   # descriptors of [1, BLOCK_M] tiles (zeros past T), or pointers
        SCHEDULE,                                  # int32 schedule rows (h, n0, fill_start, fill_end, intervals)
        sm_scale,                                  # scale (dK = scale * dS^T Q)
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q (read only without TMA)
        stride_dob, stride_doh, stride_dot,        # strides of dO (read only without TMA)
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_gb, stride_gh, stride_gt,           # strides of DK and DV (the same layout)
        stride_l,                                  # row stride of LSE and DELTA
        B, H, T,                                   # batch, heads, sequence length
        N_INTERVALS: tl.constexpr,                 # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D
        BLOCK_M: tl.constexpr,                     # queries per inner-loop step
        BLOCK_N: tl.constexpr,                     # keys per program
        DOT_PRECISION: tl.constexpr,               # "ieee" for fp32 inputs
        TMA_TILES: tl.constexpr,                   # whether the *_SRC arguments are TMA descriptors
    ):
        # One program owns a key block and sums over the queries that see it: no atomics, deterministic.
        b, h, n0, bh, fill_start, fill_end, intervals = _program_block(SCHEDULE, B, H, BLOCK_N, N_INTERVALS)
        DK += b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh
        DV += b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh

        offs_n = n0 + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA_TILES)
        v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA_TILES)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

        for iv in range(N_INTERVALS):
            lo = tl.load(intervals + 2 * iv)
            hi = tl.load(intervals + 2 * iv + 1)
            # Queries that see a key of this block: [n0 + lo, n0 + BLOCK_N - 1 + hi), clipped to T;
            # both ends bounded (a window that only stops at T is the classic slow backward,
            # docs/kernel.md, section 2).
            start = ((n0 + lo) // BLOCK_M) * BLOCK_M
            end = tl.minimum(n0 + BLOCK_N - 1 + hi, T)
            end = tl.where(hi > lo, end, 0)
            for m0 in range(start, end, BLOCK_M):
                m0 = tl.multiple_of(m0, BLOCK_M)
                rows = m0 + offs_m
                # -- load the query-side tiles (zeros past T) and the row statistics --
                q = _load_rows(Q_SRC, b, h, m0, T, stride_qb, stride_qh, stride_qt, BLOCK_M, HEAD_DIM, TMA_TILES)
                do = _load_rows(DO_SRC, b, h, m0, T, stride_dob, stride_doh, stride_dot, BLOCK_M, HEAD_DIM, TMA_TILES)
                lse = _load_stats(LSE_SRC, bh, m0, T, stride_l, BLOCK_M, TMA_TILES)
                delta = _load_stats(DELTA_SRC, bh, m0, T, stride_l, BLOCK_M, TMA_TILES)
                # -- recompute P^T from the saved LSE; mask only the edge tiles --
                pT = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * sm_scale_log2 - lse[None, :])
                inside = (m0 - n0 - BLOCK_N + 1 >= lo) & (m0 + BLOCK_M - 1 - n0 < hi)
                if not inside:
                    pT = tl.where(tl.trans(_tile_mask(rows, offs_n, lo, hi)), pT, 0.0)
                # -- dV += P^T dO --
                dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PRECISION)
                # -- dS^T = P^T * (dP^T - Delta), dP^T = V dO^T; dK += dS^T Q --
                dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
                dsT = pT * (dpT - delta[None, :])
                dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PRECISION)

        dk *= sm_scale
        tl.store(DK + offs_n[:, None] * stride_gt + offs_d[None, :], dk.to(DK.dtype.element_ty),
                 mask=offs_n[:, None] < T)
        tl.store(DV + offs_n[:, None] * stride_gt + offs_d[None, :], dv.to(DV.dtype.element_ty),
                 mask=offs_n[:, None] < T)
        # Key rows of the blocks that got no program (no query sees them): zero gradients (last, as above).
        _fill_rows(DK, stride_gt, fill_start, fill_end, 0.0, BLOCK_N, HEAD_DIM)
        _fill_rows(DV, stride_gt, fill_start, fill_end, 0.0, BLOCK_N, HEAD_DIM)


# -----------------------------------------------------------------------------
# 4. Autograd: the kernels as one differentiable function

def triton_band_attention(q, k, v, bands, scale):
    """The fused band kernel; bands normalized as in `normalize_bands`. Differentiable in q, k, v."""
    if not triton_supports(q):
        raise ValueError(f"the Triton kernel needs a head dim that is a power of two in [16, 128], "
                         f"got {q.shape[-1]}; use backend='torch'")
    if not (q.is_cuda or launch.interpreting()):
        raise ValueError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
    if q.numel() == 0:  # T = 0 or B = 0: nothing to launch (a tensor descriptor needs a non-empty shape)
        return torch_band_attention(q, k, v, bands, scale)
    # The forward takes each row's max before scaling (one FMA an element), which needs scale > 0:
    # a negative scale is the positive one on -q, and scale 0 is scale 1 on q * 0 (uniform weights).
    if scale < 0:
        q, scale = -q, -scale
    elif scale == 0:
        q, scale = q * 0, 1.0
    return _BandAttention.apply(q, k, v, bands, float(scale))


def triton_supports(q):
    """Whether the Triton kernels take this input: head dim a power of two in [16, 128]."""
    D = q.shape[-1]
    return HAS_TRITON and 16 <= D <= 128 and D & (D - 1) == 0


# One autograd.Function for every call. Called eagerly, it runs the launches itself: the cheapest way
# in and out of Python. Under torch.compile, dynamo traces it and cannot trace into Triton's launcher,
# so there its forward and backward call the launches as two operators, band_attention::fwd and ::bwd,
# which the compiled graph keeps as opaque nodes. The operators are registered bare (a schema, a
# kernel per device, a fake for tracing): torch.library.custom_op would wrap each call in Python of its
# own (an autograd layer, a redispatch, checks), which a compiled step pays at every call
# (bench/LAB.md, section 3). The bands cross the schema as they are, nested (int[][][]).
if HAS_TRITON:

    class _BandAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, bands, scale):
            if torch.compiler.is_compiling():
                o, lse = torch.ops.band_attention.fwd(q, k, v, bands, scale)
            else:
                o, lse = _fwd_impl(q, k, v, bands, scale)
            ctx.save_for_backward(q, k, v, o, lse)
            ctx.bands, ctx.scale = bands, scale
            return o

        @staticmethod
        @torch.autograd.function.once_differentiable  # the kernels' gradients have no gradient of their own:
        def backward(ctx, do):                        # a double backward is refused, not silently wrong
            q, k, v, o, lse = ctx.saved_tensors
            if torch.compiler.is_compiling():
                dq, dk, dv = torch.ops.band_attention.bwd(do, q, k, v, o, lse, ctx.bands, ctx.scale)
            else:
                dq, dk, dv = _bwd_impl(do, q, k, v, o, lse, ctx.bands, ctx.scale)
            return dq, dk, dv, None, None

    torch.library.define("band_attention::fwd", "(Tensor q, Tensor k, Tensor v, int[][][] bands, float scale) "
                         "-> (Tensor, Tensor)")
    torch.library.define("band_attention::bwd", "(Tensor do, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, "
                         "int[][][] bands, float scale) -> (Tensor, Tensor, Tensor)")

    # The operators receive the bands as lists; the launch plans are cached by the tuple of them.
    # CPU: the kernels run there under TRITON_INTERPRET=1.
    torch.library.impl("band_attention::fwd", ("CUDA", "CPU"),
                       lambda q, k, v, bands, scale: _fwd_impl(q, k, v, _as_tuples(bands), scale))
    torch.library.impl("band_attention::bwd", ("CUDA", "CPU"),
                       lambda do, q, k, v, o, lse, bands, scale: _bwd_impl(do, q, k, v, o, lse, _as_tuples(bands),
                                                                           scale))

    @torch.library.register_fake("band_attention::fwd")
    def _(q, k, v, bands, scale):
        B, H, T, D = q.shape
        return launch.bthd_empty(B, H, T, D, q), launch.stats_empty(B, H, T, q.device)

    @torch.library.register_fake("band_attention::bwd")
    def _(do, q, k, v, o, lse, bands, scale):
        return tuple(launch.bthd_empty(*q.shape, q) for _ in range(3))


def _fwd_impl(q, k, v, bands, scale):
    """The forward pass: o (B, H, T, D) in q's dtype and the rows' LSE (B, H, T) fp32."""
    B, H, T, D = q.shape
    q, k, v = (launch.kernel_ready(t) for t in (q, k, v))
    o = launch.bthd_empty(B, H, T, D, q)
    lse = launch.stats_empty(B, H, T, q.device)
    plan = launch.plan("fwd", bands, B, T, D, q.dtype, q.device)
    launch.launch(_band_fwd_kernel, plan,
                  (q, launch.tiles(k, plan), launch.tiles(v, plan), o, lse, plan.schedule, scale * LOG2E),
                  (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], lse.stride(1), B, H, T))
    return o, lse


def _bwd_impl(do, q, k, v, o, lse, bands, scale):
    """The backward pass: dq, dk, dv. The dQ kernel runs first: it also writes Delta = rowsum(dO * O),
    which the dK/dV kernel reads (same stream, so ordered)."""
    B, H, T, D = q.shape
    q, k, v, do = (launch.kernel_ready(t) for t in (q, k, v, do))
    dq = launch.bthd_empty(B, H, T, D, q)
    if o.stride() != dq.stride():  # the dQ kernel reads O with DQ's strides
        o = launch.bthd_empty(B, H, T, D, q).copy_(o)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    delta = launch.stats_empty(B, H, T, q.device)
    if lse.stride() != delta.stride():  # both are read with one row stride
        lse = launch.stats_empty(B, H, T, q.device).copy_(lse)
    ints = (*q.stride()[:3], *do.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dq.stride()[:3],
            delta.stride(1), B, H, T)
    plan = launch.plan("dq", bands, B, T, D, q.dtype, q.device)
    launch.launch(_band_bwd_dq_kernel, plan,
                  (q, do, launch.tiles(k, plan), launch.tiles(v, plan), o, dq, lse, delta, plan.schedule,
                   scale, scale * LOG2E), ints)
    plan = launch.plan("dkdv", bands, B, T, D, q.dtype, q.device)
    launch.launch(_band_bwd_dkdv_kernel, plan,
                  (launch.tiles(q, plan, "BLOCK_M"), launch.tiles(do, plan, "BLOCK_M"), launch.tiles(k, plan),
                   launch.tiles(v, plan), dk, dv, launch.stat_tiles(lse, plan), launch.stat_tiles(delta, plan),
                   plan.schedule, scale, scale * LOG2E), ints)
    return dq, dk, dv


# -----------------------------------------------------------------------------
# 5. Generation's one-token step

def band_decode_attention(q, k, v, bands, pos, scale, backend="auto"):
    """One query per head at position `pos` (q: (B, H, 1, D); pos an int or a 0-d integer tensor on
    q's device) over a KV cache k, v (B, H, N, D) holding positions 0..pos (later ones are not read);
    bands normalized. Only the keys inside each head's bands are read: about 1/H of the cache for
    sp_exclusive, 2/H for sp. backend "triton": the decode kernel (kernel_launch.decode), which reads
    the bands in place in the cache; "torch": gathers the bands' keys, then one SDPA call (the
    reference); "auto": triton on CUDA where it runs."""
    if backend == "auto":
        backend = "triton" if q.is_cuda and triton_supports(q) else "torch"
    if backend == "triton":
        return launch.decode(q, k, v, bands, pos, scale * LOG2E)
    B, H, _, D = q.shape
    back, may_be_empty = _decode_offsets(bands, str(q.device))      # (H, S) slots
    keys = back + pos                                               # cache position of each slot
    valid = keys >= 0                                               # padding slots sit far below 0
    index = keys.clamp(min=0)[None, :, :, None].expand(B, H, keys.size(1), D)
    y = F.scaled_dot_product_attention(q, k.gather(2, index), v.gather(2, index),
                                       attn_mask=valid[None, :, None, :], scale=scale)
    if may_be_empty:  # a head whose bands all start after pos sees no key: 0, whatever the backend gives
        y = torch.where(valid.any(-1)[None, :, None, None], y, 0.0)
    return y


@functools.lru_cache(maxsize=64)
def _decode_offsets(bands, device):
    """For band_decode_attention, made once: slot (h, i * W + w) holds the key at distance lo_i + w,
    i.e. at position pos + back with back = -lo_i - w; slots past an interval's width get a back so
    negative that they are never valid. Also whether some head can see no key at all (a first
    interval not starting at distance 0)."""
    b = bands_on(bands, device)                                       # (H, K, 2)
    width = max([hi - lo for head in bands for lo, hi in head] + [1])
    offs = torch.arange(width, device=device)
    back = -b[..., 0, None] - offs                                    # (H, K, W)
    back = back.masked_fill(offs >= b[..., 1, None] - b[..., 0, None], -(1 << 40))
    return back.view(len(bands), -1), any(not head or head[0][0] > 0 for head in bands)


# -----------------------------------------------------------------------------
# Run the kernels against the reference: `TRITON_INTERPRET=1 python kernel.py` on a CPU (slow: the
# interpreter runs every program in Python), or `python kernel.py` on a CUDA GPU.

if __name__ == "__main__":
    if not HAS_TRITON:
        raise SystemExit("kernel.py runs the Triton kernels against the reference: pip install triton (Linux) first")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    B, H, T, D = 1, 4, 100, 16  # T not a multiple of the tiles; head 3's rows before 48 see nothing
    bands = normalize_bands([[(0, 16)], [(0, 4), (16, 32)], [(32, 48)], [(48, 64)]], H)
    q, k, v = (torch.randn(B, H, T, D, device=device, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T, D, device=device)
    for backend in ("torch", "triton"):
        o = band_attention(q, k, v, bands, backend=backend)
        grads = torch.autograd.grad(o, (q, k, v), do)
        if backend == "torch":
            ref = (o, *grads)
    names = ("o", "dq", "dk", "dv")
    print(f"{'triton' if device == 'cuda' else 'triton (interpreter)'} vs the reference, max abs diff: "
          + ", ".join(f"{n} {(a - b).abs().max().item():.1e}" for n, a, b in zip(names, (o, *grads), ref)))
