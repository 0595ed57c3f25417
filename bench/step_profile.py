"""Where a training step's time goes: wall time against GPU work, dense against a band pattern.

Builds the model of a train_speed.py config, as train.py would from the same arguments (random tokens;
the data do not change the work), runs its training step (forward, backward, AdamW; bf16 autocast)
eagerly or compiled, and prints per step:
  wall ms      CUDA events over --steps steps after warm-up
  GPU busy ms  the summed durations of the step's kernels (torch.profiler, CUPTI); one stream, so
               wall minus busy is time the GPU waited for the host
  host ms      forward / backward / optimizer: how long each returns after (time.perf_counter, no
               sync). Where the step is bound by the host, these are the host's work; where the
               GPU is, they include waits for a full launch queue
then the kernels that take most GPU time and the host ops that take most host time. When the wall
time of a pattern is above its GPU work, its step is bound by the host.

--stub=1 skips the band kernel's launches (kernel_launch.launch does nothing, so its outputs are left
uninitialized): everything else in the step stays, our Python around the launches included. In a
step bound by the host, what its wall time falls by is what the launch calls cost the host.

    python bench/step_profile.py                          # T = 1024, 6 x 8 x 512, batch 16, compiled
    python bench/step_profile.py --compile=0 --top=25
    python bench/step_profile.py --config=baby            # the baby GPT
    python bench/step_profile.py --top=0 --stub=1         # no profiler; the band kernel not launched
"""
import argparse
import os
import sys
import time

import torch
import triton

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path[:0] = [ROOT, TOOLS]
from lib import kernel_launch  # noqa: E402
import train  # noqa: E402
import utils  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from train_speed import CONFIGS  # noqa: E402


def build(attn, args):
    argv = [a if a.startswith("--") else os.path.join(ROOT, a) for a in CONFIGS[args.config][1]]
    cfg = train.parse_args(argv + [f"--attn={attn}"])
    meta = utils.load_dataset(cfg.dataset)[1]
    vocab = meta["vocab_size"] if meta else utils.GPT2_VOCAB_SIZE
    torch.manual_seed(0)
    model = GPT(GPTConfig(**train.model_args_of(cfg, vocab))).to(args.device)
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), args.device)
    compiled = torch.compile(model, mode=None if args.mode == "default" else args.mode) if args.compile else model
    x, y = (torch.randint(vocab, (cfg.batch_size, cfg.block_size), device=args.device) for _ in range(2))

    def step(host=None):
        t0 = time.perf_counter()
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            _, loss = compiled(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if host is not None:
            for i, t in enumerate((t1 - t0, t2 - t1, time.perf_counter() - t2)):
                host[i] += t * 1e3
    return step


def profile(attn, args):
    step = build(attn, args)
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host = [0.0, 0.0, 0.0]
    start.record()
    for _ in range(args.steps):
        step(host)
    end.record()
    torch.cuda.synchronize()
    wall = start.elapsed_time(end) / args.steps
    host = [t / args.steps for t in host]
    if not args.top:  # no profile
        print(f"\n## {attn}: wall {wall:.2f} ms a step; host {host[0]:.2f} / {host[1]:.2f} / {host[2]:.2f} ms "
              "(forward / backward / optimizer)")
        return wall, None, host
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / args.steps
    events = prof.key_averages()
    print(f"\n## {attn}: wall {wall:.2f} ms a step, GPU busy {busy:.2f} ms, GPU waiting {wall - busy:.2f} ms; "
          f"host {host[0]:.2f} / {host[1]:.2f} / {host[2]:.2f} ms (forward / backward / optimizer)")
    print(events.table(sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=70))
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=70))
    return wall, busy, host


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patterns", default="dense,sp")
    ap.add_argument("--config", default="n1024", help=f"one of bench/train_speed.py's: {', '.join(CONFIGS)}")
    ap.add_argument("--compile", type=int, default=1)
    ap.add_argument("--mode", default="default", help="torch.compile's mode")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=15, help="rows of each table; 0: no profiler, no GPU busy time")
    ap.add_argument("--stub", type=int, default=0, help="1: skip the band kernel's launches")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error("it profiles training steps on a GPU: it needs a CUDA GPU")
    args.device = "cuda"
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, vars(args), flush=True)
    if args.stub:
        kernel_launch.launch = lambda *launch_args: None
    rows = [(attn, *profile(attn, args)) for attn in args.patterns.split(",")]
    print("\n| pattern | wall ms a step | GPU busy ms | GPU waiting ms | host ms: forward / backward / optimizer |"
          "\n| --- | ---: | ---: | ---: | ---: |")
    for attn, wall, busy, host in rows:
        gpu = ("-", "-") if busy is None else (f"{busy:.2f}", f"{wall - busy:.2f}")
        print(f"| {attn} | {wall:.2f} | {gpu[0]} | {gpu[1]} | {host[0]:.2f} / {host[1]:.2f} / {host[2]:.2f} |")


if __name__ == "__main__":
    main()
