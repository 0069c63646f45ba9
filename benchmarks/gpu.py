"""rnnkit's ops on CUDA (``rnnkit.gpu``: Triton kernels and cuBLAS) against cuDNN's LSTM.

For H in {64, 128, 256, 512} and T in {50, 200} (B=32, I=64, float32, 1 layer): the train step
(forward + backward of ``output.sum()``) and inference (forward under
``torch.inference_mode()``) of ``rnnkit.RNN``, ``rnnkit.GRU``, ``rnnkit.LSTM`` and the peephole
LSTM (``RecurrentNetwork('peephole_lstm')``, diagonal), all with ``native=False`` so that every
layer runs the registered op (on CUDA: rnnkit.gpu's kernels), and ``torch.nn.LSTM`` (cuDNN); the
ratios are to the latter. Where the persistent LSTM kernel applies (small H), the LSTMs also run
with it switched off (``rnnkit.gpu.persistent.ENABLED = False``), as rows of their own.

Medians of 21 interleaved (round-robin) repeats, each timing between two
``torch.cuda.synchronize()`` calls, after two warm-up calls per model (triton compiles a kernel
on its first launch). Writes the ``gpu`` section of ``benchmarks/RESULTS.md``, naming the card.
Without CUDA it prints one line and exits 0, writing nothing.

    python benchmarks/gpu.py [--shapes 64x50,512x200] [--repeats 21] [--out FILE] [--quick]
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

sys.path.insert(0, str(Path(__file__).parent))
from bench import inference, train_step  # noqa: E402,F401  (the CPU benchmark's steps)
from results_file import write_section  # noqa: E402

B, I = 32, 64
DEFAULT_SHAPES = "64x50,64x200,128x50,128x200,256x50,256x200,512x50,512x200"
QUICK_SHAPES = "64x20,256x20"
REFERENCE = "torch.nn.LSTM (cuDNN)"
DEVICE = "cuda"


def models(H: int) -> list[tuple[str, nn.Module, bool | None]]:
    """``(name, module on CUDA, persistent)``: ``persistent`` is what
    ``rnnkit.gpu.persistent.ENABLED`` is set to while the module runs (None: not an LSTM)."""
    import rnnkit
    from rnnkit.gpu import persistent

    torch.manual_seed(0)
    lstm = rnnkit.LSTM(I, H, native=False).to(DEVICE)
    peep = rnnkit.RecurrentNetwork("peephole_lstm", I, H, native=False).to(DEVICE)
    rows = [(REFERENCE, nn.LSTM(I, H).to(DEVICE), None),
            ("rnnkit.RNN", rnnkit.RNN(I, H, native=False).to(DEVICE), None),
            ("rnnkit.GRU", rnnkit.GRU(I, H, native=False).to(DEVICE), None),
            ("rnnkit.LSTM", lstm, True),
            ("rnnkit peephole LSTM", peep, True)]
    for name, module, peephole in (("rnnkit.LSTM", lstm, "none"),
                                   ("rnnkit peephole LSTM", peep, "diagonal")):
        w_hh = torch.empty(4 * H, H)
        if persistent.fits(200, B, w_hh, None, peephole, torch.float32):
            rows.append((f"{name}, per-step", module, False))
    return rows


def timed(fn, model, x, persistent_flag) -> float:
    """Seconds of ``fn(model, x)`` with every queued kernel finished before and after."""
    from rnnkit.gpu import persistent

    if persistent_flag is not None:
        persistent.ENABLED = persistent_flag
    try:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(model, x)
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    finally:
        persistent.ENABLED = True


def path(H: int, name: str, persistent_flag) -> str:
    """Which LSTM forward ran: cuDNN, the persistent kernel or the per-step loop."""
    from rnnkit.gpu import persistent

    if name == REFERENCE:
        return "cuDNN"
    if persistent_flag is None:  # not an LSTM
        return "–"
    fits = persistent.fits(200, B, torch.empty(4 * H, H), None,
                           "diagonal" if "peephole" in name else "none", torch.float32)
    return "persistent" if persistent_flag and fits else "per-step"


def measure(shapes, repeats: int) -> list[dict]:
    rows = []
    for H, T in shapes:
        x = torch.randn(T, B, I, device=DEVICE)
        entries = models(H)
        for _, m, p in entries:  # warm-up: triton's compiles, cuBLAS/cuDNN handles
            for _ in range(2):
                timed(train_step, m, x, p)
                timed(inference, m, x, p)
        train = {n: [] for n, _, _ in entries}
        infer = {n: [] for n, _, _ in entries}
        for _ in range(repeats):  # interleaved: each repeat visits every model once
            for n, m, p in entries:
                train[n].append(timed(train_step, m, x, p))
                infer[n].append(timed(inference, m, x, p))
        ref_t, ref_i = statistics.median(train[REFERENCE]), statistics.median(infer[REFERENCE])
        for n, _, p in entries:
            t, i = statistics.median(train[n]), statistics.median(infer[n])
            rows.append({"H": H, "T": T, "name": n, "forward": path(H, n, p),
                         "train_ms": 1e3 * t, "infer_ms": 1e3 * i,
                         "train_ratio": t / ref_t, "infer_ratio": i / ref_i})
        print(f"H={H} T={T} done", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], repeats: int, seconds: float) -> str:
    import triton

    lines = [
        "## GPU: rnnkit.gpu (Triton) against cuDNN",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Card: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}); triton {triton.__version__}",
        f"- B={B}, I={I}, float32, 1 layer; medians of {repeats} interleaved (round-robin) "
        f"repeats, each timed between `torch.cuda.synchronize()` calls; ratios are to "
        f"`{REFERENCE}` at the same H, T in the same run.",
        "- Train step = forward + backward of `output.sum()`; inference = forward under "
        "`torch.inference_mode()`.",
        "- rnnkit rows: `native=False`, so every layer is the registered op, on CUDA rnnkit.gpu's "
        "kernels (per step a cuBLAS GEMM and a Triton kernel; the LSTM's forward a persistent "
        "kernel where its weights fit on chip, column 'LSTM forward'; the backward always per "
        "step). `per-step` rows are the same LSTMs with the persistent kernel switched off.",
        f"- Whole run: {seconds / 60:.1f} min.",
        "",
        "| H | T | network | LSTM forward | train step (ms) | × cuDNN LSTM | inference (ms) "
        "| × cuDNN LSTM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['H']} | {r['T']} | {r['name']} | {r['forward']} | "
                     f"{r['train_ms']:.2f} | {r['train_ratio']:.2f} | {r['infer_ms']:.2f} | "
                     f"{r['infer_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="HxT,... (default: all)")
    parser.add_argument("--repeats", type=int, default=21,
                        help="timed repeats per model (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                        help="the Markdown file whose 'gpu' section is written")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_SHAPES}, 3 repeats (unless given)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
              "nothing measured, nothing written")
        return []
    import rnnkit.ops  # noqa: F401  (registers rnnkit.gpu's kernels for CUDA)
    from rnnkit import gpu

    if not gpu.registered():
        print("benchmarks/gpu.py: triton is not installed, so rnnkit's ops have no CUDA "
              "implementation; nothing measured, nothing written")
        return []
    if args.quick:
        if args.shapes == DEFAULT_SHAPES:
            args.shapes = QUICK_SHAPES
        if args.repeats == 21:
            args.repeats = 3
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    rows = measure(shapes, args.repeats)
    text = report(rows, args.repeats, time.perf_counter() - start)
    write_section(args.out, "gpu", text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
