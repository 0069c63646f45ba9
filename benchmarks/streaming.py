"""Streaming latency: one ``net.step(x_t, state)`` at batch 1, the serving case, for every cell,
against ``torch.nn.LSTMCell`` (the smallest thing torch offers for one step) in the same run.

Each cell runs as ``rnnkit.RecurrentNetwork(cell, I, H)`` (1 layer, float32, eval mode, under
``torch.inference_mode``), stepping a state it carries, timed in interleaved (round-robin)
rounds of ``--steps`` calls; the median per-call time over the rounds is reported, and its
ratio to torch.nn.LSTMCell's. Writes the ``streaming`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/streaming.py [--sizes 128,512] [--rounds 21] [--steps 200] [--threads 2]
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

I = 64


def steppers(H: int) -> dict:
    """name -> a function doing one step on a carried state (batch 1)."""
    import rnnkit
    from rnnkit.cells import cell_names

    torch.manual_seed(0)
    x = torch.randn(1, I)
    out = {}
    cell = torch.nn.LSTMCell(I, H).eval()
    box = {"s": (torch.zeros(1, H), torch.zeros(1, H))}

    def torch_step(cell=cell, box=box):
        box["s"] = cell(x, box["s"])

    out["torch.nn.LSTMCell"] = torch_step
    for name in cell_names():
        net = rnnkit.RecurrentNetwork(name, I, H).eval()
        box = {"s": net.initial_state(1)}

        def step(net=net, box=box):
            _, box["s"] = net.step(x, box["s"])

        out[f"rnnkit.RecurrentNetwork('{name}').step"] = step
    return out


def measure(sizes, rounds: int, steps: int) -> list[dict]:
    rows = []
    with torch.inference_mode():
        for H in sizes:
            fns = steppers(H)
            times = {n: [] for n in fns}
            for f in fns.values():  # warm-up
                for _ in range(20):
                    f()
            for _ in range(rounds):
                for n, f in fns.items():
                    t0 = time.perf_counter()
                    for _ in range(steps):
                        f()
                    times[n].append((time.perf_counter() - t0) / steps)
            ref = statistics.median(times["torch.nn.LSTMCell"])
            for n, ts in times.items():
                t = statistics.median(ts)
                rows.append({"H": H, "name": n, "us": 1e6 * t, "ratio": t / ref})
            print(f"H={H} done", file=sys.stderr, flush=True)
    return rows


def report(rows, args, seconds: float) -> str:
    lines = [
        "# Streaming: one step at batch 1",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}",
        f"- `net.step(x_t, state)` with x_t (1, {I}), 1 layer, float32, eval mode under "
        f"`torch.inference_mode`; medians over {args.rounds} interleaved rounds of {args.steps} "
        "steps (`benchmarks/streaming.py`). torch.nn.LSTMCell is one fused ATen op a step; a "
        "network's step checks its arguments and runs its cell's equations in torch ops (the "
        "compiled sequence ops are for whole sequences).",
        f"- Whole run: {seconds:.0f} s.",
        "",
        "| H | step of | µs per step | × torch.nn.LSTMCell |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['H']} | {r['name']} | {r['us']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = measure([int(s) for s in args.sizes.split(",")], args.rounds, args.steps)
    text = report(rows, args, time.perf_counter() - start)
    write_section(args.out, "streaming", text)
    print(text)


if __name__ == "__main__":
    main()
