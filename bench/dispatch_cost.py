"""The Python around the band kernel's launches, per call, with the launches stubbed out (so it runs on
any machine, CPU or GPU, and measures Python alone).

Table 1, what a compiled step pays for the operators: a forward and a backward call at (1, 8, 1024, 64),
sp (batch 1, so that a CPU's allocation of the outputs does not dominate; on a GPU the caching
allocator makes it cheap), made three ways:
  impl        kernel._fwd_impl / _bwd_impl called directly
  operator    torch.ops.band_attention.fwd / .bwd (what a compiled graph runs): the dispatcher, then impl
  custom_op   the same impl behind torch.library.custom_op, as an earlier kernel.py registered it
              (bench/LAB.md, section 3): torch.library's own Python (autograd layer, redispatch, checks) around it
Table 2, what an eager step pays: kernel.band_attention called as the model calls it (its normalized
bands, views of a fused qkv projection), forward alone and forward + backward through autograd, at
(1, 8, 128, 64) (small, so that a CPU's copies inside autograd's backward stay small); and the floor
of any op written in Python: an autograd.Function that allocates the same outputs and does nothing
else (the difference is all of band_attention's own Python: checks, plans, launch arguments).
Best of 5 rounds of 2000 calls each.

    python bench/dispatch_cost.py                   # bench/results/kernel/dispatch_cost.log
    python bench/dispatch_cost.py --tree=../old     # another checkout's kernel.py, lib/kernel_launch.py, model.py
                                                    # (one with lib/kernel_launch.py: from 2026-12-07 on)
"""
import argparse
import os
import platform
import sys
import time

import torch

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                help="the checkout whose kernel.py, lib/kernel_launch.py and model.py are measured (default: this one)")
args = ap.parse_args()
if not all(os.path.isfile(os.path.join(args.tree, f)) for f in ("kernel.py", "lib/kernel_launch.py")):
    ap.error(f"--tree: {args.tree} holds no kernel.py and lib/kernel_launch.py (make a checkout of a commit that has "
             "both with `git worktree add out-ab/NAME COMMIT`)")
if torch.cuda.is_available():
    device = "cuda"
else:  # CPU tensors take the Triton path only under the interpreter; the launches are stubbed anyway
    device = "cpu"
    os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, os.path.abspath(args.tree))
import kernel  # noqa: E402
from lib import kernel_launch  # noqa: E402
from model import head_bands  # noqa: E402

kernel_launch.launch = lambda *args: None    # no launch: Python alone
kernel_launch.tma_on = lambda device: False  # pointer tiles (no descriptors), which also works on a CPU

B, H, T, D = 1, 8, 1024, 64
q, k, v, do = (torch.randn(B, H, T, D, device=device, dtype=torch.bfloat16) for _ in range(4))
bands = kernel.normalize_bands(head_bands(H, T, "sp"), H)
o, lse = kernel._fwd_impl(q, k, v, bands, 0.125)
# custom_op infers its schema from type hints, which know no nested lists: the bands cross it flat,
# (lo, hi) pairs padded to K a head, as an earlier kernel.py passed them to its own operators
K = max(len(head) for head in bands)
flat = [x for head in bands for pair in list(head) + [(0, 0)] * (K - len(head)) for x in pair]


def unflat(bands_flat, n_head):
    pairs = list(zip(bands_flat[0::2], bands_flat[1::2]))
    K = len(pairs) // n_head
    return tuple(tuple(p for p in pairs[h * K:(h + 1) * K] if p[1] > p[0]) for h in range(n_head))


@torch.library.custom_op("dispatch_cost::fwd", mutates_args=())
def custom_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bands_flat: list[int],
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return kernel._fwd_impl(q, k, v, unflat(bands_flat, q.shape[1]), scale)


@torch.library.custom_op("dispatch_cost::bwd", mutates_args=())
def custom_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
               lse: torch.Tensor, bands_flat: list[int], scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kernel._bwd_impl(do, q, k, v, o, lse, unflat(bands_flat, q.shape[1]), scale)


CALLS = {
    "forward": {"impl": lambda: kernel._fwd_impl(q, k, v, bands, 0.125),
                "operator": lambda: torch.ops.band_attention.fwd(q, k, v, bands, 0.125),
                "custom_op": lambda: custom_fwd(q, k, v, flat, 0.125)},
    "backward": {"impl": lambda: kernel._bwd_impl(do, q, k, v, o, lse, bands, 0.125),
                 "operator": lambda: torch.ops.band_attention.bwd(do, q, k, v, o, lse, bands, 0.125),
                 "custom_op": lambda: custom_bwd(do, q, k, v, o, lse, flat, 0.125)},
}

# Table 2: the model's call, eagerly
Ts = 128
qkv = torch.randn(B, Ts, 3 * H * D, device=device, dtype=torch.bfloat16, requires_grad=True)
qs, ks, vs = (t.view(B, Ts, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
dos = torch.randn(B, H, Ts, D, device=device, dtype=torch.bfloat16)
bands_s = kernel.normalize_bands(head_bands(H, Ts, "sp"), H)


def eager_forward():
    with torch.no_grad():
        kernel.band_attention(qs, ks, vs, bands_s, backend="triton")


def eager_forward_backward():
    torch.autograd.grad(kernel.band_attention(qs, ks, vs, bands_s, backend="triton"), (qkv,), dos)


def outputs(q):
    """What the band kernel's forward allocates (and its backward, again, for dQ and Delta), with
    lib/kernel_launch.py's allocators."""
    B, H, T, D = q.shape
    return kernel_launch.bthd_empty(B, H, T, D, q), kernel_launch.stats_empty(B, H, T, q.device)


class Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        o, lse = outputs(q)
        ctx.save_for_backward(q, k, v, o, lse)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, delta = outputs(q)
        return dq, torch.empty_like(dq), torch.empty_like(dq)


def floor_forward_backward():
    torch.autograd.grad(Floor.apply(qs, ks, vs), (qkv,), dos)


def us_per_call(fn, n=2000, rounds=5):
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


print(f"{platform.processor() or platform.machine()}, {device}, torch {torch.__version__}, python {platform.python_version()}; "
      f"kernel.py of {os.path.abspath(args.tree)}; sp, bf16, launches stubbed; us a call, best of 5 x 2000")
print(f"{(B, H, T, D)}:\n| call | impl | operator | custom_op |\n| --- | ---: | ---: | ---: |")
with torch.no_grad():  # as inside a compiled graph
    for name, fns in CALLS.items():
        print(f"| {name} | " + " | ".join(f"{us_per_call(fns[way]):.1f}" for way in ("impl", "operator", "custom_op")) + " |")
print(f"{(B, H, Ts, D)}, kernel.band_attention eagerly: forward {us_per_call(eager_forward):.1f}, "
      f"forward + backward {us_per_call(eager_forward_backward):.1f}; an autograd.Function that only allocates "
      f"the same outputs, forward + backward {us_per_call(floor_forward_backward):.1f}")
