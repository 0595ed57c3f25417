#!/bin/bash
# bash bench/ddp_check.sh (from the repository root, 2 GPUs): 1 GPU vs torchrun 2 GPUs, the same global
# batch (8 micro-batches of 64 x 256 per step). Writes bench/results/ddp/ddp_{one,two}.log (each run's last
# lines), ddp_{one,two}_log.csv (train.py's log.csv) and ddp_summary.log (the comparison); see
# bench/results/ddp/README.md. OUT=DIR (relative to the repository root, or absolute) writes them to DIR.
set -eo pipefail  # a failed run stops the script: nothing in $OUT is replaced by it
cd "$(dirname "$0")/.."
GPUS=$(python3 -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS" -lt 2 ]; then
    echo "bench/ddp_check.sh compares 1 GPU with 2: it needs a machine with 2 CUDA GPUs" >&2
    exit 1
fi
OUT=${OUT:-bench/results/ddp}
RUNS=$(mktemp -d)  # fresh out_dirs (train.py refuses to start a run over an earlier run's checkpoint)
trap 'rm -rf "$RUNS"' EXIT  # and their checkpoints go when the script ends
A="config/train_shakespeare_char.py --compile=False --dropout=0.0 --max_iters=150 --gradient_accumulation_steps=8 --eval_interval=1000 --eval_iters=20 --log_interval=1 --lr_decay_iters=150 --warmup_iters=20"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$RUNS/ddp_summary.log"
python3 train.py $A --out_dir="$RUNS/one" 2>&1 | tail -4 | tee "$RUNS/ddp_one.log"
torchrun --standalone --nproc_per_node=2 train.py $A --out_dir="$RUNS/two" 2>&1 | tail -4 | tee "$RUNS/ddp_two.log"
cp "$RUNS/one/log.csv" "$RUNS/ddp_one_log.csv"; cp "$RUNS/two/log.csv" "$RUNS/ddp_two_log.csv"
RUNS="$RUNS" python3 - <<'PY' | tee -a "$RUNS/ddp_summary.log"
import csv, os, statistics
def rows(p):
    return [r for r in csv.DictReader(open(os.path.join(os.environ["RUNS"], p))) if not r["val_loss"]]
a, b = rows("one/log.csv"), rows("two/log.csv")
d = [abs(float(x["train_loss"]) - float(y["train_loss"])) for x, y in zip(a, b)]
ta = statistics.median(float(r["tokens_per_s"]) for r in a[20:])
tb = statistics.median(float(r["tokens_per_s"]) for r in b[20:])
print(f"iters {len(a)} vs {len(b)}; loss iter0 {a[0]['train_loss']} / {b[0]['train_loss']}, last {a[-1]['train_loss']} / {b[-1]['train_loss']}; max |diff| {max(d):.2e}, mean {sum(d)/len(d):.2e}")
print(f"median tokens/s after iter 20: 1 GPU {ta:,.0f}, 2 GPUs {tb:,.0f}, scaling {tb/ta:.2f}x")
PY
mkdir -p "$OUT"
cp "$RUNS"/ddp_{summary,one,two}.log "$RUNS"/ddp_{one,two}_log.csv "$OUT/"
