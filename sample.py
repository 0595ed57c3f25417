"""
Sample from a model trained with train.py.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=3 --max_new_tokens=300
    python sample.py --out_dir=out-shakespeare-char --start=FILE:prompt.txt --device=cpu
    python sample.py --help                           # every setting, with its default

Generation uses the model's KV cache: each new token attends over the cached keys with exactly the
bands of a full forward pass. A prompt longer than block_size keeps its last block_size tokens. It
is printed before each sample, as nanoGPT does; one read from FILE:path only by its last
SHOWN_PROMPT_CHARS characters, after a note of its length, so that a whole book does not bury the sample.
"""

import os
import sys
from dataclasses import dataclass

import torch

from data.bpe import gpt2
from model import ConfigError
from utils import (DTYPES, load_checkpoint, model_of_checkpoint, one_line_errors, parse_config, print_help,
                   settings_help, setup_process)

SHOWN_PROMPT_CHARS = 200


@dataclass
class SampleConfig:
    out_dir: str = "out"               # the folder of ckpt.pt, as train.py's --out_dir
    start: str = "\n"                  # the prompt: TEXT, or FILE:path to read it from a file
    num_samples: int = 10              # how many samples to draw
    max_new_tokens: int = 500          # tokens generated per sample
    temperature: float = 0.8           # below 1 more predictable, above 1 more random
    top_k: int = 200                   # draw each token from the top_k most likely ones only; 0: from all of them
    seed: int = 1337                   # the random seed
    device: str = "auto"               # auto, cpu, cuda, cuda:N or mps
    dtype: str = "auto"                # auto (bf16 on CUDA when supported), float32, bfloat16 or float16


def parse_args(argv):
    """SampleConfig from --key=value arguments, checked."""
    cfg = parse_config(SampleConfig, argv, files=False)
    if cfg.num_samples < 1 or cfg.max_new_tokens < 1:
        raise ConfigError("--num_samples and --max_new_tokens must be at least 1")
    if not 0 < cfg.temperature < float("inf"):  # also refuses nan, which would sample id 0 every time
        raise ConfigError(f"--temperature must be a finite number > 0, got {cfg.temperature}")
    if cfg.top_k < 0:
        raise ConfigError(f"--top_k must be >= 0 (0: no cut), got {cfg.top_k}")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    return cfg


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
    if not ckpt["meta"]:
        enc = gpt2()
        return (lambda s: enc.encode(s, allowed_special={"<|endoftext|>"})), enc.decode
    stoi, itos = ckpt["meta"]["stoi"], ckpt["meta"]["itos"]

    def encode(s):
        unknown = sorted(set(c for c in s if c not in stoi))
        if unknown:
            raise ConfigError(f"the prompt has characters outside this char-level model's vocabulary: "
                              f"{''.join(unknown)!r}; use only characters of its training text")
        return [stoi[c] for c in s]
    return encode, lambda ids: "".join(itos[i] for i in ids)


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
        print_help("\n".join(["usage: python sample.py [--key=value ...]", "", "settings (default, type):",
                              settings_help(SampleConfig)]))
        return
    with one_line_errors():
        cfg = parse_args(argv)
        env = setup_process(cfg)  # the device and precision; torch's generator seeded with cfg.seed
        model, ckpt = load_model(cfg.out_dir, env.device)
        encode, decode = get_codec(ckpt)
        prompt, shown, note = read_prompt(cfg.start)
        if not prompt:
            raise ConfigError("the prompt is empty: give --start=TEXT with at least one character")
        # generate() reads only the last block_size tokens of a longer prompt, as nanoGPT's does; cropping
        # here gives the same samples without carrying the whole prompt through every step
        x = torch.tensor(encode(prompt), dtype=torch.long, device=env.device)[None, -model.config.block_size:]
        if note:
            print(note)
        # the ids that may be drawn: a BPE model's vocab_size (50304) is padded for speed past GPT-2's
        # 50257 tokens, and the padding ids decode to nothing
        n_ids = ckpt["meta"]["vocab_size"] if ckpt["meta"] else gpt2().n_vocab
        with torch.no_grad(), env.autocast:
            for _ in range(cfg.num_samples):
                y = model.generate(x, cfg.max_new_tokens, cfg.temperature, top_k=cfg.top_k or None, n_ids=n_ids)
                print(shown + decode(y[0, x.size(1):].tolist()))
                print("---------------")


if __name__ == "__main__":
    main(sys.argv[1:])
