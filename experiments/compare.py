"""
Does SPAttention match dense attention once the models are trained? The quality experiment: a small
byte-level model trained to 20 tokens a parameter and beyond on the Python standard library's source,
every pattern with paired seeds, then evaluated on the whole validation split and with a copy probe.

    python experiments/compare.py --throughput --max_minutes=9   # first, on the GPU: compiled speed of each pattern
    python experiments/compare.py --dry_run                      # the plan: every run, its time, what is done or left
    python experiments/compare.py --max_minutes=9                # run what is left, stop cleanly before 9 minutes; repeat
    python experiments/compare.py --report_only                  # table.md and the figure again, from the files alone
    python experiments/compare.py --help                         # every option, with its default

The design (experiments/results/quality/README.md says why, and how to run it in GPU calls of 10 minutes):
  data     pystdlib_bytes: CPython 3.11.7's standard library as bytes (vocabulary 256), 29.7 M train /
           1.05 M val bytes
  model    6 layers, 256 wide, 8 heads of 32, N = block_size 2048, dropout 0: 5.31 M parameters with
           the embeddings (token and position)
  budgets  the base budget 1x is tokens_per_param (20) x the parameters, rounded up to whole steps of
           batch_tokens (65,536): 1,622 steps, 106.3 M tokens, 3.6 passes over the train split; 0.5x
           and 2x are half and twice its steps. Each run has its own schedule: linear warmup over warmup_frac
           of its steps, then cosine from lr down to lr / 10 at its last step
  lr       every pattern first trains at each --lr_sweep rate (0.5x, seed 0), and one rate further
           while its best is at an edge; the lowest full-validation loss picks its rate (lr.json)
  seeds    s = 0, 1, ... is TrainConfig.seed, the initialization and the batch order: the runs of one
           seed are paired across patterns. At 1x: sp and dense 5 seeds, then one more pair at a time
           until the 95 % half-width of sp - dense is below 1 % of dense's loss, 8 at most; window and
           sp_balanced 3. At 0.5x and 2x: sp and dense, 3 seeds each (report.py: the seeds rule)
  after    each run, experiments/evaluate.py: the loss on every validation window, by 128-position
           bucket, and the copy probe with its matched control. The runs at --track_budget (2x) are
           also evaluated at the --track_at fractions of their steps (sp - dense along the way)

A run is train.train(TrainConfig) in runs_dir/NAME/ (its checkpoint is deleted once the run is
evaluated; nothing there is committed). A run evaluated along the way trains in segments, each a
train.train call that stops at a checkpoint (max_iters) of a schedule set by the whole run
(lr_decay_iters), and resumes from it exactly. Its results go to results_dir: by_position.csv and
copy_probe.csv at each evaluation, and last its row in runs.csv, which marks it done. Every level
resumes: a run in runs.csv is skipped; a run stopped in the middle (--max_minutes, Ctrl-C, or a killed
call on a machine that is still there) continues from its checkpoint; an evaluation that is missing is
made. With --max_minutes it stops before that time with the checkpoint saved, exits 0 and says what is
left; once --throughput has measured the speeds, it does not start a run that would not finish in the
time left. experiment.json keeps what every call into one results_dir must share.
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
import record  # noqa: E402
import report as R  # noqa: E402
import train as T  # noqa: E402
import utils  # noqa: E402
from model import ATTN_PATTERNS, GPT, GPTConfig, ConfigError  # noqa: E402
from sample import load_model  # noqa: E402

# The corpus the design names, as (train, val) tokens: data/pystdlib_bytes/prepare.py run by CPython 3.11.7.
DESIGN_DATA = {"pystdlib_bytes": (29_722_102, 1_047_848)}
# The model and optimizer of every run; a TrainConfig key on the command line changes it.
TRAIN_DEFAULTS = dict(n_layer=6, n_embd=256, dropout=0.0, bias=False, gradient_accumulation_steps=1,
                      weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, log_interval=10,
                      compile=True, device="auto", dtype="auto")
# TrainConfig keys that experiments/compare.py sets for each run.
PER_RUN = ("attn", "seed", "out_dir", "init_from", "learning_rate", "min_lr", "max_iters", "lr_decay_iters",
           "warmup_iters", "batch_size", "block_size", "n_head", "dataset", "eval_interval", "eval_iters",
           "time_limit_s", "eval_only")
# Settings that may differ between calls into one results_dir (experiment.json keeps all the others).
PER_CALL = ("patterns", "budgets", "lr_sweep", "n_head", "block_size", "results_dir", "runs_dir", "max_minutes",
            "keep_checkpoints", "dry_run", "report_only", "throughput", "eval_batch", "device", "compile",
            "compile_mode", "log_interval", "peak_flops")
# TrainConfig keys that say where and how a run runs, not what it trains: a checkpoint written under
# other values of these is still the run's own, and is resumed. max_iters is where one train.train
# call stops (a checkpoint along the way); the run's length is lr_decay_iters.
HOW_IT_RUNS = ("out_dir", "init_from", "time_limit_s", "device", "compile", "compile_mode", "log_interval",
               "peak_flops", "max_iters")
# Seconds kept free under --max_minutes.
SETUP_S = 30.0           # a train.train call's set-up before its first step: model, data, compilation
FIRST_ANALYSIS_S = 60.0  # an evaluation, until this call has timed one
MIN_TRAIN_S = 30.0       # no run is started or resumed with less training time than this
LR_SWEEP_MAX = 5         # rates a pattern's lr sweep may grow to, past the edges of --lr_sweep
THROUGHPUT_ITERS = 100   # steps of each pattern's --throughput measurement


@dataclass
class Options:
    # what to run
    patterns: tuple = ("dense", "sp", "window", "sp_balanced")  # attention patterns, comma-separated
    seeds: str = "design"                    # 'design' (report.py: the seeds rule), or K: seeds 0..K-1 everywhere
    budgets: tuple = ("0.5x", "1x", "2x")    # multiples of the base budget; only sp and dense run at 0.5x and 2x
    lr_sweep: tuple = (1e-3, 2e-3, 4e-3)     # rates tried at the 0.5x budget, seed 0; one rate: no sweep
    n_head: int = 8
    block_size: int = 2048
    dataset: str = "pystdlib_bytes"
    # training (any other TrainConfig key, e.g. --n_layer, --compile, passes through)
    tokens_per_param: float = 20.0           # the 1x budget: tokens per parameter (embeddings included)
    batch_tokens: int = 65536                # tokens per optimizer step: batch_size = batch_tokens / block_size
    warmup_frac: float = 0.05                # warmup steps, as a share of the run's steps
    eval_interval: int = 250                 # steps between train.py's cheap evaluations and checkpoints
    eval_iters: int = 10                     # batches of train.py's evaluation
    track_budget: str = "2x"                 # the budget whose runs are also evaluated along the way
    track_at: tuple = (0.125, 0.25, 0.5, 0.75)  # ... at these fractions of their steps
    # the evaluations (experiments/evaluate.py)
    eval_batch: int = 16                     # windows per forward pass
    bucket: int = 128                        # positions per bucket of the loss by position
    copy_span: int = 32                      # tokens of the copied span
    copy_distances: tuple = (128, 384, 896, 1408, 1920)  # distances between a token and its copy
    copy_windows: int = 128                  # validation windows of the copy probe
    # where, and for how long
    results_dir: str = "experiments/results/quality"
    runs_dir: str = "out-quality"            # checkpoints and train.py's logs (not committed)
    max_minutes: float = 0.0                 # stop cleanly, checkpoint saved, before this many minutes; 0: no limit
    keep_checkpoints: bool = False           # keep each run's ckpt.pt after its evaluation
    throughput: bool = False                 # measure each pattern's training speed (throughput.json); train nothing
    dry_run: bool = False                    # print the plan and what is done; run nothing
    report_only: bool = False                # rebuild table.md and the figure from the files; run nothing


# -----------------------------------------------------------------------------
# The plan

@dataclass(frozen=True)
class Run:
    """One training run. The runs of one seed differ only in pattern (and lr): they are paired."""
    pattern: str
    n_head: int
    block_size: int
    seed: int
    budget: str                              # a key of report.BUDGETS
    lr: float | None                         # None: the pattern's lr sweep has not finished

    @property
    def name(self):
        return f"{self.pattern}_h{self.n_head}_n{self.block_size}_{self.budget}_lr{R.fmt_lr(self.lr)}_s{self.seed}"

    @property
    def key(self):
        """Its identity in every CSV of results_dir: the values of report.KEY as written there."""
        return (R.TASK, self.pattern, str(self.n_head), str(self.block_size), str(self.seed), self.budget,
                R.fmt_lr(self.lr))


def plan(o, S, lrs, beyond=None):
    """Every run of this call's setting, in order: the lr sweep of each pattern whose rate is not chosen
    yet (seed 0, the 0.5x budget, each --lr_sweep rate; none with one rate), or the one rate past its
    sweep's edge that it tries next (beyond[pattern], see choose_lrs); then seed by seed, 1x first, every
    pattern at its chosen rate lrs[pattern] (None while unchosen), as many seeds as the seeds rule wants
    now of each pattern and budget (report.seeds_wanted, from the runs in S). The sweep's run at the
    chosen rate is also that pattern's seed-0 0.5x run, so it appears once."""
    H, N, beyond = o.n_head, o.block_size, beyond or {}
    sweep = [Run(p, H, N, 0, R.SWEEP_BUDGET, lr) for p in o.patterns if p not in lrs and p not in beyond
             for lr in o.lr_sweep] if len(o.lr_sweep) > 1 else []
    sweep += [Run(p, H, N, 0, R.SWEEP_BUDGET, beyond[p]) for p in o.patterns if p in beyond]
    budgets = sorted(o.budgets, key=lambda b: b != R.MAIN)
    wanted = {(p, b): R.seeds_wanted(S, p, b) for p in o.patterns for b in budgets}
    seeded = [Run(p, H, N, s, b, lrs.get(p)) for s in range(max(wanted.values(), default=0))
              for b in budgets for p in o.patterns if s < wanted[(p, b)]]
    if sweep:  # an unchosen seed-0 run at the sweep's budget will be one of the sweep's
        seeded = [r for r in seeded if not (r.lr is None and r.seed == 0 and r.budget == R.SWEEP_BUDGET)]
    return list(dict.fromkeys(sweep + seeded))


