"""
The paper's sparse baselines, as the SPAttention paper compares against them: Longformer and BigBird
as fixed per-head masks (run with FlexAttention on a GPU), Reformer's LSH attention (pure PyTorch),
and the SPAttention bands themselves on FlexAttention (the paper's own approach, which the band kernel
races). model.py's patterns call these; the bands themselves are laid out in model.py.
"""

import torch
from torch.nn import functional as F

import kernel


def pattern_mask(n_head, block_size, pattern, seed=0):
    """(n_head, N, N) boolean masks of the paper's sparse baselines; True = query i sees key j.

    longformer: a causal window of distances 0..w, w = min(256, N//4), plus the first min(16, N//32)
                positions as global tokens (they see every earlier key, and every query sees them).
    bigbird:    a causal window of distances 0..min(128, N//8), min(8, N//64) global positions, and per query
                block of 64 two random earlier key blocks, fixed by `seed` and different per head
                (real random blocks, not the reference code's stride).
    """
    N = block_size
    i = torch.arange(N)
    d = i[:, None] - i[None, :]
    causal = d >= 0
    if pattern == "longformer":
        w, g = min(256, N // 4), min(16, N // 32)
        m = (d <= w) | (i[:, None] < g) | (i[None, :] < g)
        return (m & causal).expand(n_head, N, N).clone()
    if pattern == "bigbird":
        w, g, bs = min(128, N // 8), min(8, N // 64), 64
        base = (d <= w) | (i[:, None] < g) | (i[None, :] < g)
        gen = torch.Generator().manual_seed(seed)
        nb = (N + bs - 1) // bs
        masks = []
        for _ in range(n_head):
            blocks = torch.zeros(nb, nb, dtype=torch.bool)
            for qb in range(1, nb):
                blocks[qb, torch.randperm(qb, generator=gen)[:2]] = True
            rand = blocks.repeat_interleave(bs, 0).repeat_interleave(bs, 1)[:N, :N]
            masks.append((base | rand) & causal)
        return torch.stack(masks)
    raise ValueError(f"pattern_mask: unknown pattern {pattern!r}; choose longformer or bigbird")


def flex_masked_attention(q, k, v, mask, scale, compiled=True):
    """Attention restricted to the (H, N, N) mask's top-left (T, T) corner with FlexAttention."""
    return flex_attention(q, k, v, lambda b, h, qi, kj: mask[h, qi, kj], (mask,), scale, compiled)


def flex_band_attention(q, k, v, bands, scale=None):
    """kernel.band_attention's bands (normalized, kernel.normalize_bands) on FlexAttention."""
    b = kernel.bands_on(bands, str(q.device))  # (H, K, 2), made once

    def mask_mod(batch, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        visible = (d >= b[h, 0, 0]) & (d < b[h, 0, 1])
        for i in range(1, b.shape[1]):
            visible = visible | ((d >= b[h, i, 0]) & (d < b[h, i, 1]))
        return visible

    return flex_attention(q, k, v, mask_mod, (bands,), scale)


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


def lsh_params(block_size):
    """Reformer's LSH settings for context N: chunk c, n_buckets = 2N / c (the paper's choice), rounds."""
    chunk = min(64, max(4, block_size // 16))
    return dict(chunk=chunk, n_buckets=max(2, 2 * block_size // chunk // 2 * 2), n_rounds=2)


def lsh_rotations(n_head, head_dim, block_size, seed):
    """Random rotations of angular LSH, (H, D, rounds, n_buckets / 2): fixed by `seed` (one per layer)."""
    p = lsh_params(block_size)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_head, head_dim, p["n_rounds"], p["n_buckets"] // 2, generator=gen)


def lsh_attention(qk, v, rotations, chunk, scale):
    """Causal LSH attention (Reformer, Kitaev et al. 2020) with shared queries and keys.

    Keys are the unit-length queries. Each round hashes every position by a random rotation R,
    bucket = argmax([xR, -xR]), sorts positions by (bucket, position) and cuts the sorted order into
    chunks of c; a query attends within its own and the previous chunk, to the earlier positions of
    its own bucket at most c places back in the sorted order: the c most recent positions of its
    bucket, a set that depends on earlier tokens only, so the result is exactly causal. A query sees
    itself only when nothing else is visible. Rounds are combined by their log-sum-exp weights.
    qk, v: (B, H, T, D); rotations: (H, D, rounds, n_buckets / 2). Returns (B, H, T, D) in qk's dtype.
    """
    B, H, T, D = qk.shape
    R, c = rotations.size(2), chunk
    q, v = qk.float(), v.float()
    k = F.normalize(q, dim=-1)
    rot = torch.einsum("bhtd,hdrn->bhrtn", k, rotations.to(q))
    bucket = torch.cat([rot, -rot], dim=-1).argmax(dim=-1)                  # (B, H, R, T)
    order = torch.argsort(bucket * T + torch.arange(T, device=q.device), dim=-1)  # slot -> position
    nc = -(-T // c)
    order = F.pad(order, (0, nc * c - T), value=T)                          # position T: padding

    def chunks(x):  # (B, H, T + 1, D), position T a zero row -> sorted, (B, H, R, nc, c, D)
        x = x.unsqueeze(2).expand(-1, -1, R, -1, -1)
        return x.gather(3, order.unsqueeze(-1).expand(-1, -1, -1, -1, x.size(-1))).view(B, H, R, nc, c, -1)

    def with_previous(x, fill):  # keys of chunk n: chunk n-1 then chunk n, (B, H, R, nc, 2c, ...)
        prev = torch.cat([torch.full_like(x[:, :, :, :1], fill), x[:, :, :, :-1]], dim=3)
        return torch.cat([prev, x], dim=4)

    pad1 = lambda x: F.pad(x, (0, 0, 0, 1))  # noqa: E731  a zero row for the padding position
    sq, sv = chunks(pad1(q)), with_previous(chunks(pad1(v)), 0)
    sk = with_previous(chunks(pad1(k)), 0)
    qpos = order.view(B, H, R, nc, c)
    qbkt = torch.cat([bucket, bucket.new_full((B, H, R, 1), -1)], dim=-1).gather(-1, order).view(B, H, R, nc, c)
    kpos, kbkt = with_previous(qpos, T), with_previous(qbkt, -1)
    i = torch.arange(2 * c, device=q.device)
    back = c + i[:c, None] - i[None, :]         # how many sorted places key j is behind query i
    earlier = kpos.unsqueeze(-2) < qpos.unsqueeze(-1)
    visible = earlier & (kbkt.unsqueeze(-2) == qbkt.unsqueeze(-1)) & (back <= c)
    is_self = kpos.unsqueeze(-2) == qpos.unsqueeze(-1)
    att = torch.einsum("bhrnid,bhrnjd->bhrnij", sq, sk) * scale
    # Reformer's constants: -1e9 for the invisible, -1e5 for itself (chosen only when alone)
    att = torch.where(visible, att, torch.where(is_self, att.new_tensor(-1e5), att.new_tensor(-1e9)))
    lse = torch.logsumexp(att, dim=-1, keepdim=True)
    out = torch.exp(att - lse) @ sv                                          # (B, H, R, nc, c, D)
    # back to positions, then the rounds weighted by a softmax over their log-sum-exps
    inv = torch.argsort(order, dim=-1)[..., :T]
    out = out.view(B, H, R, nc * c, D).gather(3, inv.unsqueeze(-1).expand(-1, -1, -1, -1, D))
    lse = lse.view(B, H, R, nc * c).gather(3, inv)
    return (torch.softmax(lse, dim=2).unsqueeze(-1) * out).sum(dim=2).to(qk.dtype)

