"""Training tokens/s against context length, drawn from bench/bench.py's printed tables (bench/results/model/*.log).

    python bench/plot_bench.py        # writes bench/results/model/tokens_vs_T_h200.png
"""
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "model")
STYLE = {"dense": ("k", "o", "-"), "no_attention": ("0.6", "s", ":"),
         "flex_sp": ("tab:blue", "^", "--"), "flex_sp_exclusive": ("tab:blue", "v", "-"),
         "triton_sp": ("tab:red", "^", "--"), "triton_sp_exclusive": ("tab:red", "v", "-")}


# The logs, in order: a later log's row replaces an earlier one's (same T and variant); which run
# each row comes from is in bench/results/model/README.md.
LOGS = {
    "H200": lambda: [os.path.join(HERE, name) for name in (
        "h200_train_T1024.log", "h200_train_T1024_run2.log", "h200_train_T16384_4096.log",
        "h200_train_T4096.log", "h200_train_T32768_flex.log", "h200_train_T32768.log")],
}
PNG = {"H200": "tokens_vs_T_h200.png"}


def rows(paths):
    """{variant: {T: tokens/s}} from every '| T | variant | tokens/s | ...' row (the last one wins)."""
    out = {}
    for path in paths:
        for line in open(path):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[0].isdigit() and cells[2].replace(",", "").isdigit():
                out.setdefault(cells[1], {})[int(cells[0])] = int(cells[2].replace(",", ""))
    return out


def plot(card):
    data = rows(LOGS[card]())
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, (color, marker, ls) in STYLE.items():
        if variant in data:
            Ts = sorted(data[variant])
            ax.plot(Ts, [data[variant][T] / 1e3 for T in Ts], color=color, marker=marker, ls=ls, label=variant)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length T")
    ax.set_ylabel("training tokens/s (thousands)")
    ax.set_title(f"GPT-2 small, bf16, torch.compile, {card}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, PNG[card]), dpi=120)
    print(card, {v: dict(sorted(d.items())) for v, d in data.items()})


def main():
    for card in LOGS:
        plot(card)


if __name__ == "__main__":
    main()
