"""
Whole-model speed, the way a user trains and samples: nanoGPT's bench/bench.py for SPAttention.

    python bench/bench.py                                   # training table + decoding table, one CUDA GPU
    python bench/bench.py --T=1024,4096 --variants=dense,triton_sp_exclusive --what=train
    python bench/bench.py --device=cpu --tiny               # a smoke run of the script (no meaningful timings;
                                                      # dense and no_attention: the others train on CUDA only)

Training: tokens/s, MFU and peak GPU memory of full training steps (forward, backward, fused AdamW)
of a GPT-2-small-shaped model (12 layers, 12 heads, 768 wide, vocab 50304), torch.compile and bf16
autocast, the same number of tokens in every step at every context length T, for
  dense                  causal attention through SDPA (cuDNN / FlashAttention)
  flex_sp, flex_sp_exclusive      SPAttention on FlexAttention (the paper's approach)
  triton_sp, triton_sp_exclusive  SPAttention on this repository's Triton band kernel
  no_attention           the same model with the score computation removed (attention output = v):
                         the ceiling any attention kernel can approach
Steps are timed with CUDA events after warm-up steps, on random tokens.

Decoding: tokens/s of GPT.generate with the KV cache (as sample.py runs it), on a GPU with each
one-token step replayed from a CUDA graph and without, a model of block_size = context, the prompt
filling the context but for the generated tokens, dense vs sp.
"""

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from model import GPT, GPTConfig  # noqa: E402

VARIANTS = {
    "dense": dict(attn="dense"),
    "flex_sp": dict(attn="sp", attn_backend="flex"),
    "flex_sp_exclusive": dict(attn="sp_exclusive", attn_backend="flex"),
    "triton_sp": dict(attn="sp", attn_backend="triton"),
    "triton_sp_exclusive": dict(attn="sp_exclusive", attn_backend="triton"),
    "no_attention": dict(attn="dense"),
}
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50304, bias=False, dropout=0.0)
TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=512, bias=False, dropout=0.0)


def remove_scores(model):
    """The attention-free ceiling: every attention layer outputs its values through its output
    projection; the qkv projection, MLPs, norms, embeddings and optimizer are unchanged."""
    for block in model.transformer.h:
        attn = block.attn

        def forward(x, start_pos=None, attn=attn):
            v = attn.c_attn(x)[..., 2 * attn.n_embd:]
            return attn.resid_dropout(attn.c_proj(v))
        attn.forward = forward


