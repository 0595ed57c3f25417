"""
Band attention: every head attends to keys whose causal distance lies in its own set of intervals.

    band_attention(q, k, v, bands, scale=None, backend="auto") -> Tensor

q, k, v are (B, H, T, D). `bands` is an integer tensor (H, K, 2): row [lo, hi) of head h is a
half-open interval of distances d = i - j, and key j is visible to query i iff lo <= d < hi for one
of the head's intervals. Within a head the non-empty intervals are sorted and disjoint; empty rows
(hi <= lo) are padding, so heads with fewer intervals fit in one tensor. A query with no visible key
gets output 0 and zero gradient (never NaN).

Two backends compute the same function:
- "torch": a plain PyTorch masked softmax. It forms the (H, T, T) mask and the (B, H, T, T) scores,
  so it is for CPU, tests and small T. It is the correctness reference for the Triton kernel.
- "triton": the fused band kernel (forward and backward) for CUDA tensors; it never forms a T x T
  tensor and only visits the key blocks that meet each head's bands.
"auto" picks triton for CUDA tensors when triton imports, else torch.
"""

import math

import torch

try:  # triton is a Linux-only dependency; without it the torch backend still works everywhere
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the platform
    HAS_TRITON = False

BACKENDS = ("auto", "torch", "triton")


# -----------------------------------------------------------------------------
# Checking the bands

def normalize_bands(bands, n_head):
    """Validate `bands` and return it as a tuple (per head) of tuples of (lo, hi) non-empty intervals.

    Accepts the (H, K, 2) integer tensor of the contract, or the same nested as Python sequences
    (the model passes a tuple so that torch.compile sees constants). Raises ValueError on anything
    that is not H sorted lists of disjoint intervals of non-negative distances.
    """
    if isinstance(bands, torch.Tensor):
        if bands.is_floating_point() or bands.is_complex() or bands.dtype == torch.bool:
            raise ValueError(f"bands must be an integer tensor, got dtype {bands.dtype}")
        if bands.dim() != 3 or bands.shape[-1] != 2:
            raise ValueError(f"bands must have shape (n_head, K, 2), got {tuple(bands.shape)}")
        bands = bands.tolist()
    if len(bands) != n_head:
        raise ValueError(f"bands has {len(bands)} heads but q has {n_head}")
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


def bands_tensor(bands):
    """The (H, K, 2) int64 tensor of normalized bands, padding short heads with empty [0, 0) rows."""
    K = max(1, max(len(b) for b in bands))
    rows = [list(b) + [(0, 0)] * (K - len(b)) for b in bands]
    return torch.tensor(rows, dtype=torch.long).view(len(bands), K, 2)


def band_mask(bands, T, device=None, Tk=None, q_start=0):
    """(H, T, Tk) boolean mask: [h, i, j] is True iff key j is visible to query i in head h.

    Queries sit at positions q_start .. q_start + T - 1 and keys at 0 .. Tk - 1 (Tk defaults to T):
    a KV-cache decode step is the last rows of the full mask.
    """
    Tk = T if Tk is None else Tk
    b = bands_tensor(bands).to(device)                          # (H, K, 2)
    i = torch.arange(q_start, q_start + T, device=device)
    j = torch.arange(Tk, device=device)
    d = (i[:, None] - j[None, :])[None, None]                   # (1, 1, T, Tk) distances i - j
    lo, hi = b[..., 0, None, None], b[..., 1, None, None]       # (H, K, 1, 1)
    return ((lo <= d) & (d < hi)).any(dim=1)


# -----------------------------------------------------------------------------
# The PyTorch fallback (the reference)

def masked_attention(q, k, v, mask, scale):
    """Softmax attention restricted to `mask` (broadcastable to (B, H, Tq, Tk), True = visible),
    computed in float32 (float64 stays float64); the result has q's dtype. Rows with no visible key
    give 0 with zero gradient."""
    ct = torch.promote_types(q.dtype, torch.float32)
    att = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale      # (B, H, Tq, Tk)
    # A large finite negative instead of -inf: a row with no visible key then gives a finite uniform
    # softmax, which the final `* mask` zeroes, with zero gradient; -inf would give 0/0 = NaN.
    att = att.masked_fill(~mask, torch.finfo(ct).min)
    att = torch.softmax(att, dim=-1) * mask
    return (att @ v.to(ct)).to(q.dtype)


def torch_band_attention(q, k, v, bands, scale):
    """The reference: the (H, T, T) band mask and a masked softmax."""
    return masked_attention(q, k, v, band_mask(bands, q.shape[-2], q.device), scale)


# -----------------------------------------------------------------------------
# The entry point

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
        backend = "triton" if (HAS_TRITON and q.is_cuda) else "torch"
    if backend == "torch":
        return torch_band_attention(q, k, v, bands, scale)
    if not HAS_TRITON:
        raise ValueError("backend='triton' needs the triton package (Linux); use backend='torch'")
    return triton_band_attention(q, k, v, bands, scale)


def triton_band_attention(q, k, v, bands, scale):
    raise NotImplementedError("the Triton band kernel lands with issue 3")
