"""experiments/compare.py and experiments/report.py: the whole experiment at toy size on Tiny Shakespeare (2 layers, 4 heads,
N = 32, 10 steps a run; 2 patterns x 2 seeds x 1 budget), its files, skipping what is done, stopping
at --max_minutes and resuming exactly, and the report's intervals and verdicts against numbers worked
out by hand."""
import csv
import dataclasses
import json
import math
import os
import types

import pytest
import torch

import compare
import report
import train
from model import ConfigError

TOY = ["--dataset=shakespeare_char", "--device=cpu", "--block_size=32", "--n_head=4", "--n_layer=2", "--n_embd=32",
       "--patterns=dense,sp", "--seeds=2", "--budgets=full", "--lr_sweep=4e-3", "--batch_tokens=128",
       "--full_tokens=1280", "--eval_interval=5", "--eval_iters=2", "--bucket=8", "--eval_batch=512",
       "--copy_span=4", "--copy_distances=4,12", "--copy_windows=8", "--ablation_windows=4", "--head_windows=2"]
RUNS = [f"{p}_h4_n32_full_lr0.004_s{s}" for s in (0, 1) for p in ("dense", "sp")]


def rows(folder, name):
    with open(os.path.join(folder, name), newline="") as f:
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
    for name, columns in report.COLUMNS.items():
        with open(straight / name, newline="") as f:
            assert next(csv.reader(f)) == columns, name
    runs = rows(straight, "runs.csv")
    assert [(r["pattern"], r["seed"], r["budget"], r["lr"]) for r in runs] == [
        ("dense", "0", "full", "0.004"), ("sp", "0", "full", "0.004"), ("dense", "1", "full", "0.004"),
        ("sp", "1", "full", "0.004")]
    for r in runs:
        assert (r["tokens"], r["iters"], r["error"]) == ("1280", "10", "")
        assert 0 < float(r["val_loss"]) < math.log(65) + 0.5 and float(r["tokens_per_s"]) > 0
        assert float(r["sigma"]) >= 0 and float(r["entropy"]) > 0         # both patterns have a fixed mask
    assert len(rows(straight, "by_position.csv")) == 4 * 4                  # 4 buckets of 8 positions
    assert len(rows(straight, "copy_probe.csv")) == 4 * 2
    ablation = rows(straight, "ablation.csv")                               # sp only: 2 layers x 4 heads x 4 buckets
    assert len(ablation) == 2 * 2 * 4 * 4 and {r["pattern"] for r in ablation} == {"sp"}
    assert json.load(open(straight / "lr.json")) == {"h4_n32": {"dense": {"lr": 0.004, "sweep": {}},
                                                                "sp": {"lr": 0.004, "sweep": {}}}}
    assert json.load(open(straight / "experiment.json"))["data"]["val_tokens"] == 111540
    for name in ("table.md", "summary_h4_n32.png", "ablation_sp_h4_n32.png"):
        assert (straight / name).exists()
    assert not any((straight.parent / "runs" / run / "ckpt.pt").exists() for run in RUNS)  # deleted once evaluated


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
    assert f"left: 4 runs (0 half, 4 full budget; 0.0 M tokens of training): {RUNS[0]}," in capsys.readouterr().out
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_max_minutes_stops_inside_a_run_and_the_next_call_resumes_it_exactly(straight, tmp_path, monkeypatch, capsys):
    # a clock that moves one second per training step, and no time kept for set-up or evaluation:
    # --max_minutes=0.1 (6 s) stops the first run after its 7th step, its checkpoint saved
    clock, real_step = {"now": 0.0}, train.train_step

    def step(*a):
        clock["now"] += 1.0
        return real_step(*a)

    fake_time = types.SimpleNamespace(time=lambda: clock["now"])
    for name, value in (("SETUP_S", 0.0), ("FIRST_ANALYSIS_S", 0.0), ("MIN_TRAIN_S", 0.0), ("time", fake_time)):
        monkeypatch.setattr(compare, name, value)
    monkeypatch.setattr(train, "time", fake_time)
    monkeypatch.setattr(train, "train_step", step)
    compare.main(TOY + dirs(tmp_path) + ["--max_minutes=0.1"])
    out = capsys.readouterr().out
    assert f"time_limit_s=6: saved {tmp_path}/runs/{RUNS[0]}/ckpt.pt at iter 7" in out
    assert "left: 4 runs" in out and not (tmp_path / "results" / "runs.csv").exists()
    monkeypatch.undo()
    compare.main(TOY + dirs(tmp_path))                                        # no limit: resume, then the rest
    assert f"=== {RUNS[0]}: resuming at iter 7, 10 iters" in capsys.readouterr().out
    same = ("pattern", "seed", "val_loss", "best_val_loss", "sigma", "entropy")
    assert [[r[c] for c in same] for r in rows(tmp_path / "results", "runs.csv")] == \
        [[r[c] for c in same] for r in rows(straight, "runs.csv")]
    for name in ("by_position.csv", "copy_probe.csv", "ablation.csv"):
        assert rows(tmp_path / "results", name) == rows(straight, name), name


