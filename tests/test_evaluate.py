"""experiments/evaluate.py: the windows, the full loss and its buckets, the copy probe, head ablation and head stats,
each checked against an independent computation or a model whose answer is known."""
import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import evaluate as E
import heads
from model import GPT, GPTConfig, head_bands

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


def test_copy_windows_put_the_repeat_where_the_docstring_says():
    w = E.val_windows(tokens(3 * 41, seed=2), 40)
    L, p = 4, 41 - 4
    for d in (4, 9, 37):                                                 # back to back ... the first at 0
        probe = E.copy_windows(w, d, L)
        assert torch.equal(probe[:, p:], w[:, p:])                       # the second occurrence: w's own
        assert torch.equal(probe[:, p - d:p - d + L], w[:, p:])          # its copy, d positions earlier
        outside = torch.ones(41, dtype=torch.bool)
        outside[p - d:p - d + L] = False
        assert torch.equal(probe[:, outside], w[:, outside])             # nothing else changed
    for d in (3, 38):
        with pytest.raises(ValueError, match="span <= distance <= block_size"):
            E.copy_windows(w, d, L)


class Copier(torch.nn.Module):
    """A model that copies at one distance: at position i it predicts the token d before the next
    one, x[i+1-d], with a logit margin of 10."""

    def __init__(self, d):
        super().__init__()
        self.d, self.anchor = d, torch.nn.Parameter(torch.zeros(()))  # a parameter: the device

    def forward(self, x, y):
        src = torch.arange(x.size(1)) + 1 - self.d
        guess = torch.where(src >= 0, x[:, src.clamp(min=0)], 0)
        return 10.0 * F.one_hot(guess, V).float(), None


def test_copy_probe_scores_the_repeated_tokens():
    w = E.val_windows(tokens(16 * 41, seed=3), 40)
    rows = E.copy_probe(Copier(8), w, distances=[8, 12], span=4, batch_size=5)
    at8, at12 = rows
    assert at8["distance"] == 8 and at8["windows"] == 16 and at8["span"] == 4
    # every scored token has its copy 8 back: the copier gets all of them, the first one too
    assert at8["probe_loss"] < 0.01 and at8["control_loss"] > 8
    assert at8["gain"] == pytest.approx(at8["control_loss"] - at8["probe_loss"])
    # a copy 12 back is not where this copier looks: it reads the same tokens as in the control
    assert at12["gain"] == 0 and at12["control_loss"] == at8["control_loss"]


def test_ablating_a_head_is_zeroing_its_columns_of_c_proj_and_leaves_no_hook():
    model, w = tiny(scale=5.0), E.val_windows(tokens(3 * 41, seed=4), 40)
    before = E.token_losses(model, w)
    with E.ablated_head(model, 1, 2):
        hooked = E.token_losses(model, w)
    surgery = copy.deepcopy(model)
    with torch.no_grad():
        surgery.transformer.h[1].attn.c_proj.weight[:, 2 * 8:3 * 8] = 0  # D = 32 // 4
    torch.testing.assert_close(hooked, E.token_losses(surgery, w))
    assert not torch.equal(hooked, before)
    assert torch.equal(E.token_losses(model, w), before)                 # the hook is gone
    with pytest.raises(ValueError, match="head 4 does not exist"):
        with E.ablated_head(model, 0, 4):
            pass


def test_an_ablated_head_changes_only_the_positions_it_sees():
    # one layer of sp_exclusive: head h sees keys only from query position S_h on, and before that
    # its output is 0, so zeroing it changes the losses exactly at positions i >= S_h
    model, w = tiny("sp_exclusive", n_layer=1, scale=5.0), E.val_windows(tokens(4 * 41, seed=5), 40)
    before = E.token_losses(model, w)
    for head in range(4):
        start = int(head_bands(4, 40, "sp_exclusive")[head, 0, 0])      # S_h = 10 h
        with E.ablated_head(model, 0, head):
            after = E.token_losses(model, w)
        assert torch.equal(after[:, :start], before[:, :start])
        assert (after[:, start:] != before[:, start:]).any(0).all()


def test_head_ablation_rows():
    model, w = tiny(scale=5.0), E.val_windows(tokens(2 * 41, seed=6), 40)
    rows = E.head_ablation(model, w, bucket=16)
    assert len(rows) == 2 * 4 * 3
    assert [(r["layer"], r["head"], r["bucket"]) for r in rows[:4]] == [(0, 0, 0), (0, 0, 16), (0, 0, 32), (0, 1, 0)]
    base = E.bucket_means(E.token_losses(model, w), 16)
    for r in rows:
        assert r["base_loss"] == pytest.approx(base[r["bucket"] // 16][2])
        assert r["delta"] == pytest.approx(r["ablated_loss"] - r["base_loss"])
    assert sum(abs(r["delta"]) for r in rows) > 0


@pytest.mark.parametrize("attn", ["dense", "sp_exclusive"])
def test_head_stats_in_chunks_equal_heads_summary_of_all_windows_at_once(attn):
    model, w = tiny(attn, scale=5.0), E.val_windows(tokens(5 * 41, seed=7), 40)
    expected = heads.summary(heads.attention_probs(model, w[:, :-1]))
    got = E.head_stats(model, w, chunk=2)                                # chunks of 2, 2 and 1
    assert got["sigma"] == pytest.approx(expected["sigma"], rel=1e-5)
    assert got["entropy"] == pytest.approx(expected["entropy"], rel=1e-5)
