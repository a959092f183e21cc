"""Draw a run's curves: `python3 plot.py <run.csv> [--output FILE.png]`.

The CSV is the one main.py writes beside its checkpoint (one row per test): loss on
the left, recall@k and NDCG@k on the right."""
import argparse
import csv
import math
import os
import sys


def read_rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames or []
    if not rows or "epoch" not in columns:
        raise ValueError(f"{path}: no test rows (expected main.py's CSV with an 'epoch' column)")
    return columns, rows


def plot(path, output):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, rows = read_rows(path)
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    loss = [(e, float(r["loss"])) for e, r in zip(epochs, rows) if r["loss"] not in ("", "nan")
            and not math.isnan(float(r["loss"]))]
    if loss:
        ax_loss.plot(*zip(*loss), marker=".", color="tab:red")
    ax_loss.set(title="BPR loss", xlabel="epoch", ylabel="loss")
    ax_loss.grid(alpha=0.3)
    for name in [c for c in columns if c.startswith(("recall@", "ndcg@"))]:
        ax_metric.plot(epochs, [float(r[name]) for r in rows], marker=".", label=name)
        best = max(rows, key=lambda r: float(r[name]))
        ax_metric.annotate(f"{float(best[name]):.4f}", (int(best["epoch"]), float(best[name])),
                           textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax_metric.set(title="test", xlabel="epoch")
    ax_metric.legend()
    ax_metric.grid(alpha=0.3)
    fig.suptitle(os.path.basename(path))
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="plot.py", description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--output", default="", help="PNG file (default: the CSV's name with .png)")
    args = p.parse_args(argv)
    output = args.output or os.path.splitext(args.csv)[0] + ".png"
    try:
        plot(args.csv, output)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
