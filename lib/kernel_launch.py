"""
What the host does so that kernel.py's Triton kernels run fast: the launch machinery.

kernel.py holds the math (the contract, the reference, the three band kernels, autograd). Each of
its passes calls `plan` for what the launch needs besides the tensors, then `launch`. Everything here
trades a little host work, done once per shape and cached, for GPU time at every call:

- `schedule`: which programs to start and in what order. A program owns one block of queries (or
  keys) of one head; blocks that see no key get no program (a neighbour zero-fills their rows), and
  the longest programs start first, so the launch does not end waiting on one long program.
- TMA: on Hopper GPUs the tiles a long pass streams come through tensor descriptors made here, and
  the copy engine does their addressing and bounds (`tiles`, `stat_tiles`, `tma_on`).
- `launch_config` and KERNEL_CONFIGS: tile sizes, warps, pipeline stages and register caps per pass
  and head dim, chosen by measurement (docs/kernel.md, section 8).
- `launch`: after a shape's first call, the compiled binary is called directly, skipping the work
  Triton's JIT does at every call to find it.
- Memory layouts (`kernel_ready`, `bthd_empty`, `stats_empty`): what the kernels and TMA need of
  their tensors, and output layouts that spare the model copies.
- `decode`: generation's one-token step, a split-K kernel that reads only the bands' keys of the
  KV cache (kernel.band_decode_attention is its entry and its reference).

docs/kernel.md explains each idea with its measured effect; bench/LAB.md has the measurements.
Every cache here is keyed by values (bands, shapes, dtypes), never by object identity.
"""

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


