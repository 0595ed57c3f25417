"""experiments/compare.py and experiments/report.py: the whole experiment at toy size on a piece of Tiny Shakespeare
(2 layers, 4 heads, N = 32; dense, sp and window, 2 seeds; the 1x budget 11 steps, 0.5x 6 and 2x 22, the
2x runs evaluated at step 11 too), its files, skipping what is done, stopping at --max_minutes and resuming
exactly, the seeds rule, and the report's regime checks, intervals and verdicts against numbers
worked out by hand."""
import csv
import dataclasses
import json
import math
import os
import types

import numpy as np
import pytest
import torch

import compare
import report
import train
import utils
from model import ConfigError

TOY = ["--dataset=toy", "--device=cpu", "--block_size=32", "--n_head=4", "--n_layer=2", "--n_embd=32",
       "--patterns=dense,sp,window", "--seeds=2", "--lr_sweep=4e-3", "--batch_tokens=128", "--tokens_per_param=0.05",
       "--eval_interval=5", "--eval_iters=2", "--bucket=8", "--eval_batch=512", "--copy_span=4",
       "--copy_distances=4,12", "--copy_windows=8", "--track_at=0.5"]
PARAMS = 27840                     # 2 x 12 x 32^2 + LayerNorms + 65 x 32 token and 32 x 32 position embeddings
ITERS = {"0.5x": 6, "1x": 11, "2x": 22}   # 1x: ceil(0.05 x 27,840 / 128) = 11 steps


@pytest.fixture(scope="module", autouse=True)
def toy_data(tmp_path_factory):
    """data/toy: the first 50,000 / 4,000 tokens of shakespeare_char's splits and its vocabulary of 65; small,
    so that evaluating on every validation window (121 of them) takes a moment."""
    splits, _ = utils.load_dataset("shakespeare_char")                      # prepared, if it was not
    folder = tmp_path_factory.mktemp("data")
    np.asarray(splits["train"][:50_000]).tofile(folder / "train.bin")
    np.asarray(splits["val"][:4_000]).tofile(folder / "val.bin")
    (folder / "meta.pkl").write_bytes(open(os.path.join(utils.data_dir("shakespeare_char"), "meta.pkl"), "rb").read())
    (folder / "prepare.py").write_text("# made by the test: the files beside it are the dataset\n")  # what makes a dataset
    real = utils.data_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(utils, "data_dir", lambda dataset: str(folder) if dataset == "toy" else real(dataset))
        yield folder


def name(pattern, budget, seed):
    return f"{pattern}_h4_n32_{budget}_lr0.004_s{seed}"


def rows(folder, file):
    with open(os.path.join(folder, file), newline="") as f:
        return list(csv.DictReader(f))


