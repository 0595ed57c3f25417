"""
Band attention: every head attends to the keys whose causal distance lies in its own set of intervals.

    band_attention(q, k, v, bands, scale=None, backend="auto") -> Tensor

q, k, v are (B, H, T, D). `bands` is an integer tensor (H, K, 2): row [lo, hi) of head h is a
half-open interval of distances d = i - j, and key j is visible to query i iff lo <= d < hi for one
of the head's intervals. Within a head the non-empty intervals are sorted and disjoint; empty rows
(hi <= lo) are padding, so heads with fewer intervals fit in one tensor. A query with no visible key
gets output 0 and zero gradient (never NaN).

Read this file in order:
1. `band_attention` and the bands: the contract, checked once, and the one form of the bands that the
   rest of the file uses (a tuple per head of (lo, hi) pairs).
2. The reference: a plain PyTorch masked softmax (`torch_band_attention`), for CPUs, tests and small T.
   Every fast path is tested against it.
3. The Triton kernels: the forward (FlashAttention-2 with the key loop bounded by the bands) and the
   two backward kernels, each inner loop with its steps labelled.
4. The autograd wrapper that joins them (`triton_band_attention`).
5. Launching: what the host prepares so that the kernels run fast (the schedule of programs, TMA
   tiles, launch configs, a cached plan per shape). docs/kernel.md explains each idea and measures it.
6. Generation's one-token step (`band_decode_attention`) and FlexAttention with the same bands (the
   paper's approach, a baseline to race).

backend: "torch" (the reference), "triton" (the fused kernels; CUDA tensors, or CPU tensors under
TRITON_INTERPRET=1 for the tests), "flex", or "auto" (triton for CUDA tensors when triton imports and
the head dim is a power of two in [16, 128], else torch).
"""

import functools
import math
import os
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:  # triton is a Linux-only dependency; without it the torch backend still works everywhere
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the platform
    HAS_TRITON = False

BACKENDS = ("auto", "torch", "triton", "flex")


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
    if backend == "flex":
        return flex_band_attention(q, k, v, bands, scale)
    if not HAS_TRITON:
        raise ValueError("backend='triton' needs the triton package (Linux); use backend='torch'")
    return triton_band_attention(q, k, v, bands, scale)


def normalize_bands(bands, n_head):
    """Validate `bands` and return it in the form the rest of this file uses: a tuple (one per head)
    of tuples of non-empty (lo, hi) intervals, sorted and disjoint. Being hashable, it can key the
    caches of masks and launch plans, and torch.compile treats it as a constant.

    Accepts the (H, K, 2) integer tensor of the contract, or the same nested as Python sequences.
    Raises ValueError on anything that is not H sorted lists of disjoint intervals of non-negative
    distances. A tensor is read on the host once and remembered (until it is modified in place), so
    bands on the GPU cost no copy and no wait after the first call, and can be used inside a CUDA graph
    (not an inference-mode tensor: it has no version counter, so it is read at every call).
    "In place" is what the tensor's version counter sees: a write through `t.data` or `t.numpy()` is
    not seen, so change bands through the tensor itself (t[...] = ...), or pass a new one.
    """
    if torch.compiler.is_compiling() and not isinstance(bands, torch.Tensor):
        # dynamo traces this once with the bands as constants; through the lru_cache it would warn
        out = _normalize_nested.__wrapped__(_as_tuples(bands))
    elif _NORMALIZED.get(id(bands)) is bands:  # this function's own output, passed back in (the model's calls)
        out = bands
    else:
        out = _normalize_tensor(bands) if isinstance(bands, torch.Tensor) else _normalize_nested(_as_tuples(bands))
        if len(_NORMALIZED) >= 256:
            _NORMALIZED.clear()
        _NORMALIZED[id(out)] = out  # which also keeps it alive, so that its id is not reused
    if len(out) != n_head:
        raise ValueError(f"bands has {len(out)} heads but q has {n_head}")
    return out


_NORMALIZED = {}  # id(normalized bands) -> those bands
_TENSOR_BANDS = {}  # id(bands tensor) -> (a weak reference to it, its version counter, normalized bands)


def _normalize_tensor(bands):
    if bands.is_floating_point() or bands.is_complex() or bands.dtype == torch.bool:
        raise ValueError(f"bands must be an integer tensor, got dtype {bands.dtype}")
    if bands.dim() != 3 or bands.shape[-1] != 2:
        raise ValueError(f"bands must have shape (n_head, K, 2), got {tuple(bands.shape)}")
    if torch.is_inference(bands):  # no version counter to tell an in-place change: read it every time
        return _normalize_nested(_as_tuples(bands.tolist()))
    known = _TENSOR_BANDS.get(id(bands))
    if known is None or known[0]() is not bands or known[1] != bands._version:
        if len(_TENSOR_BANDS) >= 256:  # forget tensors that may be gone
            _TENSOR_BANDS.clear()
        known = (weakref.ref(bands), bands._version, _normalize_nested(_as_tuples(bands.tolist())))
        _TENSOR_BANDS[id(bands)] = known
    return known[2]


def _as_tuples(bands):
    """Nested sequences (heads, intervals, pairs) as nested tuples, which can key a cache."""
    try:
        return tuple(tuple(tuple(pair) for pair in head) for head in bands)
    except TypeError:
        raise ValueError("bands must be nested as (n_head, K, 2): per head, a list of (lo, hi) pairs") from None


@functools.lru_cache(maxsize=256)
def _normalize_nested(bands):
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
    b = _bands_on(bands, str(torch.device(device or "cpu")))    # (H, K, 2)
    i = torch.arange(q_start, q_start + T, device=device)
    j = torch.arange(Tk, device=device)
    d = (i[:, None] - j[None, :])[None, None]                   # (1, 1, T, Tk) distances i - j
    lo, hi = b[..., 0, None, None], b[..., 1, None, None]       # (H, K, 1, 1)
    return ((lo <= d) & (d < hi)).any(dim=1)


@functools.lru_cache(maxsize=64)
def _bands_on(bands, device):
    """bands_tensor on a device, made once: masks and decode steps ask for it in every layer."""
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
# Which block a program owns, and its head's intervals, come from a schedule row made on the host;
# the tiles a loop streams come through TMA descriptors (Hopper GPUs, passes of many tiles) or through
# pointers: the plan decides (5b below; docs/kernel.md, section 7).

