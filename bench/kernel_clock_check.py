"""Does the way a call is timed change the GPU's clock? bench/bench_kernel.py's GPU-only column sums kernel
durations from an eager loop; when a call's host time is near or above its GPU time (the band kernel's,
not cuDNN's or Flex's at T = 16384), the GPU idles between calls and may run at a higher clock than under the
sustained load of a GPU-bound loop. This times each method at (1, 16, 16384, 64) three ways, in one run:
  eager      median of triton.testing.do_bench (host included), bench_kernel's first column
  GPU-only   summed kernel durations from the profiler over 20 eager calls, bench_kernel's GPU-only column
  graph      bench_kernel.bench_graph: forward + backward through autograd captured in a CUDA graph (fresh
             leaf tensors that only the capture's stream touches), median of 10 replays: no host time and
             no idle GPU between calls, so every method runs under the same sustained load
and prints the SM clock (nvidia-smi, sampled every 20 ms in the background) over each measurement.
Run from the repository root: python3 bench/kernel_clock_check.py   (bench/results/kernel/clock_check_h200.log;
the logged run had its own copy of bench_kernel.bench_graph, whose median of the 10 replays averaged
the middle two)
"""
import os
import statistics
import subprocess
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_kernel import band_fn, bench, bench_gpu, bench_graph, fwd_bwd, sdpa  # noqa: E402
from torch.nn.attention import SDPBackend  # noqa: E402
from model import head_bands  # noqa: E402

torch._dynamo.config.recompile_limit = 1000


def main():
    if not torch.cuda.is_available():
        sys.exit("bench/kernel_clock_check.py watches a GPU's clock: it needs a CUDA GPU (and nvidia-smi)")
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader",
                            "-lms", "20"], stdout=subprocess.PIPE, text=True)
    marks = []
    B, H, T, D = 1, 16, 16384, 64
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    methods = [("cuDNN dense", sdpa(SDPBackend.CUDNN_ATTENTION))]
    for pattern in ("sp", "sp_exclusive"):
        bands = head_bands(H, T, pattern)
        methods += [(f"Flex {pattern}", band_fn(bands, "flex")), (f"Triton band {pattern}", band_fn(bands, "triton"))]
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__,
          time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
    rows = []
    for name, f in methods:
        run = fwd_bwd(f, q, k, v, do)
        res = {}
        for how, timer in (("eager", lambda: bench(run)), ("GPU-only", lambda: bench_gpu(run)),
                           ("graph", lambda: bench_graph(f, q, k, v, do, res["GPU-only"]))):
            t0 = time.time()
            try:
                res[how] = timer()
            except Exception as e:  # noqa: BLE001
                print(f"# {name} {how} failed: {type(e).__name__}: {e}", flush=True)
                res[how] = float("nan")
            marks.append((name, how, t0, time.time()))
        rows.append((name, res))
        print(f"{name}: eager {res['eager']:.3f} ms, GPU-only {res['GPU-only']:.3f} ms, graph {res['graph']:.3f} ms",
              flush=True)
    time.sleep(0.1)
    smi.terminate()
    samples = []
    for line in smi.stdout.read().splitlines():
        try:
            stamp, mhz, watts = [x.strip() for x in line.split(",")]
            t = time.mktime(time.strptime(stamp.split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + stamp.split(".")[1])
            samples.append((t, float(mhz.split()[0]), float(watts.split()[0])))
        except (ValueError, IndexError):
            continue
    print("SM clock (MHz) and power (W) during each measurement, median over nvidia-smi samples:")
    for name, how, t0, t1 in marks:
        inside = [(mhz, w) for t, mhz, w in samples if t0 <= t <= t1]  # both epoch seconds (nvidia-smi stamps local time)
        if inside:
            print(f"  {name} {how}: {statistics.median(m for m, _ in inside):.0f} MHz, "
                  f"{statistics.median(w for _, w in inside):.0f} W ({len(inside)} samples)")
        else:
            print(f"  {name} {how}: no samples")
    print("\n| method | eager ms | GPU-only ms | graph ms |\n| --- | ---: | ---: | ---: |")
    for name, res in rows:
        print(f"| {name} | {res['eager']:.3f} | {res['GPU-only']:.3f} | {res['graph']:.3f} |")


if __name__ == "__main__":
    main()
