"""The notebooks run top to bottom in quick mode, and heads.py measures what they show.

Each notebook is executed with nbclient (SPATTN_QUICK=1: tiny models, few steps, on CPU) inside a
temporary copy of the repository, so nothing is written into the tree; a cell that raises fails the
test, and every notebook must draw at least one picture.
"""
import math
import os
import pathlib
import shutil

import pytest
import torch

import heads
import model as M

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# -----------------------------------------------------------------------------
# heads.py

def tiny(attn, block_size=32, n_head=4, n_layer=2, n_embd=32):
    torch.manual_seed(0)
    return M.GPT(M.GPTConfig(block_size=block_size, vocab_size=17, n_layer=n_layer, n_head=n_head,
                             n_embd=n_embd, attn=attn)).eval()


@pytest.mark.parametrize("attn", ["dense", "sp", "sp_exclusive", "longformer"])
def test_attention_probs_reproduce_the_model(attn):
    """probs @ v through c_proj is each block's attention output, for every layer."""
    model = tiny(attn)
    # scale the weights up so that attention is far from uniform
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(20)
    idx = torch.randint(0, 17, (3, 29))
    probs = heads.attention_probs(model, idx)
    L, H, T = 2, 4, 29
    assert probs.shape == (L, 3, H, T, T)
    tr = model.transformer
    x = tr.wte(idx) + tr.wpe(torch.arange(T))
    with torch.no_grad():
        for l, block in enumerate(tr.h):
            h_in = block.ln_1(x)
            _, _, v = block.attn.c_attn(h_in).split(32, dim=2)
            v = v.view(3, T, H, 8).transpose(1, 2)
            y = (probs[l] @ v).transpose(1, 2).reshape(3, T, 32)
            torch.testing.assert_close(block.attn.c_proj(y), block.attn(h_in), atol=1e-5, rtol=1e-4)
            x = block(x)
    # a row sums to 1 when the query sees a key, to 0 otherwise; nothing outside the mask
    mask = tr.h[0].attn.pattern.visible(T, T, 0)
    assert (probs * ~mask).abs().max() == 0
    sums = probs.sum(-1)
    assert torch.allclose(sums, mask.any(-1).float().expand_as(sums), atol=1e-5)


def test_metrics_on_known_distributions():
    masks = heads.pattern_masks("sp_exclusive", 4, 16)
    probs = heads.uniform_probs(masks)                                   # (1, 1, 4, 16, 16)
    counts = masks.sum(-1).float()
    seen = counts > 0
    expected = torch.stack([counts[h][seen[h]].log().mean() for h in range(4)])
    torch.testing.assert_close(heads.entropy(probs)[0], expected)
    assert math.isclose(heads.head_diversity(probs), expected.std(unbiased=False).item(), rel_tol=1e-5)
    prof = heads.distance_profile(probs)
    torch.testing.assert_close(prof.sum(-1), torch.ones(1, 4))
    # head h of sp_exclusive sees distances [4h, 4h + 4) only
    for h in range(4):
        assert prof[0, h, :4 * h].sum() == 0 and prof[0, h, 4 * h + 4:].sum() == 0
    md = heads.mean_distance(probs)[0]
    assert all(4 * h <= md[h] <= 4 * h + 3 for h in range(4))
    # a head that always attends to the previous token: entropy 0, distance 1
    one = torch.zeros(1, 1, 1, 5, 5)
    one[0, 0, 0, 0, 0] = 1
    for i in range(1, 5):
        one[0, 0, 0, i, i - 1] = 1
    assert heads.entropy(one).item() == 0
    # T = 6 < 8: sp_exclusive's heads 2 and 3 (bands from distance 8 and 12) see nothing. They have no
    # entropy (NaN), and sigma is the spread of heads 0 and 1 alone, not pulled wide by two zeros.
    short = heads.uniform_probs(masks[:, :6, :6])
    E = heads.entropy(short)[0]
    assert E[2:].isnan().all() and E[:2].isfinite().all()
    assert math.isclose(heads.head_diversity(short), E[:2].std(unbiased=False).item(), rel_tol=1e-5)
    assert math.isfinite(heads.mean_entropy(short))
    assert math.isclose(heads.mean_distance(one).item(), 4 / 5, rel_tol=1e-6)


