"""What a run leaves behind besides checkpoints: ``metrics.jsonl`` and its curves as PNG.

Each line of ``metrics.jsonl`` is one JSON object with a ``step`` and a ``kind``: ``"train"``
(loss, lr, gradient norm before clipping, clipping counts, throughput, every
``run.log_every`` steps), ``"eval"`` (the validation metrics) or ``"test"``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


class MetricsLog:
    """Appends records to a JSONL file, one flushed line each."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int, redo: tuple[str, ...] = ()) -> None:
        """Drop the records after ``step``, and those of kinds ``redo`` at ``step`` itself (a
        validation the resumed run runs again): a resumed run re-does them and writes them
        again. Rewritten through a temporary file, so a crash here loses nothing."""
        if not self.path.exists():
            return
        kept = [line for line in read_records(self.path) if line.get("step", 0) < step
                or (line.get("step", 0) == step and line.get("kind") not in redo)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)


def read_records(path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (a run killed mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_curves(records: list[dict], path, title: str = "") -> Path | None:
    """Training loss (and its moving average) and every validation metric against the step,
    one panel each, as a PNG. Returns the path, or None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    evals = [r for r in records if r.get("kind") == "eval"]
    # every validation metric gets a panel; "baseline_X" is drawn as a line in X's panel
    names = sorted({k for r in evals for k, v in r.items()
                    if k not in ("step", "kind", "loss") and not k.startswith("baseline_")
                    and isinstance(v, (int, float))})
    if not train and not evals:
        return None
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5 * (1 + len(names)), 3.8),
                             squeeze=False)
    ax = axes[0, 0]
    if train:
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(steps, losses, color="0.7", lw=0.8, label="train loss")
        ax.plot(steps, _moving_average(losses, max(1, len(losses) // 25)), color="C0", lw=1.5,
                label="moving average")
        if min(losses) > 0 and max(losses) / min(losses) > 30:
            ax.set_yscale("log")
    _draw_metric(ax, evals, "loss", "validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    if ax.get_legend_handles_labels()[0]:  # a run shorter than log_every has no train curve
        ax.legend(fontsize=8)
    for ax, name in zip(axes[0, 1:], names, strict=True):
        _draw_metric(ax, evals, name, f"validation {name}")
        ax.set_xlabel("optimizer step")
        ax.set_title(f"validation {name}")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _draw_metric(ax, evals: list[dict], name: str, label: str) -> None:
    """The metric's points, and its baseline (``baseline_<name>``) as a dashed line."""
    points = [(r["step"], r[name]) for r in evals if _finite(r.get(name))]
    if points:
        ax.plot(*zip(*points, strict=True), "o-", color="C1", ms=3, label=label)
    baseline = [r[f"baseline_{name}"] for r in evals if _finite(r.get(f"baseline_{name}"))]
    if baseline:
        ax.axhline(baseline[-1], color="0.4", ls="--", lw=1, label="baseline")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _moving_average(values: list[float], window: int = 20) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
