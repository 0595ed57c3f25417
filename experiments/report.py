"""
The quality experiment's report, from the files experiments/compare.py writes into results_dir and from
nothing else: table.md (the regime checks first, then the verdicts, then the numbers they come from)
and a figure per setting (n_head, N).

    python experiments/compare.py --report_only                       # report.report("experiments/results/quality")
    settings = report.load("experiments/results/quality")             # what notebooks/compare.ipynb draws
    fig = report.figure_setting(settings[0])

The files: runs.csv (a row per run; KEY names the run in every file), by_position.csv (the loss per
position bucket at the end of each run, and at the checkpoints of the runs that are evaluated during
training: column iter), copy_probe.csv (per run, iter and distance), lr.json (each pattern's rate
per setting), experiment.json (what every call shares, the seeds rule among it) and throughput.json
(compiled training speed, from `--throughput`). Only the runs at each pattern's chosen rate count
below; the sweep's other runs appear in the sweep table. Rows of another task than TASK (e.g.
synthetic tasks sharing the folder) are left to their own report.

Statistics. Seeds pair the runs: one seed is one initialization and one batch order for every
pattern. For X against Y at one budget, over the n seeds s that both have, d_s = X(s) - Y(s), with
mean d and sample standard deviation s_d (n - 1 in the denominator):

    95 % interval  =  d  +/-  t_{0.975, n-1} * s_d / sqrt(n)      (t from T975; it needs n >= 2)

The seeds (experiment.json's `seeds`; 'design' unless a number was given): at the 1x budget sp and
dense get PAIR_SEEDS[0] seeds, then one more pair at a time while the half-width of sp - dense is
MARGIN of dense's loss or more, up to PAIR_SEEDS[1]; every other pattern gets OTHER_SEEDS. At the
other budgets only TRACED patterns run, TRACE_SEEDS seeds each. A number K gives K seeds to each.

Regime checks, written before any run (experiments/results/quality/README.md says why):
  R1 copy    at 1x, dense's mean share on the repeat (copy gain on tokens 2..L over the control loss)
             is at least COPY_SHARE at every probed distance (all of them lie within dense's reach)
  R2 budget  sp - dense moves by less than MOVE of dense's 1x loss between the 1x and the 2x budget:
             |mean over s of (sp - dense)_2x(s) - (sp - dense)_1x(s)| < MOVE * dense's mean 1x loss,
             over the seeds that both patterns have at both budgets
  R3 window  window is not ahead of dense by more than MARGIN: the mean of window - dense at 1x is at
             least -MARGIN * dense's mean loss
Every check is a mean (a point, not an interval). Where one fails, every verdict reads "not in
regime"; where one cannot be computed yet, "regime not checked yet"; no verdict is drawn then.

Verdicts, at the 1x budget, the design's words:
  language modelling   X matches dense: the interval of X - dense lies within +/- MARGIN of dense's
                       mean loss (over the same seeds); sp beats X: the interval of sp - X lies below 0
  copy probe (per d)   the same on the repeat's loss left with the copy, as a share of its control
                       loss (left = probe_loss / control_loss = 1 - share): sp matches dense when the
                       interval of left_sp - left_dense lies within +/- MARGIN (1 % of dense's control
                       loss), sp beats X when the interval of left_sp - left_X lies below 0
A verdict reads "yes", "no: ..." with the interval, or "waiting for seeds (n of k)" until the seeds
rule has its seeds. A failed match says which way, or "not settled" when the interval reaches past
the margin on one side without lying wholly outside it. A run that diverged (val_loss nan) is left
out of every number and counted.
"""

import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from model import ATTN_PATTERNS
from record import read_csv

