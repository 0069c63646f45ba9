"""Layer-normalized vs plain LSTM on the Shakespeare character model: the validation loss per
step of the two runs ``benchmarks/accuracy.py`` trains (``shakespeare-char`` and
``shakespeare-char-layernorm``: the same LSTM 512, data, schedule and seed), drawn from the
curves kept in ``benchmarks/ACCURACY.json``, and the training loss from the runs' own
``metrics.jsonl`` where they are still on disk. Writes ``benchmarks/layer_norm_shakespeare.png``.

    python benchmarks/plot_layer_norm.py [--runs benchmarks/runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).parent
RUNS = {"shakespeare-char": "plain", "shakespeare-char-layernorm": "layer_norm=True"}


def training_loss(path: Path, every: int = 10) -> tuple[list, list]:
    """The training loss of a run's ``metrics.jsonl``, averaged over windows of ``every`` rows."""
    if not path.exists():
        return [], []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind") == "train"]
    steps, losses = [], []
    for k in range(0, len(rows), every):
        window = rows[k : k + every]
        steps.append(window[-1]["step"])
        losses.append(sum(r["loss"] for r in window) / len(window))
    return steps, losses


def main(argv=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--out", type=Path, default=HERE / "layer_norm_shakespeare.png")
    args = parser.parse_args(argv)
    rows = {r["name"]: r for r in json.loads((HERE / "ACCURACY.json").read_text())}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, label), color in zip(RUNS.items(), ("tab:blue", "tab:red"), strict=True):
        row = rows.get(name)
        if row is None or not row.get("curve"):
            raise SystemExit(f"{name}: no validation curve in ACCURACY.json; train it with "
                             f"python benchmarks/accuracy.py --only {name}")
        steps, nll = zip(*row["curve"], strict=True)
        ax.plot(steps, nll, "o-", color=color, label=f"{label}: validation "
                f"(best {min(nll):.3f}, {row['seconds'] / 60:.0f} min)")
        t_steps, t_loss = training_loss(args.runs / name / "metrics.jsonl")
        if t_steps:
            ax.plot(t_steps, t_loss, color=color, alpha=0.35, label=f"{label}: training")
    ax.set_xlabel("training step (32 streams x 100 characters)")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title("Shakespeare, LSTM 512: layer-normalized vs plain")
    ax.set_ylim(top=2.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
