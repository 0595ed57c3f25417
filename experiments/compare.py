"""
Does SPAttention match dense attention? The quality experiment: every attention pattern trained the same
way on long-context code with paired seeds, then evaluated on the whole validation split.

    python experiments/compare.py --dry_run                 # the plan: every run, and what is done or left
    python experiments/compare.py --max_minutes=9           # run what is left, stop cleanly before 9 minutes; repeat
    python experiments/compare.py --n_head=8 --patterns=dense,sp,window --max_minutes=9
    python experiments/compare.py --block_size=4096 --patterns=dense,sp,window --seeds=3 --max_minutes=9
    python experiments/compare.py --report_only             # table.md and the figures again, from the CSVs alone
    python experiments/compare.py --help                    # every option, with its default

The design (experiments/results/quality/README.md says why, and how to run it in calls of limited time, --max_minutes):
  data     pystdlib: CPython 3.11's standard library in GPT-2 BPE, 14.4 M train / 0.49 M val tokens
  model    6 layers, 512 wide, dropout 0; n_head 16 (the main setting) or 8; N = block_size 1024 or 4096
  budgets  full = one pass over the train split, half = half of it, each with its own schedule: linear
           warmup over warmup_frac of the steps, then cosine from lr down to lr / 10 at the last step
  lr       in each setting (n_head, N) every pattern first trains at each --lr_sweep rate (half budget,
           seed 0), and one rate further while its best is at an edge; the lowest full-validation loss
           picks its rate for all its other runs (lr.json)
  seeds    s = 0, 1, ... is TrainConfig.seed, the initialization and the batch order: the runs of one
           seed are paired across patterns. --seeds=design gives 5 to dense, sp and window, 3 to
           sp_exclusive, sp_balanced, longformer and bigbird, 2 to reformer
  after    each run, experiments/evaluate.py: the loss on every validation window and per 64-position bucket, and
           the copy probe; sigma and entropy (heads.py) where the pattern has a fixed mask; one head
           at a time ablated for the --ablate patterns (sp) at the full budget

A run is train.train(TrainConfig) in runs_dir/NAME/ (its checkpoint is deleted once the run is
evaluated; nothing there is committed). Its results go to results_dir: by_position.csv, copy_probe.csv,
ablation.csv, and last its row in runs.csv, which marks it done. Every level resumes: a run in runs.csv
is skipped; a run stopped in the middle (--max_minutes, Ctrl-C, or a killed call on a machine that is
still there) continues from its checkpoint (train.py's init_from=resume, exact); a trained run that
was not evaluated is evaluated. With --max_minutes, experiments/compare.py stops before that time with the
checkpoint saved, exits 0 and says what is left. experiment.json keeps what every call into one
results_dir must share (the data, the model and optimizer, the budgets, the evaluation).
"""

import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import shutil
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
import evaluate as E  # noqa: E402
import heads  # noqa: E402
import report as R  # noqa: E402
import train as T  # noqa: E402
from model import ATTN_PATTERNS, ConfigError  # noqa: E402
from sample import load_model  # noqa: E402

# The design's seeds per pattern (--seeds=design; experiments/results/quality/README.md says why).
DESIGN_SEEDS = dict(dense=5, sp=5, window=5, sp_exclusive=3, sp_balanced=3, longformer=3, bigbird=3, reformer=2)
# The corpus the design names, as (train, val) tokens: data/pystdlib/prepare.py run by CPython 3.11.7.
DESIGN_DATA = {"pystdlib": (14_418_380, 490_536)}
BUDGETS = {"half": 0.5, "full": 1.0}  # share of full_tokens
# The model and optimizer of every run; a TrainConfig key on the command line changes it.
TRAIN_DEFAULTS = dict(n_layer=6, n_embd=512, dropout=0.0, bias=False, gradient_accumulation_steps=1,
                      weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, log_interval=10,
                      compile=False, device="auto", dtype="auto")
# TrainConfig keys that experiments/compare.py sets for each run.
PER_RUN = ("attn", "seed", "out_dir", "init_from", "learning_rate", "min_lr", "max_iters", "lr_decay_iters",
           "warmup_iters", "batch_size", "block_size", "n_head", "dataset", "eval_interval", "eval_iters",
           "time_limit_s", "eval_only")