TASK = "lm"
KEY = ("task", "pattern", "n_head", "block_size", "seed", "budget", "lr")
COLUMNS = {
    "runs.csv": list(KEY) + ["params", "tokens", "iters", "val_loss", "best_val_loss", "tokens_per_s", "wall_s",
                             "device", "error"],
    "by_position.csv": list(KEY) + ["iter", "tokens", "bucket", "positions", "loss"],
    "copy_probe.csv": list(KEY) + ["iter", "tokens", "distance", "span", "windows", "control_loss", "probe_loss",
                                   "gain", "share", "control_first", "probe_first"],
}
BUDGETS = {"0.5x": 0.5, "1x": 1.0, "2x": 2.0}  # multiples of the base budget (compare.py: base_iters)
MAIN = "1x"                 # the budget of the verdicts
SWEEP_BUDGET = "0.5x"       # the budget of the lr sweep (seed 0)
TRACED = ("dense", "sp")    # the patterns trained at every budget, to trace sp - dense over training
PAIR = ("sp", "dense")      # the pair whose seeds grow until sp - dense is settled
PAIR_SEEDS = (5, 8)         # seeds of the pair at MAIN: the first count, the most
OTHER_SEEDS = 3             # seeds of every other pattern at MAIN
TRACE_SEEDS = 3             # seeds of TRACED at the other budgets
MARGIN = 0.01               # "matches": within 1 % of dense; R3; the seeds rule's half-width
MOVE = 0.005                # R2: how far sp - dense may move between 1x and 2x, as a share of dense's loss
COPY_SHARE = 0.5            # R1: dense's least share of the control loss that the copy removes
# t_{0.975, df}: the two-sided 95 % quantile of Student's t with df degrees of freedom (standard tables).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}


def key_of(row):
    return tuple(row[k] for k in KEY)


def fmt_lr(lr):
    """A learning rate as every file writes it (and '?' for one not chosen yet)."""
    return "?" if lr is None else f"{lr:g}"


def setting_name(n_head, block_size):
    return f"h{n_head}_n{block_size}"


def nan_last(x):
    """x, or +inf when it is nan: a run that diverged sorts last."""
    return math.inf if math.isnan(x) else x


def fmt_tokens(n):
    """Tokens as the tables write them: '106.3 M', or every digit below a million."""
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"


def mean_of(values):
    values = list(values)
    return statistics.fmean(values) if values else math.nan


# -----------------------------------------------------------------------------
# Loading: {seed: value} maps of one setting's runs at their chosen learning rates

@dataclass
class Setting:
    n_head: int
    block_size: int
    seeds: str = "design"                                     # experiment.json's seeds rule
    lrs: dict = field(default_factory=dict)                   # pattern -> chosen lr
    sweep: dict = field(default_factory=dict)                 # pattern -> {lr as written: val loss}
    params: int = 0                                           # the model's parameters, embeddings included
    iters: dict = field(default_factory=dict)                 # budget -> optimizer steps
    tokens: dict = field(default_factory=dict)                # budget -> training tokens
    loss: dict = field(default_factory=lambda: defaultdict(dict))      # (pattern, budget) -> {seed: val loss}
    done: dict = field(default_factory=lambda: defaultdict(set))       # (pattern, budget) -> seeds in runs.csv
    diverged: dict = field(default_factory=lambda: defaultdict(int))   # (pattern, budget) -> runs
    speed: dict = field(default_factory=lambda: defaultdict(dict))     # (pattern, budget) -> {seed: tokens/s}
    train_s: dict = field(default_factory=lambda: defaultdict(dict))   # (pattern, budget) -> {seed: s}
    bucket: dict = field(default_factory=lambda: defaultdict(dict))    # (pattern, budget, iter, start) -> {seed: loss}
    positions: dict = field(default_factory=dict)                      # bucket start -> positions in it
    copy: dict = field(default_factory=lambda: defaultdict(dict))      # (pattern, budget, iter, d) -> {seed: row}
    checkpoint_tokens: dict = field(default_factory=dict)              # (budget, iter) -> tokens

    @property
    def name(self):
        return setting_name(self.n_head, self.block_size)

    @property
    def title(self):
        return f"{self.n_head} heads, N = {self.block_size}"

    def patterns(self):
        seen = {k[0] for k in self.loss} | {k[0] for k in self.diverged}
        return [p for p in ATTN_PATTERNS if p in seen]

    def iters_of(self, pattern, budget):
        """The evaluations of pattern's runs at budget, by iteration (the last is the run's end)."""
        return sorted({k[2] for k in self.bucket if k[:2] == (pattern, budget)})

    def starts(self):
        return sorted(self.positions)

    def full_at(self, pattern, budget, it):
        """{seed: the loss over every position} at an evaluation, from its buckets."""
        cells = [self.bucket.get((pattern, budget, it, b), {}) for b in self.starts()]
        seeds = set.intersection(*(set(c) for c in cells)) if cells else set()
        N = sum(self.positions.values())
        return {s: sum(self.positions[b] * c[s] for b, c in zip(self.starts(), cells)) / N for s in seeds}

    def copy_values(self, pattern, d, what, budget=MAIN, it=None):
        """{seed: row[what]} of the copy probe at distance d, at the end of the runs (or at iteration it)."""
        it = self.iters.get(budget) if it is None else it
        rows = self.copy.get((pattern, budget, it, d), {})
        return {s: r[what] for s, r in rows.items()}

    def distances(self):
        return sorted({k[3] for k in self.copy})


