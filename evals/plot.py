"""The quality-against-compression plot: F1 and acc against the kept fraction.

x is the achieved rate (tokens kept / tokens in, reader's tokenizer); one line per
method with its 95% bootstrap band; full context and no context are horizontal
references, truncation and random dropping are grey baselines; points on the
Pareto front (no other point keeps fewer tokens and scores higher) are ringed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctxzip.evals.baselines import FULL, NO_CONTEXT, RANDOM, TRUNCATE

_BASELINE_STYLE = {TRUNCATE: ("0.45", "--", "s"), RANDOM: ("0.65", ":", "v")}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower-or-equal x and higher-or-equal y, one strictly)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _colour(cmap: Any, n: int) -> Any:
    """tab10 without its grey (index 7), which the baselines use."""
    return cmap([0, 1, 2, 3, 4, 5, 6, 8, 9][n % 9])


def plot_sweep(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Write the PNG and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    colours = plt.get_cmap("tab10")
    for ax, metric, label in ((axes[0], "f1", "F1"), (axes[1], "acc", "acc (gold in answer)")):
        points: list[tuple[float, float]] = []
        for n, (method, rs) in enumerate(by_method.items()):
            if method in (FULL, NO_CONTEXT):
                r = rs[0]
                style = "-" if method == FULL else "-."
                ax.axhline(
                    r[metric],
                    color="black",
                    linestyle=style,
                    linewidth=1,
                    label=f"{method} ({r[metric]:.2f})",
                )
                ax.axhspan(r[f"{metric}_lo"], r[f"{metric}_hi"], color="black", alpha=0.05)
                if method == FULL:
                    points.append((1.0, r[metric]))
                continue
            rs = sorted(rs, key=lambda r: r["achieved_rate"])
            xs = [r["achieved_rate"] for r in rs]
            ys = [r[metric] for r in rs]
            colour, line, marker = _BASELINE_STYLE.get(method, (_colour(colours, n), "-", "o"))
            ax.plot(xs, ys, linestyle=line, marker=marker, color=colour, label=method)
            ax.fill_between(
                xs,
                [r[f"{metric}_lo"] for r in rs],
                [r[f"{metric}_hi"] for r in rs],
                color=colour,
                alpha=0.12,
            )
            points.extend(zip(xs, ys, strict=True))
        front = pareto_front(points)
        if front:
            ax.scatter(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                s=180,
                facecolors="none",
                edgecolors="red",
                linewidths=1.5,
                label="Pareto-optimal",
                zorder=5,
            )
        ax.set_xlabel("achieved rate (tokens kept / tokens in)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