def base_iters(o, params):
    """Steps of the 1x budget: tokens_per_param x params tokens, rounded up to whole steps."""
    return math.ceil(o.tokens_per_param * params / o.batch_tokens)


def iters_of(budget, base):
    """Optimizer steps of a budget: its multiple of the 1x steps, rounded."""
    return max(1, round(R.BUDGETS[budget] * base))


def stops_of(run, o, iters):
    """Where the run's train.train calls stop, each an evaluation: the --track_at checkpoints of a run
    at --track_budget, and its last step."""
    along = {round(f * iters) for f in o.track_at} if run.budget == o.track_budget else set()
    return sorted(along - {0, iters}) + [iters]


def train_config(run, o, base, iters, stop=None):
    """The TrainConfig of a run of `iters` steps that trains up to step `stop` (default: its end):
    `base` (TRAIN_DEFAULTS and the command line's TrainConfig keys) with the run's pattern, seed and lr,
    and a schedule of the whole run's length."""
    return T.TrainConfig(**{
        **base, "dataset": o.dataset, "attn": run.pattern, "n_head": run.n_head, "block_size": run.block_size,
        "seed": run.seed, "learning_rate": run.lr, "min_lr": run.lr / 10, "max_iters": stop or iters,
        "lr_decay_iters": iters, "warmup_iters": round(o.warmup_frac * iters),
        "batch_size": o.batch_tokens // (run.block_size * base["gradient_accumulation_steps"]),
        "eval_interval": min(o.eval_interval, iters), "eval_iters": o.eval_iters,
        "out_dir": os.path.join(o.runs_dir, run.name)})


