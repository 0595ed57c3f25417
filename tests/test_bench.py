"""bench/bench.py runs end to end (a tiny model on CPU): the script, not its timings, is under test."""
import ast
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "bench/bench.py", "--device=cpu", "--tiny", "--iters=1", "--warmup=1",
                        "--variants=dense,no_attention", "--new_tokens=12", f"--out={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [(row["T"], row["variant"]) for row in res["train"]] == [
        (64, "dense"), (64, "no_attention"), (128, "dense"), (128, "no_attention")]
    assert [(row["context"], row["batch"], row["attn"]) for row in res["decode"]] == [
        (c, b, a) for c in (64, 128) for b in (1, 16) for a in ("dense", "sp")]
    for row in res["train"]:
        assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
    for row in res["decode"]:  # nan where a busy host's noise exceeded the tiny model's decode time
        assert math.isnan(row["tokens_per_s"]) or row["tokens_per_s"] > 0
    assert res["env"]["torch"] == __import__("torch").__version__
    assert (res["args"]["new_tokens"], res["args"]["tokens_per_step"]) == (12, 512)  # --tiny fills only what is left out
    for args, message in ((["--T=1024,abc"], "got '1024,abc'"), (["--variants=dense,sp"], "unknown variant(s) sp"),
                          (["--what=trian"], "--what takes train, decode"),
                          (["--contexts=100"], "every context must be longer than --new_tokens=128")):
        r = subprocess.run([sys.executable, "bench/bench.py", "--device=cpu", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr.splitlines()[-1], r.stderr


def test_bench_kernel_table_has_every_column():
    # bench/bench_kernel.py runs on GPUs only; its table code is plain Python and checked here
    bench_kernel = __import__("pytest").importorskip("bench_kernel")
    nan = float("nan")
    res = {"cuDNN dense": (0.05, 0.4, 1000, 0.15, 0.16), "FA2 dense": (0.08, 0.33, 1000, nan, nan),
           "Flex": (0.09, 0.85, 230, 0.3, 0.32), "Triton band": (0.05, 0.5, 230, 0.1, 0.08)}
    header, rule, row = bench_kernel.markdown([((8, 12, 1024, 64), "sp", 0.23, res)]).splitlines()
    assert header.count("|") == rule.count("|") == row.count("|")
    assert "| 1.70x |" in row and "| 0.150 / 0.300 / 0.100 | 3.00x, 1.50x |" in row
    assert row.endswith("| 0.160 / 0.320 / 0.080 | 4.00x, 2.00x |")


def test_bench_kernel_shapes_option():
    bench_kernel = __import__("pytest").importorskip("bench_kernel")
    assert bench_kernel.parse_shapes("1,16,16384,64; 2,16,8192,64") == [(1, 16, 16384, 64), (2, 16, 8192, 64)]
    r = subprocess.run([sys.executable, "bench/bench_kernel.py", "--shapes", "1,16,64"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "expected B,H,T,D;B,H,T,D;..., got '1,16,64'" in r.stderr
    assert "Traceback" not in r.stderr


def test_kernels_compile_for_hopper_and_ampere_without_spills():
    # Compiled ahead of time for an H100 (TMA loads) and an A100 (pointer loads), no GPU needed: every
    # committed launch config must keep the tensor cores and the software pipeline on both, and spill
    # nothing to local memory inside a loop (on sm_90 nothing at all). A fresh process without
    # TRITON_INTERPRET, which turns the kernels into interpreted functions.
    __import__("pytest").importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "bench/bench_kernel.py", "--inspect"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("fwd ", "dkdv ", "dq "))]
    assert len(lines) == 12 and sum(" sm_80 " in line for line in lines) == 6, r.stdout
    for line in lines:
        code = ast.literal_eval(line[line.rindex("{"):])
        assert code["mma"] > 0 and code["async_copies"] > 0 and code["loop_spill_ops"] == 0, line
        assert " sm_80 " in line or code["spill_ops"] == 0, line


def test_spill_check_sees_loops():
    # the SASS check above counts a spill only between a backward branch and its target
    __import__("pytest").importorskip("triton")
    import bench_kernel
    sass = """
        /*0000*/                   STL [R1], R2 ;
        /*0010*/                   IADD3 R3, R3, 0x1, RZ ;
        /*0020*/                   LDL R4, [R1] ;
        /*0030*/               @P0 BRA 0x10 ;
        /*0040*/                   LDL.LU R5, [R1+0x4] ;
        /*0050*/                   BRA 0x50;
    """
    assert bench_kernel._spills_in_loops(sass) == 1


def test_train_speed_gives_each_tree_its_row_and_survives_a_failed_run(tmp_path, monkeypatch, capsys):
    # bench/train_speed.py times GPU runs; its plumbing is checked here with a tiny CPU model. The second
    # tree's train.py fails: its row says so and the error follows the table; the first tree's row holds
    # numbers; the exit status is 1
    import pytest
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    import train_speed
    old = tmp_path / "old"
    old.mkdir()
    (old / "train.py").write_text("import sys\nsys.exit('this tree cannot train')\n")
    monkeypatch.setitem(train_speed.CONFIGS, "tiny", ("tiny", [
        "--dataset=shakespeare_char", "--device=cpu", "--dtype=float32", "--n_layer=1", "--n_head=2",
        "--n_embd=32", "--block_size=32", "--batch_size=4"]))
    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--configs=tiny", "--settings=eager", "--iters=4",
                                      "--skip=1", "--patterns=dense,sp", f"--trees=.,{old}"])
    with pytest.raises(SystemExit) as exit_:
        train_speed.main()
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 2 and rows[0].startswith("| tiny (.) | eager |")
    dense, sp, ratio = [c.strip() for c in rows[0].split("|")[3:6]]
    assert float(dense) > 0 and float(sp) > 0 and ratio == f"{float(dense) / float(sp):.2f}x"
    assert [c.strip() for c in rows[1].split("|")[3:6]] == ["failed", "failed", ""]
    assert out.count("this tree cannot train") == 2


def test_without_a_gpu_the_benchmarks_say_so_in_one_line():
    # a learner's first try is the bare command: on a CPU it must not sit for hours, nor end in a traceback
    if __import__("torch").cuda.is_available():
        __import__("pytest").skip("this machine has a GPU: the bare commands would run the benchmarks")
    for script, message in (("bench/bench.py", "its smoke run is python bench/bench.py --device=cpu --tiny"),
                            ("bench/bench_kernel.py", "(--inspect runs without one)")):
        r = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and message in r.stderr.splitlines()[-1], r.stderr
    # the GPU tools the docs name, as written there (train_speed.py would have trained for hours)
    for command in (["bench/train_speed.py", "--iters=1000"], ["bench/host_time.py"], ["bench/step_profile.py"],
                    ["bench/kernel_timeline.py"], ["bench/kernel_clock_check.py"], ["bench/kernel_ab.py", "kernel_b"]):
        r = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
        assert "CUDA GPU" in r.stderr.splitlines()[-1], r.stderr
