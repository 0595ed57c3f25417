"""
Evaluate a trained model the same way for every run of an experiment: on fixed validation windows, in a
fixed order, with no sampling, so two runs differ only by their models. experiments/compare.py calls these after
each training run.

    import evaluate as E
    windows = E.val_windows(val_tokens, block_size)        # (n, N + 1): consecutive, non-overlapping
    full = E.full_loss(model, windows)                      # the mean loss, and its mean per position bucket
    rows = E.copy_probe(model, E.spread(windows, 64), distances=(32, 96, 192, 384, 768), span=32)
    rows = E.head_ablation(model, E.spread(windows, 64))   # the loss change per layer, head and bucket
    stats = E.head_stats(model, E.spread(windows, 8))       # sigma and mean entropy (heads.py)

Conventions (N = block_size, losses in nats):
  window     N + 1 consecutive tokens w[0..N] of the validation split. Window k is tokens
             [k(N+1), (k+1)(N+1)); the last len % (N+1) tokens are left out. The model reads
             x = w[0..N-1] and is scored on the next tokens y = w[1..N].
  position   i = 0..N-1: the query that predicts w[i+1] from w[0..i], with the loss
             l_i = -log softmax(logits_i)[w[i+1]].
  bucket     the positions [s, s + B), s = 0, B, 2B, ... (B = 64; the last bucket is shorter when B does
             not divide N). Its loss L_b is the mean of l_i over its n_b positions and every window.
  full loss  L = the mean of l_i over every position of every window = sum_b (n_b / N) L_b.

The model is called as model(x, y) and must return (logits (B, T, V), anything): GPT does, with the
targets given. Every function puts the model in eval mode for the call and restores its mode after.
"""

from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch.nn import functional as F

import heads

BUCKET = 64


def val_windows(data, block_size):
    """(n, N + 1) LongTensor: the n = len(data) // (N + 1) consecutive non-overlapping windows of the
    token array `data` (a split, e.g. train.load_dataset's memmap)."""
    n = len(data) // (block_size + 1)
    if n == 0:
        raise ValueError(f"the split has {len(data)} tokens, fewer than one window of block_size + 1 = "
                         f"{block_size + 1}")
    return torch.from_numpy(np.asarray(data[:n * (block_size + 1)], dtype=np.int64)).view(n, block_size + 1)


