"""A/B on one GPU: kernel.py against another version of it, bf16, the shapes of bench_kernel.py. Times:
median ms of triton.testing.do_bench (host included) and do_bench_cudagraph of the forward launch and of
the forward and backward launches without autograd (GPU time alone), and the largest difference of outputs
and gradients.

Run from the repository root with the other version next to kernel.py (its custom-op names renamed),
for example branch tma-switch as module kernel_b:
    git show tma-switch:kernel.py | sed 's/"band_attention::/"band_attention_b::/' > kernel_b.py
    python3 results/kernel_ab.py kernel_b
results/kernel_ab_tma_h200.log came from this script (then results/kernel_ab_tma.py) with kernel_tma.py.
"""
import importlib
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
from bench_kernel import SHAPES, PATTERNS, bench, fwd_bwd, fwd_only  # noqa: E402
from model import head_bands  # noqa: E402

other = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else "kernel_b")
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, f"main vs {other.__name__}", flush=True)
print("| B, H, T, D | pattern | main fwd / fwd+bwd / graph fwd / graph fwd+bwd | B (same) | B speed-up (same) |")
print("| --- | --- | --- | --- | --- |")
for (B, H, T, D) in SHAPES:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    for pattern in PATTERNS:
        bands = head_bands(H, T, pattern)
        res = {}
        for name, mod in (("main", kernel), ("b", other)):
            f = lambda q, k, v, mod=mod: mod.band_attention(q, k, v, bands, backend="triton")  # noqa: E731
            o = f(q, k, v)
            grads = torch.autograd.grad(o, (q, k, v), do)
            flat, scale = mod._flat_bands(mod.normalize_bands(bands, H)), D ** -0.5

            def launches(mod=mod, flat=flat, scale=scale):  # the kernels alone, no autograd
                o, lse = mod._fwd_impl(q, k, v, flat, scale)
                mod._bwd_impl(do, q, k, v, o, lse, flat, scale)
            graph = lambda fn: triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")  # noqa: E731
            res[name] = (o, grads, bench(fwd_only(f, q, k, v)), bench(fwd_bwd(f, q, k, v, do)),
                         graph(lambda mod=mod, flat=flat, scale=scale: mod._fwd_impl(q, k, v, flat, scale)),
                         graph(launches))
        diff = max((a - b).abs().max().item() for a, b in zip((res["main"][0],) + res["main"][1],
                                                               (res["b"][0],) + res["b"][1]))
        m, t = res["main"][2:], res["b"][2:]
        print(f"| {B}, {H}, {T}, {D} | {pattern} | {m[0]:.3f} / {m[1]:.3f} / {m[2]:.3f} / {m[3]:.3f} | {t[0]:.3f} / "
              f"{t[1]:.3f} / {t[2]:.3f} / {t[3]:.3f} | {m[0] / t[0]:.2f}x / {m[1] / t[1]:.2f}x / {m[2] / t[2]:.2f}x / "
              f"{m[3] / t[3]:.2f}x | max diff {diff:.2e}", flush=True)