def choose_lrs(o, save=True):
    """({pattern: lr}, {pattern: lr}): the chosen rates of this call's setting, and for a pattern whose
    sweep goes on, the rate it tries next. A pattern's rate is chosen once all its sweep runs (seed 0,
    the 0.5x budget, each --lr_sweep rate) are in runs.csv: the rate of the lowest full-validation loss (a
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
        return runs.get(Run(p, o.n_head, o.block_size, 0, R.SWEEP_BUDGET, lr).key)

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
                      f"({R.SWEEP_BUDGET} seed-0 val loss by lr: {losses})", flush=True)
            elif sweep:
                edge = (" (at an edge of its sweep, which goes no further)"
                        if len(sweep) > 1 and chosen[p]["lr"] in (min(map(float, sweep)), max(map(float, sweep))) else "")
                print(f"lr for {p} at {setting}: {chosen[p]['lr']:g}{edge}; {R.SWEEP_BUDGET} seed-0 val loss by lr: "
                      f"{losses}", flush=True)
    if new and save:
        os.makedirs(o.results_dir, exist_ok=True)
        record.write_atomic(path, json.dumps(store, indent=1, sort_keys=True) + "\n")
    return {p: c["lr"] for p, c in chosen.items() if p not in beyond}, beyond


# -----------------------------------------------------------------------------
# Running the plan

@dataclass
class Context:
    """What every run of a call shares: the data, the model's size, the evaluation windows."""
    splits: dict
    data: dict                               # the dataset's name, sizes and fingerprints (experiment.json)
    params: int                              # the model's parameters, embeddings included
    base_iters: int                          # steps of the 1x budget
    windows: torch.Tensor                    # every validation window
    probe_windows: torch.Tensor              # those of the copy probe


