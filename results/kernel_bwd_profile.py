"""GPU time of each kernel of the backward (torch profiler, mean of 20 calls after 5 warm-up calls),
for kernel.py and for other versions of it given as module names, bf16, at the shapes where the
targets are missed. Run from the repository root, for example against branch atomic-dq (a 5-matmul
backward whose dK/dV pass also reduce-adds dQ through TMA):
    git show atomic-dq:kernel.py | sed 's/"band_attention::/"band_attention_e::/' > kernel_e.py
    python3 results/kernel_bwd_profile.py kernel_e
results/kernel_atomic_dq_h200.log came from this code, run then as a file at the repository root (only
its imports differed: plain `import kernel`).
"""
import importlib
import os
import sys
import torch
from torch.profiler import profile, ProfilerActivity
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
from model import head_bands  # noqa: E402
mods = [kernel] + [importlib.import_module(m) for m in sys.argv[1:]]
print(torch.cuda.get_device_name(), torch.__version__)
for (B, H, T, D), pattern in [((1, 16, 16384, 64), "sp"), ((1, 16, 16384, 64), "sp_exclusive"),
                              ((2, 16, 8192, 64), "sp_exclusive")]:
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for mod in mods:
        flat = mod._flat_bands(mod.normalize_bands(head_bands(H, T, pattern), H))
        o, lse = mod._fwd_impl(q, k, v, flat, D ** -0.5)
        for _ in range(5):
            mod._bwd_impl(do, q, k, v, o, lse, flat, D ** -0.5)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                mod._bwd_impl(do, q, k, v, o, lse, flat, D ** -0.5)
            torch.cuda.synchronize()
        per = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per[e.name] = per.get(e.name, 0.0) + e.device_time / 20 / 1000
        tot = sum(per.values())
        print(f"{(B, H, T, D)} {pattern} {mod.__name__}: backward GPU total {tot:.3f} ms; "
              + "; ".join(f"{n[:40]} {t:.3f}" for n, t in sorted(per.items(), key=lambda x: -x[1])), flush=True)
