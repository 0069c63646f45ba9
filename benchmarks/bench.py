"""Speed of rnnkit's networks against torch.nn, measured in the same run.

One training step (forward + backward of ``output.sum()``) and one inference forward, for each
network at B=32, I=64 and each (H, T), float32, on the CPU with a fixed thread count. Modules are
timed interleaved (round-robin), so machine noise hits all of them alike; medians are reported,
with ratios to ``torch.nn.LSTM`` at the same shape. Writes ``benchmarks/RESULTS.md``.

    python benchmarks/bench.py [--shapes 128x50,512x200] [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import rnnkit

B, I = 32, 64


def networks(H: int) -> dict[str, nn.Module]:
    """What is timed: torch's kernels, and rnnkit on its native path and on its own loop."""
    return {
        "torch.nn.LSTM": nn.LSTM(I, H),
        "rnnkit.LSTM": rnnkit.LSTM(I, H),
        "rnnkit.LSTM (scan)": rnnkit.LSTM(I, H, native=False),
        "torch.nn.GRU": nn.GRU(I, H),
        "rnnkit.GRU": rnnkit.GRU(I, H),
        "rnnkit.GRU (scan)": rnnkit.GRU(I, H, native=False),
        "torch.nn.RNN": nn.RNN(I, H),
        "rnnkit.RNN": rnnkit.RNN(I, H),
        "rnnkit.RNN (scan)": rnnkit.RNN(I, H, native=False),
    }


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    out, _ = model(x)
    out.sum().backward()


def inference(model: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def bench_shape(H: int, T: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    models = networks(H)
    x = torch.randn(T, B, I)
    first = {name: timed(train_step, m, x) for name, m in models.items()}  # includes any build
    for m in models.values():  # warm-up
        train_step(m, x)
        inference(m, x)
    train = {name: [] for name in models}
    infer = {name: [] for name in models}
    for _ in range(repeats):  # round-robin: each repeat times every model once
        for name, m in models.items():
            train[name].append(timed(train_step, m, x))
            infer[name].append(timed(inference, m, x))
    ref_train = statistics.median(train["torch.nn.LSTM"])
    ref_infer = statistics.median(infer["torch.nn.LSTM"])
    return [{
        "H": H, "T": T, "name": name,
        "train_ms": 1e3 * statistics.median(train[name]),
        "train_ratio": statistics.median(train[name]) / ref_train,
        "infer_ms": 1e3 * statistics.median(infer[name]),
        "infer_ratio": statistics.median(infer[name]) / ref_infer,
        "first_ms": 1e3 * first[name],
    } for name in models]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
            f"Python {platform.python_version()}")


def report(rows: list[dict], repeats: int) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {machine()}",
        f"- B={B}, I={I}, float32, CPU; medians of {repeats} interleaved repeats; "
        "ratios are to `torch.nn.LSTM` at the same H, T in the same run.",
        "- Train step = forward + backward of `output.sum()`; inference = forward under "
        "`torch.inference_mode()`; first call = the first train step (includes any set-up).",
        "- `(scan)` rows run rnnkit's reference time loop (`native=False`): a Python loop over "
        "autograd ops, the path every non-torch cell takes until the fused kernels land.",
        "",
        "| H | T | network | train step (ms) | × torch LSTM | inference (ms) | × torch LSTM "
        "| first call (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['H']} | {r['T']} | {r['name']} | {r['train_ms']:.1f} | "
            f"{r['train_ratio']:.2f} | {r['infer_ms']:.1f} | {r['infer_ratio']:.2f} | "
            f"{r['first_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="128x50,128x200,512x50,512x200",
                        help="comma-separated HxT shapes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                        help="where to write the Markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = []
    for H, T in shapes:
        rows += bench_shape(H, T, args.repeats)
        print(f"H={H} T={T} done", flush=True)
    args.out.write_text(report(rows, args.repeats))
    print(report(rows, args.repeats))
    return rows


if __name__ == "__main__":
    main()
