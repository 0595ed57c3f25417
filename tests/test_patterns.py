"""Every attention pattern of the spec's section 3, on CPU with tiny models: builds, trains, generates;
the mask patterns against a float64 reference written from the spec; Reformer's LSH attention against a
per-query reference, and its causality; train.py's attn_switch_frac, through a resume."""

import math
import os
import signal

import pytest
import torch

import baselines
import model
import sample
import train
import utils
from model import ATTN_PATTERNS, GPT, GPTConfig


def tiny_cfg(tmp_path, attn, **kw):
    base = dict(out_dir=str(tmp_path / attn), dataset="shakespeare_char", device="cpu", compile=False,
                dtype="float32", block_size=32, n_layer=1, n_head=4, n_embd=32, batch_size=8,
                gradient_accumulation_steps=1, max_iters=30, eval_interval=15, eval_iters=2, log_interval=1,
                learning_rate=1e-2, warmup_iters=5, lr_decay_iters=30, min_lr=1e-3, dropout=0.0, attn=attn)
    return train.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("attn", ATTN_PATTERNS)
def test_pattern_trains_and_generates(tmp_path, attn):
    history = train.train(tiny_cfg(tmp_path, attn))
    losses = [loss for _, loss in history]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    ckpt = utils.load_checkpoint(str(tmp_path / attn / "ckpt.pt"))
    m = GPT(GPTConfig(**ckpt["model_args"]))
    m.load_state_dict(ckpt["model"])
    m.eval()
    torch.manual_seed(0)
    prompt = torch.tensor([[ckpt["meta"]["stoi"][c] for c in "ROMEO:"]])
    out = m.generate(prompt, 40)  # past block_size=32: the context window slides
    assert out.shape == (1, 46) and torch.equal(out[:, :6], prompt)


# -----------------------------------------------------------------------------
# longformer and bigbird: the spec's definitions, written out here, in float64