def spread(windows, n):
    """n of the windows, evenly spaced over the split (indices floor(k * total / n), k = 0..n-1): the
    split's files in proportion, not only its first ones. All of them when n >= their number."""
    total = len(windows)
    return windows if n >= total else windows[[k * total // n for k in range(n)]]


@torch.no_grad()
def token_losses(model, windows, batch_size=8, autocast=nullcontext()):
    """(n, N) float32 tensor on the CPU: l_i for every window and position, batch_size windows a call.
    Under `autocast` (e.g. bf16 on a GPU, as in training) the logits are cast to float32 first."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(windows), batch_size):
        w = windows[start:start + batch_size].to(device)
        x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
        with autocast:
            logits = model(x, y)[0]
        out.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view_as(y).cpu())
    model.train(was_training)
    return torch.cat(out)


def bucket_means(losses, bucket=BUCKET):
    """[(s, n_b, L_b)] for (n, N) losses: each bucket's first position, its number of positions, and
    the mean loss over its positions and all windows."""
    N = losses.size(1)
    return [(s, min(bucket, N - s), losses[:, s:s + bucket].double().mean().item()) for s in range(0, N, bucket)]


def full_loss(model, windows, batch_size=8, autocast=nullcontext(), bucket=BUCKET):
    """dict(loss=L, buckets=[(s, n_b, L_b)], windows=n, tokens=n*N): the full loss of the windows (all
    of the split's, from val_windows) and its by-position buckets, from one pass."""
    losses = token_losses(model, windows, batch_size, autocast)
    return dict(loss=losses.double().mean().item(), buckets=bucket_means(losses, bucket),
                windows=len(windows), tokens=losses.numel())


# -----------------------------------------------------------------------------
# The copy probe

def check_copy(block_size, distance, span):
    """Raise ValueError unless a span of `span` tokens fits twice, `distance` apart, in one window."""
    if span < 1 or not span <= distance <= block_size + 1 - span:
        raise ValueError(f"copy probe: distance {distance} with span {span} needs span <= distance <= "
                         f"block_size + 1 - span = {block_size + 1 - span} (the copies may not overlap, and "
                         "the earlier one must start inside the window)")


def copy_windows(windows, distance, span):
    """The probe windows: each window w with its tokens [p-d, p-d+L) replaced by its last L tokens
    [p, p+L), p = N + 1 - L, d = distance, L = span (see copy_probe)."""
    p = windows.size(1) - span
    check_copy(windows.size(1) - 1, distance, span)
    probe = windows.clone()
    probe[:, p - distance:p - distance + span] = windows[:, p:]
    return probe


def copy_probe(model, windows, distances, span=32, batch_size=8, autocast=nullcontext()):
    """Does the model use an exact copy of a span seen `distance` tokens earlier?

    In window w the span S = w[p..p+L-1] is its last L tokens (p = N + 1 - L, so all of them are
    targets). The probe window is w with its tokens [p-d, p-d+L) replaced by S: each token w[p+k] of
    the second occurrence then has an identical copy exactly d positions earlier. d is the distance
    from each token to its copy, which is also the distance between the two occurrences' starts: d = L
    puts them back to back, and d - L tokens lie between them. The control is w itself: the same span
    at the same place after the same text, with w's own (other) tokens where the probe has the copy.
    The scored tokens are the L tokens of the second occurrence, predicted at positions N-L..N-1; w[p],
    the first, has no cue in the text that a repeat begins, and is scored too.

      gain(d) = mean control loss - mean probe loss over the scored tokens and the windows
              (nats per token; > 0: the earlier copy helps)

    Returns [dict(distance, span, windows, probe_loss, control_loss, gain)], one per distance. The
    control does not depend on d: it is computed once."""
    N = windows.size(1) - 1
    for d in distances:
        check_copy(N, d, span)
    scored = slice(N - span, N)
    control = token_losses(model, windows, batch_size, autocast)[:, scored].double().mean().item()
    rows = []
    for d in distances:
        probe = token_losses(model, copy_windows(windows, d, span), batch_size, autocast)[:, scored]
        probe = probe.double().mean().item()
        rows.append(dict(distance=d, span=span, windows=len(windows), probe_loss=probe, control_loss=control,
                         gain=control - probe))
    return rows


# -----------------------------------------------------------------------------
# Head ablation

@contextmanager
def ablated_head(model, layer, head):
    """Inside the `with`, head `head` of layer `layer` contributes nothing: a forward pre-hook zeroes
    its slice y[..., head*D:(head+1)*D] of the input y of the layer's c_proj, where the H heads'
    outputs stand side by side (D = C // H). No weight or module is changed; the hook is removed after."""
    attn = model.transformer.h[layer].attn
    if not 0 <= head < attn.n_head:
        raise ValueError(f"head {head} does not exist: layer {layer} has {attn.n_head} heads")
    D = attn.n_embd // attn.n_head
    keep = torch.ones(attn.n_embd, device=attn.c_proj.weight.device)
    keep[head * D:(head + 1) * D] = 0
    handle = attn.c_proj.register_forward_pre_hook(lambda module, args: (args[0] * keep.to(args[0].dtype),))
    try:
        yield
    finally:
        handle.remove()


def head_ablation(model, windows, batch_size=8, autocast=nullcontext(), bucket=BUCKET):
    """What each head is needed for, by position: for every layer l and head h, the bucket losses of the
    windows with head h of layer l zeroed (ablated_head), against the intact model's on the same windows.

      delta(l, h, b) = L_b(with head h of layer l zeroed) - L_b(intact)   (> 0: the model needs the head there)

    Returns [dict(layer, head, bucket, positions, base_loss, ablated_loss, delta)], layers, heads and
    buckets in order."""
    base = bucket_means(token_losses(model, windows, batch_size, autocast), bucket)
    rows = []
    for layer, block in enumerate(model.transformer.h):
        for head in range(block.attn.n_head):
            with ablated_head(model, layer, head):
                ablated = bucket_means(token_losses(model, windows, batch_size, autocast), bucket)
            rows += [dict(layer=layer, head=head, bucket=s, positions=n, base_loss=b, ablated_loss=a, delta=a - b)
                     for (s, n, b), (_, _, a) in zip(base, ablated)]
    return rows


# -----------------------------------------------------------------------------
# Head specialization

def head_stats(model, windows, chunk=1):
    """dict(sigma, entropy): heads.py's head diversity and mean entropy of the attention over the
    windows' inputs, formed `chunk` windows at a time (heads.attention_probs holds L*H*N*N floats a window).

    Pooling the chunks is exact for patterns with a fixed mask (the only ones heads.py measures): every
    window has the same queries that see a key, so with E_lh(c) = heads.entropy of chunk c (n_c windows),
      E_lh    = sum_c n_c E_lh(c) / sum_c n_c                  (layer l, head h: mean over windows and queries)
      sigma   = mean over l of the population std over h of E_lh   (heads.head_diversity)
      entropy = sum_lh q_lh E_lh / sum_lh q_lh                 (heads.mean_entropy; q_lh = queries of head h
                                                                in layer l that see at least one key)
    """
    device = next(model.parameters()).device
    x = windows[:, :-1]
    T = x.size(1)
    total = 0
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].to(device)
        total = total + len(part) * heads.entropy(heads.attention_probs(model, part)).double().cpu()
    E = total / len(x)                                                               # (L, H)
    seen = torch.stack([b.attn.pattern.visible(T, T, 0).any(-1).sum(-1).cpu() for b in model.transformer.h])
    return dict(sigma=heads.diversity(E), entropy=((E * seen).nansum() / seen.sum()).item())