if HAS_TRITON:

    @triton.jit
    def _band_fwd_kernel(
        Q,                                         # (B, H, T, D) queries, any strides with last-dim stride 1
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        O,                                         # (B, H, T, D) output
        LSE,                                       # (B*H, T) fp32 output (row stride stride_l): log2-sum-exp of each row
        SCHED,                                     # (programs / B, 4 + 2 NI) int32 schedule rows (h, m0, z0, z1, intervals), see above
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q (elements)
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_ob, stride_oh, stride_ot,           # strides of O
        stride_l,                                  # row stride of LSE (T padded to 16 bytes, for TMA)
        B, H, T,                                   # batch, heads, sequence length
        NI: tl.constexpr,                          # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D, a power of two >= 16
        BLOCK_M: tl.constexpr,                     # queries per program
        BLOCK_N: tl.constexpr,                     # keys per inner-loop step
        DOT_PREC: tl.constexpr,                    # "ieee" for fp32 inputs (no silent tf32), else "tf32" (unused by 16-bit dots)
        TMA: tl.constexpr,                         # whether K_SRC and V_SRC are TMA descriptors (the plan's choice)
    ):
        b, h, m0, bh, z0, z1, IVS = _scheduled_block(SCHED, B, H, BLOCK_M, NI)
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

        for iv in range(NI):
            lo = tl.load(IVS + 2 * iv)
            hi = tl.load(IVS + 2 * iv + 1)
            start, end = _key_range(m0, lo, hi, T, BLOCK_M, BLOCK_N)
            for n0 in range(start, end, BLOCK_N):
                n0 = tl.multiple_of(n0, BLOCK_N)
                cols = n0 + offs_n
                # -- load the key and value tiles (zeros past T) --
                k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA)
                v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA)
                # -- raw scores; only tiles that cross an edge of the interval need the mask --
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
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
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
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
        _fill_rows(O, stride_ot, z0, z1, 0.0, BLOCK_M, HEAD_DIM)
        _fill_rows(LSE + bh.to(tl.int64) * stride_l, 1, z0, z1, float("inf"), BLOCK_M, 1)

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
                   ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, TMA: tl.constexpr):
        """Rows r0 .. r0 + ROWS - 1 of head h of batch b of a (B, H, T, D) tensor, zero past T. src is
        a TMA descriptor when TMA (Hopper's copy engine does the addresses and bounds), else a pointer."""
        if TMA:
            tile = src.load([b, h, r0, 0]).reshape(ROWS, HEAD_DIM)
        else:
            rows = r0 + tl.arange(0, ROWS)
            ptrs = (src + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h
                    + rows[:, None] * stride_t + tl.arange(0, HEAD_DIM)[None, :])
            tile = tl.load(ptrs, mask=rows[:, None] < T, other=0.0)
        return tile

    @triton.jit
    def _band_bwd_dq_kernel(
        Q, DO,                                     # (B, H, T, D) queries and dO, last-dim stride 1
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        O,                                         # (B, H, T, D) forward output, in DQ's layout (_bthd_empty)
        DQ,                                        # (B, H, T, D) output
        LSE,                                       # (B*H, T) fp32 from the forward
        DELTA,                                     # (B*H, T) fp32 output: rowsum(dO * O), read by the dK/dV kernel after
        SCHED,                                     # (programs / B, 4 + 2 NI) int32 schedule rows (h, m0, z0, z1, intervals)
        sm_scale,                                  # scale (dQ = scale * dS K)
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q
        stride_dob, stride_doh, stride_dot,        # strides of dO
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_gb, stride_gh, stride_gt,           # strides of DQ and O (the same layout)
        stride_l,                                  # row stride of LSE and DELTA
        B, H, T,                                   # batch, heads, sequence length
        NI: tl.constexpr,                          # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D
        BLOCK_M: tl.constexpr,                     # queries per program
        BLOCK_N: tl.constexpr,                     # keys per inner-loop step
        DOT_PREC: tl.constexpr,                    # "ieee" for fp32 inputs
        TMA: tl.constexpr,                         # whether K_SRC and V_SRC are TMA descriptors
    ):
        # One program owns a query block: the same key range and schedule as the forward.
        # It also makes Delta = rowsum(dO * O) for its rows (it loads dO anyway), which saves the
        # usual separate pre-pass launch; the dK/dV kernel runs after it.
        b, h, m0, bh, z0, z1, IVS = _scheduled_block(SCHED, B, H, BLOCK_M, NI)
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

        for iv in range(NI):
            lo = tl.load(IVS + 2 * iv)
            hi = tl.load(IVS + 2 * iv + 1)
            start, end = _key_range(m0, lo, hi, T, BLOCK_M, BLOCK_N)
            for n0 in range(start, end, BLOCK_N):
                n0 = tl.multiple_of(n0, BLOCK_N)
                cols = n0 + offs_n
                # -- load the key and value tiles (zeros past T) --
                k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA)
                v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA)
                # -- both products first: the tensor cores compute dP = dO V^T during the exp2 of S = Q K^T --
                s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
                dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
                # -- recompute P from the saved LSE; mask only the edge tiles --
                p = tl.math.exp2(s * sm_scale_log2 - lse[:, None])
                inside = (m0 - n0 - BLOCK_N + 1 >= lo) & (m0 + BLOCK_M - 1 - n0 < hi)
                if not inside:
                    p = tl.where(_tile_mask(offs_m, cols, lo, hi), p, 0.0)
                # -- dS = P * (dP - Delta); dQ += dS K --
                ds = p * (dp - delta[:, None])
                dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)

        dq *= sm_scale
        tl.store(DQ + offs_m[:, None] * stride_gt + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=rows)
        # Rows of the blocks that got no program: dQ = 0, and Delta = 0 so that no row holds garbage
        # (last, as in the forward).
        _fill_rows(DQ, stride_gt, z0, z1, 0.0, BLOCK_M, HEAD_DIM)
        _fill_rows(DELTA + bh.to(tl.int64) * stride_l, 1, z0, z1, 0.0, BLOCK_M, 1)

    @triton.jit
    def _band_bwd_dkdv_kernel(
        Q_SRC, DO_SRC,                             # Q and dO (B, H, T, D): TMA descriptors of [1, 1, BLOCK_M, D] tiles, or pointers
        K_SRC, V_SRC,                              # K and V (B, H, T, D): TMA descriptors of [1, 1, BLOCK_N, D] tiles, or pointers
        DK, DV,                                    # (B, H, T, D) outputs, in one layout
        LSE_SRC, DELTA_SRC,                        # (B*H, T) fp32 LSE and rowsum(dO * O) (from the dQ kernel): TMA
                                                   # descriptors of [1, BLOCK_M] tiles (zeros past T), or pointers
        SCHED,                                     # (programs / B, 4 + 2 NI) int32 schedule rows (h, n0, z0, z1, intervals)
        sm_scale,                                  # scale (dK = scale * dS^T Q)
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh, stride_qt,           # strides of Q (read only without TMA)
        stride_dob, stride_doh, stride_dot,        # strides of dO (read only without TMA)
        stride_kb, stride_kh, stride_kt,           # strides of K (read only without TMA)
        stride_vb, stride_vh, stride_vt,           # strides of V (read only without TMA)
        stride_gb, stride_gh, stride_gt,           # strides of DK and DV (the same layout)
        stride_l,                                  # row stride of LSE and DELTA
        B, H, T,                                   # batch, heads, sequence length
        NI: tl.constexpr,                          # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D
        BLOCK_M: tl.constexpr,                     # queries per inner-loop step
        BLOCK_N: tl.constexpr,                     # keys per program
        DOT_PREC: tl.constexpr,                    # "ieee" for fp32 inputs
        TMA: tl.constexpr,                         # whether the *_SRC arguments are TMA descriptors
    ):
        # One program owns a key block and sums over the queries that see it: no atomics, deterministic.
        b, h, n0, bh, z0, z1, IVS = _scheduled_block(SCHED, B, H, BLOCK_N, NI)
        DK += b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh
        DV += b.to(tl.int64) * stride_gb + h.to(tl.int64) * stride_gh

        offs_n = n0 + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        k = _load_rows(K_SRC, b, h, n0, T, stride_kb, stride_kh, stride_kt, BLOCK_N, HEAD_DIM, TMA)
        v = _load_rows(V_SRC, b, h, n0, T, stride_vb, stride_vh, stride_vt, BLOCK_N, HEAD_DIM, TMA)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

        for iv in range(NI):
            lo = tl.load(IVS + 2 * iv)
            hi = tl.load(IVS + 2 * iv + 1)
            # Queries that see a key of this block: [n0 + lo, n0 + BLOCK_N - 1 + hi), clipped to T;
            # both ends bounded (a window that only stops at T is the classic slow backward, docs
            # section 2).
            start = ((n0 + lo) // BLOCK_M) * BLOCK_M
            end = tl.minimum(n0 + BLOCK_N - 1 + hi, T)
            end = tl.where(hi > lo, end, 0)
            for m0 in range(start, end, BLOCK_M):
                m0 = tl.multiple_of(m0, BLOCK_M)
                rows = m0 + offs_m
                # -- load the query-side tiles (zeros past T) and the row statistics --
                q = _load_rows(Q_SRC, b, h, m0, T, stride_qb, stride_qh, stride_qt, BLOCK_M, HEAD_DIM, TMA)
                do = _load_rows(DO_SRC, b, h, m0, T, stride_dob, stride_doh, stride_dot, BLOCK_M, HEAD_DIM, TMA)
                lse = _load_stats(LSE_SRC, bh, m0, T, stride_l, BLOCK_M, TMA)
                delta = _load_stats(DELTA_SRC, bh, m0, T, stride_l, BLOCK_M, TMA)
                # -- recompute P^T from the saved LSE; mask only the edge tiles --
                pT = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * sm_scale_log2 - lse[None, :])
                inside = (m0 - n0 - BLOCK_N + 1 >= lo) & (m0 + BLOCK_M - 1 - n0 < hi)
                if not inside:
                    pT = tl.where(tl.trans(_tile_mask(rows, offs_n, lo, hi)), pT, 0.0)
                # -- dV += P^T dO --
                dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)
                # -- dS^T = P^T * (dP^T - Delta), dP^T = V dO^T; dK += dS^T Q --
                dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
                dsT = pT * (dpT - delta[None, :])
                dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)

        dk *= sm_scale
        tl.store(DK + offs_n[:, None] * stride_gt + offs_d[None, :], dk.to(DK.dtype.element_ty),
                 mask=offs_n[:, None] < T)
        tl.store(DV + offs_n[:, None] * stride_gt + offs_d[None, :], dv.to(DV.dtype.element_ty),
                 mask=offs_n[:, None] < T)
        # Key rows of the blocks that got no program (no query sees them): zero gradients (last, as above).
        _fill_rows(DK, stride_gt, z0, z1, 0.0, BLOCK_N, HEAD_DIM)
        _fill_rows(DV, stride_gt, z0, z1, 0.0, BLOCK_N, HEAD_DIM)

    @triton.jit
    def _load_stats(src, bh, r0, T, stride_l, ROWS: tl.constexpr, TMA: tl.constexpr):
        """LSE or Delta of rows r0 .. r0 + ROWS - 1 of (batch, head) bh, zero past T. Past T, q and dO are
        zero too, so those rows' P^T = exp2(0 - 0) = 1 meets zero dO (dV) and zero dP^T - Delta (dK):
        they add nothing, with no mask. TMA: one copy a tile instead of a load a thread and element."""
        if TMA:
            stats = src.load([bh, r0]).reshape(ROWS)
        else:
            rows = r0 + tl.arange(0, ROWS)
            stats = tl.load(src + bh.to(tl.int64) * stride_l + rows, mask=rows < T, other=0.0)
        return stats