def interpreting():
    """Whether Triton runs its kernels on the CPU (TRITON_INTERPRET=1, the tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


# -----------------------------------------------------------------------------
# The plan of one pass

class Plan(NamedTuple):
    schedule: torch.Tensor  # the programs' rows (see schedule)
    meta: dict              # the kernel's constexprs and launch options (warps, stages, register cap)
    launchers: dict         # compiled binaries' launchers, by the kernel and the launch's integer arguments


@functools.lru_cache(maxsize=256)
def plan(kind, bands, B, T, D, dtype, device):
    """What one pass's launch needs besides the tensors, made once per (pass, bands, B, T, D, dtype,
    device). kind: "fwd", "dq" or "dkdv". Call plan.cache_clear() after changing KERNEL_CONFIGS.

    Whether the loops stream their tiles through TMA descriptors is decided here: a descriptor costs
    the host more than a pointer at every call (made in Python, then encoded for the copy engine at
    the launch), and saves GPU time on every tile. So descriptors are used when the pass has at least
    TMA_MIN_TILES tiles (those it visits, each zero-filled block counted as one), where the GPU work
    outweighs the host's.
    """
    cfg = launch_config(kind, D, dtype, T, tma=False)  # the tiles; TMA only adds a cap and a check
    rows, tiles = schedule(bands, T, cfg["BLOCK_M"], cfg["BLOCK_N"], "k" if kind == "dkdv" else "q", device)
    tma = tma_on(device) and (B * tiles >= TMA_MIN_TILES or interpreting())
    if tma:
        cfg = launch_config(kind, D, dtype, T, tma=True)
    meta = dict(N_INTERVALS=(rows.shape[1] - 4) // 2, HEAD_DIM=D, TMA_TILES=tma,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", **cfg)
    return Plan(rows, meta, {})


TMA_MIN_TILES = 1 << 14


def launch(kernel, plan, args, ints):
    """kernel[(programs,)](*args, *ints, **plan.meta), with the host's work cut to the launch itself.

    args are the tensors and floats, ints the integer arguments (strides, then B, H, T), in the
    kernel's order; the grid is one program a schedule row and batch element. Called through its
    [grid], Triton's JIT works out at every call how each argument specializes the compiled code (a
    tensor's dtype and 16-byte alignment, an integer being 1 or a multiple of 16) to find the binary;
    for a short kernel that costs the host more than the launch.
    Here every tensor is 16-byte aligned (kernel_ready copies one that is not; fresh allocations
    are) and its dtype is fixed by the plan, so the integers decide the binary: the first call with
    given integers goes through the JIT, which compiles or finds the binary, and later calls hand
    their arguments straight to that binary's launcher.
    """
    programs = plan.schedule.shape[0] * ints[-3]  # schedule rows x batch
    key = (kernel, ints)  # the kernel too: two copies of kernel.py (an A/B) share these plans
    hit = plan.launchers.get(key)
    if hit is None:
        compiled = kernel[(programs,)](*args, *ints, **plan.meta)
        if not interpreting():  # the interpreter runs the Python function: there is no binary to keep
            constexprs = tuple(plan.meta[name] for name in kernel.arg_names[len(args) + len(ints):])
            plan.launchers[key] = (compiled[(programs, 1, 1)], constexprs)  # a launcher wants all three grid dims
    else:
        launcher, constexprs = hit
        launcher(*args, *ints, *constexprs)


# -----------------------------------------------------------------------------
# The schedule. Each program reads one row (h, r0, fill_start, fill_end, lo0, hi0, ...): its head, the
# first row of its block, the rows it zero-fills, and the head's intervals clipped to [0, T].

@functools.lru_cache(maxsize=256)
def schedule(bands, T, BLOCK_M, BLOCK_N, side, device):
    """The programs of one pass as the kernels' (n, 4 + 2K) int32 schedule rows (h, r0, fill_start,
    fill_end, lo0, hi0, ..., lo(K-1), hi(K-1)), the head's K intervals clipped to [0, T] ([0, 0) when
    empty), and the tiles they visit for one batch element, each zero-filled block counted as one;
    made once per (bands, T, tiles, side, device).

    side "q" (forward, dQ): r0 starts a query block of BLOCK_M rows, which visits BLOCK_N-key tiles;
    side "k" (dK/dV): r0 starts a key block of BLOCK_N rows, which visits BLOCK_M-query tiles.
    Programs are sorted by length, longest first, over all heads, so that the launch ends on short
    programs (longest-processing-time-first scheduling). A block that visits no tile gets no program:
    such blocks are a head's first query blocks (their rows are nearer the sequence start than the
    head's smallest distance) or its last key blocks. The head's launched blocks share out their rows
    to zero-fill, a run [fill_start, fill_end) each (one program filling a long run alone would finish
    last). A head that sees nothing keeps one program.
    A row carries its head's intervals rather than pointing into a table of them, so a program's
    first loads do not wait on each other.
    """
    n_head = len(bands)
    rows = BLOCK_M if side == "q" else BLOCK_N
    n_blocks = triton.cdiv(T, rows)
    clipped = clipped_intervals(bands, T)
    jobs = []  # (length in tiles, h, r0, fill_start, fill_end, intervals)
    for h in range(n_head):
        tiles = [block_tiles(bands[h], T, BLOCK_M, BLOCK_N, side, blk * rows) for blk in range(n_blocks)]
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
    K = len(clipped[0]) // 2 if clipped else 1
    table = torch.tensor([j[1:] for j in jobs], dtype=torch.int32).view(-1, 4 + 2 * K).to(device)
    return table, sum(j[0] for j in jobs)


def clipped_intervals(bands, T):
    """Each head's intervals clipped to distances < T, flat (lo0, hi0, lo1, hi1, ...), padded with
    [0, 0) to the same count for every head (at least one)."""
    clipped = [[(lo, min(hi, T)) for lo, hi in head if lo < min(hi, T)] for head in bands]
    K = max([1] + [len(c) for c in clipped])
    return [[x for pair in c + [(0, 0)] * (K - len(c)) for x in pair] for c in clipped]


def block_tiles(intervals, T, BLOCK_M, BLOCK_N, side, r0):
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


# -----------------------------------------------------------------------------
# Tiles through Hopper's copy engine (TMA): a descriptor made on the host tells the engine the
# tensor's shape and strides, so the loops issue one copy a tile and do no address arithmetic or
# bounds checks of their own. GPUs without TMA get the same tiles through pointers.

@functools.lru_cache(maxsize=None)
def tma_on(device):
    """Whether this device can stream tiles through TMA descriptors (plan decides per pass, by its
    size): GPUs that have the copy engine (Hopper, compute capability 9, and later) and the interpreter
    (the CPU tests). Older GPUs get pointers: triton pipelines those there, but not the plain loads a
    descriptor falls back to."""
    return interpreting() or torch.cuda.get_device_capability(device)[0] >= 9


def tiles(t, plan, rows="BLOCK_N"):
    """What a loop streams [rows, D] tiles of one (batch, head) of t (B, H, T, D) from: a tensor
    descriptor (the copy engine then does the address arithmetic and the bounds), or t itself."""
    if not plan.meta["TMA_TILES"]:
        return t
    strides = [st if n > 1 else t.shape[-1] for n, st in zip(t.shape, t.stride())]  # any aligned one for size 1
    return TensorDescriptor(t, list(t.shape), strides, [1, 1, plan.meta[rows], t.shape[-1]])


def stat_tiles(t, plan):
    """What the dK/dV loop streams [BLOCK_M] of one (batch, head)'s statistics from: a (B*H, T)
    descriptor (zeros past T), or t itself."""
    if not plan.meta["TMA_TILES"]:
        return t
    B, H, T = t.shape
    return TensorDescriptor(t, [B * H, T], [t.stride(1), 1], [1, plan.meta["BLOCK_M"]])


# -----------------------------------------------------------------------------
# Memory layouts

def kernel_ready(t):
    """t itself, or a contiguous copy where the kernels cannot take its layout. The kernels take any
    batch/head/time strides (views of a fused qkv projection need no copy), but vectorized loads need
    the head dim packed, and tensor descriptors a 16-byte aligned start and strides. Every call checks
    this, so the strides' part is cached by layout."""
    ready = t.data_ptr() % 16 == 0 and _packed_layout(t.shape, t.stride(), t.element_size())
    return t if ready else t.clone(memory_format=torch.contiguous_format)


