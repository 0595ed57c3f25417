"""
Train every attention pattern the same way and compare them: the paper's claim at small scale.

    python compare.py                                    # all patterns, Tiny Shakespeare chars, N = 1024
    python compare.py --patterns=dense,sp --seeds=1337,1338 --max_iters=800
    python compare.py --dataset=pystdlib --results_dir=results/compare/pystdlib --patterns=dense,sp,window
    python compare.py --report_only                      # table and plot again, from the saved logs alone

Each run is `train.train(TrainConfig)` with the same data, seed, steps and batch; only `attn` differs.
A run writes its checkpoint to <runs_dir>/<pattern>_s<seed>/ (not committed) and copies its log.csv to
<results_dir>/logs/<pattern>_s<seed>.csv with a <pattern>_s<seed>.json beside it (the config, the
share of causal pairs computed, the device). The report is built from those files alone:
<results_dir>/table.md, table.csv (one row per pattern, seeds averaged), runs.csv (one row per run),
and loss.png (validation loss against iterations and against wall-clock time).

Any TrainConfig key passes through (--learning_rate=..., --compile=True, --attn_switch_frac=...).
"""

import csv
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
import traceback

import torch

import train as T
from model import ATTN_PATTERNS, ConfigError, GPT, GPTConfig

HERE = os.path.dirname(os.path.abspath(__file__))

# The experiment: nanoGPT's baby GPT with 8 heads of 64 (the Triton kernel's head size) at N = 1024.
DEFAULTS = dict(
    dataset="shakespeare_char", block_size=1024, n_layer=6, n_head=8, n_embd=512, dropout=0.2, bias=False,
    batch_size=16, gradient_accumulation_steps=1, max_iters=800, lr_decay_iters=800, warmup_iters=100,
    learning_rate=1e-3, min_lr=1e-4, beta2=0.99, eval_interval=100, eval_iters=20, log_interval=5,
    compile=False, device="auto",
)
OPTIONS = dict(patterns=",".join(ATTN_PATTERNS), seeds="1337", results_dir="results/compare",
               runs_dir="results/compare/runs", report_only=False)


def parse(argv):
    opts, overrides = dict(OPTIONS), {}
    fields = {f.name: f.type for f in dataclasses.fields(T.TrainConfig)}
    for arg in argv:
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--"):
            raise ConfigError(f"argument {arg!r} must look like --key=value")
        if key == "report_only":
            opts[key] = value.lower() in ("", "1", "true", "yes")
        elif key in OPTIONS:
            opts[key] = value
        elif key in fields and key not in ("attn", "seed", "out_dir", "init_from"):
            overrides[key] = T.parse_value(key, value, fields[key])
        else:
            raise ConfigError(f"unknown option --{key}; compare.py takes {', '.join(OPTIONS)} "
                              f"and TrainConfig keys except attn, seed, out_dir, init_from")
    patterns = [p for p in opts["patterns"].split(",") if p]
    for p in patterns:
        if p not in ATTN_PATTERNS:
            raise ConfigError(f"unknown pattern {p!r}; choose among {', '.join(ATTN_PATTERNS)}")
    seeds = [int(s) for s in opts["seeds"].split(",") if s]
    base = {**DEFAULTS, **overrides}
    if "max_iters" in overrides and "lr_decay_iters" not in overrides:
        base["lr_decay_iters"] = base["max_iters"]
    return opts, patterns, seeds, base