def load(results_dir):
    """[Setting] of results_dir, one per (n_head, N) of task TASK, at each pattern's chosen rate."""
    runs = [r for r in read_csv(os.path.join(results_dir, "runs.csv")) if r["task"] == TASK]
    lr_path, exp_path = os.path.join(results_dir, "lr.json"), os.path.join(results_dir, "experiment.json")
    chosen = json.load(open(lr_path)) if os.path.exists(lr_path) else {}
    seeds = json.load(open(exp_path)).get("seeds", "design") if os.path.exists(exp_path) else "design"
    settings = {}
    for n_head, block_size in sorted({(int(r["n_head"]), int(r["block_size"])) for r in runs}):
        S = Setting(n_head, block_size, seeds=seeds)
        for p, c in chosen.get(S.name, {}).items():
            S.lrs[p], S.sweep[p] = c["lr"], c["sweep"]
        settings[(n_head, block_size)] = S
    at_rate = set()
    for r in runs:
        S = settings[(int(r["n_head"]), int(r["block_size"]))]
        p, b, seed = r["pattern"], r["budget"], int(r["seed"])
        if r["lr"] != fmt_lr(S.lrs.get(p)):
            continue
        at_rate.add(key_of(r))
        S.params = int(r["params"])
        S.iters[b], S.tokens[b] = int(r["iters"]), int(r["tokens"])
        S.done[(p, b)].add(seed)
        loss = float(r["val_loss"])
        if math.isnan(loss):
            S.diverged[(p, b)] += 1
            continue
        S.loss[(p, b)][seed] = loss
        S.speed[(p, b)][seed] = float(r["tokens_per_s"])
        S.train_s[(p, b)][seed] = int(r["tokens"]) / float(r["tokens_per_s"])
    for r in read_csv(os.path.join(results_dir, "by_position.csv")):
        if key_of(r) in at_rate:  # runs.csv marks a run done; rows of an unfinished run wait for it
            S = settings[(int(r["n_head"]), int(r["block_size"]))]
            S.bucket[(r["pattern"], r["budget"], int(r["iter"]), int(r["bucket"]))][int(r["seed"])] = float(r["loss"])
            S.positions[int(r["bucket"])] = int(r["positions"])
            S.checkpoint_tokens[(r["budget"], int(r["iter"]))] = int(r["tokens"])
    for r in read_csv(os.path.join(results_dir, "copy_probe.csv")):
        if key_of(r) in at_rate:
            S = settings[(int(r["n_head"]), int(r["block_size"]))]
            row = {k: float(r[k]) for k in ("control_loss", "probe_loss", "gain", "share", "control_first",
                                            "probe_first")}
            S.copy[(r["pattern"], r["budget"], int(r["iter"]), int(r["distance"]))][int(r["seed"])] = row
    return list(settings.values())


def load_setting(results_dir, n_head, block_size):
    """The Setting (n_head, N) of results_dir; an empty one when it has no runs yet."""
    for S in load(results_dir):
        if (S.n_head, S.block_size) == (n_head, block_size):
            return S
    return Setting(n_head, block_size)


# -----------------------------------------------------------------------------
# Statistics, the seeds rule, the regime checks and the verdicts