def dirs(tmp):
    return [f"--results_dir={tmp}/results", f"--runs_dir={tmp}/runs"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The toy experiment run once, straight through: its results folder."""
    tmp = tmp_path_factory.mktemp("straight")
    compare.main(TOY + dirs(tmp))
    return tmp / "results"


def test_the_experiment_writes_every_file_with_its_columns(straight):
    for file, columns in report.COLUMNS.items():
        with open(straight / file, newline="") as f:
            assert next(csv.reader(f)) == columns, file
    runs = rows(straight, "runs.csv")
    # seed by seed: 1x for every pattern, then 0.5x and 2x for sp and dense only
    order = [(p, b, s) for s in (0, 1) for b, pats in (("1x", ("dense", "sp", "window")), ("0.5x", ("dense", "sp")),
                                                      ("2x", ("dense", "sp"))) for p in pats]
    assert [(r["task"], r["pattern"], r["budget"], int(r["seed"]), r["lr"]) for r in runs] == \
        [("lm", p, b, s, "0.004") for p, b, s in order]
    for r in runs:
        iters = ITERS[r["budget"]]
        assert (int(r["params"]), int(r["iters"]), int(r["tokens"]), r["error"]) == (PARAMS, iters, 128 * iters, "")
        assert 0 < float(r["val_loss"]) < math.log(65) + 0.5 and float(r["tokens_per_s"]) > 0
    by_position, copy = rows(straight, "by_position.csv"), rows(straight, "copy_probe.csv")
    for p, b, s in order:  # the 2x runs evaluated at step 11 and at their end; every run at its end
        its = [11, 22] if b == "2x" else [ITERS[b]]
        mine = [r for r in by_position if (r["pattern"], r["budget"], r["seed"]) == (p, b, str(s))]
        assert [(int(r["iter"]), int(r["tokens"]), int(r["bucket"])) for r in mine] == \
            [(it, 128 * it, start) for it in its for start in (0, 8, 16, 24)]
        mine = [r for r in copy if (r["pattern"], r["budget"], r["seed"]) == (p, b, str(s))]
        assert [(int(r["iter"]), int(r["distance"])) for r in mine] == [(it, d) for it in its for d in (4, 12)]
        for r in mine:
            assert float(r["share"]) == pytest.approx(float(r["gain"]) / float(r["control_loss"]), abs=1e-5)
            assert float(r["probe_first"]) > 0 and r["windows"] == "8"
    # the end's loss by position weighs to the run's val loss
    for r in runs:
        mine = [b for b in by_position if report.key_of(b) == report.key_of(r) and b["iter"] == r["iters"]]
        assert sum(float(b["loss"]) * int(b["positions"]) for b in mine) / 32 == pytest.approx(float(r["val_loss"]), abs=1e-5)
    assert json.load(open(straight / "lr.json")) == {"h4_n32": {p: {"lr": 0.004, "sweep": {}}
                                                                for p in ("dense", "sp", "window")}}
    shared = json.load(open(straight / "experiment.json"))
    assert shared["data"]["val_tokens"] == 4000 and shared["seeds"] == "2" and shared["track_at"] == [0.5]
    for file in ("table.md", "summary_h4_n32.png"):
        assert (straight / file).exists()
    assert not any((straight.parent / "runs" / name(p, b, s) / "ckpt.pt").exists() for p, b, s in order)


def test_the_table_puts_the_regime_checks_first(straight):
    table = (straight / "table.md").read_text()
    order = [table.index(h) for h in ("### Regime checks", "### Verdicts (1x budget)", "### Losses",
                                      "### sp - dense over training", "### Copy probe (1x budget)")]
    assert order == sorted(order)
    # the 2x runs' evaluation at step 11 beside the 1x runs' end: the same 1,408 tokens, 0.05 a parameter
    assert "| 1,408 | 0.1 | 2x run, step 11 |" in table and "| 1,408 | 0.1 | end of 1x |" in table
    assert "| 768 | 0.0 | end of 0.5x |" in table and "| 2,816 | 0.1 | end of 2x |" in table


def test_a_second_call_trains_nothing(straight, monkeypatch, capsys):
    def no_training(cfg):
        raise AssertionError(f"trained {cfg.out_dir} again")

    monkeypatch.setattr(train, "train", no_training)
    before = (straight / "runs.csv").read_text()
    compare.main(TOY + dirs(straight.parent))
    assert "nothing left: every run of this plan is in" in capsys.readouterr().out
    assert (straight / "runs.csv").read_text() == before


def test_max_minutes_too_short_for_a_run_starts_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "train", lambda cfg: pytest.fail("a run started"))
    compare.main(TOY + dirs(tmp_path) + ["--max_minutes=0.01"])               # exits normally: no SystemExit
    assert f"left: 14 runs (4 at 0.5x, 6 at 1x, 4 at 2x; 0.0 M tokens of training): {name('dense', '1x', 0)}," \
        in capsys.readouterr().out
    assert not (tmp_path / "results" / "runs.csv").exists()


def fake_clock(monkeypatch):
    """A clock that moves one second per training step, and no time kept for set-up or evaluation."""
    clock, real_step = {"now": 0.0}, train.train_step

    def step(*a):
        clock["now"] += 1.0
        return real_step(*a)

    fake_time = types.SimpleNamespace(time=lambda: clock["now"])
    for attr, value in (("SETUP_S", 0.0), ("FIRST_ANALYSIS_S", 0.0), ("MIN_TRAIN_S", 0.0), ("time", fake_time)):
        monkeypatch.setattr(compare, attr, value)
    monkeypatch.setattr(train, "time", fake_time)
    monkeypatch.setattr(utils, "time", fake_time)
    monkeypatch.setattr(train, "train_step", step)


def same_rows(tmp, straight, run_names):
    """The rows of the runs `run_names` in tmp's results are those of the straight experiment."""
    keys = {report.key_of(r) for r in rows(tmp, "runs.csv")}
    assert {r["pattern"] + "_" + r["budget"] + "_s" + r["seed"] for r in rows(tmp, "runs.csv")} == set(run_names)
    for file, cols in (("runs.csv", ("val_loss", "best_val_loss")), ("by_position.csv", ("iter", "bucket", "loss")),
                       ("copy_probe.csv", ("iter", "distance", "control_loss", "probe_loss", "probe_first"))):
        def of(folder):
            return [(report.key_of(r), [r[c] for c in cols]) for r in rows(folder, file) if report.key_of(r) in keys]
        assert sorted(of(tmp)) == sorted(of(straight)), file


def test_max_minutes_stops_inside_a_run_and_the_next_call_resumes_it_exactly(straight, tmp_path, monkeypatch, capsys):
    fake_clock(monkeypatch)
    one = TOY + dirs(tmp_path) + ["--patterns=dense", "--budgets=1x", "--seeds=1"]
    compare.main(one + ["--max_minutes=0.1"])                                # 6 s: stops after the 7th step
    out = capsys.readouterr().out
    assert f"time_limit_s=6: saved {tmp_path}/runs/{name('dense', '1x', 0)}/ckpt.pt at iter 7" in out
    assert "left: 1 runs" in out and not (tmp_path / "results" / "runs.csv").exists()
    monkeypatch.undo()
    compare.main(one)                                                         # no limit: resume
    assert f"=== {name('dense', '1x', 0)}: resuming at iter 7, up to iter 11 of 11" in capsys.readouterr().out
    same_rows(tmp_path / "results", straight, ["dense_1x_s0"])


def test_a_run_evaluated_along_the_way_resumes_between_its_evaluations(straight, tmp_path, monkeypatch, capsys):
    # the 2x run trains to step 11 (11 s), is evaluated there, goes on with the 4 s left and is stopped
    # after its 5th step more, at step 16; the next call does not evaluate step 11 again, resumes at 16
    # and is evaluated at its end, 22
    fake_clock(monkeypatch)
    one = TOY + dirs(tmp_path) + ["--patterns=sp", "--budgets=2x", "--seeds=1"]
    compare.main(one + ["--max_minutes=0.25"])
    out = capsys.readouterr().out
    assert f"=== {name('sp', '2x', 0)}: evaluating iter 11" in out and "saved" in out and "at iter 16" in out
    monkeypatch.undo()
    compare.main(one)
    out = capsys.readouterr().out
    assert "evaluating iter 11" not in out and f"=== {name('sp', '2x', 0)}: resuming at iter 16, up to iter 22 of 22" in out
    same_rows(tmp_path / "results", straight, ["sp_2x_s0"])


def test_throughput_sizes_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare, "THROUGHPUT_ITERS", 20)
    compare.main(TOY + dirs(tmp_path) + ["--throughput", "--patterns=dense,sp"])
    measured = json.load(open(tmp_path / "results" / "throughput.json"))
    assert set(measured["patterns"]) == {"dense", "sp"} and measured["iters"] == 20
    assert all(v["tokens_per_s"] > 0 and v["setup_s"] >= 0 and v["eval_s"] > 0 for v in measured["patterns"].values())
    assert "## Training speed (`--throughput`)" in (tmp_path / "results" / "table.md").read_text()
    assert not os.listdir(tmp_path / "runs")                                  # its runs are not kept
    # the plan's time: a 2x run of sp is two train.train calls (stops at 11 and 22), each with its set-up
    # and evaluation, and 22 steps of 128 tokens at the measured speed
    slow = {"tokens_per_s": 128.0, "setup_s": 5.0, "eval_s": 2.0}
    o, base = compare.parse_args(TOY + dirs(tmp_path))
    assert compare.estimate_s(compare.Run("sp", 4, 32, 0, "2x", 4e-3), o, 22, slow) == 2 * 7 + 22
    (tmp_path / "results" / "throughput.json").write_text(json.dumps({"patterns": {"dense": slow, "sp": slow}}))
    compare.main(TOY + dirs(tmp_path) + ["--dry_run", "--patterns=dense,sp", "--max_minutes=9"])
    out = capsys.readouterr().out
    assert f"{name('sp', '2x', 0):<44}     22 iters     0.0 M tokens    36 s   to do" in out
    monkeypatch.undo()
    # 4 runs at each budget: 4 x (7 + 11) + 4 x (7 + 6) + 4 x 36 = 268 s
    assert "left by throughput.json: about 4.5 GPU minutes in about 1 calls" in out
    # a run that would not finish in the time left is not started; one that needs more than a call is
    ctx, run = types.SimpleNamespace(base_iters=11), compare.Run("dense", 4, 32, 0, "1x", 4e-3)
    clock = compare.Clock(1)                                                  # a call of 60 s, 10 s left
    clock.deadline = compare.time.time() + 10
    assert not compare.fits(run, o, base, ctx, clock, {"dense": slow})        # needs 7 + 11 = 18 s
    assert f"=== {name('dense', '1x', 0)} needs about 18 s (throughput.json) and 10 s are left" in capsys.readouterr().out
    assert compare.fits(run, o, base, ctx, compare.Clock(0.1), {"dense": slow})   # more than a 6 s call: starts
    assert compare.fits(run, o, base, ctx, clock, {})                          # no measured speed: starts