# -----------------------------------------------------------------------------
# 4. Autograd: the kernels as one differentiable function

def triton_band_attention(q, k, v, bands, scale):
    """The fused band kernel; bands normalized as in `normalize_bands`. Differentiable in q, k, v."""
    if not triton_supports(q):
        raise ValueError(f"the Triton kernel needs a head dim that is a power of two in [16, 128], "
                         f"got {q.shape[-1]}; use backend='torch'")
    if not (q.is_cuda or _interpreting()):
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
# (docs/kernel.md, section 10). The bands cross the schema as a flat list of ints (_flat_bands).
if HAS_TRITON:

    class _BandAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, bands, scale):
            if torch.compiler.is_compiling():
                o, lse = torch.ops.band_attention.fwd(q, k, v, _flat_bands(bands), scale)
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
                dq, dk, dv = torch.ops.band_attention.bwd(do, q, k, v, o, lse, _flat_bands(ctx.bands), ctx.scale)
            else:
                dq, dk, dv = _bwd_impl(do, q, k, v, o, lse, ctx.bands, ctx.scale)
            return dq, dk, dv, None, None

    torch.library.define("band_attention::fwd", "(Tensor q, Tensor k, Tensor v, int[] bands_flat, float scale) "
                         "-> (Tensor, Tensor)")
    torch.library.define("band_attention::bwd", "(Tensor do, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, "
                         "int[] bands_flat, float scale) -> (Tensor, Tensor, Tensor)")

    def _band_fwd_op(q, k, v, bands_flat, scale):
        return _fwd_impl(q, k, v, _unflat_bands(tuple(bands_flat), q.shape[1]), scale)

    def _band_bwd_op(do, q, k, v, o, lse, bands_flat, scale):
        return _bwd_impl(do, q, k, v, o, lse, _unflat_bands(tuple(bands_flat), q.shape[1]), scale)

    torch.library.impl("band_attention::fwd", ("CUDA", "CPU"), _band_fwd_op)  # CPU: under TRITON_INTERPRET=1
    torch.library.impl("band_attention::bwd", ("CUDA", "CPU"), _band_bwd_op)

    @torch.library.register_fake("band_attention::fwd")
    def _(q, k, v, bands_flat, scale):
        B, H, T, D = q.shape
        return _bthd_empty(B, H, T, D, q), _stats_empty(B, H, T, q.device)

    @torch.library.register_fake("band_attention::bwd")
    def _(do, q, k, v, o, lse, bands_flat, scale):
        return tuple(_bthd_empty(*q.shape, q) for _ in range(3))


