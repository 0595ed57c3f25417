"""Long-context code corpus from the Python standard library's own source, in GPT-2 BPE. No download.

Every .py file under the running interpreter's stdlib folder (site-packages and the generated
pydoc_data/ excluded; the test suite included unless --no_tests) is one document. Documents are
encoded with the GPT-2 BPE (data/bpe.py), each followed by <|endoftext|> (50256), and written to
train.bin / val.bin (uint16). The split is BY DOCUMENT and deterministic: a file goes to val iff the
first 8 bytes of sha256(relative posix path), read as a fraction of 2**64, are below --val_fraction
(default 0.05). No document is ever cut across train and val, and the split of a file does not
depend on which other files exist.

The corpus depends on the Python version (the stdlib differs between releases and distributions,
e.g. Debian ships the test suite in a separate package); done.json records the version, the folder,
the file list's fingerprint and every count. On CPython 3.11.7 it is 14.9 M tokens in 1,758 documents
(5.2 M without the tests), median document ~3,100 tokens, >90 % of tokens in documents of
>= 4,096 tokens: real long-range structure (code refers to names defined far above).

    python data/pystdlib/prepare.py              # from the repo root (or from inside data/pystdlib)
    python data/pystdlib/prepare.py --no_tests   # smaller corpus without Lib/test etc.

Outputs: train.bin, val.bin, documents.tsv (split, tokens, path for every document), done.json
(written last). Idempotent: re-running with the same interpreter and options does nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import sys
import sysconfig
import time
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.bpe import (DONE, EOT_TOKEN, describe_done, gpt2, mark_unfinished, prepared_already,  # noqa: E402
                      read_done, sizes, write_bytes_atomic, write_json_atomic, write_tokens)

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
# Generated, not code: pydoc_data/topics.py is one dict of the docs' text, ~414k tokens on 3.11, which
# would be ~45 % of the val split on its own (it hashes to val) and make val loss measure prose.
SKIP_TOP_DIRS = {"pydoc_data"}
TEST_DIRS = {"test", "tests", "idle_test"}
VAL_FRACTION = 0.05
MIN_TOKENS_WANTED = 5_000_000


def default_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_test_path(rel: str) -> bool:
    return any(part in TEST_DIRS for part in rel.split("/")[:-1])


def list_sources(root, include_tests=True) -> list[str]:
    """Relative posix paths of the .py files under root, sorted (deterministic)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        for f in filenames:
            if f.endswith(".py"):
                rel = Path(dirpath, f).relative_to(root).as_posix()
                if rel.split("/")[0] in SKIP_TOP_DIRS:
                    continue
                if include_tests or not is_test_path(rel):
                    out.append(rel)
    return sorted(out)


def fingerprint(root, rels) -> str:
    h = hashlib.sha256()
    for rel in rels:
        h.update(f"{rel}\t{(Path(root) / rel).stat().st_size}\n".encode())
    return h.hexdigest()


def is_val(rel: str, val_fraction: float) -> bool:
    """Deterministic, per-document split from a hash of the relative path."""
    x = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") / 2**64
    return x < val_fraction