def context(o, base):
    splits, meta, data = check_data(o)
    params = count_params(o, base, meta)
    windows = E.val_windows(splits["val"], o.block_size)
    return Context(splits, data, params, base_iters(o, params), windows, E.spread(windows, o.copy_windows))


def count_params(o, base, meta):
    """The parameters of the design's model, embeddings included (the same for every band pattern)."""
    cfg = GPTConfig(block_size=o.block_size, vocab_size=meta["vocab_size"] if meta else utils.GPT2_VOCAB_SIZE,
                    n_layer=base["n_layer"], n_head=o.n_head, n_embd=base["n_embd"], dropout=base["dropout"],
                    bias=base["bias"], attn="dense")
    return GPT(cfg).get_num_params(non_embedding=False)


def run_experiment(o, base):
    """Run what is left of the plan, in order, until it is done or the time (--max_minutes) is up; then
    say what is left."""
    ctx = context(o, base)
    check_experiment(o, base, ctx.data)
    clock, speeds = Clock(o.max_minutes), read_throughput(o)
    while True:
        S = setting(o)
        todo = [r for r in plan(o, S, *choose_lrs(o)) if r.key not in done_keys(o)]
        ready = [r for r in todo if r.lr is not None]
        if not ready or not fits(ready[0], o, base, ctx, clock, speeds) or not run_one(ready[0], o, base, ctx, clock):
            break
    say_left(o, todo, ctx)


def setting(o):
    """The runs of this call's setting so far (report.Setting), under this call's seeds rule."""
    return dataclasses.replace(R.load_setting(o.results_dir, o.n_head, o.block_size), seeds=o.seeds)


def done_keys(o):
    return {R.key_of(r) for r in R.read_csv(os.path.join(o.results_dir, "runs.csv"))}


class Clock:
    """The time this call may still use (--max_minutes), and what a run needs of it."""

    def __init__(self, max_minutes):
        self.total = 60 * max_minutes if max_minutes > 0 else math.inf
        self.deadline = time.time() + self.total
        self.analysis_s = FIRST_ANALYSIS_S   # the longest evaluation of this call so far, with a margin

    def left(self):
        return self.deadline - time.time()

    def training_s(self):
        """Seconds a run may train now: what is left, less its set-up and the evaluation after it."""
        return self.left() - SETUP_S - self.analysis_s

    def timed_analysis(self, seconds):
        self.analysis_s = max(self.analysis_s, 1.5 * seconds)


def fits(run, o, base, ctx, clock, speeds):
    """Whether to start `run` in this call: yes, unless the measured speed (--throughput) says that a
    run not begun yet would not finish in the time left but would in a whole call. A cut run resumes
    only while its machine keeps the checkpoint; one that needs more than a call starts anyway."""
    iters = iters_of(run.budget, ctx.base_iters)
    if run.pattern not in speeds or checkpoint_state(train_config(run, o, base, iters)) is not None:
        return True
    need = estimate_s(run, o, iters, speeds[run.pattern])
    if need <= clock.left() or need > clock.total:
        return True
    print(f"=== {run.name} needs about {need:.0f} s (throughput.json) and {clock.left():.0f} s are left: it starts in "
          "the next call", flush=True)
    return False


def estimate_s(run, o, iters, speed):
    """Seconds of a run at a measured speed: each train.train call's set-up and evaluation, and its tokens."""
    calls = len(stops_of(run, o, iters))
    return calls * (speed["setup_s"] + speed["eval_s"]) + iters * o.batch_tokens / speed["tokens_per_s"]


def run_one(run, o, base, ctx, clock):
    """Train `run` (from scratch, or on from its checkpoint) up to each of its stops, evaluate it at each,
    and write its rows, runs.csv's last. False when this call's time ran out first (what is done is
    saved, and the next call goes on)."""
    iters = iters_of(run.budget, ctx.base_iters)
    for stop in stops_of(run, o, iters):
        cfg = train_config(run, o, base, iters, stop)
        state = checkpoint_state(cfg)
        if isinstance(state, int) and state > stop:
            continue  # trained past this stop, so evaluated there before going on
        if state != stop:
            outcome = train_run(run, cfg, o, ctx, clock)
            if outcome != "trained":
                return outcome == "diverged"  # a diverged run is a result (its row is written)
        elif stop < iters and evaluated_at(o, run, stop):
            continue  # an earlier call evaluated here and stopped before training on
        if clock.left() < clock.analysis_s:
            return False
        t0 = time.time()
        analyse(run, cfg, o, ctx, final=stop == iters)
        clock.timed_analysis(time.time() - t0)
    if not o.keep_checkpoints:
        os.remove(os.path.join(cfg.out_dir, "ckpt.pt"))
    return True


