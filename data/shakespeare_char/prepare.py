"""
Tiny Shakespeare at the character level, in nanoGPT's format: train.bin and val.bin hold uint16
token ids (the first 90% of the text for training, the last 10% for validation) and meta.pkl the
vocabulary (vocab_size, stoi, itos), plus done.json (counts and sizes) written last. The text ships
with the repository, so this works offline.

    python data/shakespeare_char/prepare.py            # from the repo root (or from inside this folder)
    python data/shakespeare_char/prepare.py --force    # redo even if done.json says it is finished

Idempotent: a second run sees done.json (with matching input hash and sizes) and does nothing.
"""
import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.bpe import (DONE, describe_done, mark_unfinished, prepared_already, sha256_file,  # noqa: E402
                      sizes, write_bytes_atomic, write_json_atomic, write_tokens)

SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9
OUTPUTS = ["train.bin", "val.bin", "meta.pkl"]


def prepare(out_dir=HERE, text_path=HERE / "input.txt", force=False, log=print):
    """Write out_dir/{train.bin, val.bin, meta.pkl, done.json}. Returns the done-marker dict."""
    out_dir, text_path = Path(out_dir), Path(text_path)
    digest = sha256_file(text_path)
    if digest != SHA256:
        raise SystemExit(f"{text_path} is not the expected Tiny Shakespeare (sha256 mismatch); "
                         "restore it with git checkout data/shakespeare_char/input.txt")
    params = {"input_sha256": digest, "train_fraction": TRAIN_FRACTION, "tokenizer": "characters"}
    done = prepared_already(out_dir, params, force, log)
    if done is not None:
        return done

    t0 = time.time()
    mark_unfinished(out_dir)
    text = text_path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(TRAIN_FRACTION * len(ids))
    write_tokens(out_dir / "train.bin", ids[:n])
    write_tokens(out_dir / "val.bin", ids[n:])
    write_bytes_atomic(out_dir / "meta.pkl", pickle.dumps({"vocab_size": len(chars), "itos": itos, "stoi": stoi}))
    done = {"params": params, "input": str(text_path), "characters": len(text), "train_tokens": n,
            "val_tokens": len(ids) - n, "dtype": "uint16", "vocab_size": len(chars),
            "files": sizes(out_dir, OUTPUTS), "seconds": round(time.time() - t0, 2)}
    write_json_atomic(out_dir / DONE, done)  # written last: marks the folder finished
    log(f"wrote {out_dir}: {describe_done(done)}, vocab of {len(chars)} characters")
    return done


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--out_dir", default=str(HERE), help="where the outputs go (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="redo even if already prepared")
    a = p.parse_args(argv)
    prepare(a.out_dir, force=a.force)


if __name__ == "__main__":
    main()
