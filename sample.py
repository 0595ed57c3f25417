"""
Sample from a model trained with train.py.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3 --max_new_tokens=300
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --device=cpu
    python sample.py --help                           # every option, with its default

Generation uses the model's KV cache: each new token attends over the cached keys with exactly the
bands of a full forward pass. Prompts longer than block_size keep their last block_size tokens.
A prompt given as --start=TEXT is printed whole before each sample, as nanoGPT does; one read from
FILE:path is printed by its last SHOWN_PROMPT_CHARS characters only, after a note of its length,
so that a whole book given as a prompt does not bury the sample.
"""

import os
import sys
from contextlib import nullcontext

import torch

from model import ConfigError
from train import (DTYPES, load_checkpoint, model_of_checkpoint, option_line, parse_value, pick_device, pick_dtype,
                   print_help, stdout_gone, TrainConfig)

OPTIONS = [  # name, default, what it sets
    ("out_dir", "out", "the folder of ckpt.pt, as train.py's --out_dir"),
    ("start", "\n", "the prompt: TEXT, or FILE:path to read it from a file"),
    ("num_samples", 10, "how many samples to draw"),
    ("max_new_tokens", 500, "tokens generated per sample"),
    ("temperature", 0.8, "below 1 more predictable, above 1 more random"),
    ("top_k", 200, "draw each token from the top_k most likely ones only; 0: from all of them"),
    ("seed", 1337, "the random seed"),
    ("device", "auto", "auto, cpu, cuda, cuda:N or mps"),
    ("dtype", "auto", "auto (bf16 on CUDA when supported), float32, bfloat16 or float16"),
]
DEFAULTS = {name: default for name, default, _ in OPTIONS}
TYPES = {k: type(v) for k, v in DEFAULTS.items()}
SHOWN_PROMPT_CHARS = 200
USAGE = "usage: python sample.py [--key=value ...]"


def usage():
    return "\n".join([USAGE, "", "options (default, type):", *(option_line(*option) for option in OPTIONS)])


def parse_args(argv):
    opts = dict(DEFAULTS)
    for arg in argv:
        key, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not eq:
            raise ConfigError(f"argument {arg!r} must look like --key=value (--help lists the options)")
        if key not in opts:
            raise ConfigError(f"unknown option {key!r}; known options: {', '.join(opts)}")
        opts[key] = parse_value(key, text, TYPES[key])
    if opts["num_samples"] < 1 or opts["max_new_tokens"] < 1:
        raise ConfigError("--num_samples and --max_new_tokens must be at least 1")
    if not 0 < opts["temperature"] < float("inf"):  # also refuses nan, which would sample id 0 every time
        raise ConfigError(f"--temperature must be a finite number > 0, got {opts['temperature']}")
    if opts["top_k"] < 0:
        raise ConfigError(f"--top_k must be >= 0 (0: no cut), got {opts['top_k']}")
    if opts["dtype"] not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {opts['dtype']!r}")
    return opts


def load_model(out_dir, device):
    """The trained model of out_dir/ckpt.pt in eval mode on device, and the checkpoint."""
    path = os.path.join(out_dir, "ckpt.pt")
    # torch.load places tensors by device type alone for the CPU ("cpu:0" is no place it knows)
    ckpt = load_checkpoint(path, map_location="cpu" if torch.device(device).type == "cpu" else device)
    # the attention backend is a choice of this machine (e.g. no Triton on a CPU), not of the model
    model = model_of_checkpoint(ckpt, {**ckpt["model_args"], "attn_backend": "auto"}, path)
    return model.eval().to(device), ckpt


def get_codec(ckpt):
    """(encode, decode) of the checkpoint's tokens: its char vocabulary, or GPT-2 BPE (offline)."""
    meta = ckpt.get("meta")
    if meta:
        stoi, itos = meta["stoi"], meta["itos"]

        def encode(s):
            unknown = sorted(set(c for c in s if c not in stoi))
            if unknown:
                raise ConfigError(f"the prompt has characters outside this char-level model's vocabulary: "
                                  f"{''.join(unknown)!r}; use only characters of its training text")
            return [stoi[c] for c in s]
        return encode, lambda ids: "".join(itos[i] for i in ids)
    from data.bpe import gpt2
    enc = gpt2()
    return (lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})), enc.decode


def n_token_ids(ckpt):
    """How many ids the checkpoint's tokens have: a BPE model's vocab_size (50304) is padded for speed
    past GPT-2's 50257, and the padding ids decode to nothing, so they must not be drawn."""
    meta = ckpt.get("meta")
    if meta:
        return meta["vocab_size"]
    from data.bpe import gpt2
    return gpt2().n_vocab


def read_prompt(start):
    """(the prompt, the part of it to print, a note or None) for --start=TEXT or --start=FILE:path."""
    if not start.startswith("FILE:"):
        return start, start, None
    path = start[5:]
    if not os.path.isfile(path):
        raise ConfigError(f"prompt file {path!r} not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"prompt file {path!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if len(text) <= SHOWN_PROMPT_CHARS:
        return text, text, None
    note = f"[prompt: {len(text):,} characters from {path}, showing the last {SHOWN_PROMPT_CHARS}]"
    return text, text[-SHOWN_PROMPT_CHARS:], note


def main(argv):
    if "-h" in argv or "--help" in argv:
        print_help(usage())
        return
    opts = parse_args(argv)
    torch.manual_seed(opts["seed"])
    cfg = TrainConfig(device=opts["device"], dtype=opts["dtype"])
    device = pick_device(cfg)
    device_type = torch.device(device).type
    dtype = pick_dtype(cfg, device_type)
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type=device_type, dtype=ptdtype)

    model, ckpt = load_model(opts["out_dir"], device)
    encode, decode = get_codec(ckpt)
    n_ids = n_token_ids(ckpt)
    prompt, shown, note = read_prompt(opts["start"])
    if not prompt:
        raise ConfigError("the prompt is empty: give --start=TEXT with at least one character")
    # generate() reads only the last block_size tokens of a longer prompt, as nanoGPT's does; cropping
    # here gives the same samples without carrying the whole prompt through every step
    x = torch.tensor(encode(prompt), dtype=torch.long, device=device)[None, -model.config.block_size:]
    if note:
        print(note)
    with torch.no_grad(), ctx:
        for _ in range(opts["num_samples"]):
            y = model.generate(x, opts["max_new_tokens"], opts["temperature"], top_k=opts["top_k"] or None,
                               n_ids=n_ids)
            print(shown + decode(y[0, x.size(1):].tolist()))
            print("---------------")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
        sys.stdout.flush()  # here, so that a reader gone by now is caught below, not at the exit
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopped", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `sample.py | head`: the reader took what it wanted and left
        stdout_gone()
        sys.exit(141)  # what a shell reports for a process that SIGPIPE ended
