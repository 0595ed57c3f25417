"""
A GPT language model with SPAttention, in one file, read top-down like nanoGPT's model.py.

SPAttention (Zhao et al., AAAI 2026) gives each head its own band of causal distances d = i - j:
head 0 looks at the nearest keys, head H-1 at the farthest, and together the heads cover every
distance once, so multi-head attention costs about one head's worth of work (sp_exclusive; the
default sp also gives every head a shared local window, about three heads' worth). The bands are
laid out once from the model's block_size N (never from the batch's length), so training, evaluation
and KV-cache generation all see the same pattern.

Reading order: GPTConfig, head_bands (where each head looks), then the transformer (LayerNorm,
CausalSelfAttention, MLP, Block, GPT) as in nanoGPT. Below the GPT: how each attention pattern
attends (the SPAttention bands, and the paper's baselines from baselines.py), then generation's
machinery (the KV cache, a CUDA-graph decode step, the sampler).

References: nanoGPT (github.com/karpathy/nanoGPT) for the model and training shape; gpt-fast
(github.com/pytorch-labs/gpt-fast) for the typed config and the KV cache.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import baselines
import kernel

# Patterns whose visibility is a set of distance intervals per head: they run on the band kernel.
BAND_PATTERNS = ("dense", "sp", "sp_exclusive", "sp_balanced", "window")
# The paper's baselines, built as explicit per-head masks (baselines.pattern_mask).
MASK_PATTERNS = ("longformer", "bigbird")
# Content-based: Reformer's LSH attention (baselines.lsh_attention).
ATTN_PATTERNS = BAND_PATTERNS + MASK_PATTERNS + ("reformer",)
# How the sparse band patterns run: kernel.band_attention's backends, or the bands on FlexAttention.
ATTN_BACKENDS = kernel.BACKENDS + ("flex",)


class ConfigError(ValueError):
    """A model or training setting that cannot work; the message says which and how to fix it."""


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
    attn_backend: str = "auto"   # how the sparse band patterns run: auto, triton, torch (kernel.py) or
                                 # flex; dense always runs SDPA, generation's one-token step auto

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
        if self.attn_backend not in ATTN_BACKENDS:
            raise ConfigError(f"unknown attn_backend={self.attn_backend!r}; choose one of {', '.join(ATTN_BACKENDS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


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
      window        [0, W_h]: sp's shared local window alone (the paper's sliding-window ablation)
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
        bands = [[(0, min(N, width[h] + 1))] for h in range(H)]
    elif pattern == "sp_exclusive":
        bands = [[(start[h], start[h] + width[h])] for h in range(H)]
    elif pattern == "sp":
        bands = [_merge([(0, width[h] + 1), (start[h], start[h] + width[h])]) for h in range(H)]
    elif pattern == "sp_balanced":
        cuts = _balanced_cuts(N, H)
        bands = [[(cuts[h], cuts[h + 1])] for h in range(H)]
    else:
        raise ConfigError(f"head_bands: {pattern!r} is in BAND_PATTERNS but has no branch here to lay out its bands")
    return kernel.bands_tensor([[(lo, min(hi, N)) for lo, hi in b] for b in bands])


def band_pairs(bands, T):
    """Causal (query, key) pairs that normalized bands admit at length T, all heads: distance d
    occurs T - d times, so [lo, hi) holds n*T - (lo + ... + hi-1) of them. No T x T mask needed."""
    total = 0
    for head in bands:
        for lo, hi in head:
            n = min(hi, T) - lo
            if n > 0:
                total += n * T - n * (2 * lo + n - 1) // 2
    return total


def _merge(intervals):
    out = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _balanced_cuts(N, H):
    """Distances 0 = c_0 < c_1 < ... < c_H = N with about equal causal pairs in each [c_h, c_{h+1}).

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


# -----------------------------------------------------------------------------
# The transformer

