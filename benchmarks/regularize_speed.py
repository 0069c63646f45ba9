"""The speed cost of each regularizer: a training step (forward + backward) of a 2-layer network
with one regularizer on, as a ratio to the same network without it, for every cell, in one run.

Each row is ``rnnkit.RecurrentNetwork(cell, I, H, num_layers=2)`` (float32, training mode) on a
(T, B, I) batch; the options are ``recurrent_dropout=0.25``, ``zoneout=0.1``,
``weight_drop=0.5``, ``dropout=0.3, dropout_mode="variational"`` (against ``dropout=0.3``
standard) and ``layer_norm=True`` (also through the reference loop, ``fused=False``). All
variants of a shape are timed in interleaved (round-robin) rounds; medians over the rounds.
Writes the ``regularize`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/regularize_speed.py [--shapes 128x50,512x100] [--rounds 21] [--threads 2]
    python benchmarks/regularize_speed.py --shapes 128x50 --keep-freed-memory

``--keep-freed-memory`` runs with :func:`rnnkit.malloc.keep_freed_memory` (what ``rnnkit``'s
command line does) and writes the ``regularize-kept`` section instead: the share of each cost
that is glibc page-faulting the step's freed buffers back in.
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


# What the table's ratios are made of (measured by hand, 2026-12-07, one thread)
NOTES = [
    "- Zoneout: its masks are one draw of 15-bit numbers per layer compared against each "
    "column's p (0.12 ms for T=50, N=32, 2H=256; 0.74 ms before, as a bool tensor converted "
    "to float; 2.4 ms with `bernoulli_`); the kernels merge and split in vectorized row "
    "passes; the fully recurrent op saves its pre-zoneout [h~ ; y~] instead of recomputing "
    "them with two GEMMs over the sequence (its ratio at H=128 was 1.50, and 1.38 at H=512).",
    "- Layer normalization runs inside each cell's op (`rnnkit/csrc/layer_norm.h`); per step "
    "it adds two row reductions and a rewrite of the recurrent product forward and two "
    "reductions and a pass backward, and it saves the normalized rows of each site for the "
    "backward. At H=128 with glibc's defaults much of its cost is page faults: a layer-"
    "normalized peephole LSTM's step faulted 5,200 times (2,900 after the gain gradients "
    "stopped allocating a (T N, 4H) product), the plain one's none; with freed memory kept, "
    "1.22x instead of 1.47x on one thread. On 2 threads the `regularize-kept` table shows the "
    "gain for the GRU and Elman (1.27 against 1.54, 1.11 against 1.30 in the 2026-12-07 runs) "
    "but not clearly for the others: run to run a row moves by ~10% here.",
]


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
        "- Memory: " + ("freed memory kept mapped (`rnnkit.malloc.keep_freed_memory`, as "
                        "`rnnkit`'s command line runs): no page faults for a step's buffers."
                        if args.keep_freed_memory else
                        "glibc's malloc defaults, as a library user's script gets them (see "
                        "the `regularize-kept` section for the same with freed memory kept)."),
        *NOTES,
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
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory mapped (rnnkit.malloc)")
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        from rnnkit.malloc import keep_freed_memory

        if not keep_freed_memory():
            parser.error("--keep-freed-memory: not available here (glibc on Linux only, or "
                         "MALLOC_*_THRESHOLD_ already set)")
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    rows = measure(shapes, args.rounds)
    text = report(rows, args, time.perf_counter() - start)
    write_section(args.out, "regularize-kept" if args.keep_freed_memory else "regularize", text)
    print(text)


if __name__ == "__main__":
    main()