def _flat_bands(bands):
    """Normalized bands as the flat [lo0, hi0, lo1, hi1, ...] list of the padded (H, K, 2) layout."""
    K = max([1] + [len(b) for b in bands])  # no heads: K = 1, zero rows
    return [x for b in bands for pair in list(b) + [(0, 0)] * (K - len(b)) for x in pair]


@functools.lru_cache(maxsize=256)
def _unflat_bands(bands_flat, n_head):
    """The inverse of _flat_bands (bands_flat as a tuple); cached, since the operators call it at every call."""
    K = len(bands_flat) // (2 * n_head)
    pairs = list(zip(bands_flat[0::2], bands_flat[1::2]))
    return tuple(tuple(p for p in pairs[h * K:(h + 1) * K] if p[1] > p[0]) for h in range(n_head))


# -----------------------------------------------------------------------------
# 5. Launching: what the host prepares for the kernels

def _fwd_impl(q, k, v, bands, scale):
    """Forward launch: o (B, H, T, D) in q's dtype and the rows' LSE (B, H, T) fp32."""
    B, H, T, D = q.shape
    q, k, v = (_kernel_ready(t) for t in (q, k, v))
    o = _bthd_empty(B, H, T, D, q)
    lse = _stats_empty(B, H, T, q.device)
    plan = _plan("fwd", bands, B, T, D, q.dtype, q.device)
    _launch(_band_fwd_kernel, plan,
            (q, _tiles(k, plan), _tiles(v, plan), o, lse, plan.schedule, scale * LOG2E),
            (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], lse.stride(1), B, H, T))
    return o, lse


def _bwd_impl(do, q, k, v, o, lse, bands, scale):
    """Backward launches: dq, dk, dv. The dQ kernel runs first: it also writes Delta = rowsum(dO * O),
    which the dK/dV kernel reads (same stream, so ordered)."""
    B, H, T, D = q.shape
    q, k, v, do = (_kernel_ready(t) for t in (q, k, v, do))
    dq = _bthd_empty(B, H, T, D, q)
    if o.stride() != dq.stride():  # the dQ kernel reads O with DQ's strides
        o = _bthd_empty(B, H, T, D, q).copy_(o)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    delta = _stats_empty(B, H, T, q.device)
    if lse.stride() != delta.stride():  # both are read with one row stride
        lse = _stats_empty(B, H, T, q.device).copy_(lse)
    ints = (*q.stride()[:3], *do.stride()[:3], *k.stride()[:3], *v.stride()[:3], *dq.stride()[:3],
            delta.stride(1), B, H, T)
    plan = _plan("dq", bands, B, T, D, q.dtype, q.device)
    _launch(_band_bwd_dq_kernel, plan,
            (q, do, _tiles(k, plan), _tiles(v, plan), o, dq, lse, delta, plan.schedule, scale, scale * LOG2E), ints)
    plan = _plan("dkdv", bands, B, T, D, q.dtype, q.device)
    _launch(_band_bwd_dkdv_kernel, plan,
            (_tiles(q, plan, "BLOCK_M"), _tiles(do, plan, "BLOCK_M"), _tiles(k, plan), _tiles(v, plan), dk, dv,
             _stat_tiles(lse, plan), _stat_tiles(delta, plan), plan.schedule, scale, scale * LOG2E), ints)
    return dq, dk, dv


class _Plan(NamedTuple):
    schedule: torch.Tensor  # the programs' rows (section 5a)
    meta: dict              # the kernel's constexprs and launch options (warps, stages, register cap)
    launchers: dict         # compiled binaries' launchers, by the launch's integer arguments (_launch)


@functools.lru_cache(maxsize=256)
def _plan(kind, bands, B, T, D, dtype, device):
    """What one pass's launch needs besides the tensors, made once per (pass, bands, B, T, D, dtype,
    device). kind: "fwd", "dq" or "dkdv". Call _plan.cache_clear() after changing KERNEL_CONFIGS.

    Whether the loops stream their tiles through TMA descriptors is decided here: a descriptor costs
    the host more than a pointer at every call (made in Python, then encoded for the copy engine at
    the launch), and saves GPU time on every tile. So descriptors are used when the pass has at least
    TMA_MIN_TILES tiles (those it visits, each zero-filled block counted as one), where the GPU work
    outweighs the host's (docs/kernel.md measures both).
    """
    cfg = _launch_config(kind, D, dtype, T, tma=False)  # the tiles; TMA only adds a cap and a check
    schedule, tiles = _schedule(bands, T, cfg["BLOCK_M"], cfg["BLOCK_N"], "k" if kind == "dkdv" else "q", device)
    tma = _tma_on(device) and (B * tiles >= TMA_MIN_TILES or _interpreting())
    if tma:
        cfg = _launch_config(kind, D, dtype, T, tma=True)
    meta = dict(NI=_intervals(schedule), HEAD_DIM=D, DOT_PREC=_dot_precision(dtype), TMA=tma, **cfg)
    return _Plan(schedule, meta, {})


