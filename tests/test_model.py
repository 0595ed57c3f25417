"""The model against the spec: band layouts, masks, the KV cache, and bad configurations."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import kernel
import model
from model import GPT, GPTConfig, ConfigError, head_bands, BAND_PATTERNS, ATTN_PATTERNS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(1, 1), (4, 4), (4, 10), (6, 256), (8, 1024), (12, 1000), (16, 1024), (7, 50)]


def spec_visible(H, N, pattern):
    """Spec section 2-3 written out per head as a set of visible distances."""
    W, R = N // H, N % H
    out = []
    for h in range(H):
        Wh, Sh = W + (1 if h < R else 0), h * W + min(h, R)
        own = set(range(Sh, Sh + Wh))
        if pattern == "sp_exclusive":
            s = own
        elif pattern == "sp":
            s = own | set(range(0, Wh + 1))
        elif pattern == "window":  # the reference code's: distance <= W_h
            s = set(range(0, Wh + 1))
        else:  # dense
            s = set(range(N))
        out.append({d for d in s if d < N})
    return out


def distances(bands_row):
    return {d for lo, hi in bands_row.tolist() for d in range(lo, hi)}


@pytest.mark.parametrize("H,N", SHAPES)
@pytest.mark.parametrize("pattern", ["sp", "sp_exclusive", "window", "dense"])
def test_head_bands_match_spec(H, N, pattern):
    b = head_bands(H, N, pattern)
    assert b.dtype == torch.long and b.shape[0] == H and b.shape[2] == 2
    for h, want in enumerate(spec_visible(H, N, pattern)):
        assert distances(b[h]) == want, (h, b[h].tolist())
        assert kernel.normalize_bands(b, H)  # sorted, disjoint, merged: a valid contract input
        nonempty = [(lo, hi) for lo, hi in b[h].tolist() if hi > lo]
        assert all(nonempty[i][1] < nonempty[i + 1][0] for i in range(len(nonempty) - 1)), "not merged"


@pytest.mark.parametrize("H,N", SHAPES)
def test_exclusive_bands_partition_distances(H, N):
    for pattern in ("sp_exclusive", "sp_balanced"):
        sets = [distances(row) for row in head_bands(H, N, pattern)]
        assert all(sets), "every head owns at least one distance"
        assert set().union(*sets) == set(range(N)) and sum(map(len, sets)) == N


@pytest.mark.parametrize("H,N", [(8, 1024), (16, 1024), (6, 256), (12, 1000)])
def test_balanced_bands_give_equal_work(H, N):
    pairs = [sum(N - d for d in distances(row)) for row in head_bands(H, N, "sp_balanced")]
    exclusive = [sum(N - d for d in distances(row)) for row in head_bands(H, N, "sp_exclusive")]
    total = N * (N + 1) / 2
    assert max(pairs) - min(pairs) <= 2 * N  # off by at most rounding one distance each way
    assert max(exclusive) / min(exclusive) > 1.5 * max(pairs) / min(pairs)
    assert sum(pairs) == total


def test_work_shares_match_spec():
    # spec section 3: at N = 1024, H = 16, sp_exclusive computes 6.25 % and sp 17.8 % of dense pairs
    for pattern, share in (("sp_exclusive", 0.0625), ("sp", 0.178)):
        m = GPT(GPTConfig(block_size=1024, vocab_size=16, n_layer=1, n_head=16, n_embd=32, attn=pattern))
        assert m.attention_pairs() / (16 * 1024 * 1025 / 2) == pytest.approx(share, abs=5e-4)


@pytest.mark.parametrize("pattern", BAND_PATTERNS + ("longformer", "bigbird"))
def test_pair_counts_match_the_masks(pattern):
    # MFU and the work shares count pairs without forming a T x T mask; they must agree with it
    m = GPT(GPTConfig(block_size=100, vocab_size=16, n_layer=1, n_head=6, n_embd=24, attn=pattern))
    attn = m.transformer.h[0].attn
    for T in (1, 7, 64, 100):
        assert m.attention_pairs(T) == int(attn.pattern.visible(T, T, 0).sum())


def test_bands_anchor_to_block_size_not_batch_length():
    # a short batch sees the top-left corner of the block_size pattern, not a pattern of its own
    m = GPT(GPTConfig(block_size=64, vocab_size=16, n_layer=1, n_head=4, n_embd=16, attn="sp_exclusive"))
    attn = m.transformer.h[0].attn
    full = attn.pattern.visible(64, 64, 0)
    assert torch.equal(attn.pattern.visible(10, 10, 0), full[:, :10, :10])
    assert not attn.pattern.visible(10, 10, 0)[3].any()  # head 3's band starts at distance 48


def tiny(attn="sp", **kw):
    torch.manual_seed(0)
    cfg = dict(block_size=32, vocab_size=20, n_layer=2, n_head=4, n_embd=32, attn=attn, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


@pytest.mark.parametrize("attn", [a for a in ATTN_PATTERNS if a != "reformer"])  # LSH buckets need every token
def test_kv_cache_logits_match_full_forward(attn):
    m = tiny(attn)
    idx = torch.randint(0, 20, (2, 32))
    m.setup_kv_cache(2)
    _, _ = m(idx[:, :5], start_pos=0)
    for t in range(5, 32):
        cached, _ = m(idx[:, t:t + 1], start_pos=t)
        full, _ = m(idx[:, :t + 1])
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-5)
        # the position as a tensor, as the CUDA-graph decode step gets it: the same step
        as_tensor, _ = m(idx[:, t:t + 1], start_pos=torch.tensor(t))
        torch.testing.assert_close(as_tensor, cached, rtol=0, atol=0)


@pytest.mark.parametrize("attn", ["sp", "dense", "sp_exclusive"])
def test_generate_with_cache_equals_without(attn):
    # greedy decoding past block_size: the sliding window must match nanoGPT's uncached loop
    m = tiny(attn)
    prompt = torch.randint(0, 20, (2, 7))
    a = m.generate(prompt, 40, top_k=1)
    b = m.generate(prompt, 40, top_k=1, use_cache=False)
    assert a.shape == (2, 47) and torch.equal(a, b)


def test_band_patterns_use_band_attention():
    # the model's attention equals band_attention on the model's own bands (the fallback on CPU)
    m = tiny("sp")
    attn = m.transformer.h[0].attn
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    bands = head_bands(4, 32, "sp")
    ref = kernel.masked_attention(q, k, v, attn.pattern.visible(9, 9, 0), 8 ** -0.5)
    torch.testing.assert_close(kernel.band_attention(q, k, v, bands), ref)


def test_dense_is_band_zero_to_n():
    # the dense pattern runs through SDPA; it must be the same function as the band [0, N)
    pattern = tiny("dense").transformer.h[0].attn.pattern
    assert pattern.bands == kernel.normalize_bands(head_bands(4, 32, "dense"), 4)
    q, k, v = (torch.randn(2, 4, 11, 8) for _ in range(3))
    torch.testing.assert_close(pattern(q, k, v), kernel.band_attention(q, k, v, pattern.bands), rtol=1e-5, atol=1e-6)


def test_forward_loss_and_shapes():
    m = tiny()
    idx = torch.randint(0, 20, (3, 17))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 17, 20) and torch.isfinite(loss)
    logits, loss = m(idx)
    assert logits.shape == (3, 1, 20) and loss is None


@pytest.mark.parametrize("kw,msg", [
    (dict(n_embd=30, n_head=4), "not divisible by n_head"),
    (dict(block_size=3, n_head=4), "block_size=3 < n_head=4"),
    (dict(attn="sparse"), "unknown attn='sparse'"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_config_is_one_clear_error(kw, msg):
    cfg = dict(block_size=32, vocab_size=20, n_layer=1, n_head=4, n_embd=32)
    cfg.update(kw)
    with pytest.raises(ConfigError, match=msg):
        GPTConfig(**cfg)


def test_input_longer_than_block_size():
    m = tiny()
    with pytest.raises(ValueError, match="exceeds block_size=32"):
        m(torch.zeros(1, 33, dtype=torch.long))


def test_estimate_mfu_needs_a_known_peak():
    m = tiny()
    assert m.estimate_mfu(4, 0.1) is None or torch.cuda.is_available()
    fpt = m.flops_per_token()
    assert m.estimate_mfu(4, 0.1, peak_flops=1e12) == pytest.approx(fpt * 32 * 4 / 0.1 / 1e12)
    # sparse patterns count only the pairs they compute
    assert tiny("sp_exclusive").flops_per_token() < tiny("dense").flops_per_token()


def test_every_pattern_name_builds():
    for attn in ATTN_PATTERNS:
        assert tiny(attn)(torch.zeros(1, 5, dtype=torch.long))[0].isfinite().all()
    assert set(BAND_PATTERNS) <= set(ATTN_PATTERNS)


def test_a_band_pattern_without_a_branch_in_head_bands_is_refused(monkeypatch):
    # a name added to BAND_PATTERNS alone must not fall into another pattern's branch
    monkeypatch.setattr(model, "BAND_PATTERNS", BAND_PATTERNS + ("mine",))
    with pytest.raises(ConfigError, match="'mine' is in BAND_PATTERNS but has no branch"):
        head_bands(4, 32, "mine")


def test_the_readmes_recipe_for_a_pattern_of_your_own(tmp_path):
    # README, "Hack it": a new band pattern is a name in BAND_PATTERNS and a branch in head_bands,
    # and the model's tests then check it. Apply the README's two snippets to a copy of model.py and
    # run the tests that take every pattern on it, selecting the new one.
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Hack it", 1)[1].split("\n## ", 1)[0]
    names_line, branch = re.findall(r"```python\n(.*?)```", section, re.S)
    name = re.search(r'elif pattern == "(\w+)"', branch).group(1)
    assert name in names_line
    if name in ATTN_PATTERNS:  # this checkout has the recipe applied: the tests above take the pattern
        pytest.skip(f"model.py has {name!r} already")
    source = open(os.path.join(ROOT, "model.py"), encoding="utf-8").read()
    source, n_names = re.subn(r"^BAND_PATTERNS = .*\n", lambda _: names_line, source, count=1, flags=re.M)
    last_else = "    else:\n        raise ConfigError(f\"head_bands: {pattern!r} is in BAND_PATTERNS"
    assert n_names == 1 and source.count(last_else) == 1
    source = source.replace(last_else, branch + last_else)
    for f in os.listdir(ROOT):
        if f.endswith(".py"):
            shutil.copy(os.path.join(ROOT, f), tmp_path / f)
    for sub in ("tests", "lib"):
        shutil.copytree(os.path.join(ROOT, sub), tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink(os.path.join(ROOT, "data"), tmp_path / "data")  # the shipped Tiny Shakespeare
    (tmp_path / "model.py").write_text(source, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_model.py",
                        "tests/test_patterns.py", "-k", name], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    passed = int(re.search(r"(\d+) passed", r.stdout).group(1))
    assert passed >= 4, r.stdout[-3000:]  # trains and generates, KV cache, information flow, pair counts


def test_generate_under_autocast():
    # sample.py generates under bf16 autocast on GPUs: the cache must hold the keys' dtype
    m = tiny("sp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.generate(torch.randint(0, 20, (1, 3)), 5, top_k=1)
    assert out.shape == (1, 8)


def test_generate_with_a_tiny_temperature_under_float16_is_greedy():
    # logits / temperature in float16 overflows to inf (65504 is its largest number): softmax then
    # gives NaN and every draw is id 0. The division is done in float32.
    m = tiny("sp")
    with torch.no_grad():
        m.transformer.wte.weight.mul_(30)  # large logits, as a trained model has
    x = torch.randint(0, 20, (2, 3), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.float16):
        greedy = m.generate(x, 12, top_k=1)
        cold = m.generate(x, 12, temperature=1e-5)
    assert torch.equal(cold, greedy) and greedy[:, 3:].any()


def test_generate_draws_only_ids_below_n_ids():
    # a vocabulary padded for speed (GPT-2's 50257 to 50304) has ids no tokenizer decodes
    m = tiny("sp")
    x = torch.zeros(2, 1, dtype=torch.long)
    torch.manual_seed(0)
    assert (m.generate(x, 100, temperature=5.0) >= 10).any()
    torch.manual_seed(0)
    assert (m.generate(x, 100, temperature=5.0, n_ids=10) < 10).all()


def test_sample_draws_from_the_distribution():
    # generate's sampler (Gumbel-max, no host sync): frequencies match p, zero-probability ids never come
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.0, 0.2, 0.0])
    draws = model.sample(p.expand(40000, -1)).squeeze(1)
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert freq[2] == 0 and freq[4] == 0
    torch.testing.assert_close(freq, p, rtol=0, atol=0.01)
    assert torch.equal(model.sample(torch.eye(5)).squeeze(1), torch.arange(5))  # one-hot rows: that id



def test_sample_never_draws_a_zero_probability_id(monkeypatch):
    # a uniform draw of exactly 0 (1 in 2**24 for float32) makes E = inf and every p / E zero
    monkeypatch.setattr(torch, "rand_like", lambda t: torch.zeros_like(t))
    assert model.sample(torch.tensor([[0.0, 0.0, 0.3, 0.7]])).item() == 2


@pytest.mark.parametrize("attn", ATTN_PATTERNS)
def test_information_flows_across_tokens_as_the_bands_say(attn):
    # In a one-layer model, token 0 reaches the logits at position i > 0 only through attention, so
    # changing token 0 must change them exactly where some head sees key 0 from query i (distance i).
    # This is what attention across heads instead of across tokens (q, k, v passed in the wrong
    # layout) would break: then no later position would change at all.
    torch.manual_seed(0)
    T = 64
    m = GPT(GPTConfig(block_size=T, vocab_size=32, n_layer=1, n_head=4, n_embd=32, attn=attn)).double().eval()
    idx = torch.randint(1, 32, (1, T))
    other = idx.clone()
    other[0, 0] = 0
    changed = (m(idx, idx)[0] - m(other, other)[0]).abs().amax(-1)[0] > 0       # (T,) per position
    assert changed[0]
    if attn == "reformer":  # which keys a query sees depends on the tokens: it must reach some
        assert changed[1:].any()
        return
    sees_first = m.transformer.h[0].attn.pattern.visible(T, T, 0)[:, :, 0].any(0)  # (T,): some head sees key 0
    assert torch.equal(changed[1:], sees_first[1:])
    if attn in BAND_PATTERNS:  # and that is: distance i lies in some head's bands
        distances = {d for head in kernel.normalize_bands(head_bands(4, T, attn), 4) for lo, hi in head
                     for d in range(lo, hi)}
        assert changed[1:].tolist() == [i in distances for i in range(1, T)]
