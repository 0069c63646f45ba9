"""What the compiled ops gain: each cell's pure-torch kernel (the Python time loop) against its
compiled op (the C++ loop), train step and inference.

Each cell runs as ``rnnkit.RecurrentNetwork(cell, I, H, native=False)`` (so rnnkit's own kernel,
never torch's), 1 layer, B=32, I=64, float32, on the CPU with a fixed thread count, in two fresh
processes: one with ``RNNKIT_KERNELS=python`` (the pure-torch kernels, what every cell ran before
the ops were compiled, and what runs where no compiler is) and one with the compiled ops. Each
process times its cells and ``torch.nn.LSTM`` interleaved (round-robin) and reports medians and
ratios to that torch.nn.LSTM; the gain is the pure-torch ratio / the compiled ratio (so the two
processes' machine states cancel). Writes the ``ops-gain`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/ops_gain.py [--shapes 128x50,512x200] [--repeats 21] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402

B, I = 32, 64
CELLS = ["elman", "gru", "lstm", "peephole_lstm", "jordan", "fully", "clockwork", "scrn", "ctrnn"]
DEFAULT_SHAPES = "128x50,128x200,512x50,512x200"


def measure(shapes, repeats: int, threads: int) -> list[dict]:
    """In this process: every cell's train step and inference against torch.nn.LSTM's."""
    import bench

    import rnnkit

    torch.set_num_threads(threads)
    rows = []
    for H, T in shapes:
        torch.manual_seed(0)
        x = torch.randn(T, B, I)
        models = {"torch.nn.LSTM": torch.nn.LSTM(I, H)}
        models.update({c: rnnkit.RecurrentNetwork(c, I, H, native=False) for c in CELLS})
        for m in models.values():  # warm-up
            bench.train_step(m, x)
            bench.inference(m, x)
        train = {n: [] for n in models}
        infer = {n: [] for n in models}
        for _ in range(repeats):
            for n, m in models.items():
                train[n].append(bench.timed(bench.train_step, m, x))
                infer[n].append(bench.timed(bench.inference, m, x))
        ref_t, ref_i = statistics.median(train["torch.nn.LSTM"]), statistics.median(
            infer["torch.nn.LSTM"])
        for c in CELLS:
            t, i = statistics.median(train[c]), statistics.median(infer[c])
            rows.append({"H": H, "T": T, "cell": c, "train_ms": 1e3 * t, "infer_ms": 1e3 * i,
                         "train_ratio": t / ref_t, "infer_ratio": i / ref_i})
        print(f"H={H} T={T} done", file=sys.stderr, flush=True)
    return rows


def run(kernels: str, args) -> tuple[list[dict], str]:
    """``measure`` in a fresh process with ``RNNKIT_KERNELS=kernels``; its rows and status."""
    repeats = max(1, args.repeats // args.rounds)
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import ops_gain, rnnkit.ops\n"
            f"rows = ops_gain.measure({args.shape_list!r}, {repeats}, {args.threads})\n"
            "print(json.dumps({'rows': rows, 'status': rnnkit.ops.build.status()}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                         env={**os.environ, "RNNKIT_KERNELS": kernels}, check=True,
                         stdout=subprocess.PIPE, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["rows"], result["status"]


def _median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Per row, the median over the rounds of each ratio (and time)."""
    out = []
    for rows in zip(*rounds, strict=True):
        merged = dict(rows[0])
        for key in ("train_ms", "infer_ms", "train_ratio", "infer_ratio"):
            merged[key] = statistics.median(r[key] for r in rows)
        out.append(merged)
    return out


def report(python_rows, compiled_rows, status: str, args, seconds: float) -> str:
    lines = [
        "# Compiled ops against the pure-torch kernels",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}",
        f"- `rnnkit.RecurrentNetwork(cell, {I}, H, native=False)`, B={B}, 1 layer, float32, "
        f"{args.threads} threads. Each side runs in its own process, its cells timed with "
        "torch.nn.LSTM in interleaved repeats: the ratios are to that process's torch.nn.LSTM. "
        f"The sides' processes alternate {args.rounds} times "
        f"({max(1, args.repeats // args.rounds)} repeats each; this shared machine's speed "
        "drifts by 10-30% over minutes), and a side's ratio is its median over the rounds; "
        "gain = pure-torch ratio / compiled ratio.",
        f"- Compiled side: {status}.",
        f"- Whole run: {seconds / 60:.1f} min.",
        "",
        "| H | T | cell | pure-torch train (× torch LSTM) | compiled train (× torch LSTM) "
        "| train gain | pure-torch inference | compiled inference | inference gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, c in zip(python_rows, compiled_rows, strict=True):
        lines.append(
            f"| {c['H']} | {c['T']} | {c['cell']} | {p['train_ratio']:.2f} | "
            f"{c['train_ratio']:.2f} | {p['train_ratio'] / c['train_ratio']:.2f}× | "
            f"{p['infer_ratio']:.2f} | {c['infer_ratio']:.2f} | "
            f"{p['infer_ratio'] / c['infer_ratio']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--repeats", type=int, default=21,
                        help="timed repeats per side, split over the rounds")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternations of the two sides' processes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    args.shape_list = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    # The two sides cannot share a process (an op has one implementation per process), and this
    # shared machine's speed drifts by 10-30% over minutes: so the sides alternate, round after
    # round, and each side's ratio is its median over the rounds.
    sides: dict[str, list[list[dict]]] = {"python": [], "auto": []}
    status = ""
    for _ in range(args.rounds):
        for kernels in sides:
            rows, got = run(kernels, args)
            sides[kernels].append(rows)
            status = got if kernels == "auto" else status
    python_rows, compiled_rows = _median_rows(sides["python"]), _median_rows(sides["auto"])
    text = report(python_rows, compiled_rows, status, args, time.perf_counter() - start)
    write_section(args.out, "ops-gain", text)
    print(text)


if __name__ == "__main__":
    main()
