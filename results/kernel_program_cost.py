"""What a program of the band kernel costs besides its tiles: GPU time of each pass at (1, 16, 16384, 64),
bf16, every head given the same band [8192, 8192 + w) for widths w from 1 to 4096 distances, so that
the number of programs stays the same (the 128 query blocks past row 8192 of each head, and as many
key blocks) while the tiles a program visits grow with w. A straight line through (tiles a program,
ms) gives the cost of a tile (slope) and of a program's start and end (intercept), both in tiles.

    python3 results/kernel_program_cost.py      # results/kernel_program_cost_h200.log
"""
import os
import sys

import numpy as np
import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernel  # noqa: E402

B, H, T, D, L = 1, 16, 16384, 64, 8192
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, f"(B, H, T, D) = {(B, H, T, D)}, band [{L}, {L} + w)")
torch.manual_seed(0)
q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
tma, scale = kernel._tma_on(q.device), D ** -0.5
passes = {"fwd": ("q", "fwd"), "dq": ("q", "dq"), "dkdv": ("k", "dkdv")}
rows = {p: [] for p in passes}
print("| w | fwd ms | fwd + bwd ms | programs fwd / dq / dkdv | tiles a program fwd / dq / dkdv |")
print("| ---: | ---: | ---: | --- | --- |")
for w in (1, 64, 256, 512, 1024, 2048, 4096):
    flat = [L, L + w] * H
    o, lse = kernel._fwd_impl(q, k, v, flat, scale)
    t_fwd = triton.testing.do_bench_cudagraph(lambda: kernel._fwd_impl(q, k, v, flat, scale), rep=100)
    t_bwd = triton.testing.do_bench_cudagraph(lambda: kernel._bwd_impl(do, q, k, v, o, lse, flat, scale), rep=100)
    progs, tiles = [], []
    for name, (side, kind) in passes.items():
        cfg = kernel._launch_config(kind, D, q.dtype, T, tma)
        sched = kernel._schedule(flat, H, T, cfg["BLOCK_M"], cfg["BLOCK_N"], side, q.device).cpu()
        n = sum(kernel._block_tiles(flat, H, T, cfg["BLOCK_M"], cfg["BLOCK_N"], side, int(h), int(r0)) for h, r0, *_ in sched)
        progs.append(sched.shape[0] * B)
        tiles.append(n * B / progs[-1])
    rows["fwd"].append((tiles[0], t_fwd))
    rows["dq"].append((tiles[1], t_bwd))  # the backward's time against each of its passes' tile counts
    rows["dkdv"].append((tiles[2], t_bwd))
    print(f"| {w} | {t_fwd:.4f} | {t_fwd + t_bwd:.4f} | {' / '.join(map(str, progs))} | {' / '.join(f'{x:.1f}' for x in tiles)} |", flush=True)
slope, icept = np.polyfit(*zip(*rows["fwd"]), 1)
print(f"forward: {slope * 1e3:.3f} us a tile a program, {icept * 1e3:.2f} us fixed: a program's start and end cost {icept / slope:.1f} tiles")
# dQ and dK/dV tile counts a program grow together (both passes are in the backward's time); fit on dQ's
slope, icept = np.polyfit(*zip(*rows["dq"]), 1)
print(f"backward (both passes, against dQ's tiles a program): {slope * 1e3:.3f} us a tile, {icept * 1e3:.2f} us fixed = {icept / slope:.1f} tiles")
