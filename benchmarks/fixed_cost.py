"""The fixed cost of one call: a train step and an inference forward at a shape so small
(T=1, N=2, I=H=8) that the arithmetic is nothing, for every rnnkit network and its torch twins.

What remains there is what every call pays whatever its size: the module's Python (argument
checks, initial states, the kernel's frame), the op's dispatch and autograd node, the backward
engine, the output's ``sum()`` and the gradients' accumulation. The table sets it against the
GEMM floor of the same network at H=128, T=50 from the speed run (``RESULTS.json`` beside this
script, when it is there): the share of that floor a train step spends before its loop starts,
which the "≤ 1.1× floor" target has to leave room for. Timed interleaved (round-robin), medians.
Writes the ``fixed-cost`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/fixed_cost.py [--rounds 2001] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import rnnkit

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402

T, N, I, H = 1, 2, 8, 8
TWINS = {"torch.nn.LSTM": ("lstm", torch.nn.LSTM), "torch.nn.GRU": ("gru", torch.nn.GRU),
         "torch.nn.RNN": ("elman", torch.nn.RNN)}


def networks() -> dict[str, tuple[str, torch.nn.Module]]:
    """row name -> (the cell whose floor it is set against, module)."""
    rows = {name: (cell, make(I, H)) for name, (cell, make) in TWINS.items()}
    for cell in rnnkit.cell_names():
        rows[f"rnnkit.RecurrentNetwork('{cell}')"] = (cell, rnnkit.RecurrentNetwork(cell, I, H))
    return rows


def train_step(model, x):
    for p in model.parameters():
        p.grad = None
    model(x)[0].sum().backward()


def inference(model, x):
    with torch.inference_mode():
        model(x)


def floors(path: Path) -> dict[str, float]:
    """cell -> its train step GEMM floor (ms) at H=128, T=50 on the CPU, from the speed run."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {r["cell"]: r["floor_train_ms"] for r in rows
            if r["device"] == "cpu" and (r["H"], r["T"]) == (128, 50)
            and r.get("floor_train_ms")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2001, help="timed rounds (default 2001)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(T, N, I)
    rows = networks()
    calls = {(name, kind): (fn, model) for name, (_, model) in rows.items()
             for kind, fn in (("train", train_step), ("infer", inference))}
    times: dict = {key: [] for key in calls}
    for round_ in range(args.rounds + 100):  # (the first 100 rounds warm up)
        for key, (fn, model) in calls.items():
            t0 = time.perf_counter()
            fn(model, x)
            if round_ >= 100:
                times[key].append(time.perf_counter() - t0)
    us = {key: statistics.median(v) * 1e6 for key, v in times.items()}
    floor = floors(args.out.with_suffix(".json"))
    lines = [
        "# Fixed cost of a call",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {machine()}",
        f"- T={T}, N={N}, I=H={H}, float32, 1 layer, on the CPU; medians of {args.rounds} "
        "interleaved rounds. What a call costs whatever its size (`benchmarks/fixed_cost.py`).",
        "- share of the floor = the train step here / the network's train step GEMM floor at "
        "H=128, T=50 (the speed table's): what a train step there spends outside its products "
        "before any step runs.",
        "",
        "| network | train step (µs) | inference (µs) | share of the H=128, T=50 floor |",
        "|---|---|---|---|",
    ]
    for name, (cell, _) in rows.items():
        train, infer = us[(name, "train")], us[(name, "infer")]
        share = f"{train / (floor[cell] * 1e3):.0%}" if cell in floor else ""
        lines.append(f"| {name} | {train:.0f} | {infer:.0f} | {share} |")
    text = "\n".join(lines) + "\n"
    write_section(args.out, "fixed-cost", text)
    print(text)


if __name__ == "__main__":
    main()
