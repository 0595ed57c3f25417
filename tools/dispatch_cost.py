"""The Python around the band kernel's launches, per call: what a compiled step pays for the operators.

Under torch.compile the graphs call the launches through kernel.py's operators band_attention::fwd and
::bwd. This times, with the launches themselves stubbed out (so it runs on any machine, CPU or GPU,
and measures Python alone), a forward and a backward call at (1, 8, 1024, 64), sp (batch 1, so that
a CPU's allocation of the outputs does not dominate; on a GPU the caching allocator makes it cheap):
  impl        kernel._fwd_impl / _bwd_impl called directly (what an eager call runs)
  operator    torch.ops.band_attention.fwd / .bwd (what a compiled graph runs): the dispatcher, then impl
  custom_op   the same impl behind torch.library.custom_op, as kernel.py registered it until
              2026-12-04: torch.library's own Python (autograd layer, redispatch, checks) around it
Best of 5 rounds of 2000 calls each.

    python tools/dispatch_cost.py       # results/kernel/dispatch_cost.log
"""
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402
from model import head_bands  # noqa: E402

kernel._launch = lambda *args: None          # no launch: Python alone
kernel._tma_on = lambda device: False        # pointer tiles (no descriptors), which also works on a CPU

device = "cuda" if torch.cuda.is_available() else "cpu"
B, H, T, D = 1, 8, 1024, 64
q, k, v, do = (torch.randn(B, H, T, D, device=device, dtype=torch.bfloat16) for _ in range(4))
bands = kernel.normalize_bands(head_bands(H, T, "sp"), H)
flat = kernel._flat_bands(bands)
o, lse = kernel._fwd_impl(q, k, v, bands, 0.125)


@torch.library.custom_op("dispatch_cost::fwd", mutates_args=())
def custom_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bands_flat: list[int],
               scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return kernel._fwd_impl(q, k, v, kernel._unflat_bands(tuple(bands_flat), q.shape[1]), scale)


@torch.library.custom_op("dispatch_cost::bwd", mutates_args=())
def custom_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
               lse: torch.Tensor, bands_flat: list[int], scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kernel._bwd_impl(do, q, k, v, o, lse, kernel._unflat_bands(tuple(bands_flat), q.shape[1]), scale)


CALLS = {
    "forward": {"impl": lambda: kernel._fwd_impl(q, k, v, bands, 0.125),
                "operator": lambda: torch.ops.band_attention.fwd(q, k, v, flat, 0.125),
                "custom_op": lambda: custom_fwd(q, k, v, flat, 0.125)},
    "backward": {"impl": lambda: kernel._bwd_impl(do, q, k, v, o, lse, bands, 0.125),
                 "operator": lambda: torch.ops.band_attention.bwd(do, q, k, v, o, lse, flat, 0.125),
                 "custom_op": lambda: custom_bwd(do, q, k, v, o, lse, flat, 0.125)},
}


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
      f"(B, H, T, D) = {(B, H, T, D)}, sp, bf16, launches stubbed; us a call, best of 5 x 2000")
print("| call | impl | operator | custom_op |\n| --- | ---: | ---: | ---: |")
with torch.no_grad():  # as inside a compiled graph
    for name, fns in CALLS.items():
        print(f"| {name} | " + " | ".join(f"{us_per_call(fns[way]):.1f}" for way in ("impl", "operator", "custom_op")) + " |")