def spec_mask(pattern, N, H):
    """(H, N, N) masks of section 3's window + global parts, and whether random blocks are expected."""
    i = torch.arange(N)
    d = i[:, None] - i[None, :]
    if pattern == "longformer":
        w, g = min(256, N // 4), min(16, N // 32)
    else:
        w, g = min(128, N // 8), min(8, N // 64)
    m = (d >= 0) & ((d <= w) | (i[:, None] < g) | (i[None, :] < g))  # the reference's distance <= window
    return m.expand(H, N, N)


def reference_attention(q, k, v, mask, scale):
    att = (q @ k.transpose(-2, -1)) * scale
    att = att.masked_fill(~mask, float("-inf"))
    return torch.softmax(att, dim=-1) @ v


@pytest.mark.parametrize("pattern", ["longformer", "bigbird"])
def test_mask_patterns_match_the_spec(pattern):
    H, N = 4, 256
    got = baselines.pattern_mask(H, N, pattern)
    want = spec_mask(pattern, N, H)
    if pattern == "longformer":
        assert torch.equal(got, want)
    else:  # bigbird adds whole random 64-key blocks, earlier than the query's own block, 2 per query block
        blocks = got.view(H, N // 64, 64, N // 64, 64)
        rand = blocks.all(-1).all(2)  # (H, query block, key block) fully visible: the window covers none
        assert not rand.triu().any()  # only earlier key blocks
        for qb in range(N // 64):
            assert (rand[:, qb].sum(-1) == min(2, qb)).all(), qb
        # nothing else: the spec's window and global tokens plus those blocks, exactly
        assert torch.equal(got, want | rand.repeat_interleave(64, 1).repeat_interleave(64, 2))
        # the blocks differ between heads (at N = 256 a head has at most 3 ways to pick them)
        rand = baselines.pattern_mask(H, 1024, pattern).view(H, 16, 64, 16, 64).all(-1).all(2)
        assert all(not torch.equal(rand[0], rand[h]) for h in range(1, H))


@pytest.mark.parametrize("pattern", ["longformer", "bigbird"])
@pytest.mark.parametrize("T", [256, 77, 1])
def test_mask_attention_matches_reference(pattern, T):
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=256, vocab_size=16, n_layer=1, n_head=4, n_embd=64, attn=pattern)
    attn = model.CausalSelfAttention(cfg).double()
    x = torch.randn(2, T, 64, dtype=torch.float64)
    B, C, H = 2, 64, 4
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
    mask = baselines.pattern_mask(H, 256, pattern)[:, :T, :T]
    if pattern == "longformer":
        assert torch.equal(mask, spec_mask(pattern, 256, H)[:, :T, :T])
    y_ref = reference_attention(q, k, v, mask, 1 / math.sqrt(C // H)).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(attn(x), attn.c_proj(y_ref), rtol=1e-10, atol=1e-10)
    # the CUDA path's FlexAttention block mask, run eagerly on CPU, gives the same (float32)
    y_flex = baselines.flex_masked_attention(q.detach().float(), k.detach().float(), v.detach().float(), attn.pattern.mask, 1 / math.sqrt(C // H),
                                         compiled=False)
    torch.testing.assert_close(y_flex.transpose(1, 2).reshape(B, T, C).double(), y_ref, rtol=1e-4, atol=1e-4)


def test_compiled_flex_mask_path_is_one_graph_with_the_eager_result(monkeypatch):
    """A compiled model with two longformer layers, called three times, must compile into one graph
    (fullgraph=True fails at a graph break) and give the eager result. Two earlier versions of the
    block-mask lookup failed here: traced, the cache lookup with a mask's address in its key failed
    under torch 2.11 on the second call ("SymNodeVariable() is not a constant"); run outside the
    graph, it broke the graph inside GPT.forward's loop over the blocks, so torch.compile skipped
    GPT.forward and compiled only pieces of each block. MaskPattern takes the FlexAttention path on
    CUDA only, so the test sends it there on CPU, where FlexAttention has a forward only; aot_eager
    traces as inductor does, without generating code."""
    def flex_forward(self, q, k, v):  # MaskPattern.forward's CUDA branch
        return baselines.flex_masked_attention(q, k, v, self.mask, q.size(-1) ** -0.5)

    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=64, vocab_size=16, n_layer=2, n_head=2, n_embd=32, attn="longformer")).eval()
    x = torch.randint(0, 16, (4, 64))
    with torch.no_grad():
        want = m(x, x)[1]  # the CPU path: masked_attention
        monkeypatch.setattr(model.MaskPattern, "forward", flex_forward)
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
        for _ in range(3):
            torch.testing.assert_close(compiled(x, x)[1], want, rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# reformer: LSH attention against a per-query reference, and causality

def reference_lsh(qk, v, rotations, chunk, scale):
    """Section 3's Reformer, query by query, in float64: in each round, query i sees the earlier
    positions of its own bucket, the `chunk` most recent of them, itself only when there are none;
    rounds combined by softmax over their log-sum-exps (a round where the query sees only itself
    scores it -1e5, as Reformer does, so that round counts only when every round is like it)."""
    B, H, T, D = qk.shape
    qk, v = qk.double(), v.double()
    k = qk / qk.norm(dim=-1, keepdim=True)
    out = torch.zeros(B, H, T, D, dtype=torch.float64)
    R = rotations.size(2)
    for b in range(B):
        for h in range(H):
            per_round = []
            for r in range(R):
                proj = k[b, h] @ rotations[h, :, r].double()
                bucket = torch.cat([proj, -proj], -1).argmax(-1)
                rows = []
                for i in range(T):
                    same = [j for j in range(i) if bucket[j] == bucket[i]][-chunk:]
                    keys = same or [i]
                    s = (qk[b, h, i] @ k[b, h, keys].T) * scale
                    if not same:  # Reformer's score for itself: -1e5, so a round with nothing else weighs ~0
                        s = torch.full((1,), -1e5, dtype=torch.float64)
                    rows.append((torch.logsumexp(s, 0), torch.softmax(s, 0) @ v[b, h, keys]))
                per_round.append(rows)
            for i in range(T):
                lse = torch.stack([per_round[r][i][0] for r in range(R)])
                w = torch.softmax(lse, 0)
                out[b, h, i] = sum(w[r] * per_round[r][i][1] for r in range(R))
    return out


@pytest.mark.parametrize("T,chunk", [(40, 4), (37, 8), (5, 4), (1, 4)])
def test_lsh_attention_matches_reference(T, chunk):
    """Output and gradients (the keys are the normalized queries: dqk has both parts)."""
    torch.manual_seed(T)
    H, D = 2, 8
    qk, v = torch.randn(2, H, T, D, requires_grad=True), torch.randn(2, H, T, D, requires_grad=True)
    dy = torch.randn(2, H, T, D)
    rot = baselines.lsh_rotations(H, D, 64, seed=3)
    y = baselines.lsh_attention(qk, v, rot, chunk, 0.3)
    want = reference_lsh(qk, v, rot, chunk, 0.3)
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)
    got_grads = torch.autograd.grad(y, (qk, v), dy)
    want_grads = torch.autograd.grad(want, (qk, v), dy.double(), materialize_grads=True)  # T = 1: no dqk
    for name, g, w in zip(("dqk", "dv"), got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_lsh_attention_never_looks_ahead():
    """The output at position i has zero gradient with respect to every later query/key and value."""
    torch.manual_seed(0)
    H, T, D = 2, 48, 8
    qk = torch.randn(1, H, T, D, requires_grad=True)
    v = torch.randn(1, H, T, D, requires_grad=True)
    rot = baselines.lsh_rotations(H, D, 64, seed=1)
    y = baselines.lsh_attention(qk, v, rot, 4, 0.3)
    for i in range(T):
        gq, gv = torch.autograd.grad(y[:, :, i].sum(), (qk, v), retain_graph=True)
        assert gq[:, :, i + 1:].abs().max() == 0 if i + 1 < T else True
        assert gv[:, :, i + 1:].abs().max() == 0 if i + 1 < T else True
        assert gv[:, :, : i + 1].abs().sum() > 0


def test_reformer_model_is_causal():
    """Changing the token at any position p never changes the logits before p."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(block_size=48, vocab_size=20, n_layer=2, n_head=4, n_embd=32, attn="reformer")).eval()
    x = torch.randint(0, 20, (2, 48))
    with torch.no_grad():
        base, _ = m(x, x)
        for p in range(48):
            x2 = x.clone()
            x2[:, p] = (x2[:, p] + 1 + p % 19) % 20
            logits, _ = m(x2, x2)
            assert torch.equal(logits[:, :p], base[:, :p]), p
            assert not torch.equal(logits[:, p:], base[:, p:])


def test_generate_every_pattern_matches_no_cache():
    """With the KV cache (or, for reformer, the recomputation it falls back to) generation gives the
    same tokens as recomputing the whole context every step."""
    for attn in ATTN_PATTERNS:
        m = GPT(GPTConfig(block_size=24, vocab_size=20, n_layer=2, n_head=4, n_embd=32, attn=attn)).double().eval()
        x = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        a = m.generate(x, 30, top_k=5)
        torch.manual_seed(0)
        b = m.generate(x, 30, top_k=5, use_cache=False)
        assert torch.equal(a, b), attn


def test_prompt_after_a_prefix_matches_the_full_forward():
    """A prompt fed at start_pos > 0 (after a prefix already in the KV cache) gets the logits of the
    same positions of one full forward pass (generate feeds a prompt from 0, then one token a step;
    this is the path between, Pattern.cached's masked rows)."""
    for attn in ATTN_PATTERNS[:-1]:  # not reformer (no cache)
        torch.manual_seed(0)
        m = GPT(GPTConfig(block_size=24, vocab_size=20, n_layer=2, n_head=4, n_embd=32, attn=attn)).double().eval()
        x = torch.randint(0, 20, (2, 20))
        with torch.no_grad():
            full, _ = m(x, x)  # with targets: every position's logits
            m.setup_kv_cache(2)
            m(x[:, :7], start_pos=0)
            tail = x[:, 7:].contiguous()
            part, _ = m(tail, tail, start_pos=7)
        torch.testing.assert_close(part, full[:, 7:], rtol=1e-10, atol=1e-10, msg=lambda msg: f"{attn}: {msg}")


def test_reformer_refuses_the_kv_cache():
    m = GPT(GPTConfig(block_size=16, vocab_size=20, n_layer=1, n_head=2, n_embd=16, attn="reformer"))
    m.setup_kv_cache(1)
    with pytest.raises(ValueError, match="no KV cache"):
        m(torch.zeros(1, 3, dtype=torch.long), start_pos=0)


def test_attention_pairs_sp_balanced_vs_exclusive():
    """sp_balanced gives every head about the same causal pairs, sp_exclusive does not (N=1024, H=8)."""
    N, H = 1024, 8
    for attn, spread in (("sp_balanced", 1.02), ("sp_exclusive", 10.0)):
        bands = model.head_bands(H, N, attn)
        per_head = [sum(sum(N - d for d in range(lo, hi)) for lo, hi in b.tolist()) for b in bands]
        assert sum(per_head) == N * (N + 1) // 2
        ratio = max(per_head) / min(per_head)
        assert (ratio < spread) if attn == "sp_balanced" else (ratio > spread)


# -----------------------------------------------------------------------------
# attn_switch_frac

def test_attn_switch_frac_switches_and_survives_resume(tmp_path, capsys, monkeypatch):
    kw = dict(max_iters=10, eval_interval=4, attn_switch_frac=0.3, lr_decay_iters=10)
    # straight through: iterations 7, 8, 9 are dense
    full = train.train(tiny_cfg(tmp_path, "sp", **kw))
    out = capsys.readouterr().out
    assert "iter 7: attn_switch_frac=0.3: switching attention sp -> dense" in out
    assert out.count("switching attention") == 1
    ckpt = utils.load_checkpoint(str(tmp_path / "sp" / "ckpt.pt"))
    assert ckpt["model_args"]["attn"] == "sp" and ckpt["attn"] == "dense"
    # sampling, evaluating and heads.py use the attention the model was last trained with
    assert sample.load_model(str(tmp_path / "sp"), "cpu")[0].attn == "dense"
    train.train(tiny_cfg(tmp_path, "sp", init_from="resume", eval_only=True, **{**kw, "attn_switch_frac": 0.0}))
    out = capsys.readouterr().out
    assert "attn=dense" in out and "done: evaluated the checkpoint of iter 10 (trained nothing)" in out, out

    # interrupted (Ctrl-C) before iteration 8, then resumed: still dense, the same losses
    cfg = tiny_cfg(tmp_path, "sp", out_dir=str(tmp_path / "resumed"), **kw)
    real_get_lr = train.get_lr

    def get_lr(it, c):
        if it == 8:
            os.kill(os.getpid(), signal.SIGINT)
        return real_get_lr(it, c)

    monkeypatch.setattr(train, "get_lr", get_lr)
    first = train.train(cfg)
    monkeypatch.setattr(train, "get_lr", real_get_lr)
    assert [i for i, _ in first] == list(range(8))
    capsys.readouterr()
    second = train.train(tiny_cfg(tmp_path, "sp", out_dir=str(tmp_path / "resumed"), init_from="resume", **kw))
    out = capsys.readouterr().out
    assert "attn=dense" in out and "switching" not in out  # the checkpoint's model is already dense
    assert [i for i, _ in second] == [8, 9]
    assert utils.load_checkpoint(str(tmp_path / "resumed" / "ckpt.pt"))["model_args"]["attn"] == "sp"
    for (i, a), (j, b) in zip(full[8:], second):
        assert i == j and a == pytest.approx(b, rel=1e-6)


def test_set_attn_keeps_weights():
    m = GPT(GPTConfig(block_size=32, vocab_size=20, n_layer=1, n_head=4, n_embd=32, attn="bigbird"))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.set_attn("dense")
    assert m.attn == "dense" and m.config.attn == "bigbird"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert m.attention_pairs() == 4 * 32 * 33 // 2
