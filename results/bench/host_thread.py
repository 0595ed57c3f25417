"""Is the eager backward's host time spent in autograd's device thread? (GPU needed)

    python results/bench/host_thread.py
"""
import os
import sys
import threading
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import kernel  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from host_time import CALLS, host_us, tiny_inputs  # noqa: E402


def main():
    q, k, v, do, bands, flat, scale = tiny_inputs()
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    o, lse = kernel._fwd_impl(qd, kd, vd, flat, scale)

    inside = {"t": 0.0, "n": 0}
    real_bwd = kernel._bwd_impl

    def timed_bwd(*a):
        t0 = time.perf_counter()
        r = real_bwd(*a)
        inside["t"] += time.perf_counter() - t0
        inside["n"] += 1
        return r

    band = lambda: kernel.band_attention(q, k, v, bands, backend="triton").backward(do)  # noqa: E731
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)  # noqa: E731
    print(f"{'band fwd+bwd':50s} {host_us(band, CALLS):8.1f} us")
    kernel._bwd_impl = timed_bwd
    inside.update(t=0.0, n=0)
    print(f"{'band fwd+bwd (timing _bwd_impl inside)':50s} {host_us(band, CALLS):8.1f} us;"
          f" _bwd_impl inside autograd: {inside['t'] / inside['n'] * 1e6:.1f} us")
    kernel._bwd_impl = real_bwd
    print(f"{'sdpa fwd+bwd':50s} {host_us(sdpa, CALLS):8.1f} us")
    with torch.autograd.set_multithreading_enabled(False):
        print(f"{'band fwd+bwd, autograd multithreading off':50s} {host_us(band, CALLS):8.1f} us")
        print(f"{'sdpa fwd+bwd, autograd multithreading off':50s} {host_us(sdpa, CALLS):8.1f} us")
    bwd_alone = lambda: real_bwd(do, qd, kd, vd, o, lse, flat, scale)  # noqa: E731
    print(f"{'_bwd_impl, main thread':50s} {host_us(bwd_alone, CALLS):8.1f} us")

    result = {}

    def worker():
        torch.cuda.set_device(q.device)
        result["us"] = host_us(bwd_alone, CALLS)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    print(f"{'_bwd_impl, another Python thread':50s} {result['us']:8.1f} us")


if __name__ == "__main__":
    main()
