"""Where the host time of an eager band_attention call goes (one CUDA GPU).

At a tiny shape, (1, 2, 128, 64), each kernel takes a few microseconds of GPU time, so the wall time of
many calls queued without a sync is the host's time a call. This prints, twice and interleaved so that
the host's drift shows, the host time a forward and a forward + backward call of SDPA's cuDNN attention
and of band_attention in four launch variants:
  jit, jit_ptr          every launch through Triton's JIT, tiles through TMA descriptors / pointers
  direct, direct_ptr    kernel_launch.launch's direct launches of the compiled binaries (the default)
(the default picks descriptors or pointers by the size of the call: kernel_launch.TMA_MIN_TILES). Then the
eager forward + backward (triton.testing.do_bench, host included) at learner shapes, and a cProfile of
the default call with autograd's multithreading off, so that its backward runs in this thread.

    python bench/host_time.py          # bench/results/kernel/host_time_h200.log
"""
import cProfile
import os
import pstats
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
from lib import kernel_launch  # noqa: E402
from bench_kernel import host_us  # noqa: E402
from model import head_bands  # noqa: E402

REAL_LAUNCH, REAL_TMA = kernel_launch.launch, kernel_launch.tma_on


def jit_launch(jit_kernel, plan, args, ints):
    jit_kernel[(plan.schedule.shape[0] * ints[-3],)](*args, *ints, **plan.meta)


def variant(name):
    """Switch lib/kernel_launch.py to one launch variant (plans are made again, since they hold the tile path)."""
    kernel_launch.plan.cache_clear()
    kernel_launch.launch = jit_launch if name.startswith("jit") else REAL_LAUNCH
    kernel_launch.tma_on = (lambda device: False) if name.endswith("_ptr") else REAL_TMA
    if name in ("jit", "direct"):
        kernel_launch.TMA_MIN_TILES = 0  # descriptors whatever the size


VARIANTS = ("jit", "jit_ptr", "direct", "direct_ptr")


def inputs(B, H, T, D=64):
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    return q, k, v, do


def sdpa(q, k, v):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def fwd_bwd(fn, q, k, v, do):
    def run():
        torch.autograd.grad(fn(q, k, v), (q, k, v), do)
    return run


def main():
    if not torch.cuda.is_available():
        sys.exit("bench/host_time.py times CUDA launches: it needs a CUDA GPU "
                 "(bench/dispatch_cost.py measures the Python around them on any machine)")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    min_tiles = kernel_launch.TMA_MIN_TILES
    q, k, v, do = inputs(1, 2, 128)
    bands = kernel.normalize_bands(head_bands(2, 128, "sp"), 2)
    print("host time a call at (1, 2, 128, 64), us")
    for rep in range(2):
        f = lambda: sdpa(q, k, v)  # noqa: E731
        print(f"[{rep}] sdpa cudnn    fwd {host_us(f, 300):7.1f}  fwd+bwd {host_us(fwd_bwd(sdpa, q, k, v, do), 300):7.1f}",
              flush=True)
        for name in VARIANTS:
            variant(name)
            band = lambda q, k, v: kernel.band_attention(q, k, v, bands)  # noqa: E731
            print(f"[{rep}] band {name:10s} fwd {host_us(lambda: band(q, k, v), 300):7.1f}  "
                  f"fwd+bwd {host_us(fwd_bwd(band, q, k, v, do), 300):7.1f}", flush=True)
            kernel_launch.TMA_MIN_TILES = min_tiles
    variant("default")
    print("eager forward + backward, ms (do_bench median, host included)")
    for (B, H, T), pattern in (((8, 12, 1024), "sp"), ((8, 12, 1024), "sp_exclusive"), ((64, 6, 256), "sp")):
        q, k, v, do = inputs(B, H, T)
        bands = kernel.normalize_bands(head_bands(H, T, pattern), H)
        band = lambda q, k, v: kernel.band_attention(q, k, v, bands)  # noqa: E731
        cells = [f"sdpa cudnn {triton.testing.do_bench(fwd_bwd(sdpa, q, k, v, do), return_mode='median'):.3f}"]
        for name in VARIANTS:
            variant(name)
            cells.append(f"{name} {triton.testing.do_bench(fwd_bwd(band, q, k, v, do), return_mode='median'):.3f}")
            kernel_launch.TMA_MIN_TILES = min_tiles
        variant("default")
        cells.append(f"default {triton.testing.do_bench(fwd_bwd(band, q, k, v, do), return_mode='median'):.3f}")
        print(f"({B}, {H}, {T}, 64) {pattern}: " + ", ".join(cells), flush=True)
    q, k, v, do = inputs(1, 2, 128)
    bands = kernel.normalize_bands(head_bands(2, 128, "sp"), 2)
    run = fwd_bwd(lambda q, k, v: kernel.band_attention(q, k, v, bands), q, k, v, do)
    torch.autograd.set_multithreading_enabled(False)
    for _ in range(20):
        run()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(300):
        run()
    profile.disable()
    torch.cuda.synchronize()
    print("--- cProfile of 300 default forward + backward calls (autograd multithreading off)")
    pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