TMA_MIN_TILES = 1 << 14


def _launch(kernel, plan, args, ints):
    """kernel[(programs,)](*args, *ints, **plan.meta), with the host's work cut to the launch itself.

    args are the tensors and floats, ints the integer arguments (strides, then B, H, T), in the
    kernel's order; the grid is one program a schedule row and batch element. Called through its
    [grid], Triton's JIT works out at every call how each argument specializes the compiled code (a
    tensor's dtype and 16-byte alignment, an integer being 1 or a multiple of 16) to find the binary;
    for a short kernel that costs the host more than the launch.
    Here every tensor is 16-byte aligned (_kernel_ready copies one that is not; fresh allocations
    are) and its dtype is fixed by the plan, so the integers decide the binary: the first call with
    given integers goes through the JIT, which compiles or finds the binary, and later calls hand
    their arguments straight to that binary's launcher.
    """
    programs = plan.schedule.shape[0] * ints[-3]  # schedule rows x batch
    hit = plan.launchers.get(ints)
    if hit is None:
        compiled = kernel[(programs,)](*args, *ints, **plan.meta)
        if not _interpreting():  # the interpreter runs the Python function: there is no binary to keep
            constexprs = tuple(plan.meta[name] for name in kernel.arg_names[len(args) + len(ints):])
            plan.launchers[ints] = (compiled[(programs, 1, 1)], constexprs)  # a launcher wants all three grid dims
    else:
        launcher, constexprs = hit
        launcher(*args, *ints, *constexprs)


# 5a. The schedule. Each program reads one row (h, r0, z0, z1, lo0, hi0, ...): its head, the first
# row of its block, the rows [z0, z1) it zero-fills, and the head's intervals clipped to [0, T].
# Programs that would visit no tile are not launched at all (about half of sp_exclusive's blocks).

@functools.lru_cache(maxsize=256)
def _schedule(bands, T, BLOCK_M, BLOCK_N, side, device):
    """The programs of one pass as the kernels' (n, 4 + 2K) int32 schedule rows (h, r0, z0, z1, lo0,
    hi0, ..., lo(K-1), hi(K-1)), the head's K intervals clipped to [0, T] ([0, 0) when empty), and the
    tiles they visit for one batch element, each zero-filled block counted as one; made once per
    (bands, T, tiles, side, device).

    side "q" (forward, dQ): r0 starts a query block of BLOCK_M rows, which visits BLOCK_N-key tiles;
    side "k" (dK/dV): r0 starts a key block of BLOCK_N rows, which visits BLOCK_M-query tiles.
    Programs are sorted by length, longest first, over all heads, so that the launch ends on short
    programs (longest-processing-time-first scheduling). A block that visits no tile gets no program:
    such blocks are a head's first query blocks (their rows are nearer the sequence start than the
    head's smallest distance) or its last key blocks. The head's launched blocks share out their rows
    to zero-fill, a run [z0, z1) each (one program filling a long run alone would finish last). A
    head that sees nothing keeps one program.
    A row carries its head's intervals rather than pointing into a table of them, so a program's
    first loads do not wait on each other.
    """
    n_head = len(bands)
    rows = BLOCK_M if side == "q" else BLOCK_N
    n_blocks = triton.cdiv(T, rows)
    clipped = bands_tensor(bands, T).view(n_head, -1).tolist()
    jobs = []  # (length in tiles, h, r0, z0, z1, intervals)
    for h in range(n_head):
        tiles = [_block_tiles(bands[h], T, BLOCK_M, BLOCK_N, side, blk * rows) for blk in range(n_blocks)]
        live = [blk for blk in range(n_blocks) if tiles[blk]] or [n_blocks - 1 if side == "q" else 0]
        # the blocks without tiles are a prefix (query side) or a suffix (key side) of the head's blocks
        empty = range(0, live[0]) if side == "q" else range(live[-1] + 1, n_blocks)
        share = triton.cdiv(len(empty), len(live))
        fills = [empty[i * share: (i + 1) * share] for i in range(len(live))]
        for blk, fill in zip(live, fills):
            z0, z1 = (fill[0] * rows, min((fill[-1] + 1) * rows, T)) if fill else (0, 0)
            # a zero-filled block counts as a tile: an upper bound, so that a filler is not left last
            jobs.append((tiles[blk] + len(fill), h, blk * rows, z0, z1, *clipped[h]))
    if side == "q":  # ties: query blocks from the last (the longest rows first)
        jobs.sort(key=lambda j: (j[1], -j[2]))
    jobs.sort(key=lambda j: -j[0])  # stable
    K = len(clipped[0]) // 2
    rows = torch.tensor([j[1:] for j in jobs], dtype=torch.int32).view(-1, 4 + 2 * K).to(device)
    return rows, sum(j[0] for j in jobs)


def _intervals(sched):
    """K, the intervals a schedule row carries per head (the kernels' NI)."""
    return (sched.shape[1] - 4) // 2