def test_a_diverged_run_is_a_result_not_a_crash(tmp_path, monkeypatch):
    def diverge(cfg):
        raise FloatingPointError("loss became nan at iter 3; stopped without saving. The last good checkpoint ...")

    monkeypatch.setattr(train, "train", diverge)
    compare.main(TOY + dirs(tmp_path) + ["--patterns=sp", "--seeds=1", "--budgets=1x"])
    (row,) = rows(tmp_path / "results", "runs.csv")
    assert (row["val_loss"], row["error"], row["iters"]) == ("nan", "loss became nan at iter 3", "11")
    assert "| `sp` | 0.004 | 1x | 1,408 | 0 (+1 diverged) | nan |" in (tmp_path / "results" / "table.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--patterns=dense,foo"], "unknown pattern 'foo'"),
    (["--seeds=two"], "--seeds must be 'design' or a number of seeds"),
    (["--budgets=3x"], "--budgets and --track_budget some of 0.5x, 1x, 2x"),
    (["--batch_tokens=100"], "--batch_tokens=100 must be a multiple of block_size"),
    (["--copy_distances=64,2040"], "--copy_distances: copy probe: distance 2040 with span 32"),
    (["--copy_windows=1"], "--copy_windows must be at least 2"),
    (["--track_at=0.5,1"], "--track_at takes fractions of a run's steps"),
    (["--learning_rate=1"], "unknown option --learning_rate"),
    (["--n_head=3"], "n_embd=256 is not divisible by n_head=3"),
    (["--max_minutes=soon"], "--max_minutes expects float"),
])
def test_bad_options_stop_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_another_corpus_than_the_design_names_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(compare.DESIGN_DATA, "toy", (1, 2))
    o, _ = compare.parse_args(TOY)
    with pytest.raises(ConfigError, match="holds 50,000 / 4,000 train / val tokens, not the 1 / 2"):
        compare.check_data(o)
    monkeypatch.setattr(utils, "data_dir", lambda dataset: str(tmp_path))   # not prepared: the design's message
    with pytest.raises(ConfigError, match="run python3.11 data/toy/prepare.py here"):
        compare.check_data(o)


