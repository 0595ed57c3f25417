"""
The quality experiment's report, from the files experiments/compare.py writes into results_dir and from nothing
else: table.md, and for each setting (n_head, N) a summary figure and, where heads were ablated, an
ablation figure.

    python experiments/compare.py --report_only                       # report.report("experiments/results/quality")
    settings = report.load("experiments/results/quality")             # what notebooks/compare.ipynb draws
    fig = report.figure_setting(settings[0])

The files: runs.csv (a row per run), by_position.csv, copy_probe.csv and ablation.csv (their columns
are COLUMNS; KEY names the run in each), and lr.json (each pattern's chosen learning rate per setting).
Only the runs at the chosen rate count below; the sweep's other runs appear in the sweep table.

Statistics. Seeds pair the runs: one seed is one initialization and one batch order for every
pattern. For a pattern X against Y at one budget, over the n seeds s that both have,
d_s = loss_X(s) - loss_Y(s), with mean d and sample standard deviation s_d (n - 1 in the denominator):

    95 % interval  =  d  +/-  t_{0.975, n-1} * s_d / sqrt(n)      (t from T975; it needs n >= 2)

`interval` is the same for one sample (e.g. a copy gain over seeds).

Verdicts, the design's criteria (experiments/results/quality/README.md):
    X matches dense   the interval of X - dense lies within +/- 1 % of dense's mean loss (over the same
                      seeds), at both budgets, for the full loss and for every position bucket that
                      starts at MATCH_FROM = 384 or later
    sp beats X        the interval of sp - X lies below 0 at both budgets
Each reads "yes", "no (the first check that failed)" or "not enough seeds (the first check with fewer
than 2 paired seeds)". A failed match says which way: "lower loss than dense" (the whole interval below
-1 %), "higher loss than dense" (above +1 %) or "not settled" (the interval reaches past +/- 1 % but
not wholly on one side). A run that diverged (val_loss nan) is left out of every number and counted.
"""

import csv
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from model import ATTN_PATTERNS, BAND_PATTERNS, ConfigError, head_bands

KEY = ("pattern", "n_head", "block_size", "seed", "budget", "lr")
COLUMNS = {
    "runs.csv": ["pattern", "n_head", "block_size", "seed", "budget", "tokens", "lr", "val_loss", "best_val_loss",
                 "tokens_per_s", "wall_s", "iters", "sigma", "entropy", "device", "error"],
    "by_position.csv": list(KEY) + ["bucket", "positions", "loss"],
    "copy_probe.csv": list(KEY) + ["distance", "span", "windows", "probe_loss", "control_loss", "gain"],
    "ablation.csv": list(KEY) + ["layer", "head", "bucket", "positions", "base_loss", "ablated_loss", "delta"],
}
BUDGETS = ("half", "full")
MATCH_FROM = 384
# t_{0.975, df}: the two-sided 95 % quantile of Student's t with df degrees of freedom (standard tables).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}


def read_csv(path):
    """The rows of a CSV file as dicts; [] when there is no file."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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


# -----------------------------------------------------------------------------
# Loading: {seed: value} maps of one setting's runs at their chosen learning rates

@dataclass
class Setting:
    n_head: int
    block_size: int
    lrs: dict = field(default_factory=dict)       # pattern -> chosen lr (lr.json)
    sweep: dict = field(default_factory=dict)     # pattern -> {lr: half-budget seed-0 val loss}
    loss: dict = field(default_factory=lambda: defaultdict(dict))      # (pattern, budget) -> {seed: val loss}
    train_s: dict = field(default_factory=lambda: defaultdict(dict))   # (pattern, budget) -> {seed: tokens / tokens_per_s}
    speed: dict = field(default_factory=lambda: defaultdict(dict))     # (pattern, budget) -> {seed: tokens/s}
    heads: dict = field(default_factory=lambda: defaultdict(dict))     # (pattern, budget) -> {seed: (sigma, entropy)}
    diverged: dict = field(default_factory=lambda: defaultdict(int))   # (pattern, budget) -> runs
    bucket: dict = field(default_factory=lambda: defaultdict(dict))    # (pattern, budget, start) -> {seed: loss}
    gain: dict = field(default_factory=lambda: defaultdict(dict))      # (pattern, budget, distance) -> {seed: gain}
    ablation: dict = field(default_factory=lambda: defaultdict(dict))  # (pattern, budget, layer, head, start) -> {seed: delta}

    @property
    def name(self):
        return setting_name(self.n_head, self.block_size)

    @property
    def title(self):
        return f"{self.n_head} heads, N = {self.block_size}"

    def patterns(self):
        return [p for p in ATTN_PATTERNS if any(k[0] == p for k in list(self.loss) + list(self.diverged))]

    def starts(self, pattern, budget):
        """The first positions of the buckets of pattern's by-position rows at budget."""
        return sorted(k[2] for k in self.bucket if k[:2] == (pattern, budget))


