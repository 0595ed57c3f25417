"""
What each attention head does with its band: capture every layer's per-head attention probabilities
and measure them.

    import heads
    probs = heads.attention_probs(model, idx)          # (L, B, H, T, T), rows sum to 1 (or 0)
    heads.entropy(probs)                                # (L, H) mean entropy per head, nats
    heads.head_diversity(probs)                         # sigma, the paper's head-diversity number
    heads.distance_profile(probs)                       # (L, H, T) attention mass by distance
    heads.mean_distance(probs)                          # (L, H) mean attended distance

The fused band kernel never forms the T x T probabilities, so attention_probs runs the model's blocks
one by one and, for each block, recomputes q and k from the block's input and the masked softmax over
`attn.pattern.visible(T, T, 0)` with kernel.masked_softmax, the arithmetic of the PyTorch fallback. The
residual stream itself goes through the unmodified blocks.

Definitions (each query row i of a head's (T, T) probabilities p_i is one distribution over keys):
  entropy         H(p_i) = -sum_j p_ij log p_ij in nats, averaged over the queries that see at least
                  one key (a query that sees none, e.g. sp_exclusive's far heads early in a sequence,
                  has no distribution and is left out), and over the batch.
  head diversity  sigma = the standard deviation across the heads of a layer (population, ddof=0) of
                  each head's mean entropy, averaged over layers. With uniform attention over each
                  head's visible keys (an untrained model) at N = 256, H = 8 this gives 0 for dense and
                  0.1847 for sp, the paper's 0.0000-0.0005 and 0.1845-0.1847; the mean entropies are
                  4.560 and 3.641 against the paper's 4.546 and 3.628.
  distance profile the share of a query's attention at distance d = i - j, averaged over all queries
                  that see a key: a distribution over d for each layer and head.
"""

import math

import torch

import kernel
import model as model_lib

# Patterns whose probabilities attention_probs can form: their visibility is a fixed mask.
MASKED_PATTERNS = model_lib.BAND_PATTERNS + model_lib.MASK_PATTERNS


def supports_probs(model):
    """True when every attention probability of this model is a masked softmax over
    `attn.pattern.visible`; False for patterns that choose keys from the data (e.g. an LSH `reformer`)."""
    return model.attn in MASKED_PATTERNS


@torch.no_grad()
def attention_probs(model, idx):
    """Attention probabilities of every layer and head for token ids idx (B, T): a float32 tensor
    (L, B, H, T, T) with probs[l, b, h, i, j] the weight query i gives key j (0 where not visible).

    Raises NotImplementedError for a pattern whose keys are not a fixed mask (see supports_probs).
    """
    if not supports_probs(model):
        raise NotImplementedError(
            f"attn={model.attn!r} picks its keys from the data (not a fixed mask), so its "
            "probabilities cannot be recomputed from attn.pattern.visible; heads.py covers "
            f"{', '.join(MASKED_PATTERNS)}")
    was_training = model.training
    model.eval()
    B, T = idx.shape
    tr = model.transformer
    x = tr.drop(tr.wte(idx) + tr.wpe(torch.arange(T, device=idx.device)))
    out = []
    for block in tr.h:
        attn = block.attn
        H = attn.n_head
        q, k, _ = attn.c_attn(block.ln_1(x)).split(attn.n_embd, dim=2)
        q, k = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k))            # (B, H, T, D)
        mask = attn.pattern.visible(T, T, 0).to(idx.device)                            # (H, T, T)
        out.append(kernel.masked_softmax(q, k, mask, 1 / math.sqrt(q.size(-1))).float())  # empty rows -> 0
        x = block(x)                                                            # the real block
    if was_training:
        model.train()
    return torch.stack(out)


def uniform_probs(masks):
    """Probabilities of attention spread evenly over each query's visible keys, for (H, T, T)
    boolean masks: what a model with all-zero scores would give. Shape (1, 1, H, T, T)."""
    m = masks.float()
    return (m / m.sum(-1, keepdim=True).clamp(min=1))[None, None]


def _seen(probs):
    """(..., T) boolean: the query sees at least one key (its row sums to 1, not 0)."""
    return probs.sum(-1) > 0.5


def query_entropy(probs):
    """(..., T) entropy in nats of each query's distribution; 0 for queries that see no key."""
    p = probs.clamp(min=1e-30)
    return -(probs * p.log()).sum(-1)


def entropy(probs):
    """(L, H) mean entropy (nats) of each layer's heads, over batch and queries that see a key; NaN for a
    head none of whose queries sees a key (sp_exclusive's far heads when T is below their band's start):
    it has no distribution to measure, and a 0 there would count as the sharpest head of all."""
    ent, seen = query_entropy(probs), _seen(probs).float()                      # (L, B, H, T)
    return (ent * seen).sum((1, 3)) / seen.sum((1, 3))                           # 0 / 0 = NaN