def test_the_design_plan():
    o, base = compare.parse_args([])
    empty = report.Setting(8, 2048)
    sweep_pending = compare.plan(o, empty, {})
    assert [(r.pattern, r.budget, r.lr) for r in sweep_pending if r.lr is not None] == \
        [(p, "0.5x", lr) for p in ("dense", "sp", "window", "sp_balanced") for lr in (1e-3, 2e-3, 4e-3)]
    chosen = compare.plan(o, empty, {p: 2e-3 for p in o.patterns})
    # 1x: dense and sp 5 seeds (until the seeds rule wants more), window and sp_balanced 3; 0.5x and 2x:
    # dense and sp 3 seeds; the seed-0 0.5x runs are the sweep's
    count = {(p, b): sum(r.pattern == p and r.budget == b for r in chosen) for p in o.patterns for b in report.BUDGETS}
    assert count == {("dense", "1x"): 5, ("sp", "1x"): 5, ("window", "1x"): 3, ("sp_balanced", "1x"): 3,
                     ("dense", "0.5x"): 3, ("sp", "0.5x"): 3, ("dense", "2x"): 3, ("sp", "2x"): 3,
                     ("window", "0.5x"): 0, ("sp_balanced", "0.5x"): 0, ("window", "2x"): 0, ("sp_balanced", "2x"): 0}
    assert [(r.pattern, r.budget) for r in chosen[:8]] == [
        ("dense", "1x"), ("sp", "1x"), ("window", "1x"), ("sp_balanced", "1x"), ("dense", "0.5x"), ("sp", "0.5x"),
        ("dense", "2x"), ("sp", "2x")]
    # the budgets: 20 tokens a parameter of the byte model, 5,311,744 parameters with embeddings
    params = compare.count_params(o, base, {"vocab_size": 256})
    assert params == 5_311_744 and compare.base_iters(o, params) == 1622          # ceil(1621.02)
    assert [compare.iters_of(b, 1622) for b in report.BUDGETS] == [811, 1622, 3244]
    assert compare.stops_of(compare.Run("sp", 8, 2048, 0, "2x", 2e-3), o, 3244) == [406, 811, 1622, 2433, 3244]
    assert compare.stops_of(compare.Run("sp", 8, 2048, 0, "1x", 2e-3), o, 1622) == [1622]
    cfg = compare.train_config(compare.Run("sp", 8, 2048, 0, "2x", 2e-3), o, base, 3244, 811)
    assert (cfg.max_iters, cfg.lr_decay_iters, cfg.warmup_iters, cfg.batch_size) == (811, 3244, 162, 32)


