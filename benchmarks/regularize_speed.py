"""The speed cost of each regularizer: a training step (forward + backward) of a 2-layer network
with one regularizer on, as a ratio to the same network without it, for every cell, in one run.

Each row is ``rnnkit.RecurrentNetwork(cell, I, H, num_layers=2)`` (float32, training mode) on a
(T, B, I) batch; the options are ``recurrent_dropout=0.25``, ``zoneout=0.1``,
``weight_drop=0.5``, ``dropout=0.3, dropout_mode="variational"`` (against ``dropout=0.3``
standard) and ``layer_norm=True`` (also through the reference loop, ``fused=False``). All
variants of a shape are timed in interleaved (round-robin) rounds; medians over the rounds.
Writes the ``regularize`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/regularize_speed.py [--shapes 128x50,512x100] [--rounds 21] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402

B, I = 32, 64
CELLS = ["elman", "gru", "lstm", "peephole_lstm", "jordan", "fully", "clockwork", "scrn",
         "ctrnn"]
# variant -> (its options, the options of the network it is compared with)
VARIANTS = {
    "recurrent_dropout=0.25": ({"recurrent_dropout": 0.25}, {}),
    "zoneout=0.1": ({"zoneout": 0.1}, {}),
    "weight_drop=0.5": ({"weight_drop": 0.5}, {}),
    "variational dropout 0.3": ({"dropout": 0.3, "dropout_mode": "variational"},
                                {"dropout": 0.3}),
    "layer_norm": ({"layer_norm": True}, {}),
    # the same layer-normalized network through the reference loop (rnnkit.scan, whose cells
    # call F.layer_norm): what normalizing inside the compiled op saves
    "layer_norm, reference loop": ({"layer_norm": True, "fused": False}, {}),
}


def train_step(cell: str, H: int, T: int, options: dict):
    import rnnkit

    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(cell, I, H, num_layers=2, **options).train()
    x = torch.randn(T, B, I)

    def step():
        out, _ = net(x)
        out.sum().backward()
    return step


def measure(shapes, rounds: int) -> list[dict]:
    rows = []
    for H, T in shapes:
        for cell in CELLS:
            fns = {"base": train_step(cell, H, T, {}),
                   "base dropout 0.3": train_step(cell, H, T, {"dropout": 0.3})}
            for name, (opts, _) in VARIANTS.items():
                fns[name] = train_step(cell, H, T, opts)
            for f in fns.values():  # warm-up
                f()
                f()
            times = {n: [] for n in fns}
            for _ in range(rounds):
                for n, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[n].append(time.perf_counter() - t0)
            med = {n: statistics.median(ts) for n, ts in times.items()}
            row = {"H": H, "T": T, "cell": cell, "base_ms": 1e3 * med["base"]}
            for name, (_, against) in VARIANTS.items():
                row[name] = med[name] / med["base dropout 0.3" if against else "base"]
            rows.append(row)
            print(f"H={H} T={T} {cell}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in row.items() if k in VARIANTS), file=sys.stderr,
                flush=True)
    return rows


def report(rows, args, seconds: float) -> str:
    lines = [
        "# Regularizers: the cost of each, per cell",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}",
        f"- A training step (forward + backward of the output's sum) of "
        f"`rnnkit.RecurrentNetwork(cell, {I}, H, num_layers=2)`, batch {B}, float32, as a "
        f"ratio to the same network without the option (variational dropout: to standard "
        f"dropout of the same p); medians of {args.rounds} interleaved rounds "
        "(`benchmarks/regularize_speed.py`). The plain LSTM's base runs torch's own kernel; "
        "with recurrent dropout or zoneout it runs rnnkit's compiled LSTM op, so its ratio "
        "also holds the difference between the two kernels.",
        f"- Whole run: {seconds:.0f} s.",
        "",
        "| H | T | cell | base ms | " + " | ".join(VARIANTS) + " |",
        "|---|---|---|---|" + "---|" * len(VARIANTS),
    ]
    for r in rows:
        lines.append(f"| {r['H']} | {r['T']} | {r['cell']} | {r['base_ms']:.1f} | "
                     + " | ".join(f"{r[v]:.2f}" for v in VARIANTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="128x50,512x100", help="HxT,...")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    rows = measure(shapes, args.rounds)
    text = report(rows, args, time.perf_counter() - start)
    write_section(args.out, "regularize", text)
    print(text)


if __name__ == "__main__":
    main()