# Settings that may differ between calls into one results_dir (experiment.json keeps all the others).
PER_CALL = ("patterns", "seeds", "budgets", "lr_sweep", "n_head", "block_size", "ablate", "results_dir", "runs_dir",
            "max_minutes", "keep_checkpoints", "dry_run", "report_only", "eval_batch", "device", "compile",
            "compile_mode", "log_interval", "peak_flops")
# TrainConfig keys that say where and how a run runs, not what it trains: a checkpoint written under
# other values of these is still the run's own, and is resumed.
HOW_IT_RUNS = ("out_dir", "init_from", "time_limit_s", "device", "compile", "compile_mode", "log_interval",
               "peak_flops")
# Seconds kept free under --max_minutes.
SETUP_S = 30.0           # a run's set-up before its first step: model, data, the first CUDA calls
FIRST_ANALYSIS_S = 60.0  # the evaluation after a run, until this call has timed one
MIN_TRAIN_S = 30.0       # no run is started or resumed with less training time than this
LR_SWEEP_MAX = 5         # rates a pattern's lr sweep may grow to, past the edges of --lr_sweep


@dataclass
class Options:
    # what to run
    patterns: tuple = ATTN_PATTERNS          # attention patterns, comma-separated
    seeds: str = "design"                    # 'design' (5 dense/sp/window, 3 others, 2 reformer), or K: seeds 0..K-1
    budgets: tuple = ("half", "full")        # full = one pass over the train split (full_tokens), half = half
    lr_sweep: tuple = (3.75e-4, 7.5e-4, 1.5e-3)  # rates tried at the half budget, seed 0; one rate: no sweep
    n_head: int = 16
    block_size: int = 1024
    dataset: str = "pystdlib"
    # training (any other TrainConfig key, e.g. --n_layer, --compile, passes through)
    batch_tokens: int = 16384                # tokens per optimizer step: batch_size = batch_tokens / block_size
    full_tokens: int = 0                     # tokens of the full budget; 0: one pass over the train split
    warmup_frac: float = 0.05                # warmup steps, as a share of the run's steps
    eval_interval: int = 400                 # steps between in-training evaluations and checkpoints
    eval_iters: int = 10                     # batches of an in-training evaluation: a cheap subset
    # the evaluation after training (experiments/evaluate.py)
    eval_batch: int = 8                      # windows per forward pass
    bucket: int = 64                         # positions per bucket of the loss by position
    copy_span: int = 32                      # tokens of the copied span
    copy_distances: tuple = (32, 96, 192, 384, 768)  # distances between a token and its copy
    copy_windows: int = 64                   # validation windows of the copy probe
    ablate: tuple = ("sp",)                  # patterns whose heads are ablated one by one (full budget)
    ablation_windows: int = 64               # validation windows of the head ablation
    head_windows: int = 8                    # validation windows for sigma and entropy
    # where, and for how long
    results_dir: str = "experiments/results/quality"
    runs_dir: str = "out-quality"            # checkpoints and train.py's logs (not committed)
    max_minutes: float = 0.0                 # stop cleanly, checkpoint saved, before this many minutes; 0: no limit
    keep_checkpoints: bool = False           # keep each run's ckpt.pt after its evaluation
    dry_run: bool = False                    # print the plan and what is done; run nothing
    report_only: bool = False                # rebuild table.md and the figures from the CSVs; run nothing


# -----------------------------------------------------------------------------
# The plan

@dataclass(frozen=True)
class Run:
    """One training run. The runs of one seed differ only in pattern (and lr): they are paired."""
    pattern: str
    n_head: int
    block_size: int
    seed: int
    budget: str                              # 'half' or 'full'
    lr: float | None                         # None: the pattern's lr sweep has not finished

    @property
    def name(self):
        return f"{self.pattern}_h{self.n_head}_n{self.block_size}_{self.budget}_lr{R.fmt_lr(self.lr)}_s{self.seed}"

    @property
    def key(self):
        """Its identity in every CSV of results_dir: the values of report.KEY as written there."""
        return (self.pattern, str(self.n_head), str(self.block_size), str(self.seed), self.budget, R.fmt_lr(self.lr))


def seeds_of(o, pattern):
    return DESIGN_SEEDS.get(pattern, 3) if o.seeds == "design" else int(o.seeds)