def with_runs(losses, seeds="design"):
    """A Setting holding {(pattern, budget): [loss of seed 0, 1, ...]}."""
    S = report.Setting(8, 2048, seeds=seeds)
    for (p, b), values in losses.items():
        S.loss[(p, b)] = {s: v for s, v in enumerate(values) if not math.isnan(v)}
        S.done[(p, b)] = set(range(len(values)))
    return S


def test_the_seeds_rule_adds_pairs_until_sp_minus_dense_is_settled():
    dense = [3.0, 3.1, 3.2, 3.3, 3.4]
    # sp - dense = +0.01, -0.02, +0.03, -0.04, +0.05: sd 0.0365, half-width 2.776 x 0.0365 / sqrt(5) = 0.045,
    # wider than 1 % of dense (0.032): one more pair
    wide = with_runs({("dense", "1x"): dense, ("sp", "1x"): [3.01, 3.08, 3.23, 3.26, 3.45]})
    assert report.seeds_wanted(wide, "sp", "1x") == report.seeds_wanted(wide, "dense", "1x") == 6
    # ... only once both have all 5
    assert report.seeds_wanted(with_runs({("dense", "1x"): dense, ("sp", "1x"): [3.01, 3.08, 3.23, 3.26]}), "sp", "1x") == 5
    # +0.01 each but one +0.012: half-width 0.001, settled at 5
    narrow = with_runs({("dense", "1x"): dense, ("sp", "1x"): [3.01, 3.11, 3.21, 3.31, 3.412]})
    assert report.seeds_wanted(narrow, "sp", "1x") == 5
    # never settled: 8 at most; a diverged seed (nan) counts as done
    noisy = [3.2, 2.9, 3.4, 3.0, 3.6, 3.1, float("nan"), 3.3]
    assert report.seeds_wanted(with_runs({("dense", "1x"): dense + [3.5, 3.6, 3.7], ("sp", "1x"): noisy}), "sp", "1x") == 8
    assert report.seeds_wanted(wide, "window", "1x") == 3 and report.seeds_wanted(wide, "sp", "2x") == 3
    assert report.seeds_wanted(wide, "window", "2x") == 0
    assert report.seeds_wanted(with_runs({}, seeds="4"), "window", "1x") == 4
    assert report.seeds_wanted(with_runs({}, seeds="4"), "window", "0.5x") == 0


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path):
    # A run's folder may hold a checkpoint from an earlier call: it is resumed when it trained the same
    # thing (where and how it ran, and where the call stopped, may differ), and started afresh when
    # anything it trains differs.
    o, base = compare.parse_args(TOY + dirs(tmp_path))
    cfg = compare.train_config(compare.Run("sp", 4, 32, 0, "2x", 4e-3), o, base, 22, 11)
    os.makedirs(cfg.out_dir)
    for change, state in [({}, 7), ({"compile": True, "device": "cuda", "time_limit_s": 60.0}, 7), ({"max_iters": 22}, 7),
                          ({"lr_decay_iters": 11}, "other"), ({"n_head": 8}, "other"), ({"seed": 1}, "other")]:
        saved = {**dataclasses.asdict(cfg), **change}
        torch.save({"config": saved, "iter_num": 7}, os.path.join(cfg.out_dir, "ckpt.pt"))
        assert compare.checkpoint_state(cfg) == state, change


def write_csv(path, file, table):
    with open(path / file, "w", newline="") as f:
        writer = csv.DictWriter(f, report.COLUMNS[file], restval="")
        writer.writeheader()
        writer.writerows(table)


def sweep_rows(path, *runs):
    write_csv(path, "runs.csv", [dict(task="lm", pattern=p, n_head=4, block_size=32, seed=0, budget="0.5x", lr=lr,
                                      val_loss=v, params=1, tokens=1, iters=1, tokens_per_s=1) for p, lr, v in runs])


