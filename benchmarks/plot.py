"""Plots of the benchmark results, for docs/performance.md (made by ``nox -s bench``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

RESULTS = Path("benchmarks/results")
IMAGES = Path("docs/img")


def throughput(rows: list[dict[str, Any]], path: Path) -> None:
    names = [n for n in rows[0]["loaders"] if n != "DataLoader"]
    labels = [f"{r['dataset']}\n{r['num_workers']}w, b{r['batch_size']}" for r in rows]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for k, name in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r["loaders"][name]["ratio"] for r in rows], width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("throughput / DataLoader's")
    ax.set_ylim(0, 1.1)
    ax.set_title("Throughput relative to DataLoader (one run, median of paired repetitions)")
    ax.legend(fontsize=8, ncols=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def resume(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for loader in sorted({r["loader"] for r in rows}):
        for workers in sorted({r["num_workers"] for r in rows}):
            sel = [r for r in rows if r["loader"] == loader and r["num_workers"] == workers]
            ax.plot(
                [100 * r["position"] for r in sel],
                [r["ratio"] for r in sel],
                marker="o",
                label=f"{loader}, {workers} workers",
            )
    ax.axhline(1.5, color="grey", linestyle="--", linewidth=0.8, label="target 1.5x")
    ax.set_xlabel("resume position (% of a 1,000,000-sample epoch)")
    ax.set_ylabel("first batch after resume /\nfresh loader's first batch")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.set_size_inches(9, 3.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    throughput(json.loads((RESULTS / "throughput.json").read_text()), IMAGES / "throughput.png")
    resume(json.loads((RESULTS / "resume.json").read_text()), IMAGES / "resume.png")
    print(f"plots written to {IMAGES}", file=sys.stderr)


if __name__ == "__main__":
    main()
