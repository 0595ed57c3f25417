"""Data pipeline tests: offline GPT-2 BPE, the prepare scripts (correct .bin files, split by document,
idempotence, leftover partial files), and the online corpus' shard/resume logic on a local sample.
CPU only, no network, nothing written into the repository tree."""
import importlib.util
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data import bpe  # noqa: E402
from data.bpe import gpt2  # noqa: E402


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shakespeare = _load("prepare_shakespeare", "data/shakespeare/prepare.py")
shakespeare_char = _load("prepare_shakespeare_char", "data/shakespeare_char/prepare.py")
pystdlib = _load("prepare_pystdlib", "data/pystdlib/prepare.py")
pystdlib_bytes = _load("prepare_pystdlib_bytes", "data/pystdlib_bytes/prepare.py")
fineweb = _load("prepare_fineweb_edu", "data/fineweb_edu/prepare.py")


def _read(path):
    return np.fromfile(path, dtype=np.uint16).tolist()


class Log(list):
    def __call__(self, msg):
        self.append(str(msg))

    def text(self):
        return "\n".join(self)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    try:
        import requests
        monkeypatch.setattr(requests.Session, "request", refuse)
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------
# tokenizer

def test_gpt2_offline(tmp_path, monkeypatch, no_network):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    gpt2.cache_clear()
    enc = gpt2()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\tdef f(x):  return x ** 2  # ünïcödé ✓"
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert enc.encode("a<|endoftext|>b", allowed_special="all") == [64, 50256, 65]
    assert os.listdir(cache) == []                       # the user's cache is neither read nor written
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)  # and the variable is restored


def test_gpt2_pattern_matches_tiktoken():
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    assert gpt2()._pat_str == openai_public.r50k_pat_str