class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer=0):
        super().__init__()
        self.n_head, self.n_embd, self.layer, self.config = config.n_head, config.n_embd, layer, config
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache = None  # set by GPT.setup_kv_cache for generation
        self.set_pattern(config.attn)

    def set_pattern(self, attn):
        """Attend with pattern `attn` from now on (same weights); train.py's attn_switch_frac uses it."""
        self.pattern = make_pattern(attn, self.config, self.layer).to(self.c_attn.weight.device)

    def forward(self, x, start_pos=None):
        B, T, C = x.size()  # batch, sequence length, embedding dim (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, H, T, D): one (T, D) slice per head, views of the fused projection
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if start_pos is None:
            y = self.pattern(q, k, v)  # each head attends to the keys its pattern lets it see
        else:  # generation: store k, v at positions start_pos.. and attend over the cache
            y = self.pattern.cached(q, k, v, self.kv_cache, start_pos)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
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

    def __init__(self, config, layer=0):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
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
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
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
        offset = 0 if start_pos is None else start_pos
        if not torch.is_tensor(offset) and offset + T > self.config.block_size:
            raise ValueError(f"sequence of length {offset + T} exceeds block_size="
                             f"{self.config.block_size}: crop the input to its last block_size tokens")
        pos = torch.arange(T, dtype=torch.long, device=idx.device) + offset
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, start_pos)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits, loss = self.lm_head(x[:, -1:, :]), None  # a slice: no index tensor to copy (CUDA graphs)
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

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True, cuda_graph=True,
                 n_ids=None):
        """Continue the token ids idx (B, T) by max_new_tokens sampled tokens; with n_ids, only ids below
        it are drawn (a vocabulary padded for speed has ids that no tokenizer decodes).

        As in nanoGPT, each token is predicted from (at most) the last block_size tokens. With the
        KV cache each step feeds only the new token until the context is full; after that the window
        slides and every position embedding shifts, so each step re-encodes the last block_size
        tokens, exactly what nanoGPT does at every step without a cache. Reformer runs without the
        cache: its LSH buckets and chunks are rebuilt from the whole context at every step.
        On a GPU the one-token step, sampling included, is recorded once as a CUDA graph (see graphed).
        """
        N = self.config.block_size
        use_cache = use_cache and self.attn != "reformer"

        def next_token(logits):
            # in float32: under float16 autocast a small temperature would overflow the logits to inf
            logits = logits[:, -1, :n_ids].float() / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits = logits.masked_fill(logits < v[:, -1:], -float("inf"))
            return sample(F.softmax(logits, dim=-1))

        def decode_step(token, pos):  # token (B, 1) at position pos -> the next token (B, 1)
            return next_token(self(token, start_pos=pos)[0])

        if use_cache:
            self.setup_kv_cache(idx.size(0), idx.device)
        step = None  # decode_step, or its CUDA graph: made at the first one-token step
        filled = 0  # positions in the cache
        for _ in range(max_new_tokens):
            if not use_cache:
                idx_next = next_token(self(idx[:, -N:])[0])
            elif filled == 0 or filled >= N:  # a new prompt, or a full window that slides: re-encode it
                ctx = idx[:, -N:]
                idx_next = next_token(self(ctx, start_pos=0)[0])
                filled = ctx.size(1)
            else:
                if step is None:
                    step = graphed(decode_step, idx[:, -1:], filled) if cuda_graph and idx.is_cuda else decode_step
                idx_next = step(idx[:, -1:], filled)
                filled += 1
            idx = torch.cat((idx, idx_next), dim=1)
        for block in self.transformer.h:
            block.attn.kv_cache = None
        return idx

    def setup_kv_cache(self, batch_size, device=None, dtype=None):
        """One cache per layer, in the dtype the keys will have: autocast's when it is on."""
        p = next(self.parameters())
        device = torch.device(device or p.device)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else p.dtype
        cfg = self.config
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head,
                                          dtype, device)

    @property
    def attn(self):
        """The attention pattern in use: config.attn unless set_attn changed it."""
        return self.transformer.h[0].attn.pattern.name

    def set_attn(self, attn):
        """Switch every layer to pattern `attn`, keeping the weights (config.attn keeps the original)."""
        for block in self.transformer.h:
            block.attn.set_pattern(attn)

    def attention_pairs(self, T=None):
        """Query-key pairs the attention computes per layer at length T (default block_size), all heads."""
        return self.transformer.h[0].attn.pattern.pairs(T or self.config.block_size)

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


# -----------------------------------------------------------------------------
# How each pattern attends. This is the one place that chooses: make_pattern builds one of three
# kinds, and each takes q, k, v (B, H, T, D) and returns the heads' outputs in the same shape.

