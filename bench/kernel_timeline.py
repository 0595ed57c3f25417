"""Per-program timelines of the three band kernels on a GPU: how busy the SMs' program slots are over a
launch, how much of it is the ramp-up and the tail, and what a program costs on top of its tiles.

The script writes an instrumented copy of kernel.py (each kernel stores %globaltimer, %clock64 and %smid
when a program starts and after its last store), runs forward + backward once after warm-up at the
shapes where the targets are tightest, and prints for each kernel:
- span: first start to last end (us), and the program slots (the most programs seen at once on an SM);
- busy: the programs' summed durations over slots x span (1.0 = no slot ever idle);
- occupancy in 40ths of the span, and how busy the slots are after the last program starts (the tail);
- a least-squares fit of a program's duration against its tiles (us and kilocycles): the intercept is
  what a program costs besides its tiles while the SM is shared (prologue, first loads, epilogue).
At the end, the CUDA-graph time of the plain and the instrumented kernels (what the stamps cost).
Run from the repository root: python3 bench/kernel_timeline.py   (bench/results/kernel/timeline_h200.log)
"""
import importlib.util
import os
import re
import sys
import tempfile

import torch
import triton

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import kernel  # noqa: E402
from model import head_bands  # noqa: E402

STAMP = '''
    @triton.jit
    def _stamp(TIMES, slot: tl.constexpr):
        gt = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        ck = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        row = TIMES + tl.program_id(0).to(tl.int64) * 8
        tl.store(row + slot, gt)
        tl.store(row + 2 + slot, ck)
        if slot == 0:
            sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
            tl.store(row + 4, sm.to(tl.int64))

    @triton.jit
    def _tile_mask('''

BUFFERS = '''

TIMES = {}


def _tbuf(kind, n, device):
    """(programs, 8) int64: start/end globaltimer, start/end clock64, SM id."""
    if kind not in TIMES or TIMES[kind].shape[0] != n:
        TIMES[kind] = torch.zeros((n, 8), dtype=torch.int64, device=device)
    return TIMES[kind]
'''


def _replace(src, old, new):
    assert src.count(old) == 1, f"kernel.py changed: {old!r} not found once"
    return src.replace(old, new)


def timed_kernel_source():
    """kernel.py with a TIMES argument after SCHEDULE in each band kernel, a stamp at a program's start
    and one after its last store, and the launches passing per-kernel buffers; custom ops renamed, and
    its own copy of lib/kernel_launch.py (whose cached launchers are those of the plain kernels)."""
    src = open(os.path.join(ROOT, "kernel.py")).read()
    src = _replace(src, "\n    @triton.jit\n    def _tile_mask(", STAMP)
    src, n = re.subn(r"(\n        SCHEDULE,\s+#[^\n]*)", r"\1\n        TIMES,", src)
    assert n == 3, n
    src, n = re.subn(r"(\n        b, h, (m0|n0), bh, fill_start, fill_end, intervals = _program_block)",
                     r"\n        _stamp(TIMES, 0)\1", src)
    assert n == 3, n
    for last in ('_fill_rows(LSE + bh.to(tl.int64) * stride_l, 1, fill_start, fill_end, float("inf"), BLOCK_M, 1)',
                 '_fill_rows(DV, stride_gt, fill_start, fill_end, 0.0, BLOCK_N, HEAD_DIM)',
                 '_fill_rows(DELTA + bh.to(tl.int64) * stride_l, 1, fill_start, fill_end, 0.0, BLOCK_M, 1)'):
        src = _replace(src, last, last + "\n        _stamp(TIMES, 1)")
    for kind, before in (("fwd", r"o, lse, plan\.schedule,"), ("dq", r"o, dq, lse, delta, plan\.schedule,"),
                         ("dkdv", r"launch\.stat_tiles\(delta, plan\),\s+plan\.schedule,")):
        src, n = re.subn(f"({before})", rf"\1 _tbuf('{kind}', plan.schedule.shape[0] * B, q.device),", src)
        assert n == 1, (kind, n)
    src = _replace(src, "from lib import kernel_launch as launch", "import kernel_launch_timed as launch")
    for ours, timed in (('"band_attention::', '"band_attention_timed::'), ("ops.band_attention.", "ops.band_attention_timed.")):
        src = src.replace(ours, timed)  # its own operators, so that both copies can register
    return src + BUFFERS


