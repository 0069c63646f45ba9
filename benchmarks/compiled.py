"""torch.compile on rnnkit's networks: how long compiling takes, and the compiled train step
against eager.

For each network (2 layers, bidirectional, B=32, I=64, float32, on the CPU with a fixed thread
count): the compile time (the first forward + backward of ``torch.compile(net, fullgraph=True,
dynamic=True)``, after ``torch._dynamo.reset()``), whether a new length and batch size compile
again, and the median train step of the compiled and the eager module, timed interleaved.
torch.nn.LSTM is not in the table because it does not compile with ``fullgraph=True`` on torch
2.13 (Dynamo refuses its kernel). Compiles go to an empty on-disk cache made for the run
(``TORCHINDUCTOR_CACHE_DIR``), so the times are what a first run sees, unless ``--warm-cache``
keeps the usual one. Writes the ``compile`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/compiled.py [--shape 128x50] [--repeats 21] [--threads 2] [--quick]
                                  [--warm-cache]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import rnnkit

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402

B, I = 32, 64
NETWORKS = {
    "rnnkit.RNN": lambda H: rnnkit.RNN(I, H, num_layers=2, bidirectional=True),
    "rnnkit.GRU": lambda H: rnnkit.GRU(I, H, num_layers=2, bidirectional=True),
    "rnnkit.LSTM": lambda H: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True),
    "rnnkit.LSTM(peephole='diagonal')": lambda H: rnnkit.LSTM(
        I, H, num_layers=2, bidirectional=True, peephole="diagonal"),
    "rnnkit.Jordan": lambda H: rnnkit.Jordan(I, H, num_layers=2, bidirectional=True),
    "rnnkit.FullyRecurrent": lambda H: rnnkit.FullyRecurrent(I, H, num_layers=2,
                                                             bidirectional=True),
    "rnnkit.Clockwork": lambda H: rnnkit.Clockwork(I, H, num_layers=2, bidirectional=True),
    "rnnkit.SCRN": lambda H: rnnkit.SCRN(I, H, num_layers=2, bidirectional=True),
    "rnnkit.CTRNN": lambda H: rnnkit.CTRNN(I, H, num_layers=2, bidirectional=True),
}


def step(model, x) -> None:
    for p in model.parameters():
        p.grad = None
    out, _ = model(x)
    out.sum().backward()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(name: str, H: int, T: int, repeats: int) -> dict:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = NETWORKS[name](H)
    compiled = torch.compile(eager, fullgraph=True, dynamic=True)
    x = torch.randn(T, B, I)
    compile_s = timed(step, compiled, x)
    graphs = counters["stats"]["unique_graphs"]
    for shape in [(T + 7, B, I), (T, B // 2, I)]:  # a new length, a new batch size
        step(compiled, torch.randn(*shape))
    recompiled = counters["stats"]["unique_graphs"] != graphs
    step(eager, x)
    t_eager, t_compiled = [], []
    for _ in range(repeats):
        t_eager.append(timed(step, eager, x))
        t_compiled.append(timed(step, compiled, x))
    e, c = statistics.median(t_eager), statistics.median(t_compiled)
    return {"name": name, "compile_s": compile_s, "recompiled": recompiled,
            "eager_ms": 1e3 * e, "compiled_ms": 1e3 * c, "ratio": c / e}


def compile_setup() -> float:
    """Seconds of torch.compile's one-time set-up in this process (Inductor's imports, its
    compiler checks, its cache directories): the first compile of anything pays it, here an
    ``nn.Linear``'s forward and backward, so that it is charged to no network."""
    torch._dynamo.reset()
    linear = torch.compile(torch.nn.Linear(I, 8), fullgraph=True, dynamic=True)
    return timed(lambda: linear(torch.randn(3, I)).sum().backward())


def report(rows: list[dict], H: int, T: int, repeats: int, setup_s: float | None = None) -> str:
    lines = [
        "# torch.compile",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}",
        f"- 2 layers, bidirectional, H={H}, T={T}, B={B}, I={I}, float32; "
        f"`torch.compile(net, fullgraph=True, dynamic=True)`; compile = the first compiled "
        f"train step after `torch._dynamo.reset()`, into an empty on-disk cache; train steps "
        f"are medians of {repeats} "
        "interleaved repeats. torch.nn.LSTM/GRU/RNN cannot be compiled with fullgraph=True on "
        "torch 2.13 (Dynamo refuses their kernels); rnnkit's networks run its registered ops.",
    ]
    if setup_s is not None:
        lines.append(f"- torch.compile's one-time set-up in this process, before the first network "
                     f"(an `nn.Linear` compiled first, forward and backward): {setup_s:.1f} s, "
                     "charged to no network (whatever the model, a first compile pays it).")
    lines += [
        "",
        "| network | compile (s) | recompiles for a new T or N | eager train step (ms) "
        "| compiled train step (ms) | compiled / eager |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['compile_s']:.1f} | "
                     f"{'yes' if r['recompiled'] else 'no'} | {r['eager_ms']:.1f} | "
                     f"{r['compiled_ms']:.1f} | {r['ratio']:.2f} |")
    slow = [r["name"] for r in rows if r["ratio"] > 1.05]
    long = [r["name"] for r in rows if r["compile_s"] > 10]
    lines += ["", "- Compiled train step no slower than eager (≤ 1.05×, noise): "
              + (f"missed by {', '.join(slow)}." if slow else "met by every network."),
              "- Compile ≤ 10 s: " + (f"missed by {', '.join(long)}." if long
                                      else "met by every network.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="128x50")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="tiny shape, 1 repeat")
    parser.add_argument("--warm-cache", action="store_true",
                        help="compile into torch's usual on-disk cache (default: an empty one)")
    parser.add_argument("--networks", default="all",
                        help=f"comma-separated, or 'all' (default): {', '.join(NETWORKS)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.repeats = "8x4", 1
    H, T = (int(v) for v in args.shape.split("x"))
    torch.set_num_threads(args.threads)
    cache = None
    if not args.warm_cache:  # (Inductor reads the variable when it first needs the directory)
        cache = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnkit-compile-")
    try:
        setup_s = compile_setup()
        rows = []
        names = list(NETWORKS) if args.networks == "all" else args.networks.split(",")
        for name in names:
            rows.append(measure(name, H, T, args.repeats))
            print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
    text = report(rows, H, T, args.repeats, setup_s)
    write_section(args.out, "compile", text)
    print(text)


if __name__ == "__main__":
    main()