def test_choose_lrs_takes_the_lowest_loss_and_keeps_it(tmp_path, capsys):
    o, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=1e-3,2e-3,4e-3", "--patterns=dense,sp"])
    (tmp_path / "results").mkdir()
    sweep_rows(tmp_path / "results", ("dense", "0.001", "3.2"), ("dense", "0.002", "3.1"), ("dense", "0.004", "nan"),
               ("sp", "0.001", "3.3"), ("sp", "0.002", "3.4"))                # sp's 0.004 run is missing
    assert compare.choose_lrs(o) == ({"dense": 0.002}, {})                    # a diverged run counts as +inf
    sweep_table = report.table_md(report.load(tmp_path / "results")).split("Learning-rate sweep")[1]
    assert "| `dense` | 3.2000 | 3.1000* | nan |" in sweep_table                # a diverged run: nan
    o2, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=3e-3", "--patterns=dense,sp"])
    assert compare.choose_lrs(o2) == ({"dense": 0.002, "sp": 0.003}, {})     # kept; sp: the one rate
    stored = json.load(open(tmp_path / "results" / "lr.json"))["h4_n32"]
    assert stored["dense"]["lr"] == 0.002 and stored["dense"]["sweep"]["0.002"] == 3.1
    assert math.isnan(stored["dense"]["sweep"]["0.004"]) and stored["sp"] == {"lr": 0.003, "sweep": {}}
    assert "lr for dense at h4_n32: 0.002;" in capsys.readouterr().out


def test_a_sweep_whose_best_rate_is_at_an_edge_goes_on_past_it(tmp_path, capsys):
    o, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=1e-3,2e-3,4e-3", "--patterns=dense,sp", "--seeds=1",
                                                     "--budgets=0.5x"])
    (tmp_path / "results").mkdir()
    grid = [("dense", "0.001", "3.3"), ("dense", "0.002", "3.2"), ("dense", "0.004", "3.1"),   # best at the top
            ("sp", "0.001", "3.0"), ("sp", "0.002", "3.2"), ("sp", "0.004", "3.4")]           # best at the bottom
    sweep_rows(tmp_path / "results", *grid)
    lrs, beyond = compare.choose_lrs(o)
    assert lrs == {} and beyond == {"dense": 0.008, "sp": 0.0005}
    run_next = compare.plan(o, report.Setting(4, 32, seeds="1"), lrs, beyond)
    assert [(r.pattern, r.lr) for r in run_next if r.lr is not None] == [("dense", 0.008), ("sp", 0.0005)]
    assert "trying 0.008 next" in capsys.readouterr().out
    # dense's next rate is worse: 0.004 is inside now. sp's is better again: on to 0.00025, which is
    # worse; sp's sweep then holds 5 rates with its best inside
    sweep_rows(tmp_path / "results", *grid, ("dense", "0.008", "3.15"), ("sp", "0.0005", "2.9"), ("sp", "0.00025", "2.95"))
    assert compare.choose_lrs(o) == ({"dense": 0.004, "sp": 0.0005}, {})
    stored = json.load(open(tmp_path / "results" / "lr.json"))["h4_n32"]
    assert sorted(stored["sp"]["sweep"], key=float) == ["0.00025", "0.0005", "0.001", "0.002", "0.004"]
    assert "lr for dense at h4_n32: 0.004;" in capsys.readouterr().out
    sweep_table = report.table_md(report.load(tmp_path / "results")).split("Learning-rate sweep")[1]
    assert "| `dense` |  |  | 3.3000 | 3.2000 | 3.1000* | 3.1500 |" in sweep_table  # blank: rates it did not try
    # a sweep stops growing at LR_SWEEP_MAX rates, even with its best still at an edge
    (tmp_path / "results" / "lr.json").unlink()
    sweep_rows(tmp_path / "results", *grid[3:], ("sp", "0.0005", "2.9"), ("sp", "0.00025", "2.8"))
    assert compare.choose_lrs(o) == ({"sp": 0.00025}, {})                   # dense: its sweep is not in
    assert "lr for sp at h4_n32: 0.00025 (at an edge of its sweep, which goes no further)" in capsys.readouterr().out


# -----------------------------------------------------------------------------
# The report against hand-made results: 3 seeds (--seeds=3), N = 512, buckets 0 and 256

DENSE = {"1x": [3.0, 3.1, 3.2], "2x": [2.9, 3.0, 3.1]}
SHARE = {"dense": 0.8, "sp": 0.7, "window": 0.1}                     # the copy probe's share at every distance


