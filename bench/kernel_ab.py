"""A/B on one GPU: kernel.py against another version of it, bf16, the shapes of bench/bench_kernel.py.

For each shape and pattern: the forward + backward through autograd as a CUDA graph (GPU time alone,
bench_kernel.bench_graph) and as an eager call (host included), for both versions, and the largest
difference of their outputs and gradients. Only the public band_attention is called, so any two
versions of kernel.py compare. Run it twice: a difference smaller than the two runs' spread is noise.

Run from the repository root with the other version next to kernel.py, its operator names renamed
so that both can load, and with its own copy of lib/kernel_launch.py (the launch machinery caches each
shape's compiled binary: two versions sharing it would run one binary); for example commit X's:
    git show X:kernel.py | sed 's/"band_attention::/"band_attention_b::/; s/ops\.band_attention\./ops.band_attention_b./; s/from lib import kernel_launch as launch/import kernel_launch_b as launch/' > kernel_b.py
    git show X:lib/kernel_launch.py > kernel_launch_b.py
    python3 bench/kernel_ab.py kernel_b
"""
import importlib
import importlib.util
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
from bench_kernel import PATTERNS, SHAPES, bench, bench_graph, fwd_bwd  # noqa: E402
from model import head_bands  # noqa: E402

if not torch.cuda.is_available():
    sys.exit("bench/kernel_ab.py times kernels on a GPU: it needs a CUDA GPU")
name = sys.argv[1] if len(sys.argv) > 1 else "kernel_b"
if importlib.util.find_spec(name) is None:
    sys.exit(f"no module {name!r} next to kernel.py: make it with the `git show` line of this file's docstring")
other = importlib.import_module(name)
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, f"kernel vs {other.__name__}", flush=True)
print("| B, H, T, D | pattern | graph ms: kernel / B | B speed-up | eager ms: kernel / B | max diff |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for (B, H, T, D) in SHAPES:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    for pattern in PATTERNS:
        bands = kernel.normalize_bands(head_bands(H, T, pattern), H)  # once, as the model does
        res = {}
        for name, mod in (("main", kernel), ("b", other)):
            f = lambda q, k, v, mod=mod: mod.band_attention(q, k, v, bands, backend="triton")  # noqa: E731
            o = f(q, k, v)
            eager = bench(fwd_bwd(f, q, k, v, do))
            res[name] = (o, *torch.autograd.grad(o, (q, k, v), do), bench_graph(f, q, k, v, do, eager), eager)
        diff = max((a - b).abs().max().item() for a, b in zip(res["main"][:4], res["b"][:4]))
        (gm, em), (gb, eb) = res["main"][4:], res["b"][4:]
        print(f"| {B}, {H}, {T}, {D} | {pattern} | {gm:.3f} / {gb:.3f} | {gm / gb:.2f}x | {em:.3f} / {eb:.3f} "
              f"| {diff:.2e} |", flush=True)
