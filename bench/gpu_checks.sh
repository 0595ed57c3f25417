#!/usr/bin/env bash
# What a change to the kernel, the model or train.py owes a GPU before it lands, in parts that each fit
# a call of at most 10 minutes on one H100 or H200. Run from the repository root; logs go to $OUT (or
# ./out-gpu-checks), each with the card, the versions and the command in its first lines.
#
#   bash bench/gpu_checks.sh tests      # every GPU test, bf16 / fp16 / fp32 (tests/test_*_gpu.py)
#   bash bench/gpu_checks.sh kernel     # the README's kernel rows (bench/bench_kernel.py)
#   bash bench/gpu_checks.sh compiled   # the learner-scale training rows, compiled (bench/train_speed.py)
#   bash bench/gpu_checks.sh eager      # the same rows, eager
#   bash bench/gpu_checks.sh graphs     # the same rows, replayed from CUDA graphs
#   bash bench/gpu_checks.sh host       # host time of an eager call against cuDNN's (bench/host_time.py)
set -euo pipefail  # pipefail: a failing test or benchmark fails the part, though tee succeeds
cd "$(dirname "$0")/.."
part=${1:-}
case "$part" in
    tests|kernel|compiled|eager|graphs|host) ;;
    *) echo "usage: bash bench/gpu_checks.sh tests|kernel|compiled|eager|graphs|host" >&2; exit 2 ;;
esac
python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu_checks.sh needs a CUDA GPU')"
out=${OUT:-out-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$out/$part.log"
{
    python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"
    date -u +%FT%TZ
    echo "bash bench/gpu_checks.sh $part"
} > "$log"
case "$part" in
    tests)    python3 -m pytest -q tests/test_kernel_gpu.py tests/test_model_gpu.py 2>&1 | tee -a "$log" ;;
    kernel)   python3 bench/bench_kernel.py --shapes="64,6,256,64;8,12,1024,64;2,16,8192,64;1,16,16384,64" \
                  --out="$out/kernel_table.md" 2>&1 | tee -a "$log" ;;
    compiled) python3 bench/train_speed.py --configs=baby,n1024 --settings=compile --iters=400 2>&1 | tee -a "$log" ;;
    eager)    python3 bench/train_speed.py --configs=baby,n1024 --settings=eager --iters=1000 2>&1 | tee -a "$log" ;;
    graphs)   python3 bench/train_speed.py --configs=baby,n1024 --settings=graphs --iters=1000 2>&1 | tee -a "$log" ;;
    host)     python3 bench/host_time.py 2>&1 | tee -a "$log" ;;
esac