@functools.lru_cache(maxsize=1024)
def _packed_layout(shape, stride, itemsize):
    """The head dim packed, and every other stride 16-byte aligned (a broadcast's stride 0 is not;
    a size-1 dim's stride does not count)."""
    return stride[-1] == 1 and all(n == 1 or (st > 0 and st * itemsize % 16 == 0)
                                   for n, st in zip(shape[:-1], stride[:-1]))


def bthd_empty(B, H, T, D, like):
    """An uninitialized (B, H, T, D) tensor laid out in (B, T, H, D) order. The model's next step is
    y.transpose(1, 2) -> (B, T, H * D), and the gradients go back into views of the fused (B, T, 3C)
    qkv projection: in this order both are views, not copies (SDPA's kernels return the same layout),
    and autograd does not save the output twice (as o, and as y for the output projection)."""
    return torch.empty_strided((B, H, T, D), (T * H * D, D, H * D, 1), dtype=like.dtype, device=like.device)


def stats_empty(B, H, T, device):
    """An uninitialized (B, H, T) fp32 tensor for per-row statistics (LSE, Delta), each row of T padded to
    a multiple of 4 elements: a TMA descriptor needs 16-byte row strides."""
    padded = (T + 3) // 4 * 4  # not triton.cdiv, a slow call on the host
    return torch.empty_strided((B, H, T), (H * padded, padded, 1), dtype=torch.float32, device=device)


# -----------------------------------------------------------------------------
# Launch configs: block sizes, warps and pipeline stages per (pass, head dim, length), chosen with
# `python bench/bench_kernel.py --sweep` (docs/kernel.md, section 8). Small tiles, 64 x 64 with 4
# warps: a band row is short, so more, smaller programs balance better across the SMs than 128-row
# ones, and a 64 x 64 fp32 score tile stays in registers. One length, BIG, covers every T today; a
# sweep may add shorter.
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
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, num_warps=1, num_stages=1)
# s * scale - m is meant to be one fused multiply-add an element in every inner loop: say so rather
# than rely on the compiler's default.
COMPILE_OPTIONS = dict(enable_fp_fusion=True)


def launch_config(kind, D, dtype, T, tma):
    """kind: "fwd", "dkdv" (BLOCK_N keys a program), "dq" (BLOCK_M queries a program); tma: whether the
    plan streams through descriptors."""
    if interpreting():
        return dict(INTERPRET_CONFIG)
    if dtype == torch.float32:
        # fp32 tiles take twice the registers and shared memory of 16-bit ones: smaller tiles, 2 stages.
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2, **COMPILE_OPTIONS)
    cfg = KERNEL_CONFIGS[kind]
    cfg = cfg[min(cfg, key=lambda d: (d < D, d))]  # the smallest listed head dim >= D
    cfg = dict(cfg[min(cfg, key=lambda t: (t < T, t))], **COMPILE_OPTIONS)  # the smallest length >= T
    if not tma:  # the register caps fit the TMA loops; pointer loads keep more values live and would spill
        cfg.pop("maxnreg", None)
    elif kind == "dkdv" and cfg["BLOCK_M"] < 32:
        # its LSE and Delta tiles would be TMA boxes of under 128 bytes, which fault with a misaligned
        # address once pipelined (docs/kernel.md, section 7)
        raise ValueError(f"dK/dV steps need >= 32 queries with TMA, got BLOCK_M={cfg['BLOCK_M']}")
    return cfg