def interval(values):
    """(n, mean, lo, hi): the 95 % t interval of the mean of values; lo = hi = None when n < 2."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n < 2:
        return n, (values[0] if values else math.nan), None, None
    if n - 1 not in T975:
        raise ValueError(f"{n} samples: T975 has t quantiles up to 30 degrees of freedom only")
    mean = statistics.fmean(values)
    half = T975[n - 1] * statistics.stdev(values) / math.sqrt(n)
    return n, mean, mean - half, mean + half


def paired(a, b):
    """interval of a[s] - b[s] over the seeds s in both {seed: value} maps."""
    return interval([a[s] - b[s] for s in sorted(set(a) & set(b))])


def settled(S, k):
    """Whether the half-width of sp - dense over seeds 0..k-1 at MAIN is below MARGIN of dense's loss."""
    sp, dense = ({s: v for s, v in S.loss.get((p, MAIN), {}).items() if s < k} for p in PAIR)
    n, mean, lo, hi = paired(sp, dense)
    return lo is not None and (hi - lo) / 2 < MARGIN * mean_of(dense[s] for s in set(sp) & set(dense))


def seeds_wanted(S, pattern, budget):
    """How many seeds (0, 1, ...) the seeds rule (the module's docstring) wants of pattern at budget,
    given the runs so far: the pair grows by one seed once all its seeds are in and still unsettled."""
    if budget != MAIN and pattern not in TRACED:
        return 0
    if S.seeds != "design":
        return int(S.seeds)
    if budget != MAIN:
        return TRACE_SEEDS
    if pattern not in PAIR:
        return OTHER_SEEDS
    k = PAIR_SEEDS[0]
    while k < PAIR_SEEDS[1] and all(set(range(k)) <= S.done.get((p, MAIN), set()) for p in PAIR) and not settled(S, k):
        k += 1
    return k


def waiting(S, *patterns):
    """'waiting for seeds (n of k)' for the first pattern whose MAIN runs are not all in; else None."""
    for p in patterns:
        n, k = len(S.done.get((p, MAIN), ())), seeds_wanted(S, p, MAIN)
        if n < k:
            return f"waiting for seeds ({p}: {n} of {k})"
    return None


@dataclass
class Check:
    name: str
    asks: str
    measured: str
    status: str                     # 'pass', 'fail' or 'not measured yet'


def regime_checks(S):
    """[Check] R1, R2, R3 of the module's docstring, for setting S."""
    return [Check("R1 copy", f"dense's copy gain on the repeat (tokens 2..L) is at least {COPY_SHARE:.0%} of the "
                  "control loss at every distance", *check_copy(S)),
            Check("R2 budget", f"sp - dense moves by less than {MOVE:.1%} of dense's loss between the 1x and 2x "
                  "budgets", *check_budget(S)),
            Check("R3 window", f"window is not ahead of dense by more than {MARGIN:.0%}", *check_window(S))]


def check_copy(S):
    """R1: (what was measured, status)."""
    shares = {d: mean_of(S.copy_values("dense", d, "share").values()) for d in S.distances()}
    if not shares or any(math.isnan(v) for v in shares.values()):
        return "no copy probe of dense at 1x yet", "not measured yet"
    low = [d for d, v in shares.items() if v < COPY_SHARE]
    return ", ".join(f"{v:.0%} at {d}" for d, v in shares.items()), "fail" if low else "pass"


def check_budget(S):
    """R2: (what was measured, status)."""
    both = set.intersection(*(set(S.loss.get((p, b), {})) for p in PAIR for b in (MAIN, "2x")))
    if not both:
        return "no seed with sp and dense at both 1x and 2x yet", "not measured yet"
    gap = {b: {s: S.loss[("sp", b)][s] - S.loss[("dense", b)][s] for s in both} for b in (MAIN, "2x")}
    n, move, lo, hi = interval([gap["2x"][s] - gap[MAIN][s] for s in sorted(both)])
    dense = mean_of(S.loss[("dense", MAIN)][s] for s in both)
    spread = "" if lo is None else f" [{lo:+.4f}, {hi:+.4f}]"
    return (f"{mean_of(gap[MAIN].values()):+.4f} at 1x, {mean_of(gap['2x'].values()):+.4f} at 2x: moved "
            f"{move:+.4f}{spread} = {move / dense:+.2%} of dense ({n} seeds)", "pass" if abs(move) < MOVE * dense else "fail")