def run_one(pattern, seed, base, opts):
    name = f"{pattern}_s{seed}"
    out_dir = os.path.join(opts["runs_dir"], name)
    shutil.rmtree(out_dir, ignore_errors=True)  # a fresh run, never a resumed log
    cfg = T.TrainConfig(**{**base, "attn": pattern, "seed": seed, "out_dir": out_dir})
    logs = os.path.join(opts["results_dir"], "logs")
    os.makedirs(logs, exist_ok=True)
    t0 = time.time()
    error = None
    try:
        T.train(cfg)
    except Exception as e:  # one broken pattern must not cost the others their run
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
    wall = time.time() - t0
    if os.path.exists(os.path.join(out_dir, "log.csv")):
        shutil.copy(os.path.join(out_dir, "log.csv"), os.path.join(logs, name + ".csv"))
    meta = T.load_dataset(cfg.dataset)[1]
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=meta["vocab_size"] if meta else 50304,
                          n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, attn=pattern))
    N, H = cfg.block_size, cfg.n_head
    info = dict(pattern=pattern, seed=seed, config=dataclasses.asdict(cfg), wall_s=round(wall, 1), error=error,
                pairs_share=model.attention_pairs() / (H * N * (N + 1) / 2),
                device=torch.cuda.get_device_name() if T.pick_device(cfg).startswith("cuda") else T.pick_device(cfg),
                torch=torch.__version__, triton=_triton_version(),
                date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    with open(os.path.join(logs, name + ".json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def _triton_version():
    try:
        import triton
        return triton.__version__
    except ImportError:
        return None


# -----------------------------------------------------------------------------
# Report: everything from results_dir/logs

def read_run(csv_path):
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    info = {}
    if os.path.exists(csv_path[:-4] + ".json"):
        with open(csv_path[:-4] + ".json") as f:
            info = json.load(f)
    evals = [(int(r["iter"]), float(r["val_loss"]), float(r["elapsed_s"])) for r in rows if r["val_loss"]]
    steps = [(int(r["iter"]), float(r["tokens_per_s"])) for r in rows if r["tokens_per_s"]]
    max_iter = max([i for i, _, _ in evals] + [i for i, _ in steps] + [1])
    warm = max(20, max_iter // 10)  # the first tenth (compilation, autotuning, caches) is left out
    speed = [t for i, t in steps if i >= warm]
    name = os.path.basename(csv_path)[:-4]
    return dict(name=name, pattern=info.get("pattern", name.rsplit("_s", 1)[0]),
                seed=info.get("seed", name.rsplit("_s", 1)[-1]), evals=evals,
                final_val=evals[-1][1] if evals else float("nan"), last_iter=evals[-1][0] if evals else 0,
                best_val=min(v for _, v, _ in evals) if evals else float("nan"),
                tokens_per_s=statistics.median(speed) if speed else float("nan"),
                pairs_share=info.get("pairs_share", float("nan")), wall_s=info.get("wall_s", float("nan")),
                error=info.get("error"), info=info)


def report(results_dir, patterns=None):
    logs = os.path.join(results_dir, "logs")
    runs = [read_run(os.path.join(logs, f)) for f in sorted(os.listdir(logs)) if f.endswith(".csv")]
    if patterns:
        runs = [r for r in runs if r["pattern"] in patterns]
    if not runs:
        raise ConfigError(f"no logs in {logs}: run compare.py without --report_only first")
    order = {p: i for i, p in enumerate(ATTN_PATTERNS)}
    runs.sort(key=lambda r: (order.get(r["pattern"], 99), str(r["seed"])))
    by_pattern = {}
    for r in runs:
        by_pattern.setdefault(r["pattern"], []).append(r)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    dense = by_pattern.get("dense")
    dense_final = mean([r["final_val"] for r in dense]) if dense else None
    dense_speed = mean([r["tokens_per_s"] for r in dense]) if dense else None
    table = []
    for p, rs in by_pattern.items():
        fin = [r["final_val"] for r in rs]
        row = dict(pattern=p, seeds=len(rs), final_val=mean(fin), final_val_spread=max(fin) - min(fin),
                   best_val=mean([r["best_val"] for r in rs]), tokens_per_s=mean([r["tokens_per_s"] for r in rs]),
                   pairs_share=rs[0]["pairs_share"], wall_s=mean([r["wall_s"] for r in rs]),
                   iters=rs[0]["last_iter"])
        row["val_vs_dense"] = row["final_val"] / dense_final - 1 if dense_final else float("nan")
        row["speed_vs_dense"] = row["tokens_per_s"] / dense_speed if dense_speed else float("nan")
        table.append(row)
    cols = ["pattern", "seeds", "iters", "final_val", "final_val_spread", "best_val", "val_vs_dense",
            "tokens_per_s", "speed_vs_dense", "pairs_share", "wall_s"]
    with open(os.path.join(results_dir, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for row in table:
            w.writerow({c: (f"{row[c]:.5g}" if isinstance(row[c], float) else row[c]) for c in cols})
    with open(os.path.join(results_dir, "runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "pattern", "seed", "final_val", "best_val", "tokens_per_s", "pairs_share", "wall_s", "error"])
        for r in runs:
            w.writerow([r["name"], r["pattern"], r["seed"], f"{r['final_val']:.5f}", f"{r['best_val']:.5f}",
                        f"{r['tokens_per_s']:.0f}", f"{r['pairs_share']:.4f}", r["wall_s"], r["error"] or ""])
    lines = ["| pattern | seeds | final val loss | vs dense | best val loss | tokens/s | vs dense | "
             "causal pairs computed | wall s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in table:
        spread = f" ± {row['final_val_spread'] / 2:.4f}" if row["seeds"] > 1 else ""
        vs_val = "n/a" if dense_final is None else f"{row['val_vs_dense']:+.2%}"
        vs_speed = "n/a" if dense_speed is None else f"{row['speed_vs_dense']:.2f}x"
        lines.append(f"| `{row['pattern']}` | {row['seeds']} | {row['final_val']:.4f}{spread} | {vs_val} | "
                     f"{row['best_val']:.4f} | {row['tokens_per_s']:,.0f} | {vs_speed} | "
                     f"{row['pairs_share']:.1%} | {row['wall_s']:.0f} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(results_dir, "table.md"), "w") as f:
        f.write(md)
    plot(runs, os.path.join(results_dir, "loss.png"))
    print(md)
    return table


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    colors = {p: plt.cm.tab10(i) for i, p in enumerate(ATTN_PATTERNS)}
    seen = set()
    for r in runs:
        if not r["evals"]:
            continue
        it, val, el = zip(*r["evals"])
        style = "-" if r["pattern"] not in seen else "--"
        label = r["pattern"] if r["pattern"] not in seen else None
        seen.add(r["pattern"])
        lw = 2.2 if r["pattern"] in ("sp", "dense") else 1.2
        axes[0].plot(it, val, style, color=colors.get(r["pattern"]), label=label, lw=lw)
        axes[1].plot(el, val, style, color=colors.get(r["pattern"]), lw=lw)
    finals = [r["final_val"] for r in runs if r["evals"]]
    lo = min(finals)
    axes[0].set_ylim(lo - 0.05, max(finals) + 0.3)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("wall-clock seconds (evaluations included)")
    axes[0].set_ylabel("validation loss")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(title="attn (dashed: more seeds)")
    info = runs[0]["info"]
    cfg = info.get("config", {})
    fig.suptitle(f"{cfg.get('dataset', '?')}, N={cfg.get('block_size', '?')}, {cfg.get('n_layer', '?')} layers x "
                 f"{cfg.get('n_head', '?')} heads x {cfg.get('n_embd', '?')}, batch {cfg.get('batch_size', '?')}; "
                 f"{info.get('device', '?')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    try:
        opts, patterns, seeds, base = parse(argv)
        if not opts["report_only"]:
            for seed in seeds:
                for pattern in patterns:
                    print(f"=== {pattern} seed {seed} ===", flush=True)
                    info = run_one(pattern, seed, base, opts)
                    print(f"=== {pattern} seed {seed}: {info['wall_s']} s{'; ' + info['error'] if info['error'] else ''}",
                          flush=True)
        report(opts["results_dir"])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