def hand_made(tmp_path, sp, window=(3.02, 3.12, 3.22), sp_2x=None, dense_share=0.8, seeds="3"):
    """runs.csv, by_position.csv, copy_probe.csv, lr.json and experiment.json of dense, sp and window at
    1x (sp and dense at 2x too); a run at another rate that must not count. The buckets' losses equal the
    run's; the copy probe's control loss is 2.0, its probe loss 2.0 x (1 - share) (+0.01 x seed for sp)."""
    losses = {("dense", "1x"): DENSE["1x"], ("sp", "1x"): list(sp), ("window", "1x"): list(window),
              ("dense", "2x"): DENSE["2x"], ("sp", "2x"): list(sp_2x or [v - 0.1 for v in sp])}
    shares = dict(SHARE, dense=dense_share)
    runs, by_pos, copy = [], [], []
    for (p, b), values in losses.items():
        iters = {"1x": 100, "2x": 200}[b]
        for seed, v in enumerate(values):
            key = dict(task="lm", pattern=p, n_head=16, block_size=512, seed=seed, budget=b, lr="0.001")
            runs.append({**key, "params": 1000, "tokens": 1000 * iters, "iters": iters, "val_loss": v, "tokens_per_s": 100})
            at = dict(iter=iters, tokens=1000 * iters)
            by_pos += [{**key, **at, "bucket": s, "positions": 256, "loss": v} for s in (0, 256)]
            if b == "1x":
                left = 1 - shares[p] + (0.01 * seed if p == "sp" else 0)
                copy += [{**key, **at, "distance": d, "span": 32, "windows": 8, "control_loss": 2.0,
                          "probe_loss": 2.0 * left, "gain": 2.0 * (1 - left), "share": 1 - left,
                          "control_first": 3.0, "probe_first": 2.9} for d in (128, 384)]
    runs.append(dict(task="lm", pattern="sp", n_head=16, block_size=512, seed=0, budget="1x", lr="0.002", params=1000,
                     tokens=1000, iters=1, val_loss=9.99, tokens_per_s=100))
    write_csv(tmp_path, "runs.csv", runs)
    write_csv(tmp_path, "by_position.csv", by_pos)
    write_csv(tmp_path, "copy_probe.csv", copy)
    (tmp_path / "lr.json").write_text(json.dumps({"h16_n512": {p: {"lr": 0.001, "sweep": {}}
                                                               for p in ("dense", "sp", "window")}}))
    (tmp_path / "experiment.json").write_text(json.dumps({"seeds": seeds}))
    return report.load(tmp_path)[0]


def test_the_report_intervals_and_verdicts_against_a_hand_computation(tmp_path):
    # sp - dense at 1x = -0.01, -0.02, -0.03 per seed: mean -0.02, sample sd 0.01, t_{0.975, 2} = 4.303,
    # half-width 4.303 x 0.01 / sqrt(3) = 0.024844: [-0.044844, +0.004844]; 1 % of dense's mean 3.1 is
    # 0.031, and -0.0448 < -0.031: not inside the band, not wholly below it
    S = hand_made(tmp_path, sp=[2.99, 3.08, 3.17])
    n, mean, lo, hi = report.paired(S.loss[("sp", "1x")], S.loss[("dense", "1x")])
    assert (n, mean, lo, hi) == (3, pytest.approx(-0.02), pytest.approx(-0.044844, abs=1e-6), pytest.approx(0.004844, abs=1e-6))
    # the regime: dense's copy share 80 % >= 50 %; sp - dense -0.02 at 1x, -0.02 at 2x (moved 0); window
    # +0.02 behind dense
    assert [c.status for c in report.regime_checks(S)] == ["pass", "pass", "pass"]
    assert report.lm_matches(S, "sp") == "no: not settled, -0.0200 [-0.0448, +0.0048] against +/- 0.0310"
    assert report.lm_beats(S, "dense") == "no: -0.0200 [-0.0448, +0.0048]"
    assert report.lm_beats(S, "window") == "yes"                                # -0.03, -0.04, -0.05: [-0.065, -0.015]
    assert report.lm_matches(S, "window") == "yes"                              # +0.02 each: inside 0.031
    # the copy probe: left = 1 - share; sp - dense = 0.30 - 0.20 + 0.01 s = +0.10, +0.11, +0.12
    assert report.copy_matches(S, 128) == "no: sp copies less than dense, +0.1100 [+0.0852, +0.1348] against +/- 0.0100"
    assert report.copy_beats(S, "window", 128) == "yes"                         # 0.30 + 0.01 s - 0.90 < 0
    table = report.table_md([S])
    assert "In regime: the verdicts below are drawn." in table and "9.99" not in table  # the other rate's run
    assert "| `sp` | no: not settled, -0.0200 [-0.0448, +0.0048] against +/- 0.0310 |  |" in table
    assert "| `window` | yes | yes |" in table
    assert "| 128 | no: sp copies less than dense, +0.1100 [+0.0852, +0.1348] against +/- 0.0100 | no: " in table
    assert "| `sp` | 0.001 | 1x | 100,000 | 3 | 3.0800 | -0.0200 [-0.0448, +0.0048] | 100 | 1000.0 |" in table
    assert "| 100,000 | 100.0 | end of 1x | -0.0200 [-0.0448, +0.0048] (3) | -0.65% |" in table
    assert "| `dense` | 128 | 2.0000 | 0.4000 | +0.800 [+0.800, +0.800] | 3.000 / 2.900 |" in table


