"""GPT-2 BPE tokenizer that works with no network, plus the small file helpers the prepare scripts share.

    from data.bpe import gpt2
    enc = gpt2()                       # tiktoken.Encoding, n_vocab 50257, eot_token 50256
    enc.encode_ordinary("Hello world") # [15496, 995]

Why the Encoding is built directly from the shipped files (data/gpt2/vocab.bpe, encoder.json) instead of
going through tiktoken.get_encoding("gpt2") + TIKTOKEN_CACHE_DIR:
  * get_encoding("gpt2") looks for the files in a cache folder (TIKTOKEN_CACHE_DIR, else a temp dir) and
    downloads them when they are missing. Making it offline means writing files into the user's cache or
    pointing a process-wide environment variable at a folder of ours -- both side effects on state we
    don't own, and a user's TIKTOKEN_CACHE_DIR that is empty or stale would still trigger a download.
  * Building the Encoding from the two files in the repo never touches the network or any cache, is the
    same on every machine, and costs ~0.2 s. The files are sha256-checked against the hashes tiktoken
    itself uses for GPT-2, so the result is token-for-token identical to get_encoding("gpt2").
So a user's TIKTOKEN_CACHE_DIR is irrelevant here (it is neither read nor written).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

GPT2_DIR = Path(__file__).resolve().parent / "gpt2"
# sha256 of the two files, the same hashes tiktoken_ext.openai_public.gpt2() checks.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
EOT_TOKEN = 50256  # <|endoftext|>
N_VOCAB = 50257

try:  # the pre-tokenisation regex tiktoken uses for gpt2/r50k
    from tiktoken_ext.openai_public import r50k_pat_str as _PAT_STR
except Exception:  # pragma: no cover - layout of tiktoken's plugin module changed
    _PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


@contextlib.contextmanager
def _tiktoken_cache_disabled():
    # tiktoken.load.read_file_cached copies even local files into its cache folder unless
    # TIKTOKEN_CACHE_DIR is the empty string; disable that for the duration of the load.
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


@functools.lru_cache(maxsize=None)
def gpt2():
    """The GPT-2 BPE as a tiktoken.Encoding, built from the files shipped in data/gpt2 (no network)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    vocab_bpe, encoder_json = GPT2_DIR / "vocab.bpe", GPT2_DIR / "encoder.json"
    for path, want in ((vocab_bpe, VOCAB_BPE_SHA256), (encoder_json, ENCODER_JSON_SHA256)):
        if not path.is_file():
            raise FileNotFoundError(f"GPT-2 BPE file missing: {path} (it ships with the repository)")
        got = sha256_file(path)
        if got != want:
            raise ValueError(f"GPT-2 BPE file {path} has sha256 {got}, expected {want} (corrupted?)")
    with _tiktoken_cache_disabled():
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=N_VOCAB,
    )


# ---------------------------------------------------------------------------------------------
# Helpers shared by data/*/prepare.py: atomic writes and the JSON done-marker.
#
# Protocol: a prepare script first deletes done.json, writes every output to "<name>.tmp" and
# os.replace()s it into place, and writes done.json (token counts, file sizes, inputs) LAST, also
# atomically. A folder is "finished" only if done.json exists, its `params` match the current run,
# and every file it lists has the recorded size. Anything else (a leftover .tmp, a .bin without a
# marker, a truncated .bin) is redone from scratch.
# ---------------------------------------------------------------------------------------------
DONE = "done.json"


def write_bytes_atomic(path, data) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_tokens(path, tokens) -> int:
    """Write a 1-D array of token ids as uint16 (GPT-2's 50257 ids fit), atomically. Returns bytes written."""
    import numpy as np

    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**16):
        raise ValueError("token ids do not fit in uint16")
    arr = arr.astype(np.uint16, copy=False)
    write_bytes_atomic(path, arr.tobytes())
    return arr.nbytes


def write_json_atomic(path, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def prepared_already(out_dir, params, force, log, detail=lambda done: ""):
    """out_dir's done-marker when the folder is finished and was made with `params` (never with
    `force`), after saying so in the log, with detail(done) appended; None when it must be built."""
    done = None if force else read_done(out_dir, params)
    if done is not None:
        log(f"already prepared, nothing to do: {out_dir}: {describe_done(done)}{detail(done)}")
    return done


def mark_unfinished(out_dir) -> None:
    """Make out_dir and remove its done-marker: from here on the folder counts as unfinished, until
    write_json_atomic puts the marker back as the preparation's last write."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / DONE).unlink(missing_ok=True)


def read_done(out_dir, params: dict | None = None):
    """The done-marker of out_dir if the folder is finished (and was made with `params`), else None."""
    out_dir = Path(out_dir)
    try:
        done = json.loads((out_dir / DONE).read_text())
    except (OSError, ValueError):
        return None
    if params is not None and done.get("params") != params:
        return None
    for name, size in done.get("files", {}).items():
        p = out_dir / name
        if not p.is_file() or p.stat().st_size != size:
            return None
    return done


def describe_done(done: dict) -> str:
    files = ", ".join(f"{n} {s / 1e6:.2f} MB" for n, s in sorted(done.get("files", {}).items()))
    return f"train {done['train_tokens']:,} tokens, val {done['val_tokens']:,} tokens ({files})"


def sizes(out_dir, names) -> dict:
    return {n: (Path(out_dir) / n).stat().st_size for n in names}