def load(results_dir):
    """[Setting] of results_dir, the main setting first (N ascending, then more heads first)."""
    runs = read_csv(os.path.join(results_dir, "runs.csv"))
    if not runs:
        raise ConfigError(f"no runs in {os.path.join(results_dir, 'runs.csv')}: run experiments/compare.py first")
    path = os.path.join(results_dir, "lr.json")
    chosen = json.load(open(path)) if os.path.exists(path) else {}
    settings, counted = {}, {}
    for r in runs:
        S = settings.setdefault(setting_name(r["n_head"], r["block_size"]),
                                Setting(int(r["n_head"]), int(r["block_size"])))
        choice = chosen.get(S.name, {}).get(r["pattern"], {})
        S.lrs[r["pattern"]] = choice.get("lr")
        if choice.get("sweep"):
            S.sweep[r["pattern"]] = choice["sweep"]
        if r["lr"] != fmt_lr(choice.get("lr")):
            continue
        at, seed, loss = (r["pattern"], r["budget"]), int(r["seed"]), float(r["val_loss"])
        counted[key_of(r)] = (S, at, seed)
        if math.isnan(loss):
            S.diverged[at] += 1
            continue
        S.loss[at][seed] = loss
        S.speed[at][seed] = float(r["tokens_per_s"])
        S.train_s[at][seed] = float(r["tokens"]) / float(r["tokens_per_s"])
        if r["sigma"]:
            S.heads[at][seed] = (float(r["sigma"]), float(r["entropy"]))
    for name, target, where, column in (("by_position.csv", "bucket", ("bucket",), "loss"),
                                        ("copy_probe.csv", "gain", ("distance",), "gain"),
                                        ("ablation.csv", "ablation", ("layer", "head", "bucket"), "delta")):
        for r in read_csv(os.path.join(results_dir, name)):
            if key_of(r) in counted:  # a run at its pattern's chosen rate
                S, at, seed = counted[key_of(r)]
                getattr(S, target)[at + tuple(int(r[c]) for c in where)][seed] = float(r[column])
    return sorted(settings.values(), key=lambda S: (S.block_size, -S.n_head))


# -----------------------------------------------------------------------------
# Statistics and verdicts

def interval(values):
    """(n, mean, lo, hi): the mean of values and its 95 % t-interval; lo = hi = None when n < 2."""
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


def says(failed, short):
    if failed:
        return f"no ({failed[0]})"
    return f"not enough seeds ({short[0]})" if short else "yes"


def matches_dense(S, pattern):
    """Does the interval of pattern - dense lie within +/- 1 % of dense's loss at both budgets, for the
    full loss and in every bucket from MATCH_FROM on? (see the module's docstring)"""
    failed, short = [], []
    for budget in BUDGETS:
        checks = [(budget, S.loss.get((pattern, budget), {}), S.loss.get(("dense", budget), {}))]
        checks += [(f"{budget}, positions {b}+", S.bucket.get((pattern, budget, b), {}),
                    S.bucket.get(("dense", budget, b), {})) for b in S.starts("dense", budget) if b >= MATCH_FROM]
        for what, mine, dense in checks:
            n, mean, lo, hi = paired(mine, dense)
            if lo is None:
                short.append(f"{what}: {n} paired")
                continue
            tol = 0.01 * statistics.fmean(dense[s] for s in set(mine) & set(dense))
            if not (-tol <= lo and hi <= tol):
                side = "lower loss than dense" if hi < -tol else "higher loss than dense" if lo > tol else "not settled"
                failed.append(f"{what}: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] against 1 % of dense = {tol:.4f}: {side}")
    return says(failed, short)


