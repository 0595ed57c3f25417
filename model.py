"""
A GPT language model with SPAttention, in one file, read top-down like nanoGPT's model.py.

SPAttention (Zhao et al., AAAI 2026) gives each head its own band of causal distances d = i - j:
head 0 looks at the nearest keys, head H-1 at the farthest, and together the heads cover every
distance once, so multi-head attention costs about one head's worth of work. The bands are laid out
once from the model's block_size N (never from the batch's length), so training, evaluation and
KV-cache generation all see the same pattern.

References: nanoGPT (github.com/karpathy/nanoGPT) for the model and training shape; gpt-fast
(github.com/pytorch-labs/gpt-fast) for the typed config and the KV cache.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

import kernel

# Patterns whose visibility is a set of distance intervals per head: they run on the band kernel.
BAND_PATTERNS = ("dense", "sp", "sp_exclusive", "sp_balanced", "window")
# The paper's baselines, built as explicit per-head masks (see pattern_mask below).
MASK_PATTERNS = ("longformer", "bigbird")
ATTN_PATTERNS = BAND_PATTERNS + MASK_PATTERNS


class ConfigError(ValueError):
    """A model or training setting that cannot work; the message says which and how to fix it."""


# -----------------------------------------------------------------------------
# Where each head looks

def head_bands(n_head, block_size, pattern):
    """The intervals of causal distance [lo, hi) that each head attends to, as a LongTensor
    (n_head, K, 2); heads with fewer than K intervals are padded with empty [0, 0) rows.

    With W = N // H and R = N % H, head h owns the band [S_h, S_h + W_h) where
    W_h = W + (h < R) and S_h = h * W + min(h, R) (the paper's Eq. 4):
      sp_exclusive  its own band only
      sp            its own band plus the shared local window [0, W_h] (the reference code's default)
      sp_balanced   disjoint bands cut so that every head gets the same number of causal pairs
      window        [0, N // H] for every head (the paper's sliding-window ablation)
      dense         [0, N): ordinary causal attention
    """
    N, H = block_size, n_head
    if pattern not in BAND_PATTERNS:
        raise ConfigError(f"head_bands: unknown pattern {pattern!r}; choose one of {BAND_PATTERNS}")
    if H < 1 or N < H:
        raise ConfigError(f"head_bands needs 1 <= n_head <= block_size, got n_head={H}, block_size={N}")
    W, R = divmod(N, H)
    width = [W + (h < R) for h in range(H)]
    start = [h * W + min(h, R) for h in range(H)]
    if pattern == "dense":
        bands = [[(0, N)] for _ in range(H)]
    elif pattern == "window":
        bands = [[(0, min(N, W + 1))] for _ in range(H)]
    elif pattern == "sp_exclusive":
        bands = [[(start[h], start[h] + width[h])] for h in range(H)]
    elif pattern == "sp":
        bands = [_merge([(0, width[h] + 1), (start[h], start[h] + width[h])]) for h in range(H)]
    else:  # sp_balanced
        cuts = _balanced_cuts(N, H)
        bands = [[(cuts[h], cuts[h + 1])] for h in range(H)]
    return kernel.bands_tensor([[(lo, min(hi, N)) for lo, hi in b] for b in bands])


def _merge(intervals):
    out = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _balanced_cuts(N, H):
    """Distances 0 = c_0 < c_1 < ... < c_H = N with about equal causal pairs in each [c_h, c_h+1).

    Distance d occurs N - d times in a causal N x N attention, so the pairs below distance c are
    P(c) = c*N - c*(c-1)/2; c_h solves P(c) = h/H * P(N), rounded, and kept strictly increasing.
    """
    total = N * (N + 1) / 2
    cuts = [0]
    for h in range(1, H):
        target = total * h / H
        c = round(((2 * N + 1) - math.sqrt((2 * N + 1) ** 2 - 8 * target)) / 2)
        cuts.append(min(max(c, cuts[-1] + 1), N - (H - h)))
    return cuts + [N]


def pattern_mask(n_head, block_size, pattern, seed=0):
    """(n_head, N, N) boolean masks of the paper's sparse baselines; True = query i sees key j.

    longformer: a causal window of min(256, N//4) distances, plus the first min(16, N//32) positions
                as global tokens (they see every earlier key, and every query sees them).
    bigbird:    a causal window of min(128, N//8), min(8, N//64) global positions, and per query
                block of 64 two random earlier key blocks, fixed by `seed` and different per head
                (real random blocks, not the reference code's stride).
    """
    N = block_size
    i = torch.arange(N)
    d = i[:, None] - i[None, :]
    causal = d >= 0
    if pattern == "longformer":
        w, g = min(256, N // 4), min(16, N // 32)
        m = (d < w) | (i[:, None] < g) | (i[None, :] < g)
        return (m & causal).expand(n_head, N, N).clone()
    if pattern == "bigbird":
        w, g, bs = min(128, N // 8), min(8, N // 64), 64
        base = (d < w) | (i[:, None] < g) | (i[None, :] < g)
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
    raise ConfigError(f"pattern_mask: unknown pattern {pattern!r}; choose one of {MASK_PATTERNS}")


# -----------------------------------------------------------------------------
# The model

@dataclass
class GPTConfig:
    block_size: int = 1024       # the training context N; the bands are laid out for it
    vocab_size: int = 50304      # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0         # on embeddings, residual branches and MLP (not on attention weights)
    bias: bool = True            # biases in Linears and LayerNorms, like GPT-2
    attn: str = "sp"             # one of ATTN_PATTERNS

    def __post_init__(self):
        if self.attn not in ATTN_PATTERNS:
            raise ConfigError(f"unknown attn={self.attn!r}; choose one of {', '.join(ATTN_PATTERNS)}")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                              "pick n_embd as a multiple of n_head")
        if self.block_size < self.n_head:
            raise ConfigError(f"block_size={self.block_size} < n_head={self.n_head}: SPAttention gives "
                              "each head its own band of distances, so it needs block_size >= n_head")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


class KVCache(nn.Module):
    """Keys and values of the positions seen so far, preallocated for block_size positions."""

    def __init__(self, batch_size, n_head, max_len, head_dim, dtype, device):
        super().__init__()
        shape = (batch_size, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start, k, v):
        """Store k, v (B, H, T, D) at positions start..start+T-1; return all keys and values so far."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd, self.attn = config.n_head, config.n_embd, config.attn
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache = None
        if config.attn in BAND_PATTERNS:
            # A tuple of Python ints: torch.compile treats it as a constant.
            self.bands = kernel.normalize_bands(
                head_bands(config.n_head, config.block_size, config.attn), config.n_head)
        else:
            self.register_buffer("mask", pattern_mask(config.n_head, config.block_size, config.attn),
                                 persistent=False)

    def visible(self, T, Tk, q_start):
        """(H, T, Tk) mask of which key each query sees, queries at positions q_start.."""
        if self.attn in BAND_PATTERNS:
            return kernel.band_mask(self.bands, T, self.c_attn.weight.device, Tk=Tk, q_start=q_start)
        return self.mask[:, q_start:q_start + T, :Tk]

    def forward(self, x, start_pos=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, H, T, D): views of the fused projection, which the band kernel reads as is
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if start_pos is not None:
            k, v = self.kv_cache.update(start_pos, k, v)
        scale = 1.0 / math.sqrt(k.size(-1))
        if start_pos:  # decoding after a prefix: these queries are the last rows of the full pattern
            y = kernel.masked_attention(q, k, v, self.visible(T, k.size(2), start_pos), scale)
        elif self.attn == "dense":
            # The band [0, N) is plain causal attention for T <= N: SDPA's fused kernels (cuDNN,
            # FlashAttention) are the fastest way to run it, and the baseline the sparse patterns race.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.attn in BAND_PATTERNS:
            y = kernel.band_attention(q, k, v, self.bands, scale)
        else:
            y = kernel.masked_attention(q, k, v, self.visible(T, T, 0), scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, start_pos=None):
        x = x + self.attn(self.ln_1(x), start_pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        """Parameters; position embeddings excluded by default (token embeddings are tied to lm_head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, start_pos=None):
        """Logits (and the mean cross-entropy when targets are given) for token ids idx (B, T).

        Without targets only the last position's logits are computed, as in nanoGPT. start_pos
        (after setup_kv_cache) places idx at positions start_pos.. and attends over the cache.
        """
        B, T = idx.size()
        offset = start_pos or 0
        if offset + T > self.config.block_size:
            raise ValueError(f"sequence of length {offset + T} exceeds block_size="
                             f"{self.config.block_size}: crop the input to its last block_size tokens")
        pos = torch.arange(offset, offset + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, start_pos)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits, loss = self.lm_head(x[:, [-1], :]), None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # Weight decay on matrices (Linear, Embedding), none on biases and norms.
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))

    def attention_pairs(self, T=None):
        """Query-key pairs the attention computes per layer at length T (default block_size), all heads."""
        T = T or self.config.block_size
        return int(self.transformer.h[0].attn.visible(T, T, 0).sum())

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward): 6 per weight (PaLM's appendix B) plus the
        attention scores and values, counting only the pairs this pattern computes."""
        cfg, T = self.config, T or self.config.block_size
        head_dim = cfg.n_embd // cfg.n_head
        return 6 * self.get_num_params() + 12 * cfg.n_layer * head_dim * self.attention_pairs(T) / T

    def estimate_mfu(self, fwdbwd_per_iter, dt, T=None, peak_flops=None):
        """Model FLOPs utilization: achieved FLOP/s over the device's peak. The peak comes from
        `peak_flops` or from the CUDA GPU's name (bf16 dense tensor-core rate); None if unknown."""
        peak = peak_flops or gpu_peak_flops()
        if not peak:
            return None
        T = T or self.config.block_size
        return self.flops_per_token(T) * T * fwdbwd_per_iter / dt / peak

    def setup_kv_cache(self, batch_size, device=None, dtype=None):
        p = next(self.parameters())
        cfg = self.config
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                                          dtype or p.dtype, device or p.device)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True):
        """Continue the token ids idx (B, T) by max_new_tokens sampled tokens.

        As in nanoGPT, each token is predicted from (at most) the last block_size tokens. With the
        KV cache each step feeds only the new token until the context is full; after that the window
        slides and every position embedding shifts, so each step re-encodes the last block_size
        tokens, exactly what nanoGPT does at every step without a cache.
        """
        N = self.config.block_size
        if use_cache:
            self.setup_kv_cache(idx.size(0), idx.device)
        filled = 0  # positions in the cache
        for _ in range(max_new_tokens):
            if not use_cache:
                logits, _ = self(idx[:, -N:])
            elif filled == 0 or filled >= N:
                ctx = idx[:, -N:]
                logits, _ = self(ctx, start_pos=0)
                filled = ctx.size(1)
            else:
                logits, _ = self(idx[:, -1:], start_pos=filled)
                filled += 1
            logits = logits[:, -1, :] / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        for block in self.transformer.h:
            block.attn.kv_cache = None
        return idx


# Peak dense bf16 tensor-core FLOP/s by GPU name (vendor datasheets), for estimate_mfu.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A10G": 125e12, "L40S": 362e12,
              "L4": 121e12, "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


def gpu_peak_flops():
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, flops in PEAK_FLOPS.items():
        if key in name:
            if key == "H100" and "PCIe" in name:
                return 756e12
            return flops
    return None
