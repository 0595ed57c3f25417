"""A real web corpus for users with a network: FineWeb-Edu (sample-10BT) streamed from the Hugging Face
Hub, GPT-2 BPE, resumable. Needs `pip install datasets` (an optional dependency, imported lazily).

    python data/fineweb_edu/prepare.py                         # first 100 M tokens (~200 MB of .bin)
    python data/fineweb_edu/prepare.py --max_tokens 500_000_000 --shard_tokens 20_000_000
    python data/fineweb_edu/prepare.py --hf_name OWNER/NAME --hf_config none --out_dir data/NAME  # another corpus

How it works (all of it but `hf_documents` is source-agnostic and tested offline on a local list):
  * Documents are streamed in order, encoded in batches with tiktoken's threaded encode_ordinary_batch,
    each followed by <|endoftext|>. A document goes to val iff sha256(text) falls below --val_fraction
    (deterministic, by document, never split across train and val).
  * Tokens accumulate into numbered shards of ~--shard_tokens tokens: shards/shard_00000.train.bin,
    .val.bin, and shard_00000.json (written last, records the document range and counts). A shard is
    finished only when its .json exists and the sizes match; a crash loses at most the shard in progress.
  * A restart skips finished shards (the source is reopened at the first unfinished document; for the
    Hub stream that is `IterableDataset.skip`), so an interrupted run ends with the same bytes as an
    uninterrupted one.
  * Once --max_tokens is reached (rounded up to whole shards) or the stream ends, the shards are joined
    into train.bin / val.bin, done.json is written, and the shards are deleted (--keep_shards keeps them).
  * No network or no `datasets`: one line on stderr, exit status 1; finished shards are kept.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.bpe import (DONE, EOT_TOKEN, describe_done, gpt2, mark_unfinished, prepared_already,  # noqa: E402
                      sizes, write_json_atomic, write_tokens)

HF_NAME, HF_CONFIG, HF_SPLIT, HF_TEXT = "HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text"
MAX_TOKENS = 100_000_000
SHARD_TOKENS = 10_000_000
VAL_FRACTION = 0.005
BATCH_DOCS = 512


class SourceError(RuntimeError):
    """The document source cannot be used (package missing, no network, stream broke)."""


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:200]}" if msg else type(e).__name__


def datasets_package():
    try:
        import datasets
    except ImportError:
        raise SourceError("the online corpus needs the optional `datasets` package: pip install datasets") from None
    return datasets


def hf_documents(skip=0, name=HF_NAME, config=HF_CONFIG, split=HF_SPLIT, text_field=HF_TEXT):
    """Texts of a Hugging Face dataset, streamed, starting at document index `skip`. The only online part."""
    datasets = datasets_package()
    where = f"{name}" + (f" ({config})" if config else "")
    try:
        ds = datasets.load_dataset(name, name=config, split=split, streaming=True)
        if skip:
            ds = ds.skip(skip)
        it = iter(ds)
    except Exception as e:
        raise SourceError(f"cannot open {where} on the Hugging Face Hub (no network?): {_one_line(e)}") from None

    def texts():
        try:
            for row in it:
                yield row[text_field]
        except Exception as e:
            raise SourceError(f"streaming {where} failed (network lost?): {_one_line(e)}; "
                              "re-run to resume from the last finished shard") from None
    return texts()


def is_val_text(text: str, val_fraction: float) -> bool:
    x = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64
    return x < val_fraction


class _Progress:
    """tqdm over tokens when tqdm is installed (it is whenever `datasets` is), else a line every 10 s."""

    def __init__(self, total, initial, enabled, log):
        self.bar, self.n, self.total, self.log, self.t = None, initial, total, log, time.time()
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="tokens")
            except ImportError:
                pass

    def update(self, k):
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled and time.time() - self.t > 10:
            self.t = time.time()
            self.log(f"  {self.n:,} / {self.total:,} tokens ({self.n / max(self.total, 1):.1%})")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _shard_names(k):
    return f"shard_{k:05d}.train.bin", f"shard_{k:05d}.val.bin", f"shard_{k:05d}.json"


def finished_shards(shard_dir) -> list[dict]:
    """Markers of the consecutive finished shards 0, 1, ... (stops at the first missing/inconsistent one)."""
    out = []
    for k in itertools.count():
        tr, va, js = _shard_names(k)
        try:
            m = json.loads((shard_dir / js).read_text())
        except (OSError, ValueError):
            return out
        if ((shard_dir / tr).stat().st_size if (shard_dir / tr).is_file() else -1) != 2 * m["train_tokens"] or \
           ((shard_dir / va).stat().st_size if (shard_dir / va).is_file() else -1) != 2 * m["val_tokens"]:
            return out
        out.append(m)


def build(open_docs, out_dir, *, params=None, max_tokens=MAX_TOKENS, shard_tokens=SHARD_TOKENS,
          val_fraction=VAL_FRACTION, batch_docs=BATCH_DOCS, keep_shards=False, force=False,
          progress=True, num_threads=None, log=print) -> dict:
    """Write out_dir/{train,val}.bin from documents, via resumable shards.

    open_docs(skip) must return an iterable of document texts starting at document index `skip`
    (the same order every time). Returns the done-marker dict.
    """
    import numpy as np

    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_params = {"source": params or {}, "shard_tokens": shard_tokens, "max_tokens": max_tokens,
                    "val_fraction": val_fraction, "tokenizer": "gpt2", "split": "sha256(text) per document"}
    done = prepared_already(out_dir, shard_params, force, log, lambda done: f" [{done['shards']} shards]")
    if done is not None:
        return done

    mark_unfinished(out_dir)
    pfile = shard_dir / "params.json"
    old = None
    if pfile.is_file():
        try:
            old = json.loads(pfile.read_text())
        except ValueError:
            pass
    if shard_dir.exists() and (force or old != shard_params):
        log(f"discarding {shard_dir} ({'--force' if force else 'made with other settings or unreadable'})")
        shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(pfile, shard_params)

    markers = finished_shards(shard_dir)
    total = sum(m["train_tokens"] + m["val_tokens"] for m in markers)
    next_doc = markers[-1]["end_doc"] if markers else 0
    stream_ended = bool(markers) and markers[-1]["last"]
    if markers:
        log(f"resuming: {len(markers)} finished shard(s), {total:,} tokens, next document {next_doc:,}")

    t0 = time.time()
    if not stream_ended and total < max_tokens:
        enc = gpt2()
        try:
            docs = iter(open_docs(next_doc))
        except SourceError:
            if not markers:  # nothing done yet: leave no empty shards/ folder behind
                shutil.rmtree(shard_dir, ignore_errors=True)
            raise
        bar = _Progress(max_tokens, total, progress, log)
        buf = {"train": [], "val": []}
        cnt = {"train": 0, "val": 0, "docs": 0}
        start_doc, doc_idx = next_doc, next_doc

        def flush(end_doc, last):
            nonlocal total, start_doc
            k = len(markers)
            tr, va, js = _shard_names(k)
            for split, name in (("train", tr), ("val", va)):
                arr = np.concatenate(buf[split]) if buf[split] else np.zeros(0, np.uint16)
                write_tokens(shard_dir / name, arr)
            m = {"shard": k, "start_doc": start_doc, "end_doc": end_doc, "documents": cnt["docs"],
                 "train_tokens": cnt["train"], "val_tokens": cnt["val"], "last": last}
            write_json_atomic(shard_dir / js, m)  # last: the shard counts as finished from here on
            markers.append(m)
            total += cnt["train"] + cnt["val"]
            buf["train"], buf["val"] = [], []
            cnt.update(train=0, val=0, docs=0)
            start_doc = end_doc

        try:
            while total < max_tokens:
                batch = list(itertools.islice(docs, batch_docs))
                if not batch:  # source exhausted: the (possibly empty) shard in progress is the last
                    flush(doc_idx, last=True)
                    stream_ended = True
                    break
                ids = enc.encode_ordinary_batch(batch, num_threads=num_threads or os.cpu_count() or 1)
                for text, toks in zip(batch, ids):
                    if total >= max_tokens:
                        break  # the rest of this batch is beyond the last shard
                    doc_idx += 1
                    split = "val" if is_val_text(text, val_fraction) else "train"
                    a = np.empty(len(toks) + 1, dtype=np.uint16)
                    a[:-1] = toks
                    a[-1] = EOT_TOKEN
                    buf[split].append(a)
                    cnt[split] += a.size
                    cnt["docs"] += 1
                    bar.update(a.size)
                    if cnt["train"] + cnt["val"] >= shard_tokens or total + cnt["train"] + cnt["val"] >= max_tokens:
                        flush(doc_idx, last=False)
        finally:
            bar.close()

    # join the shards into train.bin / val.bin (temp file + os.replace), then the done-marker
    for split in ("train", "val"):
        tmp = out_dir / f"{split}.bin.tmp"
        with open(tmp, "wb") as f:
            for m in markers:
                with open(shard_dir / _shard_names(m["shard"])[0 if split == "train" else 1], "rb") as g:
                    shutil.copyfileobj(g, f, 1 << 24)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_dir / f"{split}.bin")
    done = {
        "params": shard_params,
        "train_tokens": sum(m["train_tokens"] for m in markers),  # including one <|endoftext|> per document
        "val_tokens": sum(m["val_tokens"] for m in markers),
        "documents": sum(m["documents"] for m in markers),
        "source_documents_read": markers[-1]["end_doc"] if markers else 0,
        "shards": len(markers),
        "stream_ended": stream_ended,
        "dtype": "uint16",
        "files": sizes(out_dir, ["train.bin", "val.bin"]),
        "seconds_this_run": round(time.time() - t0, 2),
    }
    write_json_atomic(out_dir / DONE, done)
    if not keep_shards:
        shutil.rmtree(shard_dir)
    log(f"wrote {out_dir}: {describe_done(done)}; {done['documents']:,} documents in {done['shards']} shard(s)"
        f"{' (source exhausted)' if stream_ended else ''}, {done['seconds_this_run']} s this run")
    if done["val_tokens"] == 0 or done["train_tokens"] == 0:
        log("warning: a split is empty (too few documents for --val_fraction); train.py needs both")
    return done


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", default=str(HERE))
    p.add_argument("--max_tokens", type=lambda s: int(s.replace("_", "")), default=MAX_TOKENS,
                   help="stop after this many tokens, rounded up to a whole shard (default %(default)s)")
    p.add_argument("--shard_tokens", type=lambda s: int(s.replace("_", "")), default=SHARD_TOKENS)
    p.add_argument("--val_fraction", type=float, default=VAL_FRACTION)
    p.add_argument("--hf_name", default=HF_NAME)
    p.add_argument("--hf_config", default=HF_CONFIG, help="dataset config; 'none' for none")
    p.add_argument("--hf_split", default=HF_SPLIT)
    p.add_argument("--text_field", default=HF_TEXT)
    p.add_argument("--keep_shards", action="store_true", help="keep shards/ after joining them")
    p.add_argument("--force", action="store_true", help="start over, discarding finished shards")
    a = p.parse_args(argv)
    config = None if a.hf_config.lower() == "none" else a.hf_config
    src = {"hf_name": a.hf_name, "hf_config": config, "hf_split": a.hf_split, "text_field": a.text_field}
    try:
        if not os.path.exists(a.out_dir):  # no folder left behind for a corpus that cannot be fetched
            datasets_package()
        build(lambda skip: hf_documents(skip, a.hf_name, config, a.hf_split, a.text_field), a.out_dir,
              params=src, max_tokens=a.max_tokens, shard_tokens=a.shard_tokens, val_fraction=a.val_fraction,
              keep_shards=a.keep_shards, force=a.force)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: finished shards are kept, re-run the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