def evaluated_at(o, run, it):
    return any(R.key_of(r) == run.key and r["iter"] == str(it)
               for r in R.read_csv(os.path.join(o.results_dir, "by_position.csv")))


def train_run(run, cfg, o, ctx, clock):
    """Train the run from scratch, or on from its checkpoint, up to cfg.max_iters within this call's
    time. Returns 'trained', 'stopped' (the time limit or Ctrl-C: the checkpoint is saved; or too little
    time to start) or 'diverged' (a NaN loss, e.g. too high a rate in the sweep: its runs.csv row says so)."""
    state = checkpoint_state(cfg)
    if state == "other":
        print(f"{cfg.out_dir} holds a checkpoint of other settings: starting this run afresh")
    if not isinstance(state, int):
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    if clock.training_s() < MIN_TRAIN_S:
        return "stopped"
    resume = isinstance(state, int)
    print(f"=== {run.name}: {f'resuming at iter {state}' if resume else 'training'}, up to iter {cfg.max_iters} of "
          f"{cfg.lr_decay_iters} iters of {o.batch_tokens:,} tokens", flush=True)
    t0 = time.time()
    try:
        T.train(dataclasses.replace(cfg, init_from="resume" if resume else "scratch",
                                    time_limit_s=0.0 if math.isinf(clock.deadline) else clock.training_s()))
    except FloatingPointError as e:
        wall_s = add_wall_s(cfg.out_dir, time.time() - t0)
        save_rows(o, "runs.csv", run, [dict(params=ctx.params, tokens=cfg.lr_decay_iters * o.batch_tokens,
                                            iters=cfg.lr_decay_iters, val_loss=math.nan, wall_s=f"{wall_s:.1f}",
                                            error=str(e).split(";")[0])])
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
        return "diverged"
    add_wall_s(cfg.out_dir, time.time() - t0)
    return "trained" if checkpoint_state(cfg) == cfg.max_iters else "stopped"


def analyse(run, cfg, o, ctx, final):
    """Evaluate the run's checkpoint at cfg.max_iters (experiments/evaluate.py) and write its rows: the
    loss by position and the copy probe; at the run's end, its runs.csv row last."""
    it = cfg.max_iters
    device = utils.pick_device(cfg)
    model, ckpt = load_model(cfg.out_dir, device)
    autocast = autocast_of(cfg, device)
    print(f"=== {run.name}: evaluating iter {it} on {len(ctx.windows)} validation windows", flush=True)
    full = E.full_loss(model, ctx.windows, o.eval_batch, autocast, o.bucket)
    copy = E.copy_probe(model, ctx.probe_windows, o.copy_distances, o.copy_span, o.eval_batch, autocast)
    at = dict(iter=it, tokens=it * o.batch_tokens)
    save_rows(o, "by_position.csv", run, [dict(at, bucket=s, positions=n, loss=v) for s, n, v in full["buckets"]], it)
    save_rows(o, "copy_probe.csv", run, [dict(at, **r) for r in copy], it)
    if final:
        save_rows(o, "runs.csv", run, [dict(
            params=ctx.params, tokens=it * o.batch_tokens, iters=it, val_loss=full["loss"],
            best_val_loss=ckpt["best_val_loss"], tokens_per_s=f"{median_speed(cfg.out_dir, it):.0f}",
            wall_s=f"{add_wall_s(cfg.out_dir, 0):.1f}",
            device=torch.cuda.get_device_name(device) if device.startswith("cuda") else device)])
    shares = ", ".join(f"{r['distance']}: {r['share']:+.2f}" for r in copy)
    print(f"=== {run.name} at iter {it}: val loss {full['loss']:.4f}; copy share by distance {shares}", flush=True)
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
    record.write_atomic(path, f"{total}\n")
    return total


