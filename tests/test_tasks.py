"""experiments/tasks.py: the two tasks' batches (every answer in the context at its stated distance,
reconstructed from the inputs alone), the toy experiment end to end (2 layers x 32, N = 64, 8 steps a
run), exact resume after a time-limit stop, --dry_run, the report's regime checks and verdicts on
numbers made by hand (NaN never passes), and one clear line for every bad option."""
import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import tasks
from tasks import KEYS, MARK, SPAN, VALUES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ["--device=cpu", "--block_size=64", "--n_layer=2", "--n_embd=32", "--heads=4", "--patterns=dense,window",
       "--min_distance=8", "--span=4", "--n_queries=1", "--bucket=16", "--steps=8", "--batch_size=4",
       "--eval_interval=4", "--eval_sequences=8"]
BUCKETS = [(8, 24), (24, 40), (40, 56), (56, 63)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine two threads that wait for each other make the toy
    model's tiny matrix products many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def options(**kw):
    return tasks.Options(**{**dict(block_size=256, min_distance=32, n_queries=4, span=16, bucket=32), **kw})


def batch(task, B=64, seed=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    return tasks.make_batch(task, options(**kw), B, gen)


def rows(folder, name):
    with open(os.path.join(folder, name), newline="") as f:
        return list(csv.DictReader(f))


def key(row):
    return tuple(row[k] for k in tasks.KEY)


def dirs(tmp):
    return [f"--results_dir={tmp}/results", f"--runs_dir={tmp}/runs"]


# -----------------------------------------------------------------------------
# The tasks

@pytest.mark.parametrize("task", tasks.TASKS)
def test_every_answer_sits_in_the_context_at_its_distance(task):
    x, y, d = batch(task)
    N = x.size(1)
    assert x.shape == y.shape == d.shape == (64, N) and x.dtype == y.dtype == d.dtype == torch.long
    assert x.is_contiguous() and y.is_contiguous() and d.is_contiguous()
    assert ((y >= 0) == (d >= 0)).all()
    b, i = (y >= 0).nonzero(as_tuple=True)
    dist = d[b, i]
    assert dist.min() >= 32 and dist.max() <= N - 2
    assert (y[b, i] == x[b, i - dist]).all()                     # the answer, dist back
    assert (x[b, i - dist - 1] == x[b, i]).all()                 # just after the token that matches the current one
    inside = i + 1 < N                                           # the stream: a target is the next input
    assert (y[b[inside], i[inside]] == x[b[inside], i[inside] + 1]).all()
    lo, hi = VALUES if task == "mqar" else SPAN
    assert ((y[b, i] >= lo) & (y[b, i] < hi)).all()


def test_mqar_every_query_key_occurs_once_before_it():
    """The answer is determined: the query's key was stored once, its value right after it."""
    x, y, d = batch("mqar")
    assert (y >= 0).sum() > 0.98 * 64 * 4                        # 4 queries a sequence; a rare one left out
    for row in range(x.size(0)):
        scored = (y[row] >= 0).nonzero().flatten().tolist()
        assert len(scored) <= 4
        for i in scored:
            key = x[row, i].item()
            assert KEYS[0] <= key < KEYS[1]
            earlier = (x[row, :i] == key).nonzero().flatten().tolist()
            assert earlier == [i - d[row, i].item() - 1]
        keys = x[row, scored]
        assert len(set(keys.tolist())) == len(scored)            # distinct keys


def test_copy_repeat_is_determined_by_the_two_marks():
    """The repeat's targets follow from where the two MARKs sit: the token D - 1 back, D = their offset."""
    x, y, d = batch("copy", B=128)
    N, span = x.size(1), 16
    for row in range(x.size(0)):
        marks = (x[row] == MARK).nonzero().flatten().tolist()
        assert len(marks) == 2
        D = marks[1] - marks[0]
        scored = (y[row] >= 0).nonzero().flatten().tolist()
        assert scored == list(range(marks[1], min(marks[1] + span, N)))   # the second MARK first, cut at N
        assert y[row, marks[1]] == x[row, marks[0] + 1]
        for i in scored:
            assert d[row, i] == D - 1 and y[row, i] == x[row, i + 1 - D]
        original = x[row, marks[0] + 1:marks[0] + 1 + span].tolist()
        assert len(set(original)) == span and all(SPAN[0] <= t < SPAN[1] for t in original)  # distinct
        assert y[row, scored].tolist() == original[:len(scored)]


@pytest.mark.parametrize("task", tasks.TASKS)
def test_distances_are_uniform_and_answers_at_chance(task):
    """At the design's size (N = 1024, 16 queries): where queries crowd, no distance may lose out."""
    x, y, d = tasks.make_batch(task, tasks.Options(), 1024, torch.Generator().manual_seed(1))
    if task == "copy":                                           # one distance a sequence
        dist = torch.stack([row[row >= 0][0] for row in d])
    else:
        dist = d[d >= 0]
        assert len(dist) > 0.998 * 1024 * 16                     # at most 2 in 1,000 left out
    counts = torch.bincount((dist - 64) // 64).double()         # 15 buckets of 64 over [64, 1022]
    expect = len(dist) * torch.tensor([64] * 14 + [63]) / 959
    assert len(counts) == 15 and ((counts - expect).abs() < 5 * expect.sqrt()).all(), counts
    lo, hi = VALUES if task == "mqar" else SPAN               # answers are uniform over their alphabet
    values = torch.bincount(y[y >= 0] - lo, minlength=hi - lo).double()
    assert len(values) == hi - lo and (values / values.sum()).max() < 1 / len(values) + 5 * math.sqrt(
        1 / len(values) / values.sum())
    assert tasks.chance(task, tasks.Options()) == (1 / 64 if task == "mqar" else 1 / (191 - 31))


@pytest.mark.parametrize("task", tasks.TASKS)
def test_a_seed_gives_its_batch(task):
    a, b, c = batch(task, seed=3), batch(task, seed=3), batch(task, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_the_held_out_set_is_the_same_in_every_run():
    o = options(eval_sequences=20, batch_size=8)
    first, again = tasks.eval_set("mqar", o, torch.device("cpu")), tasks.eval_set("mqar", o, torch.device("cpu"))
    assert [t[0].size(0) for t in first] == [8, 8, 4]
    assert all(torch.equal(u, v) for p, q in zip(first, again) for u, v in zip(p, q))


# -----------------------------------------------------------------------------
# The toy experiment, end to end

@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The toy experiment, both tasks, dense and window, a 2-rate lr sweep and 2 seeds: 12 runs."""
    tmp = tmp_path_factory.mktemp("straight")
    tasks.main(TOY + ["--lr_sweep=3e-3,1e-2", "--seeds=2"] + dirs(tmp))
    return tmp


def test_the_experiment_writes_its_record(straight):
    res = straight / "results"
    for name in ("runs.csv", "accuracy.csv"):
        with open(res / name, newline="") as f:
            assert next(csv.reader(f)) == tasks.COLUMNS[name]
    runs = rows(res, "runs.csv")
    chosen = json.load(open(res / "lr.json"))
    assert len(runs) == 12 and {r["task"] for r in runs} == {"mqar", "copy"}
    for r in runs:
        assert (r["n_head"], r["block_size"], r["steps"], r["tokens"], r["error"]) == ("4", "64", "8", str(8 * 4 * 64), "")
        assert 0 <= float(r["accuracy"]) <= 1 and math.isfinite(float(r["loss"])) and float(r["tokens_per_s"]) > 0
        model = tasks.build_model(tasks.Run(r["task"], r["pattern"], 4, 64, 0, 1e-3), tasks.Options(
            n_layer=2, n_embd=32, block_size=64))
        assert int(r["params"]) == sum(p.numel() for p in model.parameters())
        if r["seed"] == "1":                                     # seeded runs use the sweep's choice
            sweep = [s for s in runs if key(s)[:4] == key(r)[:4] and s["seed"] == "0"]
            assert float(r["lr"]) == tasks.best_lr(sweep) == chosen[f"{r['task']}_h4_n64"][r["pattern"]]["lr"]
    assert not os.listdir(straight / "runs")                     # checkpoints go once a run is done


def test_accuracy_counts_every_scored_position_of_the_held_out_set(straight):
    acc = rows(straight / "results", "accuracy.csv")
    o = tasks.parse_args(TOY)
    for task in tasks.TASKS:
        held_out = tasks.eval_set(task, o, torch.device("cpu"))
        d = torch.cat([t[2] for t in held_out])
        want = [int(((d >= lo) & (d < hi)).sum()) for lo, hi in BUCKETS]
        mine = [r for r in acc if r["task"] == task and r["pattern"] == "dense" and r["seed"] == "1"]
        assert [int(r["step"]) for r in mine] == [0] * 4 + [4] * 4 + [8] * 4
        assert [(int(r["bucket"]), int(r["bucket_hi"])) for r in mine[:4]] == BUCKETS
        assert [int(r["count"]) for r in mine[:4]] == want and sum(want) == int((d >= 0).sum())
        assert all(0 <= float(r["accuracy"]) <= 1 for r in mine)


def test_the_report_puts_the_regime_checks_first_and_draws_no_verdict_out_of_regime(straight, capsys):
    res = straight / "results"
    table = (res / "table.md").read_text()
    assert table.index("## Regime checks") < table.index("## mqar, 4 heads") < table.index("## copy, 4 heads")
    assert table.count("**Not in regime: no verdict.**") == 2   # 8 steps: dense is far from 95 %
    assert "matches dense" not in table and "behind dense" not in table
    assert "window's reach 2 x 16 = 32" in table
    for name in ("accuracy_mqar_h4_n64.png", "accuracy_copy_h4_n64.png"):
        assert (res / name).stat().st_size > 10_000
    os.remove(res / "table.md")
    tasks.main(["--report_only", f"--results_dir={res}"])        # from the CSVs alone, the same table
    assert (res / "table.md").read_text() == table


def test_a_second_call_trains_nothing(straight, monkeypatch, capsys):
    monkeypatch.setattr(tasks, "train_run", lambda *a: pytest.fail("trained a finished run again"))
    before = (straight / "results" / "runs.csv").read_text()
    tasks.main(TOY + ["--lr_sweep=3e-3,1e-2", "--seeds=2"] + dirs(straight))
    assert "nothing left" in capsys.readouterr().out
    assert (straight / "results" / "runs.csv").read_text() == before


def test_dry_run_lists_every_run_and_its_state(tmp_path, straight, capsys):
    args = TOY + ["--tasks=mqar", "--lr_sweep=3e-3,1e-2", "--seeds=3", "--dry_run"]
    tasks.main(args + dirs(tmp_path))
    fresh = capsys.readouterr().out.splitlines()
    assert len(fresh) == 4 + 4 + 1                               # 4 sweep runs, 2 patterns x seeds 1-2, the summary
    assert all(line.endswith("to do") for line in fresh[:4])
    assert all(line.endswith("waiting for the lr sweep") for line in fresh[4:8])
    assert fresh[-1].startswith("left: 8 runs (4 waiting for an lr sweep")
    assert not (tmp_path / "results").exists()                   # a dry run writes nothing
    tasks.main(args + dirs(straight))
    done = capsys.readouterr().out.splitlines()
    assert len(done) == 4 + 4 + 1                                # the sweep, seeds 1-2 (seed 0 is the sweep's)
    assert sum(line.endswith("  done") for line in done) == 6 and sum(line.endswith("to do") for line in done) == 2
    assert "mqar_dense_h4_n64_lr" in done[-1] and "_s2" in done[-1]


def test_a_run_that_diverges_is_a_result_and_no_regime(tmp_path, capsys):
    tasks.main(TOY + ["--tasks=mqar", "--patterns=dense", "--lr_sweep=1e6", "--seeds=1"] + dirs(tmp_path))
    assert "diverged (non-finite loss by step 4)" in capsys.readouterr().out
    run, = rows(tmp_path / "results", "runs.csv")
    assert run["error"] == "diverged: non-finite loss by step 4" and run["accuracy"] == "nan"
    assert not list(tmp_path.glob("runs/*/ckpt.pt"))
    table = (tmp_path / "results" / "table.md").read_text()
    assert "seed 0 has no final accuracy (diverged)" in table and "**Not in regime: no verdict.**" in table


def test_throughput_times_every_pattern_and_sizes_the_plan(tmp_path, capsys):
    tasks.main(TOY + ["--throughput", "--tasks=mqar"] + dirs(tmp_path))
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[2:4]] == [["dense", "4"], ["window", "4"]]
    assert out[-1].startswith("the plan: 10 runs of 8 steps, about ")   # 2 patterns x (3 rates + seeds 1, 2)
    timed = rows(tmp_path / "results", "throughput.csv")
    assert [(r["pattern"], r["n_head"], r["device"], r["compile"]) for r in timed] == [
        ("dense", "4", "cpu", "False"), ("window", "4", "cpu", "False")]
    assert all(float(r["step_s"]) > 0 and float(r["tokens_per_s"]) > 0 for r in timed)
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_a_run_that_would_not_fit_waits_for_the_next_call(tmp_path, capsys):
    """The call's first run always starts; a later one starts only if its measured speed says it fits."""
    slow = dict(block_size=64, n_layer=2, n_embd=32, batch_size=4, compile="False", step_s=100, eval_s=0,
                warmup_s=0, tokens_per_s=2.56, device="cpu", torch=torch.__version__)
    tasks.record.write_csv(str(tmp_path / "results" / "throughput.csv"), tasks.COLUMNS["throughput.csv"],
                    [dict(pattern=p, n_head=4, **slow) for p in ("dense", "window")])
    tasks.main(TOY + ["--tasks=mqar", "--lr_sweep=1e-2", "--seeds=1", "--max_minutes=5"] + dirs(tmp_path))
    out = capsys.readouterr().out
    assert "mqar_dense_h4_n64_lr0.01_s0: done" in out
    assert "=== mqar_window_h4_n64_lr0.01_s0 needs about 810 s, more than this call has left" in out
    assert "left: 1 runs" in out


# -----------------------------------------------------------------------------
# Stopping at --max_minutes and going on exactly

class StopAfter:
    """A Clock that has time for `calls` checks, then none: a time limit that falls mid-run, always at
    the same step, so that the test does not depend on the machine's speed."""
    calls = 0

    def __init__(self, max_minutes):
        self.left_calls = StopAfter.calls

    def left(self):
        self.left_calls -= 1
        return math.inf if self.left_calls >= 0 else 0.0


def test_a_run_stopped_by_the_time_limit_goes_on_exactly(tmp_path, monkeypatch, capsys):
    args = TOY + ["--tasks=copy", "--patterns=sp", "--lr_sweep=1e-2", "--seeds=1", "--steps=10", "--eval_interval=3"]
    tasks.main(args + dirs(tmp_path / "straight"))
    monkeypatch.setattr(tasks, "Clock", StopAfter)
    StopAfter.calls = 1 + 7                                      # run_experiment's check, then 7 steps
    tasks.main(args + dirs(tmp_path / "resumed"))
    out = capsys.readouterr().out
    assert "stopped at step 7 (time limit), checkpoint saved" in out and "left: 1 runs" in out
    assert not os.path.exists(tmp_path / "resumed" / "results" / "runs.csv")
    partial = rows(tmp_path / "resumed" / "results", "accuracy.csv")
    assert sorted({int(r["step"]) for r in partial}) == [0, 3, 6]  # written as it goes
    tasks.main(args + ["--dry_run"] + dirs(tmp_path / "resumed"))
    assert "checkpoint at step 7" in capsys.readouterr().out
    monkeypatch.undo()
    tasks.main(args + dirs(tmp_path / "resumed"))
    assert "resuming at step 7" in capsys.readouterr().out
    straight, resumed = tmp_path / "straight" / "results", tmp_path / "resumed" / "results"
    assert (resumed / "accuracy.csv").read_text() == (straight / "accuracy.csv").read_text()
    cut = ("tokens_per_s", "train_s")
    assert [{k: v for k, v in r.items() if k not in cut} for r in rows(resumed, "runs.csv")] == \
           [{k: v for k, v in r.items() if k not in cut} for r in rows(straight, "runs.csv")]


def test_a_checkpoint_of_other_settings_is_not_continued(tmp_path, monkeypatch, capsys):
    args = TOY + ["--tasks=mqar", "--patterns=dense", "--lr_sweep=1e-2", "--seeds=1"]
    monkeypatch.setattr(tasks, "Clock", StopAfter)
    StopAfter.calls = 1 + 5
    tasks.main(args + dirs(tmp_path))
    run = tasks.Run("mqar", "dense", 4, 64, 0, 1e-2)
    o = tasks.parse_args(args + dirs(tmp_path))
    assert tasks.checkpoint_step(run, o) == 5
    o.steps = 9                                                  # what another call would train
    assert tasks.checkpoint_step(run, o) is None and tasks.load_checkpoint(
        os.path.join(o.runs_dir, run.name, "ckpt.pt"), run, o) is None
    assert "other settings: starting this run afresh" in capsys.readouterr().out


# -----------------------------------------------------------------------------
# The report's checks and verdicts, on numbers made by hand

def setting(dense, window, sp=None, n_head=4):
    """A Setting of N = 64 and 2 layers (window's reach 2 x 16 = 32) from final accuracies per bucket."""
    def pattern(name, finals):
        runs = [dict(seed=str(s), tokens_per_s="1") for s in range(len(finals))]
        curve = {8: {b: sum(f.get(b, math.nan) for f in finals) / len(finals) for b in BUCKETS}}
        return tasks.Pattern(name, "0.001", runs, finals, curve, {"0.001": 0.5})
    patterns = {"dense": pattern("dense", dense), "window": pattern("window", window)}
    if sp:
        patterns["sp"] = pattern("sp", sp)
    return tasks.Setting("mqar", n_head, 64, 2, 1 / 64, BUCKETS, dict(zip(BUCKETS, (1000, 1000, 1000, 400))), patterns)


def finals(*values):
    return dict(zip(BUCKETS, values))


GOOD_DENSE = [finals(1.0, 0.99, 0.97, 0.96), finals(1.0, 0.98, 0.99, 0.95)]
GOOD_WINDOW = [finals(1.0, 0.5, 0.02, 0.03), finals(0.9, 0.4, 0.01, 0.0)]   # reach 32: 40-55 and 56-62 beyond


def test_regime_checks_pass_and_fail_as_stated():
    assert [ok for _, ok, _ in tasks.regime(setting(GOOD_DENSE, GOOD_WINDOW))] == [True, True]
    low = [GOOD_DENSE[0], finals(1.0, 0.98, 0.949, 0.95)]
    assert [ok for _, ok, _ in tasks.regime(setting(low, GOOD_WINDOW))] == [False, True]
    leak = [GOOD_WINDOW[0], finals(0.9, 0.4, 1 / 64 + 0.021, 0.0)]
    checks = tasks.regime(setting(GOOD_DENSE, leak))
    assert [ok for _, ok, _ in checks] == [True, False] and "seed 1, d = 40-55" in checks[1][2]
    # at 400 positions 4 standard errors of chance are 2.5 points, more than the 2-point margin
    assert tasks.chance_bound(1 / 64, 400) == pytest.approx(1 / 64 + 4 * math.sqrt(1 / 64 * 63 / 64 / 400))
    noisy = [GOOD_WINDOW[0], finals(0.9, 0.4, 0.0, 1 / 64 + 0.024)]
    assert [ok for _, ok, _ in tasks.regime(setting(GOOD_DENSE, noisy))] == [True, True]
    noisy = [GOOD_WINDOW[0], finals(0.9, 0.4, 0.0, 1 / 64 + 0.026)]
    assert [ok for _, ok, _ in tasks.regime(setting(GOOD_DENSE, noisy))] == [True, False]
    no_window = setting(GOOD_DENSE, GOOD_WINDOW)
    del no_window.patterns["window"]
    assert [ok for _, ok, _ in tasks.regime(no_window)] == [True, False]


def test_nan_never_passes():
    nan_dense = [GOOD_DENSE[0], finals(1.0, math.nan, 0.99, 0.99)]
    assert not tasks.regime(setting(nan_dense, GOOD_WINDOW))[0][1]
    assert not tasks.regime(setting([GOOD_DENSE[0], {}], GOOD_WINDOW))[0][1]     # a diverged run has no finals
    nan_window = [GOOD_WINDOW[0], finals(0.9, 0.4, math.nan, 0.0)]
    assert not tasks.regime(setting(GOOD_DENSE, nan_window))[1][1]
    verdict = tasks.verdicts(setting(GOOD_DENSE, GOOD_WINDOW, sp=[finals(1.0, 0.99, math.nan, 0.96)]))
    assert verdict[1].startswith("**sp is behind dense** at d = 40-55")
    runs = [dict(lr="0.001", accuracy="nan", loss="nan"), dict(lr="0.003", accuracy="0.2", loss="3.0")]
    assert tasks.best_lr(runs) == 0.003


def test_verdicts_say_where_a_pattern_is_behind_dense():
    near = [finals(0.99, 0.97, 0.97, 0.94), finals(1.0, 0.99, 0.98, 0.95)]    # within 2 points in every bucket
    far = [finals(1.0, 0.9, 0.5, 0.3)] * 2
    said = tasks.verdicts(setting(GOOD_DENSE, GOOD_WINDOW, sp=near))
    assert said[1].startswith("**sp matches dense** at every distance")
    said = tasks.verdicts(setting(GOOD_DENSE, GOOD_WINDOW, sp=far))
    assert said[1].startswith("**sp is behind dense** at d = 24-62 by 8.5 to 65.5 points")
    assert said[0].startswith("**window is behind dense** at d = 8-62")


def test_learned_at_is_the_first_step_at_or_above_the_threshold():
    p = tasks.Pattern("sp", "0.001", [], [], {0: {BUCKETS[0]: 0.1}, 4: {BUCKETS[0]: 0.9}, 8: {BUCKETS[0]: 0.95}}, {})
    assert tasks.learned_at(p, BUCKETS[0]) == 4 and tasks.learned_at(p, BUCKETS[1]) is None


# -----------------------------------------------------------------------------
# Bad input: one clear line

@pytest.mark.parametrize("bad, says", [
    (["--bogus=1"], "unknown option '--bogus=1'"),
    (["--patterns=dense,foo"], "--patterns: 'foo' is not one of"),
    (["--tasks=recall"], "--tasks: 'recall' is not one of"),
    (["--steps=abc"], "--steps expects int, got 'abc'"),
    (["--steps=0"], "--steps must be at least 1"),
    (["--heads=3"], "n_embd=32 is not divisible by n_head=3"),
    (["--min_distance=63"], "leaves no answer distance"),
    (["--span=9"], "--span=9 is more than --min_distance=8"),
    (["--n_queries=2"], "--n_queries=2 is more than block_size // 64 = 1"),
    (["--lr_sweep=-1e-3"], "positive rates"),
    (["--warmup_frac=1"], "--warmup_frac must be in [0, 1)"),
    (["--dry_run", "--report_only"], "each do one thing"),
    (["--compile=maybe"], "--compile expects True or False"),
    (["--device=cuda"], "this machine has no CUDA GPU"),
    (["--device=tpu0"], "is not a device"),
    (["--heads="], "--heads needs one head count"),
])
def test_a_bad_option_gets_one_line(bad, says, tmp_path, capsys):
    if bad == ["--device=cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as stop:
        tasks.main(TOY + bad + dirs(tmp_path))
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()


def test_help_lists_every_option_with_its_default(capsys):
    tasks.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python experiments/tasks.py")
    for f in dataclasses.fields(tasks.Options):
        assert f"--{f.name}=" in out
    assert "--steps=2000" in out and "optimizer steps a run" in out


def test_a_later_call_with_other_settings_is_refused(straight, capsys):
    with pytest.raises(SystemExit):
        tasks.main(TOY + ["--steps=9"] + dirs(straight))
    assert "has steps=8 but this call has steps=9" in capsys.readouterr().err


def test_report_only_without_runs_says_so_from_the_command_line(tmp_path):
    """The script itself, as a user runs it: one line, no traceback."""
    p = subprocess.run([sys.executable, "experiments/tasks.py", "--report_only", f"--results_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("error: no runs in") and p.stderr.count("\n") == 1, p.stderr
