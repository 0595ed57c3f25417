"""The Python standard library's own source as raw bytes: vocabulary 256, no tokenizer. No download.

The same documents as data/pystdlib (every .py file under the running interpreter's stdlib folder,
site-packages and pydoc_data/ left out, the same split by sha256 of the relative path), each one the
UTF-8 bytes of its source text (read as data/pystdlib reads it: its PEP 263 coding honoured, CRLF made
LF) followed by one 0 byte. Python source cannot hold a 0 byte, so it marks the end of a document as
<|endoftext|> does in the BPE corpus; a file that holds one anyway is left out and listed in done.json.

Token ids are the byte values, stored as uint16 as every dataset here is (train.py reads them so), and
meta.pkl is the character vocabulary of sample.py's char codec: id i is chr(i) (latin-1), so every
byte is one character. Code is almost all ASCII, which prints as itself; a multi-byte UTF-8 character
prints as its bytes' latin-1 characters.

On CPython 3.11.7 it is 29,722,102 train / 1,047,848 val bytes in 1,678 / 80 documents.

    python data/pystdlib_bytes/prepare.py              # from the repo root (or from inside this folder)
    python data/pystdlib_bytes/prepare.py --no_tests   # without Lib/test etc.

Outputs: train.bin, val.bin, meta.pkl, documents.tsv (split, bytes, path for every document),
done.json (written last). Idempotent: re-running with the same interpreter and options does nothing.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.bpe import (DONE, describe_done, mark_unfinished, sizes, write_bytes_atomic,  # noqa: E402
                      write_json_atomic, write_tokens)
from data.pystdlib.prepare import VAL_FRACTION, command_line, is_val, plan_build, read_source  # noqa: E402

END_OF_DOCUMENT = 0
VOCAB_SIZE = 256
OUTPUTS = ["train.bin", "val.bin", "meta.pkl", "documents.tsv"]


def vocabulary():
    """meta.pkl's contents: byte value i is the character chr(i), its latin-1 decoding."""
    itos = {i: bytes([i]).decode("latin-1") for i in range(VOCAB_SIZE)}
    return {"vocab_size": VOCAB_SIZE, "itos": itos, "stoi": {c: i for i, c in itos.items()}}


def prepare(root=None, out_dir=HERE, val_fraction=VAL_FRACTION, include_tests=True, force=False, log=print) -> dict:
    out_dir = Path(out_dir)
    root, rels, params, done = plan_build(root, out_dir, val_fraction, include_tests, force, log,
                                          "bytes of the UTF-8 text, 0 after each document")
    if done is not None:
        return done

    import numpy as np

    t0 = time.time()
    mark_unfinished(out_dir)
    parts, counts, rows = {"train": [], "val": []}, {"train": 0, "val": 0}, []
    skipped, with_zero, empty = [], [], 0
    for rel in rels:
        text = read_source(root / rel)
        if text is None:
            skipped.append(rel)
            continue
        if not text.strip():
            empty += 1
            continue
        data = text.encode("utf-8")
        if bytes([END_OF_DOCUMENT]) in data:
            with_zero.append(rel)
            continue
        split = "val" if is_val(rel, val_fraction) else "train"
        parts[split].append(data + bytes([END_OF_DOCUMENT]))
        counts[split] += 1
        rows.append(f"{split}\t{len(data)}\t{rel}\n")
    tokens = {}
    for split in ("train", "val"):
        ids = np.frombuffer(b"".join(parts[split]), dtype=np.uint8)
        write_tokens(out_dir / f"{split}.bin", ids)
        tokens[split] = int(ids.size)
    write_bytes_atomic(out_dir / "meta.pkl", pickle.dumps(vocabulary()))
    write_bytes_atomic(out_dir / "documents.tsv", ("split\tbytes\tpath\n" + "".join(rows)).encode())
    done = {
        "params": params,
        "train_tokens": tokens["train"],  # including one end-of-document byte per document
        "val_tokens": tokens["val"],
        "documents": counts,
        "files_scanned": len(rels),
        "files_skipped_undecodable": skipped,
        "files_skipped_holding_a_zero_byte": with_zero,
        "files_empty": empty,
        "dtype": "uint16",
        "vocab_size": VOCAB_SIZE,
        "files": sizes(out_dir, OUTPUTS),
        "seconds": round(time.time() - t0, 2),
    }
    write_json_atomic(out_dir / DONE, done)
    log(f"wrote {out_dir}: {describe_done(done)}")
    log(f"  {params['python']} stdlib at {root}: {len(rels):,} .py files scanned, {counts['train']:,} train + "
        f"{counts['val']:,} val documents; {empty} empty, {len(skipped)} undecodable and {len(with_zero)} holding "
        f"a 0 byte left out; took {done['seconds']} s")
    return done


def main(argv=None):
    command_line(prepare, __doc__.split("\n")[0], HERE, argv)


if __name__ == "__main__":
    main()