def _block_tiles(intervals, T, BLOCK_M, BLOCK_N, side, r0):
    """How many tiles the loops of the block starting at row r0 visit for one head's intervals (the
    kernels' own loop bounds)."""
    n = 0
    for lo, hi in intervals:
        hi = min(hi, T)
        if lo >= hi:
            continue
        if side == "q":
            start, end = (max(r0 - hi + 1, 0) // BLOCK_N) * BLOCK_N, min(r0 + BLOCK_M - lo, T)
            n += max(0, triton.cdiv(end - start, BLOCK_N))
        else:
            start, end = ((r0 + lo) // BLOCK_M) * BLOCK_M, min(r0 + BLOCK_N - 1 + hi, T)
            n += max(0, triton.cdiv(end - start, BLOCK_M))
    return n


if HAS_TRITON:

    @triton.jit
    def _scheduled_block(SCHED, B, H, ROWS: tl.constexpr, NI: tl.constexpr):
        """This program's work: schedule row pid // B for batch pid % B (a row's batches run side by
        side). Returns b, h, the block's first row, b * H + h, the zero-fill run [z0, z1), and where
        the row's NI intervals [lo, hi) of head h start."""
        job = SCHED + (tl.program_id(0) // B) * (4 + 2 * NI)
        b = tl.program_id(0) % B
        h = tl.load(job)
        r0 = tl.multiple_of(tl.load(job + 1), ROWS)
        return b, h, r0, b * H + h, tl.load(job + 2), tl.load(job + 3), job + 4

    @triton.jit
    def _fill_rows(X, stride_t, z0, z1, value, ROWS: tl.constexpr, COLS: tl.constexpr):
        """X[z0:z1, :COLS] = value, X offset to one (batch, head); for the blocks that got no program."""
        cols = tl.arange(0, COLS)
        for r0 in range(z0, z1, ROWS):
            rows = r0 + tl.arange(0, ROWS)
            tl.store(X + rows[:, None] * stride_t + cols[None, :],
                     tl.full([ROWS, COLS], value, X.dtype.element_ty), mask=rows[:, None] < z1)


# 5b. Tiles through Hopper's copy engine (TMA): a descriptor made on the host tells the engine the
# tensor's shape and strides, so the loops issue one copy a tile and do no address arithmetic or
# bounds checks of their own. GPUs without TMA get the same tiles through pointers.

@functools.lru_cache(maxsize=None)
def _tma_on(device):
    """Whether this device can stream tiles through TMA descriptors (_plan decides per pass, by its
    size): GPUs that have the copy engine (Hopper, compute capability 9, and later) and the interpreter
    (the CPU tests). Older GPUs get pointers: triton pipelines those there, but not the plain loads a
    descriptor falls back to."""
    return _interpreting() or torch.cuda.get_device_capability(device)[0] >= 9


def _tiles(t, plan, rows="BLOCK_N"):
    """What a loop streams [rows, D] tiles of one (batch, head) of t (B, H, T, D) from: a tensor
    descriptor (the copy engine then does the address arithmetic and the bounds), or t itself."""
    if not plan.meta["TMA"]:
        return t
    strides = [st if n > 1 else t.shape[-1] for n, st in zip(t.shape, t.stride())]  # any aligned one for size 1
    return TensorDescriptor(t, list(t.shape), strides, [1, 1, plan.meta[rows], t.shape[-1]])


def _stat_tiles(t, plan):
    """What the dK/dV loop streams [BLOCK_M] of one (batch, head)'s statistics from: a (B*H, T)
    descriptor (zeros past T), or t itself."""
    if not plan.meta["TMA"]:
        return t
    B, H, T = t.shape
    return TensorDescriptor(t, [B * H, T], [t.stride(1), 1], [1, plan.meta["BLOCK_M"]])


# 5c. Memory layouts

def _kernel_ready(t):
    # The kernels take any batch/head/time strides (views of a fused qkv projection need no copy),
    # but vectorized loads need the head dim packed, and tensor descriptors a 16-byte aligned start
    # and strides. Every call checks this, so the strides' part is cached by layout.
    ready = t.data_ptr() % 16 == 0 and _packed_layout(t.shape, t.stride(), t.element_size())
    return t if ready else t.clone(memory_format=torch.contiguous_format)


@functools.lru_cache(maxsize=1024)
def _packed_layout(shape, stride, itemsize):
    """The head dim packed, and every other stride 16-byte aligned (a broadcast's stride 0 is not;
    a size-1 dim's stride does not count)."""
    return stride[-1] == 1 and all(n == 1 or (st > 0 and st * itemsize % 16 == 0)
                                   for n, st in zip(shape[:-1], stride[:-1]))


def _bthd_empty(B, H, T, D, like):
    """An uninitialized (B, H, T, D) tensor laid out in (B, T, H, D) order. The model's next step is
    y.transpose(1, 2) -> (B, T, H * D), and the gradients go back into views of the fused (B, T, 3C)
    qkv projection: in this order both are views, not copies (SDPA's kernels return the same layout),
    and autograd does not save the output twice (as o, and as y for the output projection)."""
    return torch.empty_strided((B, H, T, D), (T * H * D, D, H * D, 1), dtype=like.dtype, device=like.device)


def _stats_empty(B, H, T, device):
    """An uninitialized (B, H, T) fp32 tensor for per-row statistics (LSE, Delta), each row of T padded to
    a multiple of 4 elements: a TMA descriptor needs 16-byte row strides."""
    padded = (T + 3) // 4 * 4  # not triton.cdiv, slow to call on the host (docs/kernel.md, section 10)
    return torch.empty_strided((B, H, T), (H * padded, padded, 1), dtype=torch.float32, device=device)


def _dot_precision(dtype):
    return "ieee" if dtype == torch.float32 else "tf32"


# 5d. Launch configs: block sizes, warps and pipeline stages per (pass, head dim, length), chosen with
# `bench/bench_kernel.py --sweep` (docs/kernel.md, section 8). Small tiles, 64 x 64 with 4 warps: a band row
# is short, so more, smaller programs balance better across the SMs than 128-row ones, and a 64 x 64
# fp32 score tile stays in registers. One length, BIG, covers every T today; a sweep may add shorter.
# A config may also cap a thread's registers (maxnreg) so that one more program fits an SM: an SM
# has 65536 registers, given out 8 a thread at a time, so programs of 128 threads fit 5 to an SM at
# <= 96 registers, 4 at <= 128, 3 at <= 168. More programs on an SM hide more of each other's loads
# and of their starts and ends, which matter because a band row is only a few tiles long. The caps
# apply to the TMA loops only.
BIG = 1 << 30
KERNEL_CONFIGS = {
    # forward: 64 queries a program, 64-key steps; at D = 64, 2 stages leave shared memory for more
    # programs an SM.
    "fwd": {64: {BIG: dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2, maxnreg=96)},
            128: {BIG: dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)}},
    # dK/dV: 64 resident keys, narrow 32-query steps (a step's 64 x 32 tiles P^T, dP^T and dS^T stay in
    # registers).
    "dkdv": {64: {BIG: dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=2, maxnreg=128)},
             128: {BIG: dict(BLOCK_M=32, BLOCK_N=64, num_warps=4, num_stages=4)}},
    # dQ: 64 resident queries; D = 128 streams 32-key steps to fit the resident q, dO and dq tiles.
    "dq": {64: {BIG: dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)},
           128: {BIG: dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=4)}},
}
# The interpreter (CPU tests) gets 16 x 16 tiles, so that small test shapes still cross many tiles.
_INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
# s * scale - m is meant to be one fused multiply-add an element in every inner loop: say so rather
# than rely on the compiler's default.
_COMPILE_OPTIONS = dict(enable_fp_fusion=True)


