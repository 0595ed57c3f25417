"""
Evaluate a trained model the same way for every run of an experiment: on fixed validation windows, in a
fixed order, with no sampling, so two runs differ only by their models. experiments/compare.py calls these after
each training run.

    import evaluate as E
    windows = E.val_windows(val_tokens, block_size)        # (n, N + 1): consecutive, non-overlapping
    full = E.full_loss(model, windows)                      # the mean loss, and its mean per position bucket
    rows = E.copy_probe(model, E.spread(windows, 128), distances=(128, 384, 896), span=32)

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

from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F

BUCKET = 64


def val_windows(data, block_size):
    """(n, N + 1) LongTensor: the n = len(data) // (N + 1) consecutive non-overlapping windows of the
    token array `data` (a split, e.g. utils.load_dataset's memmap)."""
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
# The copy probe, with a matched control

def check_copy(block_size, distance, span):
    """Raise ValueError unless a span of `span` tokens fits twice, `distance` apart, in one window, with
    a repeated token after its first (the first is scored apart)."""
    if span < 2 or not span <= distance <= block_size + 1 - span:
        raise ValueError(f"copy probe: distance {distance} with span {span} needs 2 <= span <= distance <= "
                         f"block_size + 1 - span = {block_size + 1 - span} (the copies may not overlap, and "
                         "the earlier one must start inside the window)")


def copy_windows(windows, distance, span, insert=None):
    """The windows with their tokens [p-d, p-d+L) replaced by `insert` (n, L), p = N + 1 - L,
    d = distance, L = span. By default `insert` is each window's own last L tokens [p, p+L): the probe.
    With control_spans(windows, L) it is the control (see copy_probe)."""
    p = windows.size(1) - span
    check_copy(windows.size(1) - 1, distance, span)
    out = windows.clone()
    out[:, p - distance:p - distance + span] = windows[:, p:] if insert is None else insert
    return out


def control_spans(windows, span):
    """(n, L): the span that each window's control inserts, the last L tokens of the next window (the
    last window takes the first's). Real text of the same split, of the same kind as the repeated span,
    and not that span."""
    if len(windows) < 2:
        raise ValueError("copy probe: the control takes each window's span from another window, so it needs "
                         f"at least 2 windows, got {len(windows)}")
    return windows[:, -span:].roll(-1, 0)


def copy_probe(model, windows, distances, span=32, batch_size=8, autocast=nullcontext()):
    """Does the model use an exact copy of a span seen `distance` tokens earlier?

    In window w the span S = w[p..p+L-1] is its last L tokens (p = N + 1 - L, so all of them are
    targets). The probe window is w with its tokens [p-d, p-d+L) replaced by S: each token w[p+k] of
    the second occurrence then has an identical copy exactly d positions earlier (d = L puts the two
    back to back; d - L tokens lie between them). The control window is w with the same tokens
    [p-d, p-d+L) replaced by another span S' of L tokens (control_spans: the next window's last L).
    Probe and control lose the same context, at the same place, to a span of the same length; they
    differ only in whether that span is S. The scored tokens are the second occurrence, predicted at
    positions N-L..N-1, in two parts:

      first     w[p], the first token of the repeat: nothing in the text says a repeat begins, so a
                copy can help it only by chance
      repeat    w[p+1..p+L-1], tokens 2..L: the tokens before them already match the copy

      gain(d)   = control_loss - probe_loss over the repeat's tokens and the windows (nats per token)
      share(d)  = gain / control_loss: the part of the control's loss that the copy removes (1: all of
                it, 0: the copy is not used, < 0: it misleads)

    Returns [dict(distance, span, windows, control_loss, probe_loss, gain, share, control_first,
    probe_first)], one per distance (losses: means over the windows)."""
    N = windows.size(1) - 1
    for d in distances:
        check_copy(N, d, span)
    insert = control_spans(windows, span)
    rows = []
    for d in distances:
        control = token_losses(model, copy_windows(windows, d, span, insert), batch_size, autocast)[:, N - span:]
        probe = token_losses(model, copy_windows(windows, d, span), batch_size, autocast)[:, N - span:]
        control_loss, probe_loss = control[:, 1:].double().mean().item(), probe[:, 1:].double().mean().item()
        rows.append(dict(distance=d, span=span, windows=len(windows), control_loss=control_loss,
                         probe_loss=probe_loss, gain=control_loss - probe_loss,
                         share=(control_loss - probe_loss) / control_loss,
                         control_first=control[:, 0].double().mean().item(),
                         probe_first=probe[:, 0].double().mean().item()))
    return rows