def median_speed(out_dir, iters):
    """Median training tokens/s of the run's logged steps (train.py's log.csv), its first tenth left out
    (with compilation, the first steps of every train.train call are slow; the median passes them by)."""
    with open(os.path.join(out_dir, "log.csv")) as f:
        rows = [(int(r["iter"]), float(r["tokens_per_s"])) for r in csv.DictReader(f) if r["tokens_per_s"]]
    steady = [v for i, v in rows if i >= iters // 10] or [v for _, v in rows]
    return statistics.median(steady) if steady else math.nan


def autocast_of(cfg, device):
    """The autocast context training ran under (bf16 on a CUDA GPU for dtype='auto'), for evaluation."""
    device_type = "cuda" if device.startswith("cuda") else device
    dtype = utils.pick_dtype(cfg, device_type)
    return nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=getattr(torch, dtype))


def say_left(o, todo, ctx):
    if not todo:
        print(f"nothing left: every run of this plan is in {os.path.join(o.results_dir, 'runs.csv')}")
        return
    tokens = sum(iters_of(r.budget, ctx.base_iters) * o.batch_tokens for r in todo)
    by_budget = ", ".join(f"{sum(r.budget == b for r in todo)} at {b}" for b in R.BUDGETS if any(r.budget == b for r in todo))
    names = ", ".join(r.name for r in todo[:4]) + (", ..." if len(todo) > 4 else "")
    more = (" The seeds rule may add up to "
            f"{R.PAIR_SEEDS[1] - R.PAIR_SEEDS[0]} more seeds of sp and dense." if o.seeds == "design" else "")
    print(f"left: {len(todo)} runs ({by_budget}; {tokens / 1e6:,.1f} M tokens of training): {names}. Run the same "
          f"command again to continue.{more}")


# -----------------------------------------------------------------------------
# --throughput: the compiled training speed of each pattern, which sizes the plan