def test_a_diverged_run_is_a_result_not_a_crash(tmp_path, monkeypatch):
    def diverge(cfg):
        raise FloatingPointError("loss became nan at iter 3; stopped without saving. The last good checkpoint ...")

    monkeypatch.setattr(train, "train", diverge)
    compare.main(TOY + dirs(tmp_path) + ["--patterns=sp", "--seeds=1"])
    (row,) = rows(tmp_path / "results", "runs.csv")
    assert (row["val_loss"], row["error"]) == ("nan", "loss became nan at iter 3")
    assert "| `sp` | 0.004 | full | 0 (+1 diverged) | nan |" in (tmp_path / "results" / "table.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--patterns=dense,foo"], "unknown pattern 'foo'"),
    (["--seeds=two"], "--seeds must be 'design' or a number of seeds"),
    (["--budgets=quarter"], "--budgets half and/or full"),
    (["--batch_tokens=100"], "--batch_tokens=100 must be a multiple of block_size"),
    (["--copy_distances=64,1000"], "--copy_distances: copy probe: distance 1000 with span 32"),
    (["--learning_rate=1"], "unknown option --learning_rate"),
    (["--n_head=3"], "n_embd=512 is not divisible by n_head=3"),
    (["--max_minutes=soon"], "--max_minutes expects float"),
])
def test_bad_options_stop_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_another_corpus_than_the_design_names_is_refused(monkeypatch):
    train.load_dataset("shakespeare_char")                                  # prepared, if it was not
    monkeypatch.setitem(compare.DESIGN_DATA, "shakespeare_char", (1, 2))
    o, _ = compare.parse_args(TOY)
    with pytest.raises(ConfigError, match="holds 1,003,854 / 111,540 train / val tokens, not the 1 / 2"):
        compare.check_data(o)


def test_the_design_plan():
    o, _ = compare.parse_args([])
    sweep_pending = compare.plan(o, {})
    assert len([r for r in sweep_pending if r.lr is not None]) == 8 * 3      # only the sweep can run
    chosen = compare.plan(o, {p: 1.5e-3 for p in o.patterns})
    # chosen rates: no sweep left; seeds x budgets per pattern, the seed-0 half-budget run (the sweep's) included
    assert len(chosen) == (3 * 5 + 4 * 3 + 2) * 2 and all(r.lr == 1.5e-3 for r in chosen)
    sp = [(r.seed, r.budget) for r in chosen if r.pattern == "sp"]
    assert sp == [(0, "half"), (0, "full")] + [(s, b) for s in range(1, 5) for b in ("half", "full")]
    # dense chosen in an earlier call (on another grid): no dense sweep; the others sweep this call's rates
    some = compare.plan(o, {"dense": 7.5e-4})
    assert {(r.pattern, r.lr) for r in some if r.pattern == "dense"} == {("dense", 7.5e-4)}
    assert len([r for r in some if r.lr is not None and r.pattern != "dense"]) == 7 * 3
    assert compare.iters_of("full", 14_418_380, 16384) == 880 and compare.iters_of("half", 14_418_380, 16384) == 440


