"""bench.py runs end to end (a tiny model on CPU): the script, not its timings, is under test."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "bench.py", "--device=cpu", "--tiny", "--iters=1", "--warmup=1",
                        "--variants=dense,no_attention", f"--out={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [(row["T"], row["variant"]) for row in res["train"]] == [
        (64, "dense"), (64, "no_attention"), (128, "dense"), (128, "no_attention")]
    assert [(row["context"], row["batch"], row["attn"]) for row in res["decode"]] == [
        (c, b, a) for c in (64, 128) for b in (1, 16) for a in ("dense", "sp")]
    for row in res["train"] + res["decode"]:
        assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
    assert res["env"]["torch"] == __import__("torch").__version__
