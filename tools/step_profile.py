"""Where a training step's time goes: wall time against GPU work, dense against a band pattern.

Builds the model of a train_speed.py config, as train.py would from the same arguments (random tokens;
the data do not change the work), runs its training step (forward, backward, AdamW; bf16 autocast)
eagerly or compiled, and prints per step:
  wall ms      CUDA events over --steps steps after warm-up
  GPU busy ms  the summed durations of the step's kernels (torch.profiler, CUPTI); one stream, so
               wall minus busy is time the GPU waited for the host
then the kernels that take most GPU time and the host ops that take most host time. When the wall
time of a pattern is above its GPU work, its step is bound by the host.

    python tools/step_profile.py                          # T = 1024, 6 x 8 x 512, batch 16, compiled
    python tools/step_profile.py --compile=0 --top=25
    python tools/step_profile.py --config=baby            # the baby GPT
"""
import argparse
import os
import sys

import torch
import triton

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path[:0] = [ROOT, TOOLS]
import train  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from train_speed import CONFIGS  # noqa: E402


def build(attn, args):
    argv = [a if a.startswith("--") else os.path.join(ROOT, a) for a in CONFIGS[args.config][1]]
    cfg = train.parse_args(argv + [f"--attn={attn}"])
    meta = train.load_dataset(cfg.dataset)[1]
    vocab = meta["vocab_size"] if meta else train.GPT2_VOCAB_SIZE
    torch.manual_seed(0)
    model = GPT(GPTConfig(**train.model_args_of(cfg, vocab))).to(args.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), args.device)
    compiled = torch.compile(model, mode=None if args.mode == "default" else args.mode) if args.compile else model
    x, y = (torch.randint(vocab, (cfg.batch_size, cfg.block_size), device=args.device) for _ in range(2))

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            _, loss = compiled(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def profile(attn, args):
    step = build(attn, args)
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        step()
    end.record()
    torch.cuda.synchronize()
    wall = start.elapsed_time(end) / args.steps
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / args.steps
    events = prof.key_averages()
    print(f"\n## {attn}: wall {wall:.2f} ms a step, GPU busy {busy:.2f} ms, GPU waiting {wall - busy:.2f} ms")
    print(events.table(sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=70))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=70))
    return wall, busy


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", default="dense,sp")
    ap.add_argument("--config", default="n1024", help=f"one of tools/train_speed.py's: {', '.join(CONFIGS)}")
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--mode", default="default", help="torch.compile's mode")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=15, help="rows of each table")
    args = ap.parse_args()
    args.device = "cuda"
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, vars(args), flush=True)
    rows = [(attn, *profile(attn, args)) for attn in args.patterns.split(",")]
    print("\n| pattern | wall ms a step | GPU busy ms | GPU waiting ms |\n| --- | ---: | ---: | ---: |")
    for attn, wall, busy in rows:
        print(f"| {attn} | {wall:.2f} | {busy:.2f} | {wall - busy:.2f} |")


if __name__ == "__main__":
    main()