def make_pattern(attn, config, layer=0):
    """The attention of pattern `attn` for one layer of a model with `config`."""
    if attn in BAND_PATTERNS:
        return BandPattern(attn, config)
    if attn in MASK_PATTERNS:
        return MaskPattern(attn, config)
    if attn == "reformer":
        return LSHPattern(config, seed=layer)  # different random rotations in every layer
    raise ConfigError(f"unknown attn={attn!r}; choose one of {', '.join(ATTN_PATTERNS)}")


class Pattern(nn.Module):
    """What every pattern shares: generation over a KV cache, from the pattern's visibility mask."""

    def __init__(self, name, config):
        super().__init__()
        self.name, self.n_head, self.block_size = name, config.n_head, config.block_size

    def visible(self, T, Tk, q_start, device=None):
        """(H, T, Tk) boolean mask: which of keys 0..Tk-1 each query at positions q_start.. sees."""
        raise NotImplementedError

    def pairs(self, T):
        """Query-key scores this pattern computes at length T, all heads."""
        return int(self.visible(T, T, 0).sum())

    def cached(self, q, k, v, cache, start_pos):
        """Generation: q, k, v of new tokens at positions start_pos..; keys and values so far come
        from the cache."""
        cache.update(start_pos, k, v)
        T = q.size(2)
        if T == 1:  # one new token: over the whole cache (see decode)
            return self.decode(q, cache.k, cache.v, start_pos)
        if not start_pos:  # a prompt from position 0: exactly a forward pass
            return self(q, k, v)
        # a prompt after a prefix: the last rows of the full pattern
        Tk = start_pos + T
        return kernel.masked_attention(q, cache.k[:, :, :Tk], cache.v[:, :, :Tk],
                                       self.visible(T, Tk, start_pos, q.device), q.size(-1) ** -0.5)

    def decode(self, q, k, v, pos):
        """One new token per sequence (q: (B, H, 1, D)) at position pos over the whole cache k, v
        (B, H, N, D). Its shapes do not depend on pos, an int or a 0-d tensor, so GPT.generate can
        record it once as a CUDA graph and replay it at every position."""
        raise NotImplementedError


class BandPattern(Pattern):
    """SPAttention and its relatives: head h sees the keys at distances in its bands (head_bands)."""

    def __init__(self, name, config):
        super().__init__(name, config)
        self.backend = config.attn_backend
        # made once, in the one form the kernel takes from here to its launch: a tuple per head of
        # (lo, hi) pairs, passed unchanged at every call
        self.bands = kernel.normalize_bands(head_bands(config.n_head, config.block_size, name), config.n_head)

    def forward(self, q, k, v):
        if self.name == "dense":
            # The band [0, N) is plain causal attention for T <= N: SDPA's fused kernels (cuDNN,
            # FlashAttention) are the fastest way to run it, and the baseline the sparse patterns race.
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if self.backend == "flex":  # the paper's approach: a baseline for the band kernel to race
            return baselines.flex_band_attention(q, k, v, self.bands)
        return kernel.band_attention(q, k, v, self.bands, backend=self.backend)

    def visible(self, T, Tk, q_start, device=None):
        return kernel.band_mask(self.bands, T, device, Tk=Tk, q_start=q_start)

    def pairs(self, T):
        return band_pairs(self.bands, T)

    def decode(self, q, k, v, pos):
        scale = q.size(-1) ** -0.5
        if self.name != "dense":  # read only the keys in each head's bands (about 2/H of the cache for sp)
            return kernel.band_decode_attention(q, k, v, self.bands, pos, scale)
        visible = (torch.arange(k.size(2), device=q.device) <= pos).view(1, 1, 1, k.size(2))
        # cuDNN first: the cache's shapes never change, so it plans its kernel once and reuses it
        # (docs/kernel.md, the decode kernel, times it against the band decode kernel)
        backends = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        with sdpa_kernel(backends, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=scale)