def diversity(head_entropies):
    """sigma of (L, H) mean entropies: their population std across the heads that have one (not NaN),
    averaged over layers."""
    E = head_entropies
    return ((E - E.nanmean(1, keepdim=True)) ** 2).nanmean(1).sqrt().mean().item()


def head_diversity(probs):
    """sigma: population std across heads of their mean entropies (nats), averaged over layers."""
    return diversity(entropy(probs))


def mean_entropy(probs):
    """One number: the mean entropy over layers, heads, batch and the queries that see a key."""
    ent, seen = query_entropy(probs), _seen(probs).float()
    return ((ent * seen).sum() / seen.sum()).item()


def distance_profile(probs):
    """(L, H, T): mean share of attention at distance d = i - j, d = 0..T-1, over the batch and the
    queries that see a key. Each (layer, head) row sums to 1."""
    L, B, H, T, _ = probs.shape
    seen = _seen(probs).float().sum((1, 3))                                    # (L, H)
    prof = torch.stack([probs.diagonal(offset=-d, dim1=-2, dim2=-1).sum((1, 3)) for d in range(T)], -1)
    return prof / seen.clamp(min=1)[..., None]


def binned_profile(profile, n_bins):
    """Sum a (..., T) distance profile into n_bins equal-width bins of distance: (..., n_bins)."""
    T = profile.shape[-1]
    edges = torch.linspace(0, T, n_bins + 1).round().long()
    return torch.stack([profile[..., edges[b]:edges[b + 1]].sum(-1) for b in range(n_bins)], -1)


def mean_distance(probs):
    """(L, H): mean attended distance sum_j p_ij (i - j), averaged over the queries that see a key."""
    T = probs.shape[-1]
    i = torch.arange(T, device=probs.device)
    d = (i[:, None] - i[None, :]).clamp(min=0).float()
    md, seen = (probs * d).sum(-1), _seen(probs).float()
    return (md * seen).sum((1, 3)) / seen.sum((1, 3)).clamp(min=1)


def summary(probs):
    """The paper's two numbers for one batch of probabilities: dict(sigma=..., entropy=...)."""
    return {"sigma": head_diversity(probs), "entropy": mean_entropy(probs)}


def pattern_masks(pattern, n_head, block_size, T=None):
    """(H, T, T) boolean visibility of a pattern, as the model's attention pattern builds it."""
    cfg = model_lib.GPTConfig(block_size=block_size, vocab_size=8, n_layer=1, n_head=n_head,
                              n_embd=n_head, attn=pattern)
    T = T or block_size
    return model_lib.make_pattern(pattern, cfg).visible(T, T, 0).cpu()


def work_per_head(masks):
    """(H,) query-key pairs each head computes, for (H, T, T) masks."""
    return masks.flatten(1).sum(1)


def heads_by_distance(masks):
    """(H, T) share of queries that see distance d in each head: 1 where the band always reaches d
    (when i >= d), the heads-by-distance map of a pattern."""
    H, T, _ = masks.shape
    m = masks.float()
    return torch.stack([m.diagonal(offset=-d, dim1=-2, dim2=-1).mean(-1) for d in range(T)], -1)


# -----------------------------------------------------------------------------
# Models for the notebooks: a trained checkpoint when there is one, else a tiny one trained here

def tiny_train_config(attn, out_dir, max_iters=300):
    """A TrainConfig for a 4-layer 8-head char model on Tiny Shakespeare small enough for a CPU:
    64 wide, context 64 (each head's own band is 8 distances wide)."""
    from train import TrainConfig
    return TrainConfig(out_dir=str(out_dir), dataset="shakespeare_char", attn=attn,
                       n_layer=4, n_head=8, n_embd=64, block_size=64, dropout=0.0, bias=False,
                       batch_size=16, gradient_accumulation_steps=1, learning_rate=2e-3,
                       max_iters=max_iters, lr_decay_iters=max_iters, warmup_iters=min(50, max_iters // 5),
                       min_lr=2e-4, beta2=0.99, eval_interval=max_iters, eval_iters=5,
                       log_interval=max(1, max_iters // 4), device="cpu", dtype="float32", compile=False)


def load_or_train(attn, out_dir, train_iters=300, device="cpu"):
    """(model, ckpt, note): the checkpoint out_dir/ckpt.pt when it exists, otherwise a tiny model
    (tiny_train_config) trained now into out_dir. `note` says which, for the notebook to print."""
    import os
    from sample import load_model
    from train import train
    path = os.path.join(str(out_dir), "ckpt.pt")
    if not os.path.exists(path):
        train(tiny_train_config(attn, out_dir, train_iters))
        how = f"trained here on CPU for {train_iters} iterations (tiny: no checkpoint was found)"
    else:
        how = f"loaded from {path}"
    model, ckpt = load_model(str(out_dir), device)
    if model.config.attn != attn:
        raise ValueError(f"{path} holds an attn={model.config.attn!r} model, expected {attn!r}")
    return model, ckpt, how