def plan(o, lrs, beyond=None):
    """Every run of this call's setting, in order: the lr sweep of each pattern whose rate is not chosen
    yet (seed 0, half budget, each --lr_sweep rate; none with one rate), or the one rate past its sweep's
    edge that it tries next (beyond[pattern], see choose_lrs); then seed by seed and budget by budget every
    pattern at its chosen rate lrs[pattern] (None while unchosen). The sweep's run at the chosen rate is
    also that pattern's seed-0 half-budget run, so it appears once. A pattern chosen in an earlier call
    keeps its sweep and rate, whatever this call's --lr_sweep."""
    H, N, beyond = o.n_head, o.block_size, beyond or {}
    sweep = [Run(p, H, N, 0, "half", lr) for p in o.patterns if p not in lrs and p not in beyond
             for lr in o.lr_sweep] if len(o.lr_sweep) > 1 else []
    sweep += [Run(p, H, N, 0, "half", beyond[p]) for p in o.patterns if p in beyond]
    seeded = [Run(p, H, N, s, b, lrs.get(p)) for s in range(max(seeds_of(o, p) for p in o.patterns))
              for b in o.budgets for p in o.patterns if s < seeds_of(o, p)]
    if sweep:  # an unchosen seed-0 half-budget run will be one of the sweep's
        seeded = [r for r in seeded if not (r.lr is None and r.seed == 0 and r.budget == "half")]
    return list(dict.fromkeys(sweep + seeded))


def iters_of(budget, full_tokens, batch_tokens):
    """Optimizer steps of a budget: its tokens over the tokens per step, rounded."""
    return max(1, round(BUDGETS[budget] * full_tokens / batch_tokens))


def train_config(run, o, base, full_tokens):
    """The TrainConfig of a run: `base` (TRAIN_DEFAULTS and the command line's TrainConfig keys) with
    the run's pattern, seed and lr, and a schedule of its own budget's length."""
    iters = iters_of(run.budget, full_tokens, o.batch_tokens)
    return T.TrainConfig(**{
        **base, "dataset": o.dataset, "attn": run.pattern, "n_head": run.n_head, "block_size": run.block_size,
        "seed": run.seed, "learning_rate": run.lr, "min_lr": run.lr / 10, "max_iters": iters,
        "lr_decay_iters": iters, "warmup_iters": round(o.warmup_frac * iters),
        "batch_size": o.batch_tokens // (run.block_size * base["gradient_accumulation_steps"]),
        "eval_interval": min(o.eval_interval, iters), "eval_iters": o.eval_iters,
        "out_dir": os.path.join(o.runs_dir, run.name)})


def choose_lrs(o, save=True):
    """({pattern: lr}, {pattern: lr}): the chosen rates of this call's setting, and for a pattern whose
    sweep goes on, the rate it tries next. A pattern's rate is chosen once all its sweep runs (seed 0,
    half budget, each --lr_sweep rate) are in runs.csv: the rate of the lowest full-validation loss (a
    run that diverged counts as +inf); with one rate, that rate. A best rate at the top or the bottom of
    the sweep may not be the best there is, so the sweep then goes on one rate further (twice the top,
    half the bottom), until the best is inside it or it holds LR_SWEEP_MAX rates; meanwhile the pattern's
    seeded runs wait. A choice and its sweep are kept in results_dir/lr.json (when `save`), and later
    calls go on from them whatever their --lr_sweep."""
    path = os.path.join(o.results_dir, "lr.json")
    store = json.load(open(path)) if os.path.exists(path) else {}
    setting = R.setting_name(o.n_head, o.block_size)
    chosen = store.setdefault(setting, {})
    runs = {R.key_of(r): r for r in R.read_csv(os.path.join(o.results_dir, "runs.csv"))}

    def sweep_run(p, lr):  # the row of p's sweep run at lr, or None
        return runs.get(Run(p, o.n_head, o.block_size, 0, "half", lr).key)

    new, beyond = set(), {}
    for p in o.patterns:
        if p not in chosen:
            rows = {lr: sweep_run(p, lr) for lr in o.lr_sweep}
            if len(o.lr_sweep) > 1 and None in rows.values():
                continue
            chosen[p] = dict(lr=o.lr_sweep[0], sweep={R.fmt_lr(lr): float(r["val_loss"]) for lr, r in rows.items() if r})
            new.add(p)
        sweep = chosen[p]["sweep"]
        while len(sweep) > 1:
            best = min(sweep, key=lambda lr: R.nan_last(sweep[lr]))
            chosen[p]["lr"] = float(best)
            rates = sorted(map(float, sweep))
            if rates[0] < float(best) < rates[-1] or not math.isfinite(sweep[best]) or len(rates) >= LR_SWEEP_MAX:
                break
            further = 2 * rates[-1] if float(best) == rates[-1] else rates[0] / 2
            row = sweep_run(p, further)
            if row is None:
                beyond[p] = further
                break
            sweep[R.fmt_lr(further)] = float(row["val_loss"])
            new.add(p)
        if p in new:
            losses = ", ".join(f"{k}: {sweep[k]:.4f}" for k in sorted(sweep, key=float))
            if p in beyond:
                print(f"lr sweep for {p} at {setting}: the best rate is at an edge; trying {beyond[p]:g} next "
                      f"(half-budget seed-0 val loss by lr: {losses})", flush=True)
            elif sweep:
                edge = (" (at an edge of its sweep, which goes no further)"
                        if len(sweep) > 1 and chosen[p]["lr"] in (min(map(float, sweep)), max(map(float, sweep))) else "")
                print(f"lr for {p} at {setting}: {chosen[p]['lr']:g}{edge}; half-budget seed-0 val loss by lr: "
                      f"{losses}", flush=True)
    if new and save:
        os.makedirs(o.results_dir, exist_ok=True)
        write_atomic(path, json.dumps(store, indent=1, sort_keys=True) + "\n")
    return {p: c["lr"] for p, c in chosen.items() if p not in beyond}, beyond