def load_timed_kernel():
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "kernel_timed.py")
    with open(path, "w") as f:
        f.write(timed_kernel_source())
    with open(os.path.join(folder, "kernel_launch_timed.py"), "w") as f:
        f.write(open(os.path.join(ROOT, "lib", "kernel_launch.py")).read())
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("kernel_timed", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kernel_timed"] = mod  # triton.jit reads the source through the module
    spec.loader.exec_module(mod)
    return mod


def analyse(kind, times, tiles):
    t = times.cpu()
    start = (t[:, 0] - t[:, 0].min()).double() / 1e3  # us
    end = (t[:, 1] - t[:, 0].min()).double() / 1e3
    cycles = (t[:, 3] - t[:, 2]).double() / 1e3  # kilocycles
    sm = t[:, 4]
    dur, span, n_sm = end - start, end.max().item(), int(sm.max()) + 1
    per_sm = 0  # the most programs alive at once on one SM
    for s in range(n_sm):
        events = sorted([(x, 1) for x in start[sm == s].tolist()] + [(x, -1) for x in end[sm == s].tolist()])
        alive = 0
        for _, d in events:
            alive += d
            per_sm = max(per_sm, alive)
    slots = per_sm * n_sm
    edges = torch.linspace(0, span, 41, dtype=torch.float64)
    occ = [(torch.minimum(end, hi) - torch.maximum(start, lo)).clamp(min=0).sum().item() / (slots * (hi - lo).item())
           for lo, hi in zip(edges[:-1], edges[1:])]
    last = int(start.max().item() / span * 40)
    tail = sum(occ[last:]) / len(occ[last:])
    X = torch.stack([torch.ones_like(tiles), tiles], 1)
    us = torch.linalg.lstsq(X, dur[:, None]).solution.flatten().tolist()
    kc = torch.linalg.lstsq(X, cycles[:, None]).solution.flatten().tolist()
    print(f"  {kind}: {len(t)} programs, {tiles.sum().item():.0f} tiles, span {span:.1f} us, {per_sm} an SM x {n_sm} SMs, "
          f"busy {100 * dur.sum().item() / (slots * span):.1f} %, a program {dur.mean().item():.2f} us "
          f"({tiles.mean().item():.1f} tiles); fit {us[0]:.2f} us + {us[1]:.3f} us a tile (intercept "
          f"{us[0] / us[1]:.1f} tiles), {kc[0]:.2f} + {kc[1]:.3f} kcycles a tile")
    print("    occupancy % by 40ths of the span: " + " ".join(f"{100 * o:.0f}" for o in occ))
    print(f"    last program starts at {100 * start.max().item() / span:.1f} % of the span; slots after it "
          f"{100 * tail:.0f} % busy", flush=True)


def program_tiles(mod, kind, side, bands, B, H, T, D, device):
    """Tiles each program of one launch visits (program p runs schedule row p // B)."""
    plan = mod.launch.plan(kind, bands, B, T, D, torch.bfloat16, device)
    sched = plan.schedule.cpu().tolist()
    BM, BN = plan.meta["BLOCK_M"], plan.meta["BLOCK_N"]
    per_row = [mod.launch.block_tiles(bands[r[0]], T, BM, BN, side, r[1]) for r in sched]
    return torch.tensor([per_row[p // B] for p in range(len(sched) * B)], dtype=torch.float64)


def run(mod, B, H, T, D, pattern, reps=2):
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    bands, scale = mod.normalize_bands(head_bands(H, T, pattern), H), D ** -0.5

    def step(m):
        o, lse = m._fwd_impl(q, k, v, bands, scale)
        m._bwd_impl(do, q, k, v, o, lse, bands, scale)
    for _ in range(3):
        step(mod)
    torch.cuda.synchronize()
    for rep in range(reps):
        for buf in mod.TIMES.values():
            buf.zero_()
        step(mod)
        torch.cuda.synchronize()
        print(f"({B}, {H}, {T}, {D}) {pattern}, run {rep + 1}", flush=True)
        for kind, side in (("fwd", "q"), ("dq", "q"), ("dkdv", "k")):
            analyse(kind, mod.TIMES[kind], program_tiles(mod, kind, side, bands, B, H, T, D, q.device))
    for name, m in (("plain", kernel), ("instrumented", mod)):
        ms = triton.testing.do_bench_cudagraph(lambda m=m: step(m), rep=100, return_mode="median")
        print(f"  {name} kernels, forward + backward as a CUDA graph: {ms:.4f} ms", flush=True)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("bench/kernel_timeline.py reads the GPU's clock inside the kernels: it needs a CUDA GPU")
    timed = load_timed_kernel()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    for shape, pattern in (((1, 16, 16384, 64), "sp"), ((1, 16, 16384, 64), "sp_exclusive"), ((2, 16, 8192, 64), "sp")):
        run(timed, *shape, pattern)