def test_paper_numbers_from_uniform_attention():
    """sigma and entropy of uniform attention at N = 256, H = 8: the paper's toy-model numbers."""
    dense = heads.summary(heads.uniform_probs(heads.pattern_masks("dense", 8, 256)))
    sp = heads.summary(heads.uniform_probs(heads.pattern_masks("sp", 8, 256)))
    assert dense["sigma"] < 1e-6 and abs(dense["entropy"] - 4.56) < 0.01
    assert abs(sp["sigma"] - 0.1847) < 0.001 and abs(sp["entropy"] - 3.641) < 0.01


def test_patterns_without_a_fixed_mask_are_refused_clearly():
    model = tiny("reformer")  # its LSH buckets come from the data
    assert not heads.supports_probs(model)
    with pytest.raises(NotImplementedError, match="reformer"):
        heads.attention_probs(model, torch.zeros(1, 4, dtype=torch.long))
    model.set_attn("dense")  # what the model attends with now counts, not what it was built with
    assert heads.supports_probs(model)


def test_layout_helpers():
    m = heads.pattern_masks("sp", 16, 1024)
    assert abs(m.sum().item() / (16 * 1024 * 1025 / 2) - 0.178) < 0.001
    hd = heads.heads_by_distance(heads.pattern_masks("sp_exclusive", 4, 16))
    assert hd.shape == (4, 16) and set(hd.unique().tolist()) == {0.0, 1.0}
    assert heads.work_per_head(heads.pattern_masks("dense", 4, 16)).tolist() == [136] * 4


# -----------------------------------------------------------------------------
# The notebooks

def repo_copy(dst):
    """The files the notebooks need, copied (the prepared char data too, when it is there)."""
    for p in ROOT.glob("*.py"):
        shutil.copy2(p, dst / p.name)
    for sub in ("notebooks", "data/shakespeare_char", "experiments", "lib"):
        if (ROOT / sub).is_dir():
            shutil.copytree(ROOT / sub, dst / sub, ignore=shutil.ignore_patterns(
                "__pycache__", ".ipynb_checkpoints", "*.tmp"))
    for p in ROOT.joinpath("data").glob("*.py"):
        shutil.copy2(p, dst / "data" / p.name)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"bands", "head_specialization", "compare"}


# compare.ipynb runs twice: on the committed experiments/results/compare (if any), and without it (its fallback)
CASES = [(p, False) for p in NOTEBOOKS] + [(p, True) for p in NOTEBOOKS if p.stem == "compare"]


@pytest.mark.parametrize("path,hide_compare", CASES,
                         ids=[p.stem + ("-without-results" if h else "") for p, h in CASES])
def test_notebook_runs(path, hide_compare, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -r requirements-dev.txt)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -r requirements-dev.txt)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -r requirements-dev.txt)")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install -r requirements-dev.txt)")
    repo_copy(tmp_path)
    # Run in the copy (no checkpoints in reach: out-heads-*/ are not copied), on the CPU.
    if hide_compare:
        shutil.rmtree(tmp_path / "experiments" / "results" / "compare", ignore_errors=True)
    (tmp_path / "experiments" / "results").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SPATTN_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for var in ("SPATTN_HEADS_DENSE", "SPATTN_HEADS_SP"):
        monkeypatch.delenv(var, raising=False)
    scratch = tmp_path / "tmp"  # the kernel's temporary files: whatever a notebook leaves there stays behind
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    nb = nbformat.read(tmp_path / "notebooks" / path.name, as_version=4)
    before = snapshot(tmp_path / "experiments" / "results")
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path / "notebooks")}})
    client.execute()   # raises CellExecutionError, with the cell and traceback, on any error
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no picture"
    assert snapshot(tmp_path / "experiments" / "results") == before, "quick mode wrote into experiments/results/"
    left = [n for n in os.listdir(scratch) if not n.startswith("torchinductor_")]  # torch.compile's cache is kept
    assert not left, f"{path.name} left temporary files behind: {left}"
