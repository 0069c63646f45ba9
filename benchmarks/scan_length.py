"""Train step time against sequence length: minGRU and minLSTM (``rnnkit.MinGRU``/``MinLSTM``:
their op, the C++ sweep on the CPU) against ``torch.nn.LSTM`` and ``torch.nn.GRU``, with
minGRU's two other paths beside them: the op's pure-torch parallel scan over time (log2 T
levels, what CUDA runs; ``RNNKIT_KERNELS=python``) and the cell's own sequential steps
(``fused=False``, the Python loop). Batch 8, hidden 256, input 256, T = 256 to 16384, float32.

A train step is the forward over the whole sequence and the backward of a loss on every output.
Each case runs in its own process (so one case's freed memory does not flatter the next): one
warm-up step, then the median of ``--repeats`` timed steps; its peak memory is the growth of
the process's peak resident set (VmHWM, as ``bench.py`` measures it) over the warm-up step.
The growth of a model's time with T is the log-log slope between the shortest and the longest
sequence (1: linear).

    python benchmarks/scan_length.py            # writes the `scan-length` section of RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine, peak_rss_kib, write_section  # noqa: E402

N, H = 8, 256
LENGTHS = (256, 1024, 4096, 16384)
MODELS = {  # name: (what builds it, the longest T it runs, environment)
    "minGRU": ("rnnkit.MinGRU(H, H)", 16384, {}),
    "minLSTM": ("rnnkit.MinLSTM(H, H)", 16384, {}),
    "minGRU (parallel scan)": ("rnnkit.MinGRU(H, H)", 16384, {"RNNKIT_KERNELS": "python"}),
    "torch.nn.GRU": ("torch.nn.GRU(H, H)", 16384, {}),
    "torch.nn.LSTM": ("torch.nn.LSTM(H, H)", 16384, {}),
    "minGRU (sequential steps)": ("rnnkit.MinGRU(H, H, fused=False)", 4096, {}),
}


def run_case(model: str, T: int, repeats: int, N: int = N, H: int = H) -> dict:
    """Time one model at one length in this process: ``{"ms": median, "peak_mb": ...}``."""
    import rnnkit  # noqa: F401  (the expressions in MODELS name it)

    torch.manual_seed(0)
    net = eval(MODELS[model][0], {"rnnkit": rnnkit, "torch": torch, "H": H})
    x = torch.randn(T, N, H)
    g = torch.randn(T, N, H)

    def train_step():
        net.zero_grad(set_to_none=True)
        y, _ = net(x)
        (y * g).sum().backward()

    with torch.no_grad():
        net(x[:2])  # the module's and the ops' one-time allocations
    before = peak_rss_kib()
    train_step()
    peak_mb = (peak_rss_kib() - before) / 1024
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"ms": 1e3 * times[len(times) // 2], "peak_mb": max(peak_mb, 0.0)}


def measure(repeats: int, threads: int, lengths=LENGTHS, N: int = N, H: int = H,
            models=tuple(MODELS)) -> dict:
    """``{model: {T: result}}``, each case in a fresh process."""
    results: dict = {}
    for model in models:
        _, longest, env = MODELS[model]
        for T in lengths:
            if T > longest and T != lengths[0]:
                continue
            reps = repeats if T <= 4096 else max(2, repeats // 2)
            out = subprocess.run(
                [sys.executable, __file__, "--case", model, str(T), str(reps),
                 "--threads", str(threads), "--batch", str(N), "--hidden", str(H)],
                check=True, capture_output=True, text=True, env={**os.environ, **env}).stdout
            results.setdefault(model, {})[T] = json.loads(out.strip().splitlines()[-1])
            r = results[model][T]
            print(f"{model:28s} T={T:6d} {r['ms']:10.1f} ms  peak +{r['peak_mb']:.0f} MB",
                  flush=True)
    return results


def slope(per_t: dict) -> float:
    """The log-log slope of time against T between the shortest and the longest run."""
    ts = sorted(per_t)
    lo, hi = ts[0], ts[-1]
    return math.log(per_t[hi]["ms"] / per_t[lo]["ms"]) / math.log(hi / lo)


def report(results: dict, repeats: int, N: int = N, H: int = H) -> str:
    lengths = sorted({T for per_t in results.values() for T in per_t})
    head = "| model | " + " | ".join(f"T = {T}" for T in lengths) + " | slope |"
    rows = [head, "|" + "---|" * (len(lengths) + 2)]
    for model, per_t in results.items():
        cells = [f"{per_t[T]['ms']:.0f} ms ({1e3 * per_t[T]['ms'] / T:.0f} us/step)"
                 if T in per_t else "—" for T in lengths]
        rows.append(f"| {model} | " + " | ".join(cells) + f" | {slope(per_t):.2f} |")
    mem = ["| peak memory of a train step | " + " | ".join(f"T = {T}" for T in lengths) + " |",
           "|" + "---|" * (len(lengths) + 1)]
    for model, per_t in results.items():
        mem.append(f"| {model} | " + " | ".join(
            f"{per_t[T]['peak_mb']:.0f} MB" if T in per_t else "—" for T in lengths) + " |")
    lstm = results.get("torch.nn.LSTM", {})
    ratios = "; ".join(
        f"{m}: " + ", ".join(f"{results[m][T]['ms'] / lstm[T]['ms']:.2f}x" for T in lengths
                             if T in results[m] and T in lstm)
        for m in ("minGRU", "minLSTM") if m in results and lstm)
    return "\n".join([
        "## Train step against sequence length: minGRU and minLSTM",
        "",
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
        f"`python benchmarks/scan_length.py` (batch {N}, hidden {H}, input {H}, float32; "
        f"median of {repeats} steps, {max(2, repeats // 2)} at T = 16384; each case in its "
        "own process).",
        "",
        *rows,
        "",
        "slope: the log-log slope of the step time between the shortest and the longest T "
        "(1 = linear). Against torch.nn.LSTM in the same run, T = "
        + ", ".join(map(str, lengths)) + ": " + ratios + ".",
        "",
        *mem,
        "",
        "Peak memory: the growth of the process's peak resident set (VmHWM) over one train "
        "step, after a short forward that makes the one-time allocations.",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=lambda v: tuple(int(t) for t in v.split(",")),
                        default=LENGTHS, help="comma-separated T (default %(default)s)")
    parser.add_argument("--models", type=lambda v: tuple(v.split(",")), default=tuple(MODELS),
                        help="comma-separated names of MODELS (default: all)")
    parser.add_argument("--batch", type=int, default=N)
    parser.add_argument("--hidden", type=int, default=H, help="hidden and input size")
    parser.add_argument("--case", nargs=3, metavar=("MODEL", "T", "REPEATS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        model, T, reps = args.case
        print(json.dumps(run_case(model, int(T), int(reps), args.batch, args.hidden)))
        return 0
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; expected names among {list(MODELS)}")
    results = measure(args.repeats, args.threads, args.lengths, args.batch, args.hidden,
                      args.models)
    text = report(results, args.repeats, args.batch, args.hidden)
    print(text)
    write_section(args.out, "scan-length", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