# -----------------------------------------------------------------------------
# Generation's one-token step

@triton.jit
def _band_decode_kernel(
    Q,                                         # (B, H, 1, D): the new token's queries, last-dim stride 1
    K, V,                                      # (B, H, N, D): the KV cache, last-dim stride 1
    PART_ACC,                                  # (B*H, SPLITS, D) fp32 output: each split's unnormalized p V
    PART_ML,                                   # (B*H, SPLITS, 2) fp32 output: each split's running max and sum
    BANDS,                                     # (H, N_INTERVALS, 2) int32 intervals clipped to [0, N]
    POS,                                       # 0-d int64 tensor: the new token's position, read here
                                               # rather than passed by value, so one CUDA graph serves every position
    sm_scale_log2,                             # scale * log2(e)
    stride_qb, stride_qh,                      # strides of Q
    stride_kb, stride_kh, stride_kt,           # strides of K
    stride_vb, stride_vh, stride_vt,           # strides of V
    H,                                         # heads
    N_INTERVALS: tl.constexpr,                 # intervals per head (padded)
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

    for iv in range(N_INTERVALS):
        lo = tl.load(BANDS + (h * N_INTERVALS + iv) * 2)
        hi = tl.load(BANDS + (h * N_INTERVALS + iv) * 2 + 1)
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


def decode(q, k, v, bands, pos, scale_log2):
    """One query per head at position pos (an int or a 0-d int64 tensor on q's device) over the KV
    cache k, v (B, H, N, D): the decode kernel, then the combine of its splits."""
    B, H, _, D = q.shape
    q, k, v = (kernel_ready(t) for t in (q, k, v))
    bands_t, splits = decode_plan(bands, k.shape[2], B * H, D, q.device)
    if not torch.is_tensor(pos):
        pos = torch.full((), pos, dtype=torch.int64, device=q.device)
    part_acc = torch.empty((B * H, splits, D), dtype=torch.float32, device=q.device)
    part_ml = torch.empty((B * H, splits, 2), dtype=torch.float32, device=q.device)
    o = torch.empty((B, H, 1, D), dtype=q.dtype, device=q.device)
    _band_decode_kernel[(B * H, splits)](
        q, k, v, part_acc, part_ml, bands_t, pos, scale_log2,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        H, N_INTERVALS=bands_t.shape[1], HEAD_DIM=D, SPLITS=splits, **decode_config(D))
    _decode_combine_kernel[(B * H,)](part_acc, part_ml, o, o.stride(0), o.stride(1), H, HEAD_DIM=D, SPLITS=splits,
                                     num_warps=1, **COMPILE_OPTIONS)
    return o


def decode_config(D):
    # key and value tiles of at most 4096 elements (64 keys at D = 64), which 4 warps hold in registers.
    if interpreting():
        return dict(BLOCK_N=16, num_warps=1, num_stages=1)
    return dict(BLOCK_N=min(128, 4096 // D), num_warps=4, **COMPILE_OPTIONS)


@functools.lru_cache(maxsize=64)
def decode_plan(bands, N, batch_heads, D, device):
    """The clipped bands as an (H, K, 2) int32 tensor and the split count: enough programs for about
    two per SM (few when the batch already gives that many), but no more splits than the widest head
    has key blocks (a split that gets no block adds nothing to the combine)."""
    clipped = clipped_intervals(bands, N)
    bands_t = torch.tensor(clipped, dtype=torch.int32).view(len(bands), -1, 2).to(device)
    keys = int((bands_t[..., 1] - bands_t[..., 0]).sum(-1).max())       # the widest head's keys
    block = decode_config(D)["BLOCK_N"]
    target = 2 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 64
    splits = 1
    while batch_heads * splits * 2 <= target and block * splits * 2 <= keys:
        splits *= 2
    return bands_t, splits