def beats(S, other, pattern="sp"):
    """Does the interval of pattern - other lie below 0 at both budgets?"""
    failed, short = [], []
    for budget in BUDGETS:
        n, mean, lo, hi = paired(S.loss.get((pattern, budget), {}), S.loss.get((other, budget), {}))
        if lo is None:
            short.append(f"{budget}: {n} paired")
        elif hi >= 0:
            failed.append(f"{budget}: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    return says(failed, short)


def far_starts(pattern, n_head, block_size):
    """{head: the first distance of its band beyond distance 0}, for the heads of a band pattern that
    have one (sp's heads 2.. and sp_exclusive's heads 1..); {} for other patterns."""
    if pattern not in BAND_PATTERNS:
        return {}
    return {h: min(lo for lo, hi in bands if lo > 0 and hi > lo)
            for h, bands in enumerate(head_bands(n_head, block_size, pattern).tolist())
            if any(lo > 0 and hi > lo for lo, hi in bands)}


def ablation_by_reach(S, pattern, budget="full"):
    """{(layer, head): (before, reached)}: the mean loss change (over seeds and buckets) when the head is
    zeroed, in the buckets whose every position lies before the head's far band starts (no query there
    can see that band) and in the buckets that start at or after it. (all buckets, nan) for a head
    without a far band; {} without ablation rows."""
    keys = [k for k in S.ablation if k[:2] == (pattern, budget)]
    if not keys:
        return {}
    starts = sorted({k[4] for k in keys})
    size = starts[1] - starts[0] if len(starts) > 1 else S.block_size
    far = far_starts(pattern, S.n_head, S.block_size)
    out = {}
    for layer, head in sorted({k[2:4] for k in keys}):
        deltas = {b: list(S.ablation.get((pattern, budget, layer, head, b), {}).values()) for b in starts}
        if head not in far:
            out[layer, head] = (mean_of([v for vs in deltas.values() for v in vs]), math.nan)
            continue
        out[layer, head] = (mean_of([v for b, vs in deltas.items() if b + size <= far[head] for v in vs]),
                            mean_of([v for b, vs in deltas.items() if b >= far[head] for v in vs]))
    return out


# -----------------------------------------------------------------------------
# table.md

def mean_of(values):
    return statistics.fmean(values) if values else math.nan


def setting_md(S):
    """The tables of one setting: losses and intervals, verdicts, copy gains, heads, the lr sweep."""
    pats = S.patterns()
    lines = [f"## {S.title}", "",
             "| pattern | lr | budget | seeds | val loss | minus dense [95 % interval] | pairs | tokens/s | training s |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in pats:
        for b in BUDGETS:
            if not S.loss.get((p, b)) and not S.diverged.get((p, b)):
                continue
            n, d, lo, hi = paired(S.loss[(p, b)], S.loss.get(("dense", b), {}))
            diff = "" if p == "dense" else f"{d:+.4f}" + ("" if lo is None else f" [{lo:+.4f}, {hi:+.4f}]")
            seeds = f"{len(S.loss[(p, b)])}" + (f" (+{S.diverged[(p, b)]} diverged)" if S.diverged.get((p, b)) else "")
            lines.append(f"| `{p}` | {fmt_lr(S.lrs.get(p))} | {b} | {seeds} | {mean_of(list(S.loss[(p, b)].values())):.4f} "
                         f"| {diff} | {'' if p == 'dense' else n} | {mean_of(list(S.speed[(p, b)].values())):,.0f} "
                         f"| {mean_of(list(S.train_s[(p, b)].values())):.1f} |")
    lines += ["", "| pattern | matches dense | sp beats it |", "| --- | --- | --- |"]
    lines += [f"| `{p}` | {'' if p == 'dense' else matches_dense(S, p)} | {'' if p == 'sp' else beats(S, p)} |"
              for p in pats]
    starts, others = S.starts("dense", "full"), [p for p in pats if p != "sp"]
    if starts and "sp" in pats:
        width = f"{starts[1] - starts[0]}-position" if len(starts) > 1 else "position"  # experiments/compare.py --bucket
        lines += ["", f"Loss by position (full budget): each pattern's mean over seeds per {width} bucket, and sp "
                  "minus each other pattern, paired over seeds [95 % interval]:", "",
                  "| bucket | " + " | ".join(f"`{p}`" for p in pats) + " | " + " | ".join(f"sp - `{p}`" for p in others)
                  + " |", "| ---: |" + " ---: |" * (len(pats) + len(others))]
        for b in starts:
            cells = [f"{mean_of(list(S.bucket.get((p, 'full', b), {}).values())):.3f}" for p in pats]
            for p in others:
                n, d, lo, hi = paired(S.bucket.get(("sp", "full", b), {}), S.bucket.get((p, "full", b), {}))
                cells.append(f"{d:+.4f}" + ("" if lo is None else f" [{lo:+.4f}, {hi:+.4f}]"))
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
    distances = sorted({k[2] for k in S.gain})
    if distances:
        lines += ["", "Copy gain (nats per repeated token; full budget, mean over seeds):", "",
                  "| pattern | " + " | ".join(f"d = {d}" for d in distances) + " |", "| --- |" + " ---: |" * len(distances)]
        lines += [f"| `{p}` | " + " | ".join(f"{mean_of(list(S.gain.get((p, 'full', d), {}).values())):+.3f}"
                                             for d in distances) + " |" for p in pats]
    if any(S.heads.values()):
        lines += ["", "| pattern | budget | sigma | mean entropy (nats) |", "| --- | --- | ---: | ---: |"]
        lines += [f"| `{p}` | {b} | {mean_of([v[0] for v in S.heads[(p, b)].values()]):.4f} | "
                  f"{mean_of([v[1] for v in S.heads[(p, b)].values()]):.3f} |"
                  for p in pats for b in BUDGETS if S.heads.get((p, b))]
    for pattern in sorted({k[0] for k in S.ablation}):
        reach = ablation_by_reach(S, pattern)
        if not reach:
            continue
        heads_ = sorted({h for _, h in reach})
        lines += ["", f"Head ablation (`{pattern}`, full budget, mean over seeds): the loss change when one head is "
                  "zeroed, in nats, before its far band can be reached / from where it can (one number: the head "
                  "has no far band).", "",
                  "| layer | " + " | ".join(f"head {h}" for h in heads_) + " |", "| ---: |" + " ---: |" * len(heads_)]
        lines += [f"| {layer} | " + " | ".join(
            f"{a:+.4f}" if math.isnan(b) else (f"- / {b:+.4f}" if math.isnan(a) else f"{a:+.4f} / {b:+.4f}")
            for a, b in (reach[layer, h] for h in heads_)) + " |" for layer in sorted({l for l, _ in reach})]
    if S.sweep:
        rates = sorted({float(lr) for sw in S.sweep.values() for lr in sw})
        lines += ["", "Learning-rate sweep (half budget, seed 0; full validation loss; * chosen):", "",
                  "| pattern | " + " | ".join(f"{lr:g}" for lr in rates) + " |", "| --- |" + " ---: |" * len(rates)]
        def cell(p, lr):  # blank where the pattern's sweep did not try this rate
            loss = S.sweep[p].get(fmt_lr(lr))
            return "" if loss is None else f"{loss:.4f}" + ("*" if lr == S.lrs.get(p) else "")
        lines += [f"| `{p}` | " + " | ".join(cell(p, lr) for lr in rates) + " |" for p in pats if p in S.sweep]
    return lines


def table_md(settings):
    head = ["# The quality experiment: tables", "",
            "Written by `python experiments/compare.py --report_only` from the CSV files beside it. Runs at each pattern's "
            "chosen learning rate; intervals are paired over seeds, 95 %, with t_{0.975, n-1}; 'training s' is "
            f"tokens / tokens per second. Verdicts: experiments/report.py's docstring (buckets from position {MATCH_FROM} on).", ""]
    return "\n".join(head + [line for S in settings for line in setting_md(S) + [""]])


# -----------------------------------------------------------------------------
# Figures (matplotlib Figures without pyplot: the same in a script and in a notebook)

def colour(pattern):
    import matplotlib
    return matplotlib.colormaps["tab10"](ATTN_PATTERNS.index(pattern) % 10)


def figure_setting(S):
    """Four panels: loss by position; minus dense by position with intervals and the +/- 1 % band;
    copy gain by distance; validation loss against training time (half and full budgets)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(13, 9))
    (by_pos, vs_dense), (copy, timed) = fig.subplots(2, 2)
    budget = "full" if any(k[1] == "full" for k in S.loss) else "half"
    for p in S.patterns():
        style = dict(color=colour(p), label=p, lw=2.2 if p in ("dense", "sp") else 1.2)
        starts = S.starts(p, budget)
        by_pos.plot(starts, [mean_of(list(S.bucket[(p, budget, b)].values())) for b in starts], **style)
        ivs = [paired(S.bucket[(p, budget, b)], S.bucket.get(("dense", budget, b), {})) for b in starts]
        if p != "dense" and ivs:
            vs_dense.plot(starts, [iv[1] for iv in ivs], **style)
            lo_hi = [(b, iv[2], iv[3]) for b, iv in zip(starts, ivs) if iv[2] is not None]
            if lo_hi:
                vs_dense.fill_between([x for x, _, _ in lo_hi], [lo for _, lo, _ in lo_hi], [hi for _, _, hi in lo_hi],
                                      color=colour(p), alpha=0.15)
        distances = sorted(k[2] for k in S.gain if k[:2] == (p, budget))
        gains = [interval(list(S.gain[(p, budget, d)].values())) for d in distances]
        copy.errorbar(distances, [g[1] for g in gains], yerr=[0 if g[2] is None else g[1] - g[2] for g in gains],
                      marker="o", capsize=3, **style)
        points = [(mean_of(list(S.train_s[(p, b)].values())), mean_of(list(S.loss[(p, b)].values())))
                  for b in BUDGETS if S.loss.get((p, b))]
        timed.plot([x for x, _ in points], [y for _, y in points], marker="o", **style)
    starts = S.starts("dense", budget)
    tol = [0.01 * mean_of(list(S.bucket[("dense", budget, b)].values())) for b in starts]
    vs_dense.plot(starts, tol, "k:", lw=1, label="+/- 1 % of dense")
    vs_dense.plot(starts, [-t for t in tol], "k:", lw=1)
    vs_dense.axhline(0, color="k", lw=0.5)
    by_pos.set(title=f"loss by position ({budget} budget, mean over seeds)", xlabel="first position of the bucket",
               ylabel="loss (nats)")
    vs_dense.set(title="minus dense, paired over seeds (band: 95 % interval)", xlabel="first position of the bucket",
                 ylabel="loss difference (nats)")
    copy.set(title=f"copy gain ({budget} budget; bars: 95 % interval)", xlabel="distance d to the earlier copy",
             ylabel="control loss - probe loss (nats)", xscale="log")
    distances = sorted({k[2] for k in S.gain})
    copy.set_xticks(distances, [str(d) for d in distances])
    copy.minorticks_off()
    timed.set(title="validation loss against training time (half and full budget)",
              xlabel="training seconds (tokens / tokens per second)", ylabel="full validation loss")
    for ax in (by_pos, vs_dense, copy, timed):
        ax.grid(alpha=0.3)
    by_pos.legend(fontsize=8)
    vs_dense.legend(fontsize=8)
    fig.suptitle(f"{S.title}: runs at each pattern's chosen learning rate")
    fig.tight_layout()
    return fig


def figure_ablation(S, pattern="sp", budget="full"):
    """One panel per layer: the mean loss change (over seeds) when each head is zeroed, by position
    bucket; None when there are no ablation rows for pattern at budget."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    keys = [k for k in S.ablation if k[:2] == (pattern, budget)]
    if not keys:
        return None
    layers, n_head = max(k[2] for k in keys) + 1, max(k[3] for k in keys) + 1
    starts = sorted({k[4] for k in keys})
    delta = [[[mean_of(list(S.ablation.get((pattern, budget, l, h, b), {}).values())) for b in starts]
              for h in range(n_head)] for l in range(layers)]
    top = max(1e-9, max(abs(v) for layer in delta for row in layer for v in row if not math.isnan(v)))
    fig = Figure(figsize=(3 * layers + 1, 4), layout="constrained")
    axes = fig.subplots(1, layers, squeeze=False)[0]
    for l, ax in enumerate(axes):
        im = ax.imshow(delta[l], aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(0, -top, top),
                       extent=(starts[0], starts[-1] + (starts[1] - starts[0] if len(starts) > 1 else 1), n_head - 0.5, -0.5))
        ax.set(title=f"layer {l}", xlabel="position", ylabel="head" if l == 0 else None, yticks=range(n_head))
    fig.colorbar(im, ax=list(axes), label="loss change when the head is zeroed (nats)")
    fig.suptitle(f"{pattern}, {S.title}, {budget} budget: head ablation (mean over seeds)")
    return fig


def report(results_dir):
    """Write table.md, summary_SETTING.png and ablation_PATTERN_SETTING.png into results_dir; print the table."""
    settings = load(results_dir)
    md = table_md(settings)
    with open(os.path.join(results_dir, "table.md"), "w") as f:
        f.write(md)
    for S in settings:
        figure_setting(S).savefig(os.path.join(results_dir, f"summary_{S.name}.png"), dpi=100)
        for pattern in sorted({k[0] for k in S.ablation}):
            fig = figure_ablation(S, pattern)
            if fig is not None:
                fig.savefig(os.path.join(results_dir, f"ablation_{pattern}_{S.name}.png"), dpi=100)
    print(md)