def test_gpt2_rejects_corrupted_file(tmp_path, monkeypatch):
    shutil.copy(bpe.GPT2_DIR / "vocab.bpe", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text("{}")
    monkeypatch.setattr(bpe, "GPT2_DIR", tmp_path)
    gpt2.cache_clear()
    try:
        with pytest.raises(ValueError, match="sha256"):
            gpt2()
    finally:
        monkeypatch.undo()
        gpt2.cache_clear()


# ---------------------------------------------------------------------------------------------
# Tiny Shakespeare by characters (nanoGPT's format: uint16 ids and meta.pkl)

def test_shakespeare_char_counts_vocab_and_rerun(tmp_path):
    out = tmp_path / "out"
    log = Log()
    done = shakespeare_char.prepare(out, log=log)
    assert (done["train_tokens"], done["val_tokens"], done["vocab_size"]) == (1003854, 111540, 65)  # nanoGPT's
    meta = pickle.loads((out / "meta.pkl").read_bytes())
    text = (ROOT / "data" / "shakespeare_char" / "input.txt").read_text(encoding="utf-8")
    train = _read(out / "train.bin")
    assert "".join(meta["itos"][i] for i in train[:200]) == text[:200] and len(train) == 1003854
    mtime = (out / "train.bin").stat().st_mtime_ns
    log = Log()
    assert shakespeare_char.prepare(out, log=log) == done  # done.json and the sizes match: nothing to do
    assert "nothing to do" in log.text() and (out / "train.bin").stat().st_mtime_ns == mtime
    (out / "val.bin").write_bytes((out / "val.bin").read_bytes()[:-2])  # truncated: redone
    log = Log()
    shakespeare_char.prepare(out, log=log)
    assert "wrote" in log.text() and len(_read(out / "val.bin")) == 111540
    log = Log()
    shakespeare_char.prepare(out, force=True, log=log)
    assert "wrote" in log.text()


# ---------------------------------------------------------------------------------------------
# Tiny Shakespeare in BPE

SAMPLE = "".join(f"CITIZEN {i}:\nWe are accounted poor citizens, the patricians good {i * 7}.\n\n" for i in range(60))


def test_shakespeare_bpe_bins(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text(SAMPLE)
    log = Log()
    done = shakespeare.prepare(src, tmp_path / "out", log=log)
    enc = gpt2()
    n = len(SAMPLE)
    train, val = _read(tmp_path / "out" / "train.bin"), _read(tmp_path / "out" / "val.bin")
    assert train == enc.encode_ordinary(SAMPLE[: int(n * 0.9)])
    assert val == enc.encode_ordinary(SAMPLE[int(n * 0.9):])
    assert (done["train_tokens"], done["val_tokens"]) == (len(train), len(val))
    assert (tmp_path / "out" / "train.bin").stat().st_size == 2 * len(train)
    assert not (tmp_path / "out" / "meta.pkl").exists()  # BPE: train.py uses vocab 50304
    assert "wrote" in log.text() and f"{len(train):,}" in log.text()


def test_shakespeare_real_counts(tmp_path):
    src = ROOT / "data" / "shakespeare_char" / "input.txt"
    if not src.is_file():
        pytest.skip("data/shakespeare_char/input.txt not in this checkout")
    done = shakespeare.prepare(src, tmp_path, log=Log())
    assert (done["train_tokens"], done["val_tokens"]) == (301966, 36059)  # nanoGPT's numbers


def test_shakespeare_idempotent_and_leftovers(tmp_path):
    src, out = tmp_path / "input.txt", tmp_path / "out"
    src.write_text(SAMPLE)
    # leftovers of a crashed run: a temp file and a .bin with no done-marker
    out.mkdir()
    (out / "train.bin.tmp").write_bytes(b"\x01\x02\x03")
    (out / "train.bin").write_bytes(b"\x00" * 10)
    log = Log()
    first = shakespeare.prepare(src, out, log=log)
    assert "wrote" in log.text()
    ref = {p: (out / p).read_bytes() for p in ("train.bin", "val.bin")}
    assert _read(out / "train.bin") == gpt2().encode_ordinary(SAMPLE[: int(len(SAMPLE) * 0.9)])

    log = Log()
    mtime = (out / "train.bin").stat().st_mtime_ns
    assert shakespeare.prepare(src, out, log=log) == first
    assert "nothing to do" in log.text() and "wrote" not in log.text()
    assert (out / "train.bin").stat().st_mtime_ns == mtime

    # a truncated file is not mistaken for a finished one
    (out / "val.bin").write_bytes((out / "val.bin").read_bytes()[:-2])
    log = Log()
    shakespeare.prepare(src, out, log=log)
    assert "wrote" in log.text()
    assert {p: (out / p).read_bytes() for p in ref} == ref

    # a different input is not mistaken for the prepared one
    src.write_text(SAMPLE + "MORE.\n")
    log = Log()
    shakespeare.prepare(src, out, log=log)
    assert "wrote" in log.text()


# ---------------------------------------------------------------------------------------------
# Python stdlib corpus

def _make_stdlib(root):
    files = {
        "abc.py": "class ABC:\n    pass\n",
        "json/__init__.py": '"""JSON."""\nfrom .decoder import JSONDecoder\n',
        "json/decoder.py": "def decode(s):\n    return s\n" * 20,
        "json/tool.py": "import json\nprint(json)\n",
        "email/mime/text.py": "# ünïcödé\nX = 'é'\n",
        "test/test_abc.py": "import unittest\n" * 5,
        "lib2to3/tests/data/py2.py": "print 'hello'\n",
        "empty/__init__.py": "",
    }
    files.update({f"pkg{i}/mod{j}.py": f"def f{i}_{j}(x):\n    return x + {i * j}\n" * (1 + j)
                  for i in range(4) for j in range(5)})
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    (root / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nS = '\xe9'\n")
    (root / "bad_coding.py").write_bytes(b"# -*- coding: uft-8 -*-\nx = 1\n")
    for junk in ("site-packages/foo.py", "__pycache__/abc.py", "json/notes.txt"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("SHOULD_NOT_APPEAR = 1\n")
    return files


def _split_docs(path):
    """Documents of a .bin: token runs between <|endoftext|> tokens, decoded."""
    toks = np.fromfile(path, dtype=np.uint16)
    assert toks.size == 0 or toks[-1] == bpe.EOT_TOKEN
    cuts = np.flatnonzero(toks == bpe.EOT_TOKEN)
    docs, start = [], 0
    for c in cuts:
        docs.append(gpt2().decode(toks[start:c].tolist()))
        start = c + 1
    return docs


def test_pystdlib_split_by_document(tmp_path):
    root = tmp_path / "lib"
    files = _make_stdlib(root)
    out = tmp_path / "out"
    done = pystdlib.prepare(root, out, val_fraction=0.4, log=Log())
    expect = {rel: t for rel, t in files.items() if t.strip()}
    expect["latin.py"] = "# -*- coding: latin-1 -*-\nS = 'é'\n"
    rels = sorted(expect)
    want = {s: [expect[r] for r in rels if pystdlib.is_val(r, 0.4) == (s == "val")] for s in ("train", "val")}
    got = {s: _split_docs(out / f"{s}.bin") for s in ("train", "val")}
    assert got == want
    assert want["train"] and want["val"]                          # both splits populated at this fraction
    assert not set(got["train"]) & set(got["val"])                # no document in both
    assert "SHOULD_NOT_APPEAR" not in "".join(got["train"] + got["val"])
    assert done["files_skipped_undecodable"] == ["bad_coding.py"] and done["files_empty"] == 1
    assert done["documents"] == {"train": len(want["train"]), "val": len(want["val"])}
    assert done["train_tokens"] == (out / "train.bin").stat().st_size // 2
    rows = [line.split("\t") for line in (out / "documents.tsv").read_text().splitlines()[1:]]
    assert sorted(r[2] for r in rows) == rels
    assert done["params"]["python"].split()[-1] == ".".join(map(str, sys.version_info[:3]))

    # deterministic: a second build elsewhere is byte-identical; a file's split ignores other files
    out2 = tmp_path / "out2"
    pystdlib.prepare(root, out2, val_fraction=0.4, log=Log())
    for f in ("train.bin", "val.bin"):
        assert (out / f).read_bytes() == (out2 / f).read_bytes()
    (root / "pkg0" / "mod0.py").unlink()
    pystdlib.prepare(root, out2, val_fraction=0.4, log=Log())
    rows2 = {r.split("\t")[2]: r.split("\t")[0] for r in (out2 / "documents.tsv").read_text().splitlines()[1:]}
    assert all(rows2[r[2]] == r[0] for r in rows if r[2] in rows2)

    # tests left out on request
    out3 = tmp_path / "out3"
    pystdlib.prepare(root, out3, val_fraction=0.4, include_tests=False, log=Log())
    paths3 = [line.split("\t")[2] for line in (out3 / "documents.tsv").read_text().splitlines()[1:]]
    assert "test/test_abc.py" not in paths3 and "lib2to3/tests/data/py2.py" not in paths3 and "abc.py" in paths3


def test_pystdlib_idempotent(tmp_path):
    root, out = tmp_path / "lib", tmp_path / "out"
    _make_stdlib(root)
    log = Log()
    pystdlib.prepare(root, out, val_fraction=0.4, log=log)
    assert "wrote" in log.text()
    ref = (out / "train.bin").read_bytes()
    log = Log()
    pystdlib.prepare(root, out, val_fraction=0.4, log=log)
    assert "nothing to do" in log.text() and "wrote" not in log.text()
    # a leftover temp file and a missing marker: redone, same bytes
    (out / "done.json").unlink()
    (out / "val.bin.tmp").write_bytes(b"junk")
    log = Log()
    pystdlib.prepare(root, out, val_fraction=0.4, log=log)
    assert "wrote" in log.text() and (out / "train.bin").read_bytes() == ref
    # changed source tree: redone
    (root / "abc.py").write_text("class ABC:\n    x = 1\n")
    log = Log()
    pystdlib.prepare(root, out, val_fraction=0.4, log=log)
    assert "different inputs" in log.text() and "wrote" in log.text()


def test_pystdlib_real_stdlib_is_big_enough():
    rels = pystdlib.list_sources(pystdlib.default_root())
    size = sum((pystdlib.default_root() / r).stat().st_size for r in rels)
    # ~2 bytes per GPT-2 token on code (31.5 MB -> 15.3 M tokens on 3.11); the full check is a manual run
    assert size > 12_000_000, f"stdlib has only {size:,} bytes of .py; the corpus would be < 5 M tokens"


def test_pystdlib_bytes_holds_pystdlibs_documents_as_bytes(tmp_path):
    root = tmp_path / "lib"
    _make_stdlib(root)
    out, bpe_out = tmp_path / "out", tmp_path / "bpe"
    done = pystdlib_bytes.prepare(root, out, val_fraction=0.4, log=Log())
    pystdlib.prepare(root, bpe_out, val_fraction=0.4, log=Log())
    meta = pickle.loads((out / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == 256 and len(meta["itos"]) == 256
    assert all(meta["stoi"][meta["itos"][i]] == i and len(meta["itos"][i]) == 1 for i in range(256))
    for split in ("train", "val"):
        ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
        assert ids.max() < 256 and ids[-1] == 0 and done[f"{split}_tokens"] == ids.size
        # the documents, cut at the 0 bytes, are the BPE corpus' documents (the same files, the same split)
        docs = [d.decode("utf-8") for d in bytes(ids.astype(np.uint8)).split(b"\x00")[:-1]]
        assert docs == _split_docs(bpe_out / f"{split}.bin")
        # sample.py's char codec: every id is one character, and the latin-1 bytes of those characters are the file's
        text = "".join(meta["itos"][int(i)] for i in ids)
        assert text.encode("latin-1") == bytes(ids.astype(np.uint8))
    assert done["documents"] == json.loads((bpe_out / "done.json").read_text())["documents"]
    assert [r.split("\t")[2] for r in (out / "documents.tsv").read_text().splitlines()[1:]] == \
        [r.split("\t")[2] for r in (bpe_out / "documents.tsv").read_text().splitlines()[1:]]
    # a file holding a 0 byte (no Python source does) would break the document boundaries: left out, listed
    (root / "zero.py").write_bytes(b"x = '\x00'\n")
    done = pystdlib_bytes.prepare(root, out, val_fraction=0.4, log=Log())
    assert done["files_skipped_holding_a_zero_byte"] == ["zero.py"]
    log = Log()
    pystdlib_bytes.prepare(root, out, val_fraction=0.4, log=log)
    assert "nothing to do" in log.text()


def test_pystdlib_bytes_of_a_non_ascii_file_are_its_utf8(tmp_path):
    root, out = tmp_path / "lib", tmp_path / "out"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\r\nS = '\xe9'\r\n")
    pystdlib_bytes.prepare(root, out, val_fraction=0.0, log=Log())
    assert _read(out / "train.bin") == list("# -*- coding: latin-1 -*-\nS = 'é'\n".encode("utf-8")) + [0]
    assert _read(out / "val.bin") == []


# ---------------------------------------------------------------------------------------------
# online corpus: shard/resume logic on a local list of documents

DOCS = [f"Document {i}. " + " ".join(f"w{(i * 31 + j) % 97}" for j in range(5 + (i * 13) % 40)) for i in range(120)]


def _source(docs, fail_after=None, calls=None):
    def open_docs(skip):
        if calls is not None:
            calls.append(skip)

        def gen():
            for k, d in enumerate(docs[skip:]):
                if fail_after is not None and k == fail_after:
                    raise fineweb.SourceError("connection lost (simulated)")
                yield d
        return gen()
    return open_docs


KW = dict(shard_tokens=400, val_fraction=0.2, batch_docs=7, progress=False)


def test_online_build_and_resume(tmp_path):
    enc = gpt2()
    a, b = tmp_path / "a", tmp_path / "b"
    done_a = fineweb.build(_source(DOCS), a, max_tokens=10**9, log=Log(), **KW)
    assert done_a["stream_ended"] and done_a["documents"] == len(DOCS) and done_a["shards"] > 3
    assert not (a / "shards").exists()
    want = {s: [] for s in ("train", "val")}
    for d in DOCS:
        want["val" if fineweb.is_val_text(d, 0.2) else "train"] += enc.encode_ordinary(d) + [50256]
    assert _read(a / "train.bin") == want["train"] and _read(a / "val.bin") == want["val"]
    assert want["val"] and done_a["val_tokens"] == len(want["val"])

    # interrupted in the middle of the third shard, then resumed
    with pytest.raises(fineweb.SourceError):
        fineweb.build(_source(DOCS, fail_after=30), b, max_tokens=10**9, log=Log(), **KW)
    finished = fineweb.finished_shards(b / "shards")
    assert len(finished) >= 1 and not (b / "train.bin").exists() and not (b / "done.json").exists()
    # a half-written next shard (as if killed while writing) is not mistaken for a finished one
    k = len(finished)
    (b / "shards" / f"shard_{k:05d}.train.bin.tmp").write_bytes(b"\x00" * 6)
    (b / "shards" / f"shard_{k:05d}.train.bin").write_bytes(b"\x00" * 6)
    calls, log = [], Log()
    done_b = fineweb.build(_source(DOCS, calls=calls), b, max_tokens=10**9, log=log, **KW)
    assert calls == [finished[-1]["end_doc"]] and calls[0] > 0   # restarted after the finished shards
    assert "resuming" in log.text()
    for f in ("train.bin", "val.bin"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert {k: v for k, v in done_a.items() if k != "seconds_this_run"} == \
           {k: v for k, v in done_b.items() if k != "seconds_this_run"}

    # finished: a third run does nothing and does not touch the source
    calls, log = [], Log()
    fineweb.build(_source(DOCS, calls=calls), b, max_tokens=10**9, log=log, **KW)
    assert calls == [] and "nothing to do" in log.text()


def test_online_max_tokens_and_keep_shards(tmp_path):
    done = fineweb.build(_source(DOCS), tmp_path, max_tokens=1000, keep_shards=True, log=Log(), **KW)
    total = done["train_tokens"] + done["val_tokens"]
    assert 1000 <= total < 1000 + 200 and not done["stream_ended"] and done["documents"] < len(DOCS)
    assert len(fineweb.finished_shards(tmp_path / "shards")) == done["shards"]
    # other settings: the old shards are discarded rather than mixed in
    log = Log()
    done2 = fineweb.build(_source(DOCS), tmp_path, max_tokens=10**9, log=log, **KW)
    assert "discarding" in log.text() and done2["documents"] == len(DOCS)


def _run_main(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        fineweb.main(["--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_online_missing_datasets_message(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    err = _run_main(monkeypatch, capsys, tmp_path / "corpus")
    assert "pip install datasets" in err
    assert not (tmp_path / "corpus").exists()  # no empty folder left behind


def test_online_no_network_message(tmp_path, monkeypatch, capsys, no_network):
    fake = types.ModuleType("datasets")

    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceFW/fineweb-edu' on the Hub (LocalEntryNotFoundError)\nmore")
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    err = _run_main(monkeypatch, capsys, tmp_path)
    assert "no network" in err and "fineweb-edu" in err

    # the stream breaking later is also one line, and says how to resume
    class DS:
        def skip(self, n):
            return self

        def __iter__(self):
            yield {"text": "one document"}
            raise OSError("Connection reset by peer")
    fake.load_dataset = lambda *a, **k: DS()
    err = _run_main(monkeypatch, capsys, tmp_path)
    assert "re-run to resume" in err


# ---------------------------------------------------------------------------------------------
# the scripts run as `python data/<name>/prepare.py`, from the repo root and from their folder

@pytest.mark.parametrize("cwd", ["root", "folder"])
def test_scripts_run_from_anywhere(tmp_path, cwd):
    src = tmp_path / "input.txt"
    src.write_text(SAMPLE)
    lib = tmp_path / "lib"
    _make_stdlib(lib)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cmds = [("data/shakespeare/prepare.py", ["--input", str(src), "--out_dir", str(tmp_path / "s")]),
            ("data/pystdlib/prepare.py", ["--root", str(lib), "--out_dir", str(tmp_path / "p")]),
            ("data/pystdlib_bytes/prepare.py", ["--root", str(lib), "--out_dir", str(tmp_path / "b")]),
            ("data/shakespeare_char/prepare.py", ["--out_dir", str(tmp_path / "c")])]
    for rel, args in cmds:
        where = ROOT if cwd == "root" else (ROOT / rel).parent
        script = rel if cwd == "root" else "prepare.py"
        r = subprocess.run([sys.executable, script, *args], cwd=where, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "wrote" in r.stdout and "tokens" in r.stdout
    r = subprocess.run([sys.executable, "data/fineweb_edu/prepare.py", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--max_tokens" in r.stdout
    assert json.loads((tmp_path / "p" / "done.json").read_text())["documents"]["train"] > 0