def check_window(S):
    """R3: (what was measured, status)."""
    window, dense = S.loss.get(("window", MAIN), {}), S.loss.get(("dense", MAIN), {})
    common = set(window) & set(dense)
    if not common:
        return "no seed with window and dense at 1x yet", "not measured yet"
    ahead, ref = mean_of(window[s] - dense[s] for s in common), mean_of(dense[s] for s in common)
    return (f"window - dense {ahead:+.4f} = {ahead / ref:+.2%} of dense ({len(common)} seeds)",
            "pass" if ahead >= -MARGIN * ref else "fail")


def gate(checks):
    """None when every check passes; else what every verdict reads instead."""
    failed = [c.name.split()[0] for c in checks if c.status == "fail"]
    if failed:
        return f"not in regime ({', '.join(failed)} failed)"
    open_ = [c.name.split()[0] for c in checks if c.status != "pass"]
    return f"regime not checked yet ({', '.join(open_)})" if open_ else None


def match_words(iv, tol, lower, higher):
    n, mean, lo, hi = iv
    if lo is None:
        return f"not enough seeds ({n} paired)"
    if -tol <= lo and hi <= tol:
        return "yes"
    side = lower if hi < -tol else higher if lo > tol else "not settled"
    return f"no: {side}, {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] against +/- {tol:.4f}"


def beats_words(iv):
    n, mean, lo, hi = iv
    if lo is None:
        return f"not enough seeds ({n} paired)"
    return "yes" if hi < 0 else f"no: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def lm_matches(S, pattern):
    """Does pattern's 1x loss match dense's (the interval of pattern - dense within +/- MARGIN of dense)?"""
    mine, dense = S.loss.get((pattern, MAIN), {}), S.loss.get(("dense", MAIN), {})
    tol = MARGIN * mean_of(dense[s] for s in set(mine) & set(dense))
    return match_words(paired(mine, dense), tol, "lower loss than dense", "higher loss than dense")


def lm_beats(S, other):
    """Does sp beat other at 1x (the interval of sp - other below 0)?"""
    return beats_words(paired(S.loss.get(("sp", MAIN), {}), S.loss.get((other, MAIN), {})))


def left_share(S, pattern, d):
    """{seed: probe_loss / control_loss of the repeat} at 1x: the control's loss that the copy leaves."""
    return {s: 1 - v for s, v in S.copy_values(pattern, d, "share").items()}


def copy_matches(S, d):
    return match_words(paired(left_share(S, "sp", d), left_share(S, "dense", d)), MARGIN,
                       "sp copies more than dense", "sp copies less than dense")


def copy_beats(S, other, d):
    return beats_words(paired(left_share(S, "sp", d), left_share(S, other, d)))


# -----------------------------------------------------------------------------
# table.md

def cell(iv, digits=4):
    """'mean [lo, hi]' of an interval, or the mean alone for fewer than 2 seeds."""
    n, mean, lo, hi = iv
    if n == 0:
        return ""
    return f"{mean:+.{digits}f}" + ("" if lo is None else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]")


def evaluations(S):
    """[(tokens, label, budget, iter)]: every evaluation of sp and dense, in the order of tokens."""
    points = []
    for b in BUDGETS:
        its = sorted(set(S.iters_of("sp", b)) & set(S.iters_of("dense", b)))
        for it in its:
            end = it == S.iters.get(b)
            points.append((S.checkpoint_tokens[(b, it)], f"end of {b}" if end else f"{b} run, step {it}", b, it))
    return sorted(points)