# -----------------------------------------------------------------------------
# Running the plan

def run_experiment(o, base):
    """Run what is left of the plan, in order, until it is done or the time (--max_minutes) is up; then
    say what is left."""
    splits, data = check_data(o)
    check_experiment(o, base, data)
    full_tokens = o.full_tokens or data["train_tokens"]
    windows = E.val_windows(splits["val"], o.block_size)
    clock = Clock(o.max_minutes)
    while True:
        done = {R.key_of(r) for r in R.read_csv(os.path.join(o.results_dir, "runs.csv"))}
        todo = [r for r in plan(o, *choose_lrs(o)) if r.key not in done]
        ready = [r for r in todo if r.lr is not None]
        if not ready or not run_one(ready[0], o, base, full_tokens, windows, clock):
            break
    say_left(o, todo, full_tokens)


class Clock:
    """The time this call may still use (--max_minutes), and what a run needs of it."""

    def __init__(self, max_minutes):
        self.deadline = time.time() + 60 * max_minutes if max_minutes > 0 else math.inf
        self.analysis_s = FIRST_ANALYSIS_S   # the longest evaluation of this call so far, with a margin

    def left(self):
        return self.deadline - time.time()

    def training_s(self):
        """Seconds a run may train now: what is left, less its set-up and the evaluation after it."""
        return self.left() - SETUP_S - self.analysis_s

    def timed_analysis(self, seconds):
        self.analysis_s = max(self.analysis_s, 1.5 * seconds)


def run_one(run, o, base, full_tokens, windows, clock):
    """Train `run` (from scratch, or on from its checkpoint), then evaluate it and write its rows.
    False when this call's time ran out first (what is done is saved, and the next call goes on)."""
    cfg = train_config(run, o, base, full_tokens)
    if checkpoint_state(cfg) != cfg.max_iters:
        outcome = train_run(run, cfg, o, clock)
        if outcome != "trained":
            return outcome == "diverged"  # a diverged run is a result (its row is written)
    if clock.left() < clock.analysis_s:
        return False
    t0 = time.time()
    analyse(run, cfg, o, windows)
    clock.timed_analysis(time.time() - t0)
    if not o.keep_checkpoints:
        os.remove(os.path.join(cfg.out_dir, "ckpt.pt"))
    return True


