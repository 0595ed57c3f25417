"""Training speed as a user sees it: train.py with a config, dense against sp, median ms/iter.

Each run is `python train.py CONFIG --attn=A --compile=C [--compile_mode=M] ...` for --iters iterations
(no evaluation but the first and last), alone on the card; its log.csv gives the median ms/iter over
iterations 100 .. iters-1 (the first 100 hold compilation and warm-up). Prints one markdown row per
(config, compile setting): dense ms/iter, sp ms/iter, and sp's tokens/s over dense's.

    python tools/train_speed.py                                  # the baby GPT and the N = 1024 setting
    python tools/train_speed.py --iters=1000 --settings=eager,compile,graphs
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
CONFIGS = {  # name: (what the table calls it, train.py arguments)
    "baby": ("baby GPT: T = 256, 6 x 6 heads x 384, batch 64", ["config/train_shakespeare_char.py", "--dropout=0.0"]),
    "n1024": ("T = 1024, 6 x 8 heads x 512, batch 16", ["config/train_shakespeare_char.py", "--dropout=0.0",
                                                      "--block_size=1024", "--n_head=8", "--n_embd=512", "--batch_size=16"]),
}
SETTINGS = {"eager": ["--compile=False"], "compile": ["--compile=True"],
            "graphs": ["--compile=True", "--compile_mode=reduce-overhead"]}


def ms_per_iter(config, attn, setting, iters, out_dir):
    cmd = [sys.executable, "train.py", *config, f"--attn={attn}", *SETTINGS[setting], f"--max_iters={iters}",
           "--eval_interval=1000000", "--eval_iters=1", "--log_interval=1", f"--out_dir={out_dir}"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    with open(os.path.join(out_dir, "log.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["ms_per_iter"] and int(r["iter"]) >= 100]
    return statistics.median(float(r["ms_per_iter"]) for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--settings", default="eager,compile,graphs", help=f"from {','.join(SETTINGS)}")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="names of CONFIGS, comma-separated")
    args = ap.parse_args()
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{card}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, {args.iters} iterations a run, "
          f"median ms/iter over iterations 100..{args.iters - 1}")
    print("| setting | compile | dense ms/iter | sp ms/iter | sp tokens/s vs dense |")
    print("| --- | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            label, config = CONFIGS[name]
            for setting in args.settings.split(","):
                ms = {a: ms_per_iter(config, a, setting, args.iters, os.path.join(tmp, f"{name}-{a}-{setting}"))
                      for a in ("dense", "sp")}
                print(f"| {label} | {setting} | {ms['dense']:.2f} | {ms['sp']:.2f} | {ms['dense'] / ms['sp']:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