def setting_md(S):
    """The tables of one setting, the regime checks and verdicts first."""
    pats, checks = S.patterns(), regime_checks(S)
    blocked = gate(checks)
    head = f"## {S.title}"
    if S.params and S.tokens.get(MAIN):
        head += (f" ({S.params:,} parameters with embeddings; 1x = {fmt_tokens(S.tokens[MAIN])} tokens, "
                 f"{S.tokens[MAIN] / S.params:.1f} a parameter)")
    lines = [head, "", "### Regime checks", "", "| check | asks | measured | |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.name} | {c.asks} | {c.measured} | {c.status} |" for c in checks]
    lines += ["", f"**{blocked}: no verdict is drawn.**" if blocked else "In regime: the verdicts below are drawn.", ""]

    lines += ["### Verdicts (1x budget)", "", "Language modelling:", "",
              "| pattern | matches dense | sp beats it |", "| --- | --- | --- |"]
    for p in pats:
        matches = "" if p == "dense" else blocked or waiting(S, p, "dense") or lm_matches(S, p)
        beats = "" if p == "sp" else blocked or waiting(S, "sp", p) or lm_beats(S, p)
        lines.append(f"| `{p}` | {matches} | {beats} |")
    others = [p for p in pats if p != "sp"]
    if S.distances() and "sp" in pats:
        lines += ["", "Copy probe (the repeat's loss left with the copy, as a share of its control loss):", "",
                  "| distance | sp matches dense |" + "".join(f" sp beats `{p}` |" for p in others),
                  "| ---: | --- |" + " --- |" * len(others)]
        for d in S.distances():
            cells = [blocked or waiting(S, "sp", "dense") or copy_matches(S, d)]
            cells += [blocked or waiting(S, "sp", p) or copy_beats(S, p, d) for p in others]
            lines.append(f"| {d} | " + " | ".join(cells) + " |")

    lines += ["", "### Losses", "", "Full validation loss, mean over seeds; minus dense paired over seeds [95 % interval].", "",
              "| pattern | lr | budget | tokens | seeds | val loss | minus dense | tokens/s | training s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in BUDGETS:
        for p in pats:
            if not S.loss.get((p, b)) and not S.diverged.get((p, b)):
                continue
            seeds = f"{len(S.loss[(p, b)])}" + (f" (+{S.diverged[(p, b)]} diverged)" if S.diverged.get((p, b)) else "")
            diff = "" if p == "dense" else cell(paired(S.loss[(p, b)], S.loss.get(("dense", b), {})))
            lines.append(f"| `{p}` | {fmt_lr(S.lrs.get(p))} | {b} | {fmt_tokens(S.tokens[b])} | {seeds} | "
                         f"{mean_of(S.loss[(p, b)].values()):.4f} | {diff} | {mean_of(S.speed[(p, b)].values()):,.0f} | "
                         f"{mean_of(S.train_s[(p, b)].values()):.1f} |")

    points = evaluations(S)
    if points:
        lines += ["", "### sp - dense over training", "",
                  "At the end of each budget's runs (each with its own schedule) and at the checkpoints of the runs "
                  "evaluated during training (their schedule goes on): the loss over every position, paired over seeds.",
                  "", "| tokens | tokens a parameter | evaluation | sp - dense [95 %] | of dense |",
                  "| ---: | ---: | --- | ---: | ---: |"]
        for tokens, label, b, it in points:
            sp, dense = S.full_at("sp", b, it), S.full_at("dense", b, it)
            iv = paired(sp, dense)
            ref = mean_of(dense[s] for s in set(sp) & set(dense))
            lines.append(f"| {fmt_tokens(tokens)} | {tokens / S.params:.1f} | {label} | {cell(iv)} ({iv[0]}) | "
                         f"{iv[1] / ref:+.2%} |")
        lines += ["", "sp - dense by position bucket at each of these evaluations (mean over paired seeds):", "",
                  "| bucket | " + " | ".join(label for _, label, _, _ in points) + " |",
                  "| ---: |" + " ---: |" * len(points)]
        for start in S.starts():
            cells = [paired(S.bucket.get(("sp", b, it, start), {}), S.bucket.get(("dense", b, it, start), {}))[1]
                     for _, _, b, it in points]
            lines.append(f"| {start} | " + " | ".join(f"{c:+.4f}" for c in cells) + " |")

    if S.distances():
        lines += ["", "### Copy probe (1x budget)", "",
                  "Means over seeds. Repeat: tokens 2..L of the second occurrence; share: the part of the control's "
                  "loss that the copy removes [95 % interval over seeds]; first: the first token, control / probe.", "",
                  "| pattern | distance | control loss | probe loss | share | first |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for p in pats:
            for d in S.distances():
                values = {w: S.copy_values(p, d, w) for w in ("control_loss", "probe_loss", "share", "control_first",
                                                               "probe_first")}
                if not values["share"]:
                    continue
                lines.append(f"| `{p}` | {d} | {mean_of(values['control_loss'].values()):.4f} | "
                             f"{mean_of(values['probe_loss'].values()):.4f} | {cell(interval(values['share'].values()), 3)} | "
                             f"{mean_of(values['control_first'].values()):.3f} / {mean_of(values['probe_first'].values()):.3f} |")
        tracked = [(t, label, b, it) for t, label, b, it in points if S.copy.get(("dense", b, it, S.distances()[0]))]
        if tracked:
            lines += ["", "Copy share over training (sp / dense, mean over seeds):", "",
                      "| tokens | evaluation | " + " | ".join(f"d = {d}" for d in S.distances()) + " |",
                      "| ---: | --- |" + " ---: |" * len(S.distances())]
            for t, label, b, it in tracked:
                shares = [f"{mean_of(S.copy_values('sp', d, 'share', b, it).values()):.2f} / "
                          f"{mean_of(S.copy_values('dense', d, 'share', b, it).values()):.2f}" for d in S.distances()]
                lines.append(f"| {fmt_tokens(t)} | {label} | " + " | ".join(shares) + " |")

    if any(S.sweep.values()):
        rates = sorted({float(lr) for sw in S.sweep.values() for lr in sw})
        lines += ["", f"### Learning-rate sweep ({SWEEP_BUDGET} budget, seed 0; full validation loss; * chosen)", "",
                  "| pattern | " + " | ".join(f"{lr:g}" for lr in rates) + " |", "| --- |" + " ---: |" * len(rates)]

        def loss_at(p, lr):  # blank where the pattern's sweep did not try this rate
            loss = S.sweep[p].get(fmt_lr(lr))
            return "" if loss is None else f"{loss:.4f}" + ("*" if lr == S.lrs.get(p) else "")
        lines += [f"| `{p}` | " + " | ".join(loss_at(p, lr) for lr in rates) + " |" for p in pats if p in S.sweep]
    return lines


def throughput_md(results_dir):
    """The table of throughput.json (compare.py --throughput), or [] without one."""
    path = os.path.join(results_dir, "throughput.json")
    if not os.path.exists(path):
        return []
    t = json.load(open(path))
    lines = ["## Training speed (`--throughput`)", "",
             f"{t['device']}, torch {t['torch']}, compiled: {t['compile']}; {t['iters']} steps of "
             f"{t['batch_tokens']:,} tokens a pattern.", "",
             "| pattern | tokens/s | set-up s (until the first step is done) | evaluation s |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| `{p}` | {v['tokens_per_s']:,.0f} | {v['setup_s']:.1f} | {v['eval_s']:.1f} |" for p, v in t["patterns"].items()]
    return lines + [""]


def table_md(settings, results_dir=None):
    head = ["# The quality experiment: tables", "",
            "Written by `python experiments/compare.py --report_only` from the files beside it; the checks, the "
            "verdicts and the statistics are defined in experiments/report.py's docstring and in README.md. Runs at "
            "each pattern's chosen learning rate; 'training s' is tokens / tokens per second.", ""]
    body = [line for S in settings for line in setting_md(S) + [""]]
    return "\n".join(head + body + (throughput_md(results_dir) if results_dir else []))


# -----------------------------------------------------------------------------
# Figures (matplotlib Figures without pyplot: the same in a script and in a notebook)

def colour(pattern):
    import matplotlib
    return matplotlib.colormaps["tab10"](ATTN_PATTERNS.index(pattern) % 10)


def figure_setting(S):
    """Four panels: sp - dense (and the others at 1x) over training tokens, with the +/- 1 % band; sp -
    dense by position at each evaluation; the copy share by distance at 1x; the loss by position at 1x."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    fig = Figure(figsize=(13, 9))
    (gap, by_pos), (copy, losses) = fig.subplots(2, 2)
    points = evaluations(S)
    for annealed in (True, False):
        xs, ys, errs = [], [], []
        for tokens, label, b, it in points:
            if (it == S.iters.get(b)) != annealed:
                continue
            sp, dense = S.full_at("sp", b, it), S.full_at("dense", b, it)
            n, mean, lo, hi = paired(sp, dense)
            ref = mean_of(dense[s] for s in set(sp) & set(dense))
            xs.append(tokens / S.params)
            ys.append(100 * mean / ref)
            errs.append(0 if lo is None else 100 * (hi - mean) / ref)
        style = dict(marker="o", capsize=3, color="k") if annealed else dict(marker="o", mfc="none", ls="--", color="0.5")
        if xs:
            gap.errorbar(xs, ys, yerr=errs, label="sp - dense, end of a budget" if annealed else
                         "sp - dense, checkpoint of a longer run", **style)
    for p in S.patterns():
        if p not in ("sp", "dense") and S.loss.get((p, MAIN)) and S.params:
            n, mean, lo, hi = paired(S.loss[(p, MAIN)], S.loss.get(("dense", MAIN), {}))
            ref = mean_of(S.loss.get(("dense", MAIN), {}).values())
            gap.errorbar([S.tokens[MAIN] / S.params], [100 * mean / ref], yerr=[0 if lo is None else 100 * (hi - mean) / ref],
                         marker="s", capsize=3, color=colour(p), ls="none", label=f"{p} - dense")
    gap.axhspan(-100 * MARGIN, 100 * MARGIN, color="0.85", label="+/- 1 % of dense")
    gap.axhline(0, color="k", lw=0.5)
    gap.set(title="minus dense over training (bars: 95 % interval)", xlabel="training tokens per parameter",
            ylabel="% of dense's loss")
    cmap = colormaps["viridis"]
    for i, (tokens, label, b, it) in enumerate(points):
        diffs = [paired(S.bucket.get(("sp", b, it, s), {}), S.bucket.get(("dense", b, it, s), {}))[1] for s in S.starts()]
        by_pos.plot(S.starts(), diffs, color=cmap(i / max(1, len(points) - 1)), lw=2 if it == S.iters.get(b) else 1,
                    ls="-" if it == S.iters.get(b) else "--", label=f"{fmt_tokens(tokens)} tokens ({label})")
    by_pos.axhline(0, color="k", lw=0.5)
    by_pos.set(title="sp - dense by position, at each evaluation (mean over seeds)", xlabel="first position of the bucket",
               ylabel="loss difference (nats)")
    for p in S.patterns():
        style = dict(color=colour(p), label=p, lw=2.2 if p in ("dense", "sp") else 1.2)
        shares = [(d, interval(S.copy_values(p, d, "share").values())) for d in S.distances()]
        shares = [(d, iv) for d, iv in shares if iv[0]]
        if shares:
            copy.errorbar([d for d, _ in shares], [iv[1] for _, iv in shares], marker="o", capsize=3,
                          yerr=[0 if iv[2] is None else iv[1] - iv[2] for _, iv in shares], **style)
        end = S.iters.get(MAIN)
        cells = [(s, S.bucket.get((p, MAIN, end, s), {})) for s in S.starts()]
        cells = [(s, c) for s, c in cells if c]
        if cells:
            losses.plot([s for s, _ in cells], [mean_of(c.values()) for _, c in cells], **style)
    copy.axhline(COPY_SHARE, color="k", ls=":", lw=1, label=f"R1: dense at least {COPY_SHARE:.0%}")
    copy.set(title="copy probe at 1x: share of the control loss removed (bars: 95 %)", xlabel="distance to the copy",
             ylabel="gain / control loss (tokens 2..L)", xscale="log")
    if S.distances():
        copy.set_xticks(S.distances(), [str(d) for d in S.distances()])
        copy.minorticks_off()
    losses.set(title="loss by position at 1x (mean over seeds)", xlabel="first position of the bucket", ylabel="loss (nats)")
    for ax in (gap, by_pos, copy, losses):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{S.title}: runs at each pattern's chosen learning rate")
    fig.tight_layout()
    return fig


def report(results_dir):
    """Write table.md and summary_SETTING.png into results_dir; print the table."""
    settings = load(results_dir)
    md = table_md(settings, results_dir)
    with open(os.path.join(results_dir, "table.md"), "w") as f:
        f.write(md)
    for S in settings:
        figure_setting(S).savefig(os.path.join(results_dir, f"summary_{S.name}.png"), dpi=100)
    print(md)