def test_a_checkpoint_of_another_model_is_not_resumed(tmp_path):
    # A run's folder may hold a checkpoint from an earlier call: it is resumed when it trained the same
    # thing (where and how it ran may differ), and started afresh when anything it trains differs.
    o, base = compare.parse_args(TOY + dirs(tmp_path))
    cfg = compare.train_config(compare.Run("sp", 4, 32, 0, "full", 4e-3), o, base, 1280)
    os.makedirs(cfg.out_dir)
    for change, state in [({}, 7), ({"compile": True, "device": "cuda", "time_limit_s": 60.0}, 7),
                          ({"n_head": 8}, "other"), ({"block_size": 64}, "other"), ({"seed": 1}, "other")]:
        saved = {**dataclasses.asdict(cfg), **change}
        torch.save({"config": saved, "iter_num": 7}, os.path.join(cfg.out_dir, "ckpt.pt"))
        assert compare.checkpoint_state(cfg) == state, change


def write_csv(path, name, table):
    with open(path / name, "w", newline="") as f:
        writer = csv.DictWriter(f, report.COLUMNS[name], restval="")
        writer.writeheader()
        writer.writerows(table)


def test_choose_lrs_takes_the_lowest_loss_and_keeps_it(tmp_path, capsys):
    o, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=1e-3,2e-3,4e-3"])
    (tmp_path / "results").mkdir()
    sweep = [dict(pattern=p, n_head=4, block_size=32, seed=0, budget="half", lr=lr, val_loss=v, tokens=1,
                  tokens_per_s=1)
             for p, lr, v in [("dense", "0.001", "3.2"), ("dense", "0.002", "3.1"), ("dense", "0.004", "nan"),
                              ("sp", "0.001", "3.3"), ("sp", "0.002", "3.4")]]   # sp's 0.004 run is missing
    write_csv(tmp_path / "results", "runs.csv", sweep)
    assert compare.choose_lrs(o) == ({"dense": 0.002}, {})                    # a diverged run counts as +inf
    sweep_table = report.table_md(report.load(tmp_path / "results")).split("Learning-rate sweep")[1]
    assert "| `dense` | 3.2000 | 3.1000* | nan |" in sweep_table                # a diverged run: nan
    o2, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=3e-3"])
    assert compare.choose_lrs(o2) == ({"dense": 0.002, "sp": 0.003}, {})     # kept; sp: the one rate
    stored = json.load(open(tmp_path / "results" / "lr.json"))["h4_n32"]
    assert stored["dense"]["lr"] == 0.002 and stored["dense"]["sweep"]["0.002"] == 3.1
    assert math.isnan(stored["dense"]["sweep"]["0.004"]) and stored["sp"] == {"lr": 0.003, "sweep": {}}
    assert "lr for dense at h4_n32: 0.002;" in capsys.readouterr().out