def read_source(path) -> str | None:
    """A .py file as text, honouring its PEP 263 coding cookie; None if it cannot be decoded."""
    raw = Path(path).read_bytes()
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        text = raw.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError):
        return None  # e.g. Lib/test/tokenizedata/bad_coding*.py, undecodable on purpose
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def plan_build(root, out_dir, val_fraction, include_tests, force, log, tokenizer):
    """(root, the relative paths of its sources, the build's params, out_dir's done-marker when it holds
    this build already, else None). A corpus of the stdlib's sources (this one, data/pystdlib_bytes)
    starts here; a folder that holds another build is said to be rebuilt."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        raise FileNotFoundError(f"stdlib folder {root} not found")
    rels = list_sources(root, include_tests)
    params = {
        "source": str(root),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "fingerprint": fingerprint(root, rels),
        "include_tests": include_tests,
        "val_fraction": val_fraction,
        "split": "sha256(relative path) per document",
        "tokenizer": tokenizer,
    }
    done = prepared_already(out_dir, params, force, log, lambda done: (
        f" [{done['documents']['train'] + done['documents']['val']:,} documents, {params['python']}]"))
    old = read_done(out_dir)
    if done is None and old is not None and not force:
        log(f"{out_dir} was prepared from different inputs ({old['params'].get('python')}, "
            f"{old['params'].get('source')}); rebuilding")
    return root, rels, params, done


def prepare(root=None, out_dir=HERE, val_fraction=VAL_FRACTION, include_tests=True, force=False,
            num_threads=None, log=print) -> dict:
    out_dir = Path(out_dir)
    root, rels, params, done = plan_build(root, out_dir, val_fraction, include_tests, force, log, "gpt2")
    if done is not None:
        return done

    t0 = time.time()
    mark_unfinished(out_dir)
    docs, skipped = [], []
    for rel in rels:
        text = read_source(root / rel)
        if text is None:
            skipped.append(rel)
        elif text.strip():
            docs.append((rel, text))
    n_empty = len(rels) - len(skipped) - len(docs)
    t_read = time.time()

    import numpy as np

    enc = gpt2()
    ids = enc.encode_ordinary_batch([t for _, t in docs], num_threads=num_threads or os.cpu_count() or 1)
    t_enc = time.time()

    lengths = {"train": [], "val": []}
    parts = {"train": [], "val": []}
    rows = []
    for (rel, _), toks in zip(docs, ids):
        split = "val" if is_val(rel, val_fraction) else "train"
        parts[split].append(np.asarray(toks, dtype=np.uint16))
        parts[split].append(np.array([EOT_TOKEN], dtype=np.uint16))
        lengths[split].append(len(toks))
        rows.append(f"{split}\t{len(toks)}\t{rel}\n")
    counts = {}
    for split in ("train", "val"):
        arr = np.concatenate(parts[split]) if parts[split] else np.zeros(0, np.uint16)
        write_tokens(out_dir / f"{split}.bin", arr)
        counts[split] = int(arr.size)
    write_bytes_atomic(out_dir / "documents.tsv", ("split\ttokens\tpath\n" + "".join(rows)).encode())

    all_len = np.array(lengths["train"] + lengths["val"], dtype=np.int64)
    total = max(int(all_len.sum()), 1)
    stats = {
        "median_document_tokens": int(np.median(all_len)) if all_len.size else 0,
        "max_document_tokens": int(all_len.max()) if all_len.size else 0,
        "share_of_tokens_in_documents_ge_1024": round(float(all_len[all_len >= 1024].sum()) / total, 4),
        "share_of_tokens_in_documents_ge_4096": round(float(all_len[all_len >= 4096].sum()) / total, 4),
    }
    done = {
        "params": params,
        "train_tokens": counts["train"],  # including one <|endoftext|> per document
        "val_tokens": counts["val"],
        "documents": {"train": len(lengths["train"]), "val": len(lengths["val"])},
        "files_scanned": len(rels),
        "files_skipped_undecodable": skipped,
        "files_empty": n_empty,
        "source_characters": sum(len(t) for _, t in docs),
        "document_stats": stats,
        "dtype": "uint16",
        "vocab_size": enc.n_vocab,
        "files": sizes(out_dir, ["train.bin", "val.bin", "documents.tsv"]),
        "seconds": {"read": round(t_read - t0, 2), "encode": round(t_enc - t_read, 2),
                    "total": round(time.time() - t0, 2)},
    }
    write_json_atomic(out_dir / DONE, done)
    log(f"wrote {out_dir}: {describe_done(done)}")
    log(f"  {params['python']} stdlib at {root}: {len(rels):,} .py files scanned, "
        f"{done['documents']['train']:,} train + {done['documents']['val']:,} val documents, "
        f"{n_empty} empty and {len(skipped)} undecodable skipped")
    log(f"  median document {stats['median_document_tokens']:,} tokens, max {stats['max_document_tokens']:,}; "
        f"{stats['share_of_tokens_in_documents_ge_1024']:.1%} of tokens in documents >= 1024 tokens, "
        f"{stats['share_of_tokens_in_documents_ge_4096']:.1%} in documents >= 4096")
    log(f"  took {done['seconds']['total']} s (read {done['seconds']['read']} s, encode {done['seconds']['encode']} s)")
    if counts["train"] + counts["val"] < MIN_TOKENS_WANTED:
        log(f"  warning: only {counts['train'] + counts['val']:,} tokens (< {MIN_TOKENS_WANTED:,}); "
            f"this Python's stdlib is small (no test suite installed?)")
    return done


def command_line(prepare, description, out_dir, argv=None):
    """Run `prepare` (this file's, or data/pystdlib_bytes') with the options of the command line."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", default=None, help="stdlib folder (default: this interpreter's, %s)" % default_root())
    p.add_argument("--out_dir", default=str(out_dir), help="where the outputs go (default: %(default)s)")
    p.add_argument("--val_fraction", type=float, default=VAL_FRACTION)
    p.add_argument("--no_tests", action="store_true", help="leave out test/, tests/ and idle_test/ folders")
    p.add_argument("--force", action="store_true", help="redo even if already prepared")
    a = p.parse_args(argv)
    prepare(a.root, a.out_dir, a.val_fraction, include_tests=not a.no_tests, force=a.force)


def main(argv=None):
    command_line(prepare, __doc__.split("\n")[0], HERE, argv)


if __name__ == "__main__":
    main()