def _launch_config(kind, D, dtype, T, tma):
    """kind: "fwd", "dkdv" (BLOCK_N keys a program), "dq" (BLOCK_M queries a program); tma: whether the
    plan streams through descriptors."""
    if _interpreting():
        return dict(_INTERPRET_CONFIG)
    if dtype == torch.float32:
        # fp32 tiles take twice the registers and shared memory of 16-bit ones: smaller tiles, 2 stages.
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2, **_COMPILE_OPTIONS)
    cfg = KERNEL_CONFIGS[kind]
    cfg = cfg[min(cfg, key=lambda d: (d < D, d))]  # the smallest listed head dim >= D
    cfg = dict(cfg[min(cfg, key=lambda t: (t < T, t))], **_COMPILE_OPTIONS)  # the smallest length >= T
    if not tma:  # the register caps fit the TMA loops; pointer loads keep more values live and would spill
        cfg.pop("maxnreg", None)
    elif kind == "dkdv" and cfg["BLOCK_M"] < 32:
        # its LSE and Delta tiles would be TMA boxes of under 128 bytes, which fault with a misaligned
        # address once pipelined (docs/kernel.md)
        raise ValueError(f"dK/dV steps need >= 32 queries with TMA, got BLOCK_M={cfg['BLOCK_M']}")
    return cfg


def _interpreting():
    return os.environ.get("TRITON_INTERPRET") == "1"


LOG2E = 1.4426950408889634


# -----------------------------------------------------------------------------
# 6. Generation's one-token step, and FlexAttention with the same bands

def band_decode_attention(q, k, v, bands, pos, scale, backend="auto"):
    """One query per head at position `pos` (q: (B, H, 1, D); pos an int or a 0-d integer tensor on
    q's device) over a KV cache k, v (B, H, N, D) holding positions 0..pos (later ones are not read).
    Only the keys inside each head's bands are read: about 1/H of the cache for sp_exclusive, 2/H for sp.
    backend "triton": the decode kernel, which reads the bands in place in the cache; "torch": gathers
    the bands' keys, then one SDPA call (the reference); "auto": triton on CUDA where it runs."""
    if backend == "auto":
        backend = "triton" if q.is_cuda and triton_supports(q) else "torch"
    if backend == "triton":
        return _decode_impl(q, k, v, bands, pos, scale)
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
    b = _bands_on(bands, device)                                      # (H, K, 2)
    width = max([hi - lo for head in bands for lo, hi in head] + [1])
    offs = torch.arange(width, device=device)
    back = -b[..., 0, None] - offs                                    # (H, K, W)
    back = back.masked_fill(offs >= b[..., 1, None] - b[..., 0, None], -(1 << 40))
    return back.view(len(bands), -1), any(not head or head[0][0] > 0 for head in bands)


