"""GPU time (CUDA graph) of one decode step's attention, per layer: one query per head over S keys with
a boolean mask, bf16, for the candidate implementations.

    python3 results/bench/decode_attention.py      # from the repository root, one CUDA GPU
"""
import os
import sys

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import kernel  # noqa: E402
from model import head_bands  # noqa: E402


def sdpa(backends):
    def f(q, k, v, mask):
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return f


def manual_bf16(q, k, v, mask):
    att = (q @ k.transpose(-2, -1)).float() * q.size(-1) ** -0.5
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return att.to(v.dtype) @ v


def fp32(q, k, v, mask):
    return kernel.masked_attention(q, k, v, mask, q.size(-1) ** -0.5)


CANDS = {"sdpa default": sdpa([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]),
         "sdpa efficient": sdpa([SDPBackend.EFFICIENT_ATTENTION]), "sdpa math": sdpa([SDPBackend.MATH]),
         "sdpa cudnn": sdpa([SDPBackend.CUDNN_ATTENTION]),
         "manual bf16 logits": manual_bf16, "fallback fp32": fp32}
print(torch.cuda.get_device_name(), torch.__version__)
for B in (1, 16):
    for S, what in ((1024, "dense 1024"), (4096, "dense 4096"), (344, "sp 1024 gathered"), (1368, "sp 4096 gathered")):
        q = torch.randn(B, 12, 1, 64, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, 12, S, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        mask = (torch.rand(12, 1, S, device="cuda") < 0.9)[None]
        ref = fp32(q, k, v, mask)
        row = []
        for name, f in CANDS.items():
            try:
                err = (f(q, k, v, mask).float() - ref.float()).abs().max().item()
                ms = triton.testing.do_bench_cudagraph(lambda: f(q, k, v, mask), rep=50, return_mode="median")
                row.append(f"{name} {ms * 1e3:.1f} us (err {err:.1e})")
            except Exception as e:  # noqa: BLE001
                row.append(f"{name} failed {type(e).__name__}")
        if what.startswith("sp"):  # the decode kernel: the whole cache, the bands read in place
            N = int(what.split()[1])
            bands = kernel.normalize_bands(head_bands(12, N, "sp"), 12)
            kc, vc = (torch.randn(B, 12, N, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            pos = torch.tensor(N - 1, device="cuda")
            for be in ("triton", "torch"):
                ms = triton.testing.do_bench_cudagraph(
                    lambda: kernel.band_decode_attention(q, kc, vc, bands, pos, 0.125, backend=be), rep=50,
                    return_mode="median")
                row.append(f"band_decode {be} {ms * 1e3:.1f} us")
        flash = triton.testing.do_bench_cudagraph(lambda: F.scaled_dot_product_attention(q, k, v), rep=50,
                                                  return_mode="median")
        print(f"B={B} {what} (S={S}): " + "; ".join(row) + f"; flash no mask {flash * 1e3:.1f} us", flush=True)