def test_a_sweep_whose_best_rate_is_at_an_edge_goes_on_past_it(tmp_path, capsys):
    o, _ = compare.parse_args(TOY + dirs(tmp_path) + ["--lr_sweep=1e-3,2e-3,4e-3", "--seeds=1", "--budgets=half"])
    (tmp_path / "results").mkdir()

    def sweep_rows(*runs):
        write_csv(tmp_path / "results", "runs.csv",
                  [dict(pattern=p, n_head=4, block_size=32, seed=0, budget="half", lr=lr, val_loss=v, tokens=1,
                        tokens_per_s=1) for p, lr, v in runs])

    grid = [("dense", "0.001", "3.3"), ("dense", "0.002", "3.2"), ("dense", "0.004", "3.1"),   # best at the top
            ("sp", "0.001", "3.0"), ("sp", "0.002", "3.2"), ("sp", "0.004", "3.4")]           # best at the bottom
    sweep_rows(*grid)
    lrs, beyond = compare.choose_lrs(o)
    assert lrs == {} and beyond == {"dense": 0.008, "sp": 0.0005}
    run_next = compare.plan(o, lrs, beyond)
    assert [(r.pattern, r.lr) for r in run_next if r.lr is not None] == [("dense", 0.008), ("sp", 0.0005)]
    assert "trying 0.008 next" in capsys.readouterr().out
    # dense's next rate is worse: 0.004 is inside now. sp's is better again: on to 0.00025, which is
    # worse; sp's sweep then holds 5 rates with its best inside
    sweep_rows(*grid, ("dense", "0.008", "3.15"), ("sp", "0.0005", "2.9"), ("sp", "0.00025", "2.95"))
    assert compare.choose_lrs(o) == ({"dense": 0.004, "sp": 0.0005}, {})
    stored = json.load(open(tmp_path / "results" / "lr.json"))["h4_n32"]
    assert sorted(stored["sp"]["sweep"], key=float) == ["0.00025", "0.0005", "0.001", "0.002", "0.004"]
    assert "lr for dense at h4_n32: 0.004;" in capsys.readouterr().out
    sweep_table = report.table_md(report.load(tmp_path / "results")).split("Learning-rate sweep")[1]
    assert "| `dense` |  |  | 3.3000 | 3.2000 | 3.1000* | 3.1500 |" in sweep_table  # blank: rates it did not try
    # a sweep stops growing at LR_SWEEP_MAX rates, even with its best still at an edge
    (tmp_path / "results" / "lr.json").unlink()
    sweep_rows(*grid[3:], ("sp", "0.0005", "2.9"), ("sp", "0.00025", "2.8"))
    assert compare.choose_lrs(o) == ({"sp": 0.00025}, {})                   # dense: its sweep is not in
    assert "lr for sp at h4_n32: 0.00025 (at an edge of its sweep, which goes no further)" in capsys.readouterr().out


def hand_made(tmp_path, full_sp, bucket_448_sp=None, half_sp=(3.501, 3.602, 3.703)):
    """runs.csv, by_position.csv and lr.json of dense and sp, 3 seeds, 2 budgets, N = 512, buckets 384
    and 448; plus a sweep run at another rate that must not count."""
    dense = {"half": [3.5, 3.6, 3.7], "full": [3.0, 3.1, 3.2]}
    sp = {"half": list(half_sp), "full": full_sp}
    runs, by_pos = [], []
    for pattern, losses in (("dense", dense), ("sp", sp)):
        for budget, values in losses.items():
            for seed, v in enumerate(values):
                key = dict(pattern=pattern, n_head=16, block_size=512, seed=seed, budget=budget, lr="0.001")
                runs.append({**key, "tokens": 1000, "val_loss": v, "tokens_per_s": 100})
                last = bucket_448_sp[seed] if (pattern, budget) == ("sp", "full") and bucket_448_sp else v
                by_pos += [{**key, "bucket": 384, "positions": 64, "loss": v},
                           {**key, "bucket": 448, "positions": 64, "loss": last}]
    runs.append(dict(pattern="sp", n_head=16, block_size=512, seed=0, budget="half", lr="0.002", tokens=1000,
                     val_loss=9.99, tokens_per_s=100))
    write_csv(tmp_path, "runs.csv", runs)
    write_csv(tmp_path, "by_position.csv", by_pos)
    (tmp_path / "lr.json").write_text(json.dumps({"h16_n512": {p: {"lr": 0.001, "sweep": {}} for p in ("dense", "sp")}}))
    return report.load(tmp_path)[0]


