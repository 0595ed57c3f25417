"""torchrun data parallelism on CPU (gloo): 2 processes train like 1 process on the same global batch."""
import csv
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--dataset=shakespeare_char", "--device=cpu", "--compile=False", "--batch_size=4", "--block_size=32",
        "--n_layer=2", "--n_head=4", "--n_embd=32", "--eval_iters=3", "--gradient_accumulation_steps=4",
        "--warmup_iters=3", "--lr_decay_iters=20", "--learning_rate=3e-3", "--dropout=0.0", "--log_interval=1",
        "--eval_interval=3"]


def run(args, nproc=1):
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    r = subprocess.run(launcher + ["train.py", *ARGS, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r


def log_rows(out_dir):
    with open(os.path.join(out_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def train_losses(out_dir):
    return [(int(r["iter"]), float(r["train_loss"])) for r in log_rows(out_dir) if not r["val_loss"]]


def grad_norms(out_dir):
    return [float(r["grad_norm"]) for r in log_rows(out_dir) if not r["val_loss"]]


def val_losses(out_dir):
    return [float(r["val_loss"]) for r in log_rows(out_dir) if r["val_loss"]]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one_and_resume(tmp_path):
    one = run([f"--out_dir={tmp_path}/one", "--max_iters=6"])
    two = run([f"--out_dir={tmp_path}/two", "--max_iters=6"], nproc=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = train_losses(f"{tmp_path}/one"), train_losses(f"{tmp_path}/two")
    assert [i for i, _ in a] == [i for i, _ in b] == list(range(6))
    # the same batches and gradients; only the order of the float sums differs. Adam hides a gradient
    # scaled by a constant (e.g. averaged over processes twice), the gradient norm does not.
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 5e-4
    for x, y in zip(grad_norms(f"{tmp_path}/one"), grad_norms(f"{tmp_path}/two")):
        assert abs(x - y) <= 1e-3 * x
    # evaluation shared unevenly (eval_iters=3: 2 batches and 1), the same means as one process
    for x, y in zip(val_losses(f"{tmp_path}/one"), val_losses(f"{tmp_path}/two")):
        assert abs(x - y) < 1e-4
    assert two.stdout.count("step 6:") == 1  # one process logs

    more = run([f"--out_dir={tmp_path}/two", "--max_iters=8", "--init_from=resume"], nproc=2)
    assert more.returncode == 0, more.stderr
    assert [i for i, _ in train_losses(f"{tmp_path}/two")] == list(range(8))
    wrong = run([f"--out_dir={tmp_path}/two", "--max_iters=9", "--init_from=resume"])
    assert wrong.returncode == 1 and "written by 2 process(es)" in wrong.stderr

    odd = run([f"--out_dir={tmp_path}/odd", "--max_iters=1", "--gradient_accumulation_steps=3"], nproc=2)
    assert odd.returncode != 0 and "must be divisible by the 2 processes" in odd.stdout + odd.stderr
