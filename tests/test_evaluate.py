"""experiments/evaluate.py: the windows, the full loss and its buckets, and the copy probe with its matched
control, each checked against an independent computation or a model whose answer is known."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import evaluate as E
from model import GPT, GPTConfig

V = 37


def tiny(attn="sp", block_size=40, n_layer=2, n_head=4, n_embd=32, scale=1.0):
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=block_size, vocab_size=V, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                      attn=attn, bias=False))
    with torch.no_grad():  # larger weights: attention far from uniform, heads that matter
        for block in m.transformer.h:
            block.attn.c_attn.weight.mul_(scale)
    return m.eval()


def tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, V, n).astype(np.uint16)


def test_windows_are_consecutive_non_overlapping_and_spread_evenly():
    data = tokens(5 * 41 + 7)
    w = E.val_windows(data, 40)
    assert w.shape == (5, 41) and w.dtype == torch.long
    assert torch.equal(w.flatten(), torch.from_numpy(data[:5 * 41].astype(np.int64)))  # the last 7 are left out
    assert E.spread(w, 9) is w
    assert torch.equal(E.spread(w, 2), w[[0, 2]])                    # floor(k * 5 / 2), k = 0, 1
    with pytest.raises(ValueError, match="fewer than one window"):
        E.val_windows(tokens(40), 40)


def test_full_loss_is_the_mean_of_independent_per_token_losses_and_the_buckets_weigh_to_it():
    model, data = tiny(), tokens(6 * 41 + 3, seed=1)
    full = E.full_loss(model, E.val_windows(data, 40), batch_size=4, bucket=16)  # batches of 4 and 2
    # independently: each window from the array, the model's own mean loss, one window at a time
    per_window, per_token = [], []
    with torch.no_grad():
        for k in range(6):
            w = torch.from_numpy(data[k * 41:(k + 1) * 41].astype(np.int64))[None]
            logits, loss = model(w[:, :-1], w[:, 1:].contiguous())
            per_window.append(loss.item())
            per_token.append(-logits.log_softmax(-1)[0].gather(-1, w[0, 1:, None])[:, 0])
    per_token = torch.stack(per_token)                                               # (6, 40)
    assert (full["windows"], full["tokens"]) == (6, 240)
    assert full["loss"] == pytest.approx(sum(per_window) / 6, rel=1e-6)
    assert [(s, n) for s, n, _ in full["buckets"]] == [(0, 16), (16, 16), (32, 8)]
    for (s, n, loss) in full["buckets"]:
        assert loss == pytest.approx(per_token[:, s:s + n].mean().item(), rel=1e-5)
    assert sum(n * loss for _, n, loss in full["buckets"]) / 40 == pytest.approx(full["loss"], rel=1e-6)


def test_copy_windows_put_the_repeat_and_the_control_span_where_the_docstring_says():
    w = E.val_windows(tokens(3 * 41, seed=2), 40)
    L, p = 4, 41 - 4
    other = E.control_spans(w, L)
    assert torch.equal(other, w[[1, 2, 0], p:])                          # the next window's last L tokens
    for d in (4, 9, 37):                                                 # back to back ... the first at 0
        probe, control = E.copy_windows(w, d, L), E.copy_windows(w, d, L, other)
        assert torch.equal(probe[:, p:], w[:, p:]) and torch.equal(control[:, p:], w[:, p:])  # the scored span
        assert torch.equal(probe[:, p - d:p - d + L], w[:, p:])          # its copy, d positions earlier
        assert torch.equal(control[:, p - d:p - d + L], other)           # another span in the same place
        outside = torch.ones(41, dtype=torch.bool)
        outside[p - d:p - d + L] = False
        assert torch.equal(probe[:, outside], w[:, outside]) and torch.equal(control[:, outside], w[:, outside])
    for d in (3, 38):
        with pytest.raises(ValueError, match="span <= distance <= block_size"):
            E.copy_windows(w, d, L)
    with pytest.raises(ValueError, match="at least 2 windows"):
        E.control_spans(w[:1], L)


class InductionCopier(torch.nn.Module):
    """A model that copies at one distance d as an induction head does: at position i, when the token
    x[i] equals x[i-d], it predicts the token that followed that one, x[i+1-d] (a logit margin of 10);
    elsewhere it predicts nothing (uniform logits, loss log V)."""

    def __init__(self, d):
        super().__init__()
        self.d, self.anchor = d, torch.nn.Parameter(torch.zeros(()))  # a parameter: the device

    def forward(self, x, y):
        i = torch.arange(x.size(1))
        seen = torch.where(i >= self.d, x[:, (i - self.d).clamp(min=0)], -1)
        guess = x[:, (i + 1 - self.d).clamp(min=0)]
        return 10.0 * F.one_hot(guess, V).float() * (seen == x)[..., None], None


def test_copy_probe_scores_the_repeat_against_a_matched_control_and_the_first_token_apart():
    w = E.val_windows(tokens(16 * 41, seed=3), 40)
    w[:, 41 - 4 - 9] = (w[:, 41 - 4 - 1] + 1) % V  # no chance match for the first token's lookup (see below)
    near, far = E.copy_probe(InductionCopier(8), w, distances=[8, 20], span=4, batch_size=5)
    assert (near["distance"], near["windows"], near["span"]) == (8, 16, 4)
    # tokens 2..L follow a token that matches its copy 8 back: the copier gets them; in the control the
    # span 8 back is another one, so it has nothing to go on (loss log V, but where tokens match by chance)
    assert near["probe_loss"] < 0.01 and near["control_loss"] == pytest.approx(np.log(V), rel=0.2)
    assert near["gain"] == pytest.approx(near["control_loss"] - near["probe_loss"])
    assert near["share"] == pytest.approx(near["gain"] / near["control_loss"]) and near["share"] > 0.99
    # the first token follows original text in both, which does not match the text 8 before it: no
    # cue, the same loss whatever the copy
    assert near["probe_first"] == pytest.approx(near["control_first"]) and near["probe_first"] > 2
    # 20 back is not where this copier looks, and the changed span is outside what it reads: no gain at all
    assert far["gain"] == 0 and far["share"] == 0 and far["control_first"] == far["probe_first"]


def test_the_first_token_is_scored_apart_from_the_repeat():
    # A model that reads only the current token. At d = L the token before the repeat is the inserted
    # span's last one (S's in the probe, S''s in the control), so the first token's loss differs; the
    # repeat's tokens are predicted from the repeat itself, the same in both: no gain on the repeat.
    class Bigram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(V, V, generator=torch.Generator().manual_seed(0)))

        def forward(self, x, y):
            return self.table[x], None

    w = E.val_windows(tokens(8 * 41, seed=4), 40)
    (row,) = E.copy_probe(Bigram(), w, distances=[4], span=4)
    assert row["gain"] == pytest.approx(0, abs=1e-9) and abs(row["probe_first"] - row["control_first"]) > 0.1
    matched = E.token_losses(Bigram(), E.copy_windows(w, 4, 4, E.control_spans(w, 4)))[:, 40 - 4]
    assert row["control_first"] == pytest.approx(matched.double().mean().item())   # not the unchanged window's
    assert abs(E.token_losses(Bigram(), w)[:, 40 - 4].double().mean().item() - row["control_first"]) > 0.1