def train_run(run, cfg, o, clock):
    """Train the run from scratch, or on from its checkpoint, within this call's time. Returns
    'trained', 'stopped' (the time limit or Ctrl-C: the checkpoint is saved; or too little time to
    start) or 'diverged' (a NaN loss, e.g. too high a rate in the sweep: its runs.csv row says so)."""
    state = checkpoint_state(cfg)
    if state == "other":
        print(f"{cfg.out_dir} holds a checkpoint of other settings: starting this run afresh")
    if not isinstance(state, int):
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    if clock.training_s() < MIN_TRAIN_S:
        return "stopped"
    resume = isinstance(state, int)
    print(f"=== {run.name}: {f'resuming at iter {state}' if resume else 'training'}, {cfg.max_iters} iters of "
          f"{o.batch_tokens:,} tokens", flush=True)
    t0 = time.time()
    try:
        T.train(dataclasses.replace(cfg, init_from="resume" if resume else "scratch",
                                    time_limit_s=0.0 if math.isinf(clock.deadline) else clock.training_s()))
    except FloatingPointError as e:
        wall_s = add_wall_s(cfg.out_dir, time.time() - t0)
        save_rows(o, "runs.csv", run, [dict(tokens=cfg.max_iters * o.batch_tokens, iters=cfg.max_iters,
                                            val_loss=math.nan, wall_s=f"{wall_s:.1f}", error=str(e).split(";")[0])])
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
        return "diverged"
    add_wall_s(cfg.out_dir, time.time() - t0)
    return "trained" if checkpoint_state(cfg) == cfg.max_iters else "stopped"


def analyse(run, cfg, o, windows):
    """Evaluate the trained run (experiments/evaluate.py) and write its rows; its runs.csv row last."""
    device = T.pick_device(cfg)
    model, ckpt = load_model(cfg.out_dir, device)
    autocast = autocast_of(cfg, device)
    print(f"=== {run.name}: evaluating on {len(windows)} validation windows", flush=True)
    full = E.full_loss(model, windows, o.eval_batch, autocast, o.bucket)
    copy = E.copy_probe(model, E.spread(windows, o.copy_windows), o.copy_distances, o.copy_span, o.eval_batch,
                        autocast)
    ablation = []
    if run.pattern in o.ablate and run.budget == "full":
        ablation = E.head_ablation(model, E.spread(windows, o.ablation_windows), o.eval_batch, autocast, o.bucket)
    stats = E.head_stats(model, E.spread(windows, o.head_windows)) if heads.supports_probs(model) else {}
    save_rows(o, "by_position.csv", run, [dict(bucket=s, positions=n, loss=v) for s, n, v in full["buckets"]])
    save_rows(o, "copy_probe.csv", run, copy)
    save_rows(o, "ablation.csv", run, ablation)
    save_rows(o, "runs.csv", run, [dict(
        tokens=cfg.max_iters * o.batch_tokens, iters=cfg.max_iters, val_loss=full["loss"],
        best_val_loss=ckpt["best_val_loss"], tokens_per_s=f"{median_speed(cfg.out_dir, cfg.max_iters):.0f}",
        wall_s=f"{add_wall_s(cfg.out_dir, 0):.1f}", sigma=stats.get("sigma", ""), entropy=stats.get("entropy", ""),
        device=torch.cuda.get_device_name(device) if device.startswith("cuda") else device)])
    gains = ", ".join(f"{r['distance']}: {r['gain']:+.3f}" for r in copy)
    print(f"=== {run.name}: val loss {full['loss']:.4f}; copy gain by distance {gains}", flush=True)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def checkpoint_state(cfg):
    """The iteration of cfg.out_dir's checkpoint; None when there is none, 'other' when it was trained
    with other settings (any but HOW_IT_RUNS)."""
    path = os.path.join(cfg.out_dir, "ckpt.pt")
    if not os.path.exists(path):
        return None
    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # mmap: only what is read
    same = all(ckpt["config"].get(k) == v for k, v in dataclasses.asdict(cfg).items() if k not in HOW_IT_RUNS)
    return ckpt["iter_num"] if same else "other"


def add_wall_s(out_dir, seconds):
    """Add seconds to the run's training time (kept in out_dir/wall_s.txt across calls); the total."""
    path = os.path.join(out_dir, "wall_s.txt")
    total = (float(open(path).read()) if os.path.exists(path) else 0.0) + seconds
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(path, f"{total}\n")
    return total


def median_speed(out_dir, iters):
    """Median training tokens/s of the run's logged steps (train.py's log.csv), its first tenth left out."""
    with open(os.path.join(out_dir, "log.csv")) as f:
        rows = [(int(r["iter"]), float(r["tokens_per_s"])) for r in csv.DictReader(f) if r["tokens_per_s"]]
    steady = [v for i, v in rows if i >= iters // 10] or [v for _, v in rows]
    return statistics.median(steady) if steady else math.nan


def autocast_of(cfg, device):
    """The autocast context training ran under (bf16 on a CUDA GPU for dtype='auto'), for evaluation."""
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = T.pick_dtype(cfg, device_type)
    return nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=getattr(torch, dtype))