def test_a_failed_regime_check_says_not_in_regime_and_draws_no_verdict(tmp_path):
    near = [3.001, 3.102, 3.203]                                                 # would match dense
    assert report.lm_matches(hand_made(tmp_path, near), "sp") == "yes"
    # R1: dense removes only 40 % of the control loss with the copy
    S = hand_made(tmp_path, near, dense_share=0.4)
    checks = report.regime_checks(S)
    assert [c.status for c in checks] == ["fail", "pass", "pass"] and checks[0].measured == "40% at 128, 40% at 384"
    # R2: sp - dense is +0.002 at 1x and -0.05 at 2x: it moved -0.052, more than 0.5 % of 3.1 = 0.0155
    S = hand_made(tmp_path, near, sp_2x=[2.85, 2.95, 3.05])
    assert [c.status for c in report.regime_checks(S)] == ["pass", "fail", "pass"]
    table = report.table_md([S])
    assert "**not in regime (R2 failed): no verdict is drawn.**" in table
    assert "| `dense` |  | not in regime (R2 failed) |" in table
    assert "| `window` | not in regime (R2 failed) | not in regime (R2 failed) |" in table
    assert "| 128 | not in regime (R2 failed) |" in table
    # R3: window 1.6 % ahead of dense (-0.05 of 3.1, beyond -0.031)
    S = hand_made(tmp_path, near, window=[2.95, 3.05, 3.15])
    assert [c.status for c in report.regime_checks(S)] == ["pass", "pass", "fail"]
    assert "R3" in report.gate(report.regime_checks(S))
    # no 2x runs yet: not checked, no verdict either
    S.loss.pop(("sp", "2x"))
    assert report.gate(report.regime_checks(S)) == "not in regime (R3 failed)"
    S = hand_made(tmp_path, near)
    S.loss.pop(("dense", "2x"))
    assert report.gate(report.regime_checks(S)) == "regime not checked yet (R2)"
    assert "| `sp` | regime not checked yet (R2) |" in report.table_md([S])


def test_verdicts_wait_for_the_seeds_rule(tmp_path):
    # under the design's rule sp and dense want 5 seeds at 1x: with 3 the verdicts wait
    S = hand_made(tmp_path, [3.001, 3.102, 3.203], seeds="design")
    assert report.waiting(S, "sp", "dense") == "waiting for seeds (sp: 3 of 5)"
    assert "| `sp` | waiting for seeds (sp: 3 of 5) |  |" in report.table_md([S])
    assert "| `dense` |  | waiting for seeds (sp: 3 of 5) |" in report.table_md([S])
    assert report.waiting(S, "window") is None                                  # window wants 3
    assert report.interval([1.0, 2.0, 3.0]) == pytest.approx((3, 2.0, 2.0 - 4.303 / 3 ** 0.5, 2.0 + 4.303 / 3 ** 0.5))


def test_the_notebook_draws_the_results(straight, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -r requirements-dev.txt)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -r requirements-dev.txt)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -r requirements-dev.txt)")
    for var, value in (("SPATTN_QUICK", "1"), ("SPATTN_QUALITY_DIR", str(straight)),
                       ("MPLBACKEND", "module://matplotlib_inline.backend_inline")):
        monkeypatch.setenv(var, value)
    notebooks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
    nb = nbformat.read(os.path.join(notebooks, "compare.ipynb"), as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": notebooks}}).execute()
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("import report"))
    kinds = [kind for o in cell.outputs for kind in o.get("data", {})]
    assert kinds.count("image/png") == 1                                     # the summary
    text = "".join(o["data"].get("text/markdown", "") for o in cell.outputs if "data" in o)
    assert "## 4 heads, N = 32" in text and "### Regime checks" in text