if HAS_TRITON:

    @triton.jit
    def _band_decode_kernel(
        Q,                                         # (B, H, 1, D): the new token's queries, last-dim stride 1
        K, V,                                      # (B, H, N, D): the KV cache, last-dim stride 1
        PART_ACC,                                  # (B*H, SPLITS, D) fp32 output: each split's unnormalized p V
        PART_ML,                                   # (B*H, SPLITS, 2) fp32 output: each split's running max and sum
        BANDS,                                     # (H, NI, 2) int32 intervals clipped to [0, N]
        POS,                                       # 0-d int64 tensor: the new token's position, read here
                                                   # rather than passed by value, so one CUDA graph serves every position
        sm_scale_log2,                             # scale * log2(e)
        stride_qb, stride_qh,                      # strides of Q
        stride_kb, stride_kh, stride_kt,           # strides of K
        stride_vb, stride_vh, stride_vt,           # strides of V
        H,                                         # heads
        NI: tl.constexpr,                          # intervals per head (padded)
        HEAD_DIM: tl.constexpr,                    # D
        BLOCK_N: tl.constexpr,                     # keys per inner-loop step
        SPLITS: tl.constexpr,                      # programs sharing one (batch, head)'s keys
    ):
        # A decode step has one query row per (batch, head): too few programs to fill the GPU, so the
        # band's key blocks are dealt out to SPLITS programs (split-K, as FlashDecoding), and
        # _decode_combine_kernel merges their softmax states. No tl.dot (it needs 16 rows), and none
        # is needed: the step is bound by reading the keys, and this reads only the band's.
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        K += b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
        V += b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
        pos = tl.load(POS).to(tl.int32)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + offs_d).to(tl.float32)
        q = q * sm_scale_log2

        m_i = tl.max(tl.full([BLOCK_N], float("-inf"), dtype=tl.float32), 0)  # running max (log2 units)
        l_i = tl.sum(tl.zeros([BLOCK_N], dtype=tl.float32), 0)               # running sum of exp2
        acc = tl.zeros([HEAD_DIM], dtype=tl.float32)

        for iv in range(NI):
            lo = tl.load(BANDS + (h * NI + iv) * 2)
            hi = tl.load(BANDS + (h * NI + iv) * 2 + 1)
            # keys j with lo <= pos - j < hi: [pos - hi + 1, pos - lo], none below 0 (padding [0, 0): none)
            start = tl.maximum(pos - hi + 1, 0)
            end = tl.where(hi > lo, pos - lo + 1, 0)
            for n0 in range(start + split * BLOCK_N, end, SPLITS * BLOCK_N):  # this split's blocks
                cols = n0 + offs_n
                live = cols < end
                # -- load the key and value tiles --
                k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=live[:, None], other=0.0)
                v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=live[:, None], other=0.0)
                # -- scores of the live keys --
                s = tl.where(live, tl.sum(k.to(tl.float32) * q[None, :], 1), float("-inf"))
                # -- online softmax; every step has a live key, so m_new is finite --
                m_new = tl.maximum(m_i, tl.max(s, 0))
                alpha = tl.math.exp2(m_i - m_new)
                p = tl.math.exp2(s - m_new)
                l_i = l_i * alpha + tl.sum(p, 0)
                # -- accumulate p V --
                acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
                m_i = m_new

        # A split that saw no key leaves m = -inf, l = 0, acc = 0: it weighs nothing in the combine.
        row = bh.to(tl.int64) * SPLITS + split
        tl.store(PART_ACC + row * HEAD_DIM + offs_d, acc)
        tl.store(PART_ML + row * 2, m_i)
        tl.store(PART_ML + row * 2 + 1, l_i)

    @triton.jit
    def _decode_combine_kernel(
        PART_ACC, PART_ML,                         # the decode kernel's partial states
        O,                                         # (B, H, 1, D) output
        stride_ob, stride_oh,                      # strides of O
        H,                                         # heads
        HEAD_DIM: tl.constexpr,                    # D
        SPLITS: tl.constexpr,                      # splits per (batch, head), a power of two
    ):
        bh = tl.program_id(0)
        rows = bh.to(tl.int64) * SPLITS + tl.arange(0, SPLITS)
        offs_d = tl.arange(0, HEAD_DIM)
        m = tl.load(PART_ML + rows * 2)
        l = tl.load(PART_ML + rows * 2 + 1)
        acc = tl.load(PART_ACC + rows[:, None] * HEAD_DIM + offs_d[None, :])
        # Rescale every split to the common max; all splits empty (no visible key): output 0.
        m_max = tl.max(m, 0)
        w = tl.math.exp2(m - tl.where(m_max == float("-inf"), 0.0, m_max))
        denom = tl.sum(w * l, 0)
        o = tl.sum(w[:, None] * acc, 0) / tl.where(denom == 0.0, 1.0, denom)
        tl.store(O + (bh // H).to(tl.int64) * stride_ob + (bh % H).to(tl.int64) * stride_oh + offs_d,
                 o.to(O.dtype.element_ty))


def _decode_impl(q, k, v, bands, pos, scale):
    B, H, _, D = q.shape
    q, k, v = (_kernel_ready(t) for t in (q, k, v))
    bands_t, splits = _decode_plan(bands, k.shape[2], B * H, D, q.device)
    if not torch.is_tensor(pos):
        pos = torch.full((), pos, dtype=torch.int64, device=q.device)
    part_acc = torch.empty((B * H, splits, D), dtype=torch.float32, device=q.device)
    part_ml = torch.empty((B * H, splits, 2), dtype=torch.float32, device=q.device)
    o = torch.empty((B, H, 1, D), dtype=q.dtype, device=q.device)
    _band_decode_kernel[(B * H, splits)](
        q, k, v, part_acc, part_ml, bands_t, pos, scale * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        H, NI=bands_t.shape[1], HEAD_DIM=D, SPLITS=splits, **_decode_config(D))
    _decode_combine_kernel[(B * H,)](part_acc, part_ml, o, o.stride(0), o.stride(1), H, HEAD_DIM=D, SPLITS=splits,
                                     num_warps=1, **_COMPILE_OPTIONS)
    return o


def _decode_config(D):
    # key and value tiles of at most 4096 elements (64 keys at D = 64), which 4 warps hold in registers.
    if _interpreting():
        return dict(BLOCK_N=16, num_warps=1, num_stages=1)
    return dict(BLOCK_N=min(128, 4096 // D), num_warps=4, **_COMPILE_OPTIONS)


@functools.lru_cache(maxsize=64)
def _decode_plan(bands, N, batch_heads, D, device):
    """The clipped bands tensor and the split count: enough programs for about two per SM (few when
    the batch already gives that many), but no more splits than the widest head has key blocks (a
    split that gets no block adds nothing to the combine)."""
    bands_t = bands_tensor(bands, N).to(device=device, dtype=torch.int32)
    keys = int((bands_t[..., 1] - bands_t[..., 0]).sum(-1).max())       # the widest head's keys
    block = _decode_config(D)["BLOCK_N"]
    target = 2 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 64
    splits = 1
    while batch_heads * splits * 2 <= target and block * splits * 2 <= keys:
        splits *= 2
    return bands_t, splits


_FLEX_CACHE = {}  # block masks by key, and the compiled flex_attention


def flex_attention(q, k, v, mask_mod, key, scale, compiled=True):
    """FlexAttention (torch.nn.attention.flex_attention) with the block mask of `mask_mod`, so that
    the blocks the mask leaves empty are skipped and a row with no visible key gives 0. Its backward
    runs on GPUs only.

    An eager call builds the block mask once per `key` and caches it (`key` is a tuple of Python
    values and tensors; a tensor stands for its storage, its address), and runs a compiled
    flex_attention (eager flex is a slow reference). Inside a compiled model the block mask is built
    in the graph at every call instead: torch.compile cannot look a traced tensor's address up in the
    cache, and a graph break there, inside GPT.forward's loop over the blocks, makes torch.compile
    skip GPT.forward: the model then runs eagerly but for pieces of each block."""
    from torch.nn.attention import flex_attention as flex
    H, T, Tk = q.shape[1], q.shape[2], k.shape[2]
    if torch.compiler.is_compiling():
        block_mask = flex.create_block_mask(mask_mod, None, H, T, Tk, device=q.device)
        return flex.flex_attention(q, k, v, block_mask=block_mask, scale=scale)
    key = tuple(x.data_ptr() if isinstance(x, torch.Tensor) else x for x in key) + (H, T, Tk, str(q.device))
    if key not in _FLEX_CACHE:
        _FLEX_CACHE[key] = flex.create_block_mask(mask_mod, None, H, T, Tk, device=q.device)
    if compiled and "compiled" not in _FLEX_CACHE:
        _FLEX_CACHE["compiled"] = torch.compile(flex.flex_attention, dynamic=False)
    run = _FLEX_CACHE["compiled"] if compiled else flex.flex_attention
    return run(q, k, v, block_mask=_FLEX_CACHE[key], scale=scale)


def flex_band_attention(q, k, v, bands, scale):
    """The bands on FlexAttention (the paper's approach)."""
    b = _bands_on(bands, str(q.device))

    def mask_mod(batch, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        visible = (d >= b[h, 0, 0]) & (d < b[h, 0, 1])
        for i in range(1, b.shape[1]):
            visible = visible | ((d >= b[h, i, 0]) & (d < b[h, i, 1]))
        return visible

    return flex_attention(q, k, v, mask_mod, (bands,), scale)