def say_left(o, todo, full_tokens):
    if not todo:
        print(f"nothing left: every run of this plan is in {os.path.join(o.results_dir, 'runs.csv')}")
        return
    tokens = sum(iters_of(r.budget, full_tokens, o.batch_tokens) * o.batch_tokens for r in todo)
    names = ", ".join(r.name for r in todo[:4]) + (", ..." if len(todo) > 4 else "")
    print(f"left: {len(todo)} runs ({sum(r.budget == 'half' for r in todo)} half, {sum(r.budget == 'full' for r in todo)} "
          f"full budget; {tokens / 1e6:,.1f} M tokens of training): {names}. Run the same command again to continue.")


# -----------------------------------------------------------------------------
# The data, the shared settings, and the CSV files

def check_data(o):
    """The dataset's splits and its fingerprint; a ConfigError when it is missing or, for pystdlib, is
    not the corpus the design names. pystdlib is never prepared here: its content depends on the
    Python that prepares it."""
    splits, _ = T.load_dataset(o.dataset, prepare=o.dataset not in DESIGN_DATA)
    counts, want = (len(splits["train"]), len(splits["val"])), DESIGN_DATA.get(o.dataset)
    if want and counts != want:
        raise ConfigError(f"data/{o.dataset} holds {counts[0]:,} / {counts[1]:,} train / val tokens, not the "
                          f"{want[0]:,} / {want[1]:,} of CPython 3.11.7's standard library that the design names: "
                          f"prepare it with python3.11 data/{o.dataset}/prepare.py and bring train.bin and val.bin")
    data = dict(dataset=o.dataset, train_tokens=counts[0], val_tokens=counts[1],
                **{f"{s}_sha256": hashlib.sha256(splits[s]).hexdigest() for s in ("train", "val")})
    return splits, data


def check_experiment(o, base, data):
    """results_dir/experiment.json holds what every call into results_dir shares: the data, the model and
    optimizer, the budgets and the evaluation. The first call writes it; a later call that differs stops
    here, before unlike runs could meet in one table."""
    shared = {"data": data, **{k: v for k, v in {**dataclasses.asdict(o), **base}.items() if k not in PER_CALL}}
    shared = json.loads(json.dumps(shared))  # as it reads back: tuples become lists
    path = os.path.join(o.results_dir, "experiment.json")
    if not os.path.exists(path):
        os.makedirs(o.results_dir, exist_ok=True)
        write_atomic(path, json.dumps(shared, indent=1, sort_keys=True) + "\n")
        return
    old = json.load(open(path))
    for k in sorted(set(old) | set(shared)):
        if old.get(k) != shared.get(k):
            raise ConfigError(f"{path} has {k}={old.get(k)!r} but this call has {k}={shared.get(k)!r}: run with "
                              "the same settings, or give another --results_dir")


def save_rows(o, name, run, rows):
    """Put `run`'s rows (dicts of the other columns of report.COLUMNS[name]) into results_dir/name in
    place of any it had: a run evaluated twice (a call killed before its runs.csv row) keeps one set.
    Written to a temporary file and renamed: a killed call leaves the old file whole."""
    path = os.path.join(o.results_dir, name)
    old = [r for r in R.read_csv(path) if R.key_of(r) != run.key]
    if not rows and not os.path.exists(path):
        return
    new = [{**dict(zip(R.KEY, run.key)), **{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()}}
           for r in rows]
    os.makedirs(o.results_dir, exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, R.COLUMNS[name], restval="")
        writer.writeheader()
        writer.writerows(old + new)
    os.replace(path + ".tmp", path)


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# -----------------------------------------------------------------------------
# The command line

def parse_args(argv):
    """(Options, base TrainConfig settings) from --key=value arguments (--dry_run alone means True);
    a ConfigError names the first that cannot work."""
    fields = {f.name: f.default for f in dataclasses.fields(Options)}
    train_fields = {f.name: f.type for f in dataclasses.fields(T.TrainConfig)}
    values, base = {}, dict(TRAIN_DEFAULTS)
    for arg in argv:
        key, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not eq and isinstance(fields.get(key), bool):
            eq, text = "=", "true"
        if not eq:
            raise ConfigError(f"argument {arg!r} must look like --key=value (--help lists the options)")
        if key in fields:
            default = fields[key]
            kind = type(default[0]) if isinstance(default, tuple) else type(default)
            values[key] = (tuple(T.parse_value(key, t, kind) for t in text.split(",") if t)
                           if isinstance(default, tuple) else T.parse_value(key, text, kind))
        elif key in train_fields and key not in PER_RUN:
            base[key] = T.parse_value(key, text, train_fields[key])
        else:
            raise ConfigError(f"unknown option --{key}: experiments/compare.py --help lists its options; any other TrainConfig "
                              f"key passes through, except those set per run ({', '.join(PER_RUN)})")
    o = Options(**values)
    check_options(o, base)
    return o, base