class Timer:
    """Seconds of the work queued between start() and stop(): CUDA events on a GPU, else the clock."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")

    def start(self):
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin = time.perf_counter()

    def stop(self):
        if not self.cuda:
            return time.perf_counter() - self.begin
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self.begin.elapsed_time(end) / 1e3


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()


def bench_train(variant, T, shape, args):
    cfg = GPTConfig(block_size=T, **shape, **VARIANTS[variant])
    model = GPT(cfg).to(args.device)
    if variant == "no_attention":
        remove_scores(model)
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    step_model = torch.compile(model) if args.compile else model
    micro_tokens = max(T, args.micro_tokens)
    batch, accum = micro_tokens // T, max(1, args.tokens_per_step // micro_tokens)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(cfg.vocab_size, (accum, batch, T + 1), generator=gen).to(args.device)
    x, y = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
    ctx = autocast(args.device)

    def step():
        for i in range(accum):
            with ctx:
                _, loss = step_model(x[i], y[i])
            (loss / accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timer = Timer(args.device)
    timer.start()
    for _ in range(args.iters):
        step()
    dt = timer.stop() / args.iters
    tokens = batch * accum * T
    # MFU counts attention FLOPs the ceiling does not do: meaningless there
    mfu = None if variant == "no_attention" else model.estimate_mfu(batch * accum, dt, T=T)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device_type == "cuda" else float("nan")
    return dict(tokens_per_s=tokens / dt, ms_per_step=dt * 1e3, mfu=mfu, peak_gib=peak, tokens_per_step=tokens)


@torch.no_grad()
def bench_decode(attn, context, batch, shape, args, cuda_graph=True):
    """Decode tokens/s: generate(prompt, n) minus generate(prompt, 2) on the same prompt (the same prefill
    and the first step, which records the CUDA graph of the step), over the n - 2 replayed steps."""
    model = GPT(GPTConfig(block_size=context, **shape, attn=attn)).to(args.device).eval()
    prompt = torch.randint(shape["vocab_size"], (batch, context - args.new_tokens), device=args.device)
    timer = Timer(args.device)
    with autocast(args.device):
        model.generate(prompt, args.new_tokens, top_k=1, cuda_graph=cuda_graph)  # warm-up: every shape
        timer.start()
        model.generate(prompt, 2, top_k=1, cuda_graph=cuda_graph)
        setup = timer.stop()
        timer.start()
        model.generate(prompt, args.new_tokens, top_k=1, cuda_graph=cuda_graph)
        total = timer.stop()
    steps, decode_s = args.new_tokens - 2, total - setup
    if decode_s <= 0:  # a busy host's noise exceeded the steps' time (a tiny run on a CPU): no measurement
        decode_s = float("nan")
    return dict(tokens_per_s=batch * steps / decode_s, prefill_ms=setup * 1e3, ms_per_step=decode_s / steps * 1e3)


def environment(device):
    card = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "CPU"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return dict(card=card, torch=torch.__version__, triton=triton_version,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def ints(text):
    """argparse type of a comma-separated list of positive integers."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=ints, default=None,
                    help="context lengths of the training table (1024,4096,16384,32768)")
    ap.add_argument("--variants", default=None,
                    help=f"from {','.join(VARIANTS)} (all; on a CPU the two that train there, dense,no_attention)")
    ap.add_argument("--what", default="train,decode")
    ap.add_argument("--contexts", type=ints, default=None, help="context lengths of the decoding table (1024,4096)")
    ap.add_argument("--tokens_per_step", type=int, default=None, help="tokens per optimizer step (65536; --tiny 512)")
    ap.add_argument("--micro_tokens", type=int, default=None, help="tokens per forward/backward (16384; --tiny 256)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--new_tokens", type=int, default=None,
                    help="tokens per timed generate, at least 3 (128; --tiny 8)")
    ap.add_argument("--decode_batch", type=ints, default=[1, 16], help="batch sizes of the decoding table")
    ap.add_argument("--device", default=None,
                    help="cuda when there is a GPU; without one, cpu with --tiny (else an error)")
    ap.add_argument("--compile", type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer toy model and small sizes (smoke test)")
    ap.add_argument("--out", default="out-bench/bench.json")
    args = ap.parse_args()
    shape = TINY if args.tiny else GPT2_SMALL
    # what the user left out: the defaults of the full benchmark, or of --tiny's smoke run
    args.tokens_per_step = args.tokens_per_step or (512 if args.tiny else 65536)
    args.micro_tokens = args.micro_tokens or (256 if args.tiny else 16384)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    args.T = args.T or ([64, 128] if args.tiny else [1024, 4096, 16384, 32768])
    args.contexts = args.contexts or ([64, 128] if args.tiny else [1024, 4096])
    if args.device is None:
        if not (torch.cuda.is_available() or args.tiny):
            ap.error("there is no CUDA GPU here, and the full benchmark (GPT-2 small up to T = 32768) would take "
                     "hours on a CPU: its smoke run is python bench/bench.py --device=cpu --tiny")
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    # FlexAttention has no backward on a CPU, and the Triton kernel runs on CUDA tensors only
    args.variants = args.variants or ("dense,no_attention" if args.device == "cpu" else ",".join(VARIANTS))
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose among {', '.join(VARIANTS)}")
    if not args.what or set(args.what.split(",")) - {"train", "decode"}:
        ap.error(f"--what takes train, decode or train,decode; got {args.what!r}")
    if args.new_tokens < 3:
        ap.error("--new_tokens must be at least 3: the timing subtracts a 2-token generate")
    if min(args.contexts) <= args.new_tokens:
        ap.error(f"every context must be longer than --new_tokens={args.new_tokens}: the prompt fills the "
                 f"context but for the generated tokens; got --contexts={','.join(map(str, args.contexts))}")
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    torch._dynamo.config.cache_size_limit = 64  # one compiled graph per variant and length

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)

    def save():  # after every row: a run stopped by a time limit keeps what it measured
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    env = environment(args.device)
    print(f"{env['card']}, torch {env['torch']}, triton {env['triton']}, {env['date']}")
    results = dict(env=env, args=vars(args), train=[], decode=[])
    if "train" in args.what:
        print("| T | variant | tokens/s | vs dense | ms/step | MFU | peak GiB |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for T in args.T:
            dense = None
            for variant in args.variants.split(","):
                try:
                    r = bench_train(variant, T, shape, args)
                except (torch.cuda.OutOfMemoryError, RuntimeError, ValueError) as e:
                    print(f"| {T} | {variant} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | | | |")
                    continue
                finally:
                    torch._dynamo.reset()
                    if args.device.startswith("cuda"):
                        torch.cuda.empty_cache()
                dense = r["tokens_per_s"] if variant == "dense" else dense
                ratio = f"{r['tokens_per_s'] / dense:.2f}x" if dense else ""
                mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] else "n/a"
                print(f"| {T} | {variant} | {r['tokens_per_s']:,.0f} | {ratio} | {r['ms_per_step']:.1f} | {mfu} | "
                      f"{r['peak_gib']:.1f} |", flush=True)
                results["train"].append(dict(T=T, variant=variant, **r))
                save()
    if "decode" in args.what:
        print("\n| context | batch | step | attn | decode tokens/s | vs dense | ms/step | prefill + first step ms |")
        print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
        graphs = (True, False) if args.device.startswith("cuda") else (False,)
        for context in args.contexts:
            for batch in args.decode_batch:
                for graph in graphs:
                    dense = None
                    for attn in ("dense", "sp"):
                        r = bench_decode(attn, context, batch, shape, args, cuda_graph=graph)
                        dense = r["tokens_per_s"] if attn == "dense" else dense
                        step = "CUDA graph" if graph else "eager"
                        print(f"| {context} | {batch} | {step} | {attn} | {r['tokens_per_s']:,.1f} | "
                              f"{r['tokens_per_s'] / dense:.2f}x | {r['ms_per_step']:.3f} | {r['prefill_ms']:.1f} |",
                              flush=True)
                        results["decode"].append(dict(context=context, batch=batch, cuda_graph=graph, attn=attn, **r))
                        save()
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
