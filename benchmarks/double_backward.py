"""What a second-order gradient costs: a gradient-penalty step against a plain train step.

For torch.nn's LSTM/GRU/RNN, rnnkit's façades and every cell with a fused kernel (1 layer,
B=32, I=64, float32, on the CPU with a fixed thread count): the median time of

- a train step: forward, ``output.sum().backward()``;
- a penalty step: forward, ``g = grad((output ** 2).sum(), x, create_graph=True)``, then
  ``(g ** 2).sum().backward()`` (the double backward a WGAN-GP or input-gradient penalty runs).

A fused kernel's backward cannot be differentiated again, so under ``create_graph=True`` it
differentiates its forward recomputed through the cell's step (the reference loop); the table
shows what that costs against the same network's train step and against torch.nn. Modules are
timed interleaved (round-robin). Writes the ``double-backward`` section of
``benchmarks/RESULTS.md``.

    python benchmarks/double_backward.py [--shape 128x50] [--repeats 5] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import rnnkit

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402

B, I = 32, 64
FUSED_CELLS = ["peephole_lstm", "jordan", "fully", "clockwork", "scrn", "ctrnn"]


def networks(H: int) -> dict[str, nn.Module]:
    nets = {
        "torch.nn.LSTM": nn.LSTM(I, H), "rnnkit.LSTM": rnnkit.LSTM(I, H),
        "rnnkit.LSTM (fused kernel)": rnnkit.LSTM(I, H, native=False),
        "torch.nn.GRU": nn.GRU(I, H), "rnnkit.GRU": rnnkit.GRU(I, H),
        "torch.nn.RNN": nn.RNN(I, H), "rnnkit.RNN": rnnkit.RNN(I, H),
    }
    for cell in FUSED_CELLS:
        nets[f"rnnkit.RecurrentNetwork('{cell}')"] = rnnkit.RecurrentNetwork(cell, I, H)
    nets["rnnkit.RecurrentNetwork('peephole_lstm', fused=False)"] = \
        rnnkit.RecurrentNetwork("peephole_lstm", I, H, fused=False)
    return nets


def train_step(net: nn.Module, x: torch.Tensor) -> None:
    out, _ = net(x)
    out.sum().backward()


def penalty_step(net: nn.Module, x: torch.Tensor) -> None:
    out, _ = net(x)
    (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    g.pow(2).sum().backward()


def measure(nets: dict[str, nn.Module], T: int, repeats: int) -> dict[str, dict[str, float]]:
    x = torch.randn(T, B, I, requires_grad=True)
    times = {name: {"train": [], "penalty": []} for name in nets}
    for net in nets.values():  # warm-up: first calls, allocator
        train_step(net, x)
        penalty_step(net, x)
    for _ in range(repeats):
        for name, net in nets.items():
            for kind, step in (("train", train_step), ("penalty", penalty_step)):
                net.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                step(net, x)
                times[name][kind].append(time.perf_counter() - t0)
    return {name: {k: statistics.median(v) * 1e3 for k, v in t.items()}
            for name, t in times.items()}


def report(result: dict[str, dict[str, float]], H: int, T: int, repeats: int) -> str:
    ref = result["torch.nn.LSTM"]["penalty"]
    lines = [
        "## Second-order gradients: a gradient-penalty step",
        "",
        f"- Date: {datetime.date.today()}",
        f"- Machine: {machine()}",
        f"- B={B}, I={I}, H={H}, T={T}, float32, 1 layer, CPU; medians of {repeats} "
        "interleaved repeats (`benchmarks/double_backward.py`).",
        "- penalty step = forward, `g = grad((out**2).sum(), x, create_graph=True)`, "
        "`(g**2).sum().backward()`; train step = forward, `out.sum().backward()`.",
        "- A fused kernel under `create_graph=True` differentiates its forward recomputed "
        "through the cell's step (the reference loop): the penalty step costs what the "
        "reference path's would, plus one fused forward. A plain train step is untouched.",
        "",
        "| network | train step (ms) | penalty step (ms) | penalty / train | "
        "penalty × torch LSTM's |",
        "|---|---|---|---|---|",
    ]
    for name, r in result.items():
        lines.append(f"| {name} | {r['train']:.1f} | {r['penalty']:.1f} | "
                     f"{r['penalty'] / r['train']:.1f} | {r['penalty'] / ref:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128x50", help="HxT (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 8x3, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.repeats = "8x3", 1
    H, T = (int(v) for v in args.shape.split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    text = report(measure(networks(H), T, args.repeats), H, T, args.repeats)
    write_section(args.out, "double-backward", text)
    print(text)
    return text


if __name__ == "__main__":
    main()
