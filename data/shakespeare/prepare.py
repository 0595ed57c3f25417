"""Tiny Shakespeare in GPT-2 BPE tokens (like nanoGPT's data/shakespeare/prepare.py), fully offline.

Reads data/shakespeare_char/input.txt (the text already shipped for the char-level model), splits it
90/10 by characters (first 90 % train, last 10 % val), encodes each part with the GPT-2 BPE from
data/bpe.py and writes train.bin / val.bin (uint16) plus done.json next to this script.
Expected: train 301,966 tokens, val 36,059 tokens.

    python data/shakespeare/prepare.py            # from the repo root (or from inside data/shakespeare)
    python data/shakespeare/prepare.py --force    # redo even if done.json says it is finished

Idempotent: a second run sees done.json (with matching input hash and sizes) and does nothing.
No meta.pkl is written: train.py then uses GPT-2's vocab_size (50304 padded).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.bpe import (DONE, describe_done, gpt2, mark_unfinished, prepared_already,  # noqa: E402
                      sha256_file, sizes, write_json_atomic, write_tokens)

DEFAULT_INPUT = ROOT / "data" / "shakespeare_char" / "input.txt"
INPUT_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def prepare(input_path=DEFAULT_INPUT, out_dir=HERE, force=False, log=print) -> dict:
    """Encode input_path into out_dir/{train,val}.bin. Returns the done-marker dict."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path} not found (it ships with the repo under data/shakespeare_char/)")
    digest = sha256_file(input_path)
    if digest != INPUT_SHA256:
        log(f"note: {input_path} is not the standard Tiny Shakespeare (sha256 {digest[:12]}...)")
    params = {"input_sha256": digest, "train_fraction": TRAIN_FRACTION, "tokenizer": "gpt2"}

    done = prepared_already(out_dir, params, force, log)
    if done is not None:
        return done

    t0 = time.time()
    mark_unfinished(out_dir)
    data = input_path.read_text(encoding="utf-8")
    n = len(data)
    enc = gpt2()
    train_ids = enc.encode_ordinary(data[: int(n * TRAIN_FRACTION)])
    val_ids = enc.encode_ordinary(data[int(n * TRAIN_FRACTION):])
    write_tokens(out_dir / "train.bin", train_ids)
    write_tokens(out_dir / "val.bin", val_ids)
    done = {
        "params": params,
        "input": str(input_path),
        "characters": n,
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "dtype": "uint16",
        "vocab_size": enc.n_vocab,
        "files": sizes(out_dir, ["train.bin", "val.bin"]),
        "seconds": round(time.time() - t0, 2),
    }
    write_json_atomic(out_dir / DONE, done)  # written last: marks the folder finished
    log(f"wrote {out_dir}: {describe_done(done)}, from {n:,} characters in {done['seconds']} s")
    return done


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", default=str(DEFAULT_INPUT), help="text file (default: %(default)s)")
    p.add_argument("--out_dir", default=str(HERE), help="where train.bin/val.bin go (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="redo even if already prepared")
    a = p.parse_args(argv)
    prepare(a.input, a.out_dir, force=a.force)


if __name__ == "__main__":
    main()
