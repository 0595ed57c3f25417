"""Training tokens/s against context length from bench.py's printed tables (the *.log files here).

    python results/bench/plot.py        # writes results/bench/tokens_vs_T.png
"""
import glob
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
STYLE = {"dense": ("k", "o", "-"), "no_attention": ("0.6", "s", ":"),
         "flex_sp": ("tab:blue", "^", "--"), "flex_sp_exclusive": ("tab:blue", "v", "-"),
         "triton_sp": ("tab:red", "^", "--"), "triton_sp_exclusive": ("tab:red", "v", "-")}


def rows():
    """{variant: {T: tokens/s}} from every '| T | variant | tokens/s | ...' row (the last one wins)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(HERE, "train_*.log"))):  # the H100 runs (h200_*.log are not)
        for line in open(path):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3 and cells[0].isdigit() and cells[2].replace(",", "").isdigit():
                out.setdefault(cells[1], {})[int(cells[0])] = int(cells[2].replace(",", ""))
    return out


def main():
    data = rows()
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, (color, marker, ls) in STYLE.items():
        if variant in data:
            Ts = sorted(data[variant])
            ax.plot(Ts, [data[variant][T] / 1e3 for T in Ts], color=color, marker=marker, ls=ls, label=variant)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length T")
    ax.set_ylabel("training tokens/s (thousands)")
    ax.set_title("GPT-2 small, bf16, torch.compile, H100 (each T: one run, one card)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "tokens_vs_T.png"), dpi=120)
    print({v: dict(sorted(d.items())) for v, d in data.items()})


if __name__ == "__main__":
    main()