def check_options(o, base):
    """Raise a ConfigError naming the first option that cannot work, before anything slow happens."""
    for p in o.patterns + o.ablate:
        if p not in ATTN_PATTERNS:
            raise ConfigError(f"unknown pattern {p!r}; choose among {', '.join(ATTN_PATTERNS)}")
    if not o.patterns or not o.budgets or set(o.budgets) - set(BUDGETS):
        raise ConfigError(f"--patterns needs one pattern at least and --budgets half and/or full; got "
                          f"{','.join(o.patterns)!r} and {','.join(o.budgets)!r}")
    if o.seeds != "design" and not (o.seeds.isdigit() and int(o.seeds) >= 1):
        raise ConfigError(f"--seeds must be 'design' or a number of seeds (at least 1), got {o.seeds!r}")
    if not o.lr_sweep or min(o.lr_sweep) <= 0:
        raise ConfigError(f"--lr_sweep needs positive learning rates, got {','.join(map(str, o.lr_sweep))!r}")
    step = o.block_size * base["gradient_accumulation_steps"]
    if o.batch_tokens % step:
        raise ConfigError(f"--batch_tokens={o.batch_tokens} must be a multiple of block_size x "
                          f"gradient_accumulation_steps = {step}")
    for name in ("eval_interval", "eval_iters", "eval_batch", "bucket", "copy_windows", "ablation_windows",
                 "head_windows"):
        if getattr(o, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(o, name)}")
    if not 0 <= o.warmup_frac < 1 or o.full_tokens < 0 or o.max_minutes < 0:
        raise ConfigError("--warmup_frac must be in [0, 1), --full_tokens and --max_minutes >= 0")
    for d in o.copy_distances:
        try:
            E.check_copy(o.block_size, d, o.copy_span)
        except ValueError as e:
            raise ConfigError(f"--copy_distances: {e}") from None
    T.check_config(T.TrainConfig(**{**base, "n_head": o.n_head, "block_size": o.block_size}))  # the model


def show_plan(o, base):
    """--dry_run: every run of the plan with its state; nothing is written."""
    splits, data = check_data(o)
    full_tokens = o.full_tokens or data["train_tokens"]
    done = {R.key_of(r) for r in R.read_csv(os.path.join(o.results_dir, "runs.csv"))}
    runs = plan(o, *choose_lrs(o, save=False))
    for r in runs:
        iters = iters_of(r.budget, full_tokens, o.batch_tokens)
        state = "waiting for the lr sweep" if r.lr is None else "done" if r.key in done else None
        if state is None:
            ckpt = checkpoint_state(train_config(r, o, base, full_tokens))
            state = {None: "to do", "other": "to do (a checkpoint of other settings)"}.get(ckpt, f"checkpoint at iter {ckpt}")
        print(f"{r.name:<48} {iters:>6} iters {iters * o.batch_tokens / 1e6:>8.1f} M tokens   {state}")
    say_left(o, [r for r in runs if r.key not in done], full_tokens)


def usage():
    return "\n".join(["usage: python experiments/compare.py [--key=value ...]", "", __doc__.strip().split("\n\n")[1], "",
                      "options (default, type):", T.settings_help(Options)])


def main(argv):
    if "-h" in argv or "--help" in argv:
        T.print_help(usage())
        return
    try:
        o, base = parse_args(argv)
        if o.dry_run:
            show_plan(o, base)
            return
        if not o.report_only:
            run_experiment(o, base)
        if o.report_only or os.path.exists(os.path.join(o.results_dir, "runs.csv")):
            if not o.report_only and importlib.util.find_spec("matplotlib") is None:
                print("no report here (matplotlib is not installed): run python experiments/compare.py --report_only elsewhere")
                return
            R.report(o.results_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopped; what was saved stays, and the same command continues", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