class MaskPattern(Pattern):
    """Longformer and BigBird: a fixed (H, N, N) mask of local window, global tokens (and BigBird's
    random blocks), baselines.pattern_mask."""

    def __init__(self, name, config):
        super().__init__(name, config)
        self.register_buffer("mask", baselines.pattern_mask(config.n_head, config.block_size, name),
                             persistent=False)

    def forward(self, q, k, v):
        scale = q.size(-1) ** -0.5
        if q.is_cuda:  # FlexAttention skips the blocks the mask leaves empty
            return baselines.flex_masked_attention(q, k, v, self.mask, scale)
        T = q.size(2)
        return kernel.masked_attention(q, k, v, self.visible(T, T, 0, q.device), scale)

    def visible(self, T, Tk, q_start, device=None):
        return self.mask[:, q_start:q_start + T, :Tk]

    def decode(self, q, k, v, pos):
        pos = torch.as_tensor(pos, device=q.device).view(1)
        return kernel.masked_attention(q, k, v, self.mask.index_select(1, pos), q.size(-1) ** -0.5)


class LSHPattern(Pattern):
    """Reformer: which keys a query sees depends on the tokens (hash buckets), so there is no fixed
    mask and no KV cache; baselines.lsh_attention."""

    def __init__(self, config, seed):
        super().__init__("reformer", config)
        self.chunk = baselines.lsh_params(config.block_size)["chunk"]
        self.register_buffer("rotations", baselines.lsh_rotations(
            config.n_head, config.n_embd // config.n_head, config.block_size, seed=seed), persistent=False)

    def forward(self, q, k, v):
        # Keys are the normalized queries: the k third of c_attn is unused (shared-QK attention).
        return baselines.lsh_attention(q, v, self.rotations, self.chunk, q.size(-1) ** -0.5)

    def visible(self, T, Tk, q_start, device=None):
        raise ValueError("reformer's LSH attention has no fixed mask: which keys a query sees depends on the tokens")

    def pairs(self, T):
        p = baselines.lsh_params(self.block_size)
        nc = -(-T // p["chunk"])
        return self.n_head * p["n_rounds"] * (nc * 2 - 1) * p["chunk"] ** 2  # the first chunk has no previous

    def cached(self, q, k, v, cache, start_pos):
        raise ValueError("reformer has no KV cache (its buckets depend on every token): "
                         "GPT.generate recomputes the whole context at each step instead")


# -----------------------------------------------------------------------------
# Generation's machinery

class KVCache(nn.Module):
    """Keys and values of the positions seen so far, preallocated for block_size positions."""

    def __init__(self, batch_size, n_head, max_len, head_dim, dtype, device):
        super().__init__()
        shape = (batch_size, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start, k, v):
        """Store k, v (B, H, T, D) at positions start..start+T-1. start may be a 0-d tensor on the
        cache's device: a decode step then never reads its value on the host (see GPT.generate)."""
        positions = torch.arange(k.size(2), device=k.device) + start
        self.k.index_copy_(2, positions, k)
        self.v.index_copy_(2, positions, v)


def graphed(step, token, pos):
    """step(token, pos) -> tensor, recorded once as a CUDA graph and returned as a function of the same
    arguments that replays it. A small model's decode step is otherwise bound by the host launching its
    kernels one by one (gpt-fast does the same with torch.compile). The graph reads token and pos from
    its own input tensors, so one recording serves every position; what step writes in place (the KV
    cache) it writes at each replay."""
    token_in, pos_in = token.clone(), torch.tensor(pos, device=token.device)
    side = torch.cuda.Stream()  # warm-up (lazy initializations) off the capturing stream
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(token_in, pos_in)  # writes the cache at pos, as the first replay will
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(token_in, pos_in)

    def replay(token, pos):
        token_in.copy_(token)
        pos_in.fill_(pos)
        graph.replay()
        return out
    return replay


def sample(probs):
    """One token id per row of probs (B, V), drawn from it. Unlike torch.multinomial it never waits for
    the GPU, so the host queues the next decode step while this one runs: argmax of p / E with E
    exponential is a draw from p (the Gumbel-max trick). E = -log(U), U uniform in [0, 1), lies in
    (0, inf]; ids of probability 0 score -1, so they lose even where E = inf gives p / E = 0."""
    e = -torch.rand_like(probs).log()
    return torch.argmax(torch.where(probs > 0, probs / e, -1.0), dim=-1, keepdim=True)


# Peak dense bf16 tensor-core FLOP/s by GPU name (vendor datasheets; fp16 for V100 and T4, which have
# no bf16), for estimate_mfu.
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
