"""Training speed as a user sees it: train.py with a config, dense against sp, median ms/iter.

Each run is `python train.py CONFIG --attn=A --compile=C [--compile_mode=M] ...` for --iters iterations
(no evaluation but the first and last), alone on the card; its log.csv gives the median ms/iter over
iterations --skip .. iters-1 (the first 100 hold compilation and warm-up). Prints one markdown row per
(config, compile setting): dense ms/iter, then each other pattern's ms/iter and its tokens/s over dense's.
A run that fails reads "failed" in its row, its error follows the table, and the exit status is 1.

--trees compares versions of the code in one call (an A/B: the host's speed drifts between calls by
more than the differences sought). Each tree is a checkout of this repository, e.g. an older commit
made with `git worktree add out-ab/old COMMIT` (out*/ is git-ignored; carry it to a GPU machine);
train.py runs from each tree in turn, interleaved pattern by pattern, and each tree gets its own row.

    python bench/train_speed.py                                  # the baby GPT and the N = 1024 setting
    python bench/train_speed.py --iters=1000 --settings=eager,compile,graphs
    python bench/train_speed.py --configs=quality --patterns=dense,sp,window --settings=compile
                                 # the quality experiment's model (experiments/results/quality; needs data/pystdlib_bytes)
    python bench/train_speed.py --trees=.,out-ab/old --settings=graphs   # this code against an older one
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments")]
import compare  # noqa: E402


def quality_config():
    """experiments/compare.py's model and optimizer in its default setting (TRAIN_DEFAULTS, Options), as a CONFIGS
    entry, at the first rate of its sweep (a step's time does not depend on the rate)."""
    o, base = compare.Options(), compare.TRAIN_DEFAULTS
    batch = o.batch_tokens // (o.block_size * base["gradient_accumulation_steps"])
    label = (f"{o.dataset}: T = {o.block_size}, {base['n_layer']} x {o.n_head} heads x {base['n_embd']}, "
             f"batch {batch} (experiments/compare.py)")
    model = {k: v for k, v in base.items() if k not in ("compile", "device", "dtype", "log_interval")}
    return label, [f"--dataset={o.dataset}", f"--n_head={o.n_head}", f"--block_size={o.block_size}",
                   f"--batch_size={batch}", *(f"--{k}={v}" for k, v in model.items()), f"--learning_rate={o.lr_sweep[0]}"]


CONFIGS = {  # name: (what the table calls it, train.py arguments)
    "baby": ("baby GPT: T = 256, 6 x 6 heads x 384, batch 64", ["config/train_shakespeare_char.py", "--dropout=0.0"]),
    "n1024": ("T = 1024, 6 x 8 heads x 512, batch 16", ["config/train_shakespeare_char.py", "--dropout=0.0",
                                                      "--block_size=1024", "--n_head=8", "--n_embd=512", "--batch_size=16"]),
    "quality": quality_config(),
}
SETTINGS = {"eager": ["--compile=False"], "compile": ["--compile=True"],
            "graphs": ["--compile=True", "--compile_mode=reduce-overhead"]}


def ms_per_iter(config, attn, setting, iters, skip, out_dir, tree=ROOT):
    """Median ms/iter of one train.py run from `tree`, over iterations skip .. iters-1."""
    cmd = [sys.executable, "train.py", *config, f"--attn={attn}", *SETTINGS[setting], f"--max_iters={iters}",
           "--eval_interval=1000000", "--eval_iters=1", "--log_interval=1", f"--out_dir={out_dir}"]
    run = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)} (in {tree}) failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    with open(os.path.join(out_dir, "log.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["ms_per_iter"] and int(r["iter"]) >= skip]
    return statistics.median(float(r["ms_per_iter"]) for r in rows)


def cells(ms, patterns):
    """dense's ms/iter, then each other pattern's and its tokens/s over dense's; None (a failed run) reads 'failed'."""
    def num(x):
        return "failed" if x is None else f"{x:.2f}"
    out = [num(ms["dense"])]
    for p in patterns[1:]:
        ratio = "" if ms[p] is None or ms["dense"] is None else f"{ms['dense'] / ms[p]:.2f}x"
        out += [num(ms[p]), ratio]
    return " | ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--settings", default="eager,compile,graphs", help=f"from {','.join(SETTINGS)}")
    ap.add_argument("--configs", default="baby,n1024", help=f"from {','.join(CONFIGS)}")
    ap.add_argument("--patterns", default="dense,sp", help="attention patterns, dense first")
    ap.add_argument("--skip", type=int, default=100, help="iterations left out of the median (warm-up)")
    ap.add_argument("--trees", default=".", help="checkouts to run train.py from, comma-separated (an A/B)")
    args = ap.parse_args()
    patterns = args.patterns.split(",")
    if patterns[0] != "dense":
        ap.error("--patterns must start with dense (the others are compared with it)")
    if not 0 <= args.skip < args.iters:
        ap.error(f"--skip must lie in [0, --iters), got {args.skip} with --iters={args.iters}")
    trees = [os.path.join(ROOT, t) for t in args.trees.split(",")]
    for t in trees:
        if not os.path.isfile(os.path.join(t, "train.py")):
            ap.error(f"--trees: {t} holds no train.py (make one with `git worktree add out-ab/NAME COMMIT`)")
    gpu_configs = [c for c in args.configs.split(",") if "--device=cpu" not in CONFIGS.get(c, ("", []))[1]]
    if gpu_configs and not torch.cuda.is_available():
        ap.error(f"the configs {','.join(gpu_configs)} train on a CUDA GPU, and there is none here")
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, {args.iters} iterations a run, "
          f"median ms/iter over iterations {args.skip}..{args.iters - 1}")
    print("| setting | compile | dense ms/iter | "
          + " | ".join(f"{p} ms/iter | {p} tokens/s vs dense" for p in patterns[1:]) + " |")
    print("| --- | --- | ---: |" + " ---: | ---: |" * (len(patterns) - 1))
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            label, config = CONFIGS[name]
            for setting in args.settings.split(","):
                ms = {}
                for a in patterns:
                    for i, tree in enumerate(trees):
                        try:
                            ms[i, a] = ms_per_iter(config, a, setting, args.iters, args.skip,
                                                   os.path.join(tmp, f"{name}-{a}-{setting}-{i}"), tree)
                        except RuntimeError as e:
                            ms[i, a] = None
                            errors.append(str(e))
                for i, tree in enumerate(trees):
                    where = f" ({os.path.relpath(tree, ROOT)})" if len(trees) > 1 else ""
                    print(f"| {label}{where} | {setting} | {cells({a: ms[i, a] for a in patterns}, patterns)} |",
                          flush=True)
    for e in errors:
        print(f"\n{e}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