def test_the_report_intervals_and_verdicts_against_a_hand_computation(tmp_path):
    # full budget: sp - dense = -0.01, -0.02, -0.03 per seed: mean -0.02, sample sd 0.01,
    # t_{0.975, 2} = 4.303, half width 4.303 * 0.01 / sqrt(3) = 0.024844: [-0.044844, +0.004844];
    # 1 % of dense's mean 3.1 is 0.031, and -0.0448 < -0.031: sp does not match dense
    S = hand_made(tmp_path, full_sp=[2.99, 3.08, 3.17])
    n, mean, lo, hi = report.paired(S.loss[("sp", "full")], S.loss[("dense", "full")])
    assert n == 3 and mean == pytest.approx(-0.02) and lo == pytest.approx(-0.044844, abs=1e-6)
    assert hi == pytest.approx(0.004844, abs=1e-6)
    # half budget: +0.001, +0.002, +0.003: [+0.002 -/+ 0.0024844] = [-0.000484, +0.004484], within 0.036
    assert report.paired(S.loss[("sp", "half")], S.loss[("dense", "half")])[2:] == pytest.approx((-0.000484, 0.004484), abs=1e-6)
    assert report.matches_dense(S, "sp") == "no (full: -0.0200 [-0.0448, +0.0048] against 1 % of dense = 0.0310: not settled)"
    assert report.beats(S, "dense") == "no (half: +0.0020 [-0.0005, +0.0045])"
    table = report.table_md([S])
    assert "| `sp` | 0.001 | full | 3 | 3.0800 | -0.0200 [-0.0448, +0.0048] | 3 | 100 | 10.0 |" in table
    assert "9.99" not in table                                                 # the other rate's run is not counted
    assert "| 384 | 3.100 | 3.080 | -0.0200 [-0.0448, +0.0048] |" in table      # by position: the same per bucket


def test_the_verdicts_read_every_bucket_from_384_and_count_seeds(tmp_path):
    near = [3.001, 3.102, 3.203]                                               # +0.001, +0.002, +0.003: within 0.031
    assert report.matches_dense(hand_made(tmp_path, near), "sp") == "yes"
    S = hand_made(tmp_path, near, bucket_448_sp=[3.05, 3.16, 3.24])          # +0.05, +0.06, +0.04 from position 448
    assert report.matches_dense(S, "sp").startswith("no (full, positions 448+: +0.0500 [")
    assert report.matches_dense(S, "sp").endswith(": not settled)")          # [+0.025, +0.075] reaches inside 0.031
    S = hand_made(tmp_path, near, bucket_448_sp=[3.10, 3.21, 3.29])          # +0.10, +0.11, +0.09: [+0.075, +0.125]
    assert report.matches_dense(S, "sp").endswith(": higher loss than dense)")
    S = hand_made(tmp_path, [2.901, 3.002, 3.103])                            # -0.099, -0.098, -0.097: wholly below -0.031
    assert report.matches_dense(S, "sp").startswith("no (full: -0.0980 [") and "lower loss than dense" in report.matches_dense(S, "sp")
    S = hand_made(tmp_path, [3.001])                                           # one full-budget seed of sp
    assert report.matches_dense(S, "sp") == "not enough seeds (full: 1 paired)"
    assert report.beats(hand_made(tmp_path, [2.9, 3.0, 3.1]), "dense") == "no (half: +0.0020 [-0.0005, +0.0045])"
    assert report.beats(hand_made(tmp_path, [2.9, 3.0, 3.1], half_sp=[3.4, 3.5, 3.6]), "dense") == "yes"
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
    assert kinds.count("image/png") == 2                                     # the summary and sp's ablation
    text = "".join(o["data"].get("text/markdown", "") for o in cell.outputs if "data" in o)
    assert "## 4 heads, N = 32" in text and "| pattern | matches dense | sp beats it |" in text


def test_ablation_by_reach_splits_the_buckets_where_each_far_band_starts():
    # sp_exclusive, 4 heads, N = 32: bands [0, 8), [8, 16), [16, 24), [24, 32); buckets of 8 positions
    assert report.far_starts("sp_exclusive", 4, 32) == {1: 8, 2: 16, 3: 24}
    assert report.far_starts("longformer", 4, 32) == {}
    S = report.Setting(4, 32)
    for h in range(4):
        for b in (0, 8, 16, 24):
            for seed in (0, 1):  # 1 once the head's band is reachable, 0 before; head 0 (no far band): 0.5
                S.ablation["sp_exclusive", "full", 0, h, b][seed] = 0.5 if h == 0 else float(b >= 8 * h)
    reach = report.ablation_by_reach(S, "sp_exclusive")
    assert reach[0, 0][0] == 0.5 and math.isnan(reach[0, 0][1])
    assert [reach[0, h] for h in (1, 2, 3)] == [(0.0, 1.0)] * 3
    assert "| 0 | +0.5000 | +0.0000 / +1.0000 |" in report.table_md([S])
