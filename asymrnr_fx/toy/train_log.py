"""The training log: one CSV row per 10 steps and per evaluation, and its plot.

Why its own module: a resumed run truncates and continues the same log, and the plot is made
from it long after training (``python -m asymrnr_fx.toy.train --plot``).
"""
from __future__ import annotations

import csv
from pathlib import Path

from . import scorer

CSV_FIELDS = ("step", "stage", "frames", "elapsed_min", "lr", "loss", "split", "n", "colour", "shape", "direction", "all")


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def truncate_csv(path: Path, max_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= max_step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot_log(csv_path: Path, png_path: Path) -> Path:
    """Loss (left) and held-out prompt accuracy per attribute (right) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    loss = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
    evals = [r for r in rows if r["split"] == "heldout"]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    if loss:
        steps, values = zip(*loss)
        ax_l.plot(steps, values, lw=0.6, alpha=0.4, color="C0")
        k = 20
        smooth = [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]
        ax_l.plot(steps, smooth, lw=1.5, color="C0", label=f"loss (mean of {k} points)")
        ax_l.set_yscale("log")
    boundaries = [int(prev["step"]) for prev, r in zip(rows, rows[1:]) if r["stage"] != prev["stage"]]
    for ax in (ax_l, ax_a):
        for b in boundaries:
            ax.axvline(b, color="grey", ls=":", lw=1)
    ax_l.set(xlabel="step", ylabel="flow-matching loss (v1, v2: pixel-weighted)", title="training loss")
    ax_l.legend(loc="upper right")
    for key, colour in (("colour", "C3"), ("shape", "C2"), ("direction", "C0"), ("all", "k")):
        pts = [(int(r["step"]), float(r[key])) for r in evals]
        if pts:
            ax_a.plot(*zip(*pts), marker="o", color=colour, label=key)
    chance = scorer.chance_levels()
    ax_a.axhline(chance["shape"], color="C2", ls="--", lw=0.8, label="shape chance")
    ax_a.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title="held-out prompt accuracy (EMA weights)")
    ax_a.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path