def measure_throughput(o, base):
    """Train each pattern THROUGHPUT_ITERS steps of the design's model (seed 0, the middle --lr_sweep
    rate), as a run trains (compiled on CUDA), and time one evaluation of it; keep in
    results_dir/throughput.json its tokens/s (median of the logged steps), its set-up (the call's
    seconds beyond its steps at that speed: model, data, compilation, train.py's two evaluations) and
    the evaluation's seconds. Patterns measured by an earlier call are kept; --max_minutes stops between
    patterns."""
    ctx = context(o, base)
    check_experiment(o, base, ctx.data)
    path = os.path.join(o.results_dir, "throughput.json")
    store = json.load(open(path)) if os.path.exists(path) else {"patterns": {}}
    clock, lr = Clock(o.max_minutes), sorted(o.lr_sweep)[len(o.lr_sweep) // 2]
    for p in [p for p in o.patterns if p not in store["patterns"]]:
        run = Run(p, o.n_head, o.block_size, 0, "throughput", lr)
        cfg = dataclasses.replace(train_config(run, o, base, THROUGHPUT_ITERS), eval_interval=THROUGHPUT_ITERS, eval_iters=1)
        if clock.left() < 2 * (SETUP_S + FIRST_ANALYSIS_S):
            break
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
        print(f"=== throughput of {p}: {THROUGHPUT_ITERS} iters of {o.batch_tokens:,} tokens", flush=True)
        t0 = time.time()
        T.train(cfg)
        wall_s = time.time() - t0
        speed = median_speed(cfg.out_dir, THROUGHPUT_ITERS)
        t0 = time.time()
        device = utils.pick_device(cfg)
        model, _ = load_model(cfg.out_dir, device)
        E.full_loss(model, ctx.windows, o.eval_batch, autocast_of(cfg, device), o.bucket)
        E.copy_probe(model, ctx.probe_windows, o.copy_distances, o.copy_span, o.eval_batch, autocast_of(cfg, device))
        # the steps' time at the median speed can exceed the call's on a machine whose speed varies
        setup_s = max(0.0, wall_s - THROUGHPUT_ITERS * o.batch_tokens / speed)
        store["patterns"][p] = dict(tokens_per_s=round(speed), setup_s=round(setup_s, 2), eval_s=round(time.time() - t0, 3))
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
        store.update(device=torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
                     torch=torch.__version__, compile=bool(cfg.compile and device.startswith("cuda")),
                     iters=THROUGHPUT_ITERS, batch_tokens=o.batch_tokens)
        os.makedirs(o.results_dir, exist_ok=True)
        record.write_atomic(path, json.dumps(store, indent=1, sort_keys=True) + "\n")
        print(f"=== {p}: {speed:,.0f} tokens/s, set-up {store['patterns'][p]['setup_s']} s, evaluation "
              f"{store['patterns'][p]['eval_s']} s", flush=True)
    left = [p for p in o.patterns if p not in store["patterns"]]
    print(f"left to measure: {', '.join(left)}; run the same command again" if left else "every pattern is measured")


def read_throughput(o):
    """{pattern: dict(tokens_per_s, setup_s, eval_s)} of results_dir/throughput.json; {} without one."""
    path = os.path.join(o.results_dir, "throughput.json")
    return json.load(open(path))["patterns"] if os.path.exists(path) else {}


# -----------------------------------------------------------------------------
# The data, the shared settings, and the CSV files

def check_data(o):
    """The dataset's splits, its vocabulary and its fingerprint; a ConfigError when it is missing or,
    for the design's corpus, is not the one the design names. That corpus is never prepared here: its
    content depends on the Python that prepares it."""
    if o.dataset in DESIGN_DATA and not os.path.exists(os.path.join(utils.data_dir(o.dataset), "train.bin")):
        raise ConfigError(f"data/{o.dataset} is not prepared: run python3.11 data/{o.dataset}/prepare.py here (CPython "
                          f"3.11.7), and bring train.bin, val.bin and meta.pkl to the machine that trains")
    splits, meta = utils.load_dataset(o.dataset, prepare=o.dataset not in DESIGN_DATA)
    counts, want = (len(splits["train"]), len(splits["val"])), DESIGN_DATA.get(o.dataset)
    if want and counts != want:
        raise ConfigError(f"data/{o.dataset} holds {counts[0]:,} / {counts[1]:,} train / val tokens, not the "
                          f"{want[0]:,} / {want[1]:,} of CPython 3.11.7's standard library that the design names: "
                          f"prepare it with python3.11 data/{o.dataset}/prepare.py and bring train.bin, val.bin and meta.pkl")
    data = dict(dataset=o.dataset, train_tokens=counts[0], val_tokens=counts[1],
                **{f"{s}_sha256": hashlib.sha256(splits[s]).hexdigest() for s in ("train", "val")})
    return splits, meta, data


def check_experiment(o, base, data, write=True):
    """results_dir/experiment.json holds what every call into results_dir shares: the data, the model and
    optimizer, the budgets, the seeds rule and the evaluation (record.check_shared)."""
    shared = {"data": data, **{k: v for k, v in {**dataclasses.asdict(o), **base}.items() if k not in PER_CALL}}
    record.check_shared(os.path.join(o.results_dir, "experiment.json"), shared, ConfigError, write)


def save_rows(o, name, run, rows, it=None):
    """Put `run`'s rows (dicts of the other columns of report.COLUMNS[name]) into results_dir/name in
    place of any it had (at iteration `it`, in the files that have one): a run evaluated twice (a call
    killed before its runs.csv row, a run started afresh) keeps one set."""
    path = os.path.join(o.results_dir, name)
    old = [r for r in R.read_csv(path) if R.key_of(r) != run.key or (it is not None and r["iter"] != str(it))]
    if rows or os.path.exists(path):
        record.write_csv(path, R.COLUMNS[name], old + [{**dict(zip(R.KEY, run.key)), **r} for r in rows])


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
            values[key] = (tuple(utils.parse_value(key, t, kind) for t in text.split(",") if t)
                           if isinstance(default, tuple) else utils.parse_value(key, text, kind))
        elif key in train_fields and key not in PER_RUN:
            base[key] = utils.parse_value(key, text, train_fields[key])
        else:
            raise ConfigError(f"unknown option --{key}: experiments/compare.py --help lists its options; any other TrainConfig "
                              f"key passes through, except those set per run ({', '.join(PER_RUN)})")
    o = Options(**values)
    check_options(o, base)
    return o, base


def check_options(o, base):
    """Raise a ConfigError naming the first option that cannot work, before anything slow happens."""
    for p in o.patterns:
        if p not in ATTN_PATTERNS:
            raise ConfigError(f"unknown pattern {p!r}; choose among {', '.join(ATTN_PATTERNS)}")
    if not o.patterns or not o.budgets or set(o.budgets) - set(R.BUDGETS) or o.track_budget not in R.BUDGETS:
        raise ConfigError(f"--patterns needs one pattern at least, --budgets and --track_budget some of "
                          f"{', '.join(R.BUDGETS)}; got {','.join(o.patterns)!r}, {','.join(o.budgets)!r} and "
                          f"{o.track_budget!r}")
    if o.seeds != "design" and not (o.seeds.isdigit() and int(o.seeds) >= 1):
        raise ConfigError(f"--seeds must be 'design' or a number of seeds (at least 1), got {o.seeds!r}")
    if not o.lr_sweep or min(o.lr_sweep) <= 0:
        raise ConfigError(f"--lr_sweep needs positive learning rates, got {','.join(map(str, o.lr_sweep))!r}")
    step = o.block_size * base["gradient_accumulation_steps"]
    if o.batch_tokens % step:
        raise ConfigError(f"--batch_tokens={o.batch_tokens} must be a multiple of block_size x "
                          f"gradient_accumulation_steps = {step}")
    for name in ("eval_interval", "eval_iters", "eval_batch", "bucket"):
        if getattr(o, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(o, name)}")
    if o.copy_windows < 2:
        raise ConfigError(f"--copy_windows must be at least 2 (each window's control span comes from another), "
                          f"got {o.copy_windows}")
    if not 0 <= o.warmup_frac < 1 or o.tokens_per_param <= 0 or o.max_minutes < 0:
        raise ConfigError("--warmup_frac must be in [0, 1), --tokens_per_param > 0 and --max_minutes >= 0")
    if any(not 0 < f < 1 for f in o.track_at):
        raise ConfigError(f"--track_at takes fractions of a run's steps, each in (0, 1); got "
                          f"{','.join(map(str, o.track_at))}")
    for d in o.copy_distances:
        try:
            E.check_copy(o.block_size, d, o.copy_span)
        except ValueError as e:
            raise ConfigError(f"--copy_distances: {e}") from None
    T.check_config(T.TrainConfig(**{**base, "n_head": o.n_head, "block_size": o.block_size}))  # the model


def show_plan(o, base):
    """--dry_run: every run of the plan with its state and, once --throughput has run, its time; nothing
    is written."""
    ctx = context(o, base)
    check_experiment(o, base, ctx.data, write=False)
    done, speeds = done_keys(o), read_throughput(o)
    print(f"model: {ctx.params:,} parameters with embeddings; 1x = {ctx.base_iters} steps = "
          f"{ctx.base_iters * o.batch_tokens / 1e6:.1f} M tokens = {ctx.base_iters * o.batch_tokens / ctx.params:.1f} "
          f"tokens a parameter = {ctx.base_iters * o.batch_tokens / ctx.data['train_tokens']:.1f} passes")
    runs = plan(o, setting(o), *choose_lrs(o, save=False))
    todo_s = 0.0
    for r in runs:
        iters = iters_of(r.budget, ctx.base_iters)
        state = "waiting for the lr sweep" if r.lr is None else "done" if r.key in done else None
        if state is None:
            ckpt = checkpoint_state(train_config(r, o, base, iters))
            state = {None: "to do", "other": "to do (a checkpoint of other settings)"}.get(ckpt, f"checkpoint at iter {ckpt}")
        need = estimate_s(r, o, iters, speeds[r.pattern]) if r.pattern in speeds else math.nan
        todo_s += need if r.key not in done else 0.0
        print(f"{r.name:<44} {iters:>6} iters {iters * o.batch_tokens / 1e6:>7.1f} M tokens "
              f"{'' if math.isnan(need) else f'{need:>5.0f} s':>7}   {state}")
    say_left(o, [r for r in runs if r.key not in done], ctx)
    if not speeds:
        print("no throughput.json yet: python experiments/compare.py --throughput on the GPU measures the speeds")
    elif math.isfinite(todo_s):
        calls = f" in about {math.ceil(todo_s / (60 * o.max_minutes))} calls" if o.max_minutes else ""
        print(f"left by throughput.json: about {todo_s / 60:.1f} GPU minutes{calls} (runs the sweep has not planned yet "
              "not counted)")


def usage():
    return "\n".join(["usage: python experiments/compare.py [--key=value ...]", "", __doc__.strip().split("\n\n")[1], "",
                      "options (default, type):", utils.settings_help(Options)])


def main(argv):
    if "-h" in argv or "--help" in argv:
        utils.print_help(usage())
        return
    with utils.one_line_errors(ctrl_c="Ctrl-C: stopped; what was saved stays, and the same command continues"):
        o, base = parse_args(argv)
        if o.dry_run:
            show_plan(o, base)
            return
        if o.throughput:
            measure_throughput(o, base)
        elif not o.report_only:
            run_experiment(o, base)
        if not any(os.path.exists(os.path.join(o.results_dir, f)) for f in ("runs.csv", "throughput.json")):
            if o.report_only:
                raise ConfigError(f"no runs in {o.results_dir} yet: nothing to report (its README says how to run them)")
        else:
            if not o.report_only and importlib.util.find_spec("matplotlib") is None:
                print("no report here (matplotlib is not installed): run python experiments/compare.py --report_only elsewhere")
                return
            R.report(o.results_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
