"""
Tiny Shakespeare at the character level, in nanoGPT's format: train.bin and val.bin hold uint16
token ids (the first 90% of the text for training, the last 10% for validation) and meta.pkl the
vocabulary (vocab_size, stoi, itos). The text ships with the repository, so this works offline.
Running it again when the files are complete does nothing.
"""
import hashlib
import os
import pickle

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def write_atomic(path, data):
    """Write bytes to path through a temporary file, so a partial file never carries the final name."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def prepare(out_dir=HERE, text_path=os.path.join(HERE, "input.txt")):
    outputs = [os.path.join(out_dir, n) for n in ("train.bin", "val.bin", "meta.pkl")]
    if all(os.path.exists(p) for p in outputs):
        print(f"{out_dir}: train.bin, val.bin and meta.pkl exist already; nothing to do")
        return
    raw = open(text_path, "rb").read()
    if hashlib.sha256(raw).hexdigest() != SHA256:
        raise SystemExit(f"{text_path} is not the expected Tiny Shakespeare (sha256 mismatch); "
                         "restore it with git checkout data/shakespeare_char/input.txt")
    text = raw.decode("utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    # meta.pkl is written last: its presence with the .bin files marks a finished preparation
    write_atomic(outputs[0], ids[:n].tobytes())
    write_atomic(outputs[1], ids[n:].tobytes())
    write_atomic(outputs[2], pickle.dumps({"vocab_size": len(chars), "itos": itos, "stoi": stoi}))
    print(f"wrote {out_dir}/train.bin ({n:,} tokens), val.bin ({len(ids) - n:,} tokens), "
          f"meta.pkl (vocab of {len(chars)} characters)")


if __name__ == "__main__":
    prepare()
