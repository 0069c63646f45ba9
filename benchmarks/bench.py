"""Speed and memory of rnnkit's networks against torch.nn (and torchrecurrent), in the same run.

For every registered cell as a 1-layer ``rnnkit.RecurrentNetwork(name, I, H)``, rnnkit's named
RNN/LSTM/GRU, their torch twins and, when it is installed, the matching ``torchrecurrent``
layers: one training step (forward + backward of ``output.sum()``) and one inference forward,
at B=32, I=64 and each (H, T), float32, on the CPU with a fixed thread count and, where one is
available, on the GPU (a section each). Modules are timed
interleaved (round-robin), so machine noise hits all of them alike; medians are reported, with
ratios to ``torch.nn.LSTM`` at the same shape. Also measured, once per module and shape: the
first train step of a freshly built module, and the peak memory of one train step (the growth of
peak RSS, in a fresh process). Writes ``benchmarks/RESULTS.md``.

    python benchmarks/bench.py [--shapes 128x50,512x200] [--cells lstm,scrn] [--repeats 7]
                               [--threads 2] [--device all|cpu|cuda] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import rnnkit

sys.path.insert(0, str(Path(__file__).parent))  # the scripts' shared helper beside them
from floor import Floor, products  # noqa: E402
from results_file import machine, peak_rss_kib, write_section  # noqa: E402, F401

try:  # benchmark-only dependency: `pip install -e '.[bench]'`
    import torchrecurrent
except ImportError:  # the rows are skipped, the rest still runs
    torchrecurrent = None

B, I = 32, 64
REFERENCE = "torch.nn.LSTM"
LIGHT = 1.05  # a cell whose GEMM floor is at most this times the LSTM's has "an LSTM's work"
DEFAULT_SHAPES = "128x50,128x200,512x50,512x200"
DEFAULT_REPEATS = 21

# rnnkit cell name -> (torch twin, rnnkit named network) built with the same sizes
TWINS: dict[str, tuple[Callable[[int], nn.Module], ...]] = {
    "lstm": (lambda H: nn.LSTM(I, H), lambda H: rnnkit.LSTM(I, H)),
    "gru": (lambda H: nn.GRU(I, H), lambda H: rnnkit.GRU(I, H)),
    "elman": (lambda H: nn.RNN(I, H), lambda H: rnnkit.RNN(I, H)),
}
TWIN_NAMES = {"lstm": ("torch.nn.LSTM", "rnnkit.LSTM"), "gru": ("torch.nn.GRU", "rnnkit.GRU"),
              "elman": ("torch.nn.RNN", "rnnkit.RNN")}
# rnnkit cell name -> torchrecurrent layer class. torchrecurrent 0.2.5 has no plain LSTM or GRU
# (its OriginalLSTM is the 1997 LSTM without a forget gate, a different cell), so only these two.
TORCHRECURRENT = {"peephole_lstm": "PeepholeLSTM", "scrn": "SCRN"}


def rnnkit_name(cell: str) -> str:
    return f"rnnkit.RecurrentNetwork('{cell}')"


def networks(cells: list[str]) -> dict[str, tuple[str, Callable[[int], nn.Module]]]:
    """What is timed: row name -> (rnnkit cell it stands for, factory of H). torch.nn.LSTM,
    the reference of every ratio, always comes first."""
    rows: dict[str, tuple[str, Callable[[int], nn.Module]]] = {
        REFERENCE: ("lstm", TWINS["lstm"][0]),
    }
    for cell in cells:
        if cell in TWINS:
            twin, named = TWIN_NAMES[cell]
            rows[twin] = (cell, TWINS[cell][0])
            rows[named] = (cell, TWINS[cell][1])
        rows[rnnkit_name(cell)] = (cell, lambda H, c=cell: rnnkit.RecurrentNetwork(c, I, H))
        if cell in TORCHRECURRENT and torchrecurrent is not None:
            cls = getattr(torchrecurrent, TORCHRECURRENT[cell])
            rows[f"torchrecurrent.{cls.__name__}"] = (cell, lambda H, k=cls: k(I, H))
    return rows


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    out, _ = model(x)
    out.sum().backward()


def inference(model: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        model(x)


def timed(fn, *args) -> float:
    cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
    t0 = time.perf_counter()
    fn(*args)
    if cuda:  # kernels run asynchronously: wait for them
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def cuda_peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Memory of one train step on the GPU: the rise of torch's allocator peak over the step
    (on CUDA every tensor lives in that allocator, so it sees everything)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    train_step(model, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


MEMORY_RUNS = 3


def peak_bytes(row: str, cell: str, H: int, T: int, threads: int) -> int:
    """Memory of one train step: growth of the process's peak RSS (``VmHWM``) over the step,
    in a fresh process, since the peak only ever rises. It sees every allocation, torch's
    allocator or not. (Not ``ru_maxrss``: Linux carries that across fork and exec, so a child of
    this large process would start at the parent's peak and show no growth.)"""
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import bench\n"
        f"torch.set_num_threads({threads}); torch.manual_seed(0)\n"
        f"m = bench.networks([{cell!r}])[{row!r}][1]({H})\n"
        f"x = torch.randn({T}, bench.B, bench.I)\n"
        "with torch.no_grad():\n    m(x[:2])  # the module's own one-time allocations\n"
        "before = bench.peak_rss_kib()\n"
        "bench.train_step(m, x)\n"
        "print(bench.peak_rss_kib() - before)\n"
    )
    runs = []
    for _ in range(MEMORY_RUNS):  # RSS moves by tens of % between identical runs: take a median
        out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)],
                             capture_output=True, text=True, check=True)
        runs.append(int(out.stdout.strip().splitlines()[-1]) * 1024)
    return int(statistics.median(runs))


def floors(cells: set[str], H: int, x: torch.Tensor) -> dict[str, tuple[Floor, Floor]]:
    """Each cell's GEMM floor (benchmarks/floor.py), train step and inference: the products of
    its rnnkit kernel (``native=False``), which torch's twin of the cell computes too."""
    out = {}
    for cell in sorted(cells):
        m = rnnkit.RecurrentNetwork(cell, I, H, native=False)
        train_step(m, x)  # (one-time set-up outside the profile)
        out[cell] = (Floor(products(lambda m=m: train_step(m, x))),
                     Floor(products(lambda m=m: inference(m, x))))
    return out


def bench_shape(H: int, T: int, repeats: int, cells: list[str], threads: int,
                memory: bool = True, device: str = "cpu") -> list[dict]:
    torch.manual_seed(0)
    nets = networks(cells)
    x = torch.randn(T, B, I, device=device)
    gemm = floors({c for c, _ in nets.values()}, H, x) if device == "cpu" else {}
    models, first = {}, {}
    for name, (_, build) in nets.items():  # first call: the first step of a fresh module
        models[name] = build(H).to(device)
        first[name] = timed(train_step, models[name], x)
    if device == "cpu":
        peak = {name: peak_bytes(name, cell, H, T, threads) if memory else None
                for name, (cell, _) in nets.items()}
    else:
        peak = {name: cuda_peak_bytes(m, x) if memory else None for name, m in models.items()}
    for m in models.values():  # warm-up
        train_step(m, x)
        inference(m, x)
    for f_train, f_infer in gemm.values():
        f_train()
        f_infer()
    train = {name: [] for name in models}
    infer = {name: [] for name in models}
    floor_train = {cell: [] for cell in gemm}
    floor_infer = {cell: [] for cell in gemm}
    for _ in range(repeats):  # round-robin: each repeat times every model and floor once
        for name, m in models.items():
            train[name].append(timed(train_step, m, x))
            infer[name].append(timed(inference, m, x))
        for cell, (f_train, f_infer) in gemm.items():
            floor_train[cell].append(f_train.timed())
            floor_infer[cell].append(f_infer.timed())
    med_train = {name: statistics.median(v) for name, v in train.items()}
    med_infer = {name: statistics.median(v) for name, v in infer.items()}
    ft = {cell: statistics.median(v) for cell, v in floor_train.items()}
    fi = {cell: statistics.median(v) for cell, v in floor_infer.items()}
    ref_cell = nets[REFERENCE][0]
    # torchrecurrent layer of each cell, to compare the rnnkit row of the same cell against
    theirs = {nets[name][0]: name for name in models if name.startswith("torchrecurrent.")}
    rows = []
    for name in models:
        cell = nets[name][0]
        mine = name == rnnkit_name(cell) and cell in theirs
        rows.append({
            "device": device, "H": H, "T": T, "name": name, "cell": cell,
            "train_ms": 1e3 * med_train[name],
            "train_ratio": med_train[name] / med_train[REFERENCE],
            "infer_ms": 1e3 * med_infer[name],
            "infer_ratio": med_infer[name] / med_infer[REFERENCE],
            # against the cell's GEMM floor; and its work against the LSTM's (floor / floor)
            "floor_train_ms": 1e3 * ft[cell] if gemm else None,
            "train_floor": med_train[name] / ft[cell] if gemm else None,
            "floor_infer_ms": 1e3 * fi[cell] if gemm else None,
            "infer_floor": med_infer[name] / fi[cell] if gemm else None,
            "work_vs_lstm": ft[cell] / ft[ref_cell] if gemm else None,
            # inference against torch.nn.LSTM's time scaled to this cell's floor
            "infer_matched": (med_infer[name] / (med_infer[REFERENCE] * fi[cell] / fi[ref_cell])
                              if gemm else None),
            "first_ms": 1e3 * first[name],
            "peak_mb": None if peak[name] is None else peak[name] / 2**20,
            "peak_ratio": None if peak[name] is None else peak[name] / max(peak[REFERENCE], 1),
            # rnnkit speed-up vs torchrecurrent: their time / ours, on the rnnkit row
            "train_speedup_tr": med_train[theirs[cell]] / med_train[name] if mine else None,
            "infer_speedup_tr": med_infer[theirs[cell]] / med_infer[name] if mine else None,
            # the speed-up a kernel at its floor would have: their time / the floor
            "train_speedup_floor": med_train[theirs[cell]] / ft[cell] if mine and gemm else None,
        })
    return rows


def speedup(r: dict) -> str:
    if r["train_speedup_tr"] is None:
        return ""
    text = f"{r['train_speedup_tr']:.1f}× / {r['infer_speedup_tr']:.1f}×"
    if r.get("train_speedup_floor") is not None:
        text += f" (the floor allows {r['train_speedup_floor']:.1f}× in training)"
    return text


# Why a target is missed, by target and cell: the explanation written under its misses.
FIXED = ("A call's fixed cost (the module's Python, the op's autograd node, the backward engine: "
         "the fixed-cost table, 0.3-0.45 ms a train step for every network, torch.nn.LSTM's "
         "too) is 16-30% of this cell's floor at H=128, T=50")
WHY = {
    "train_floor": {
        "lstm": (
            "rnnkit.LSTM and RecurrentNetwork('lstm') call torch's own LSTM kernel (oneDNN): "
            "their ratio is torch.nn.LSTM's, in the row beside. rnnkit's compiled LSTM op "
            "(native=False) is in benchmarks/ops_gain.py."),
        "peephole_lstm": (
            "The compiled LSTM op with the peephole terms in its pointwise pass: within 1.1x at "
            "H=512, T=200; elsewhere a step's fixed costs (its GEMM issued through ATen, a "
            "fork/join of the pointwise pass each way, the saved buffers' traffic) weigh against "
            "products of ~50 µs a step at H=128. Tried and measured within this machine's noise "
            "(±3%): the step's GEMM split by columns across the threads (13-18% faster alone "
            "than MKL's own threading), GEMMs with beta = 1 into zeroed outputs, a direct sgemm "
            "call. Left: a persistent fused step (one parallel region for the whole sequence)."),
        "gru": "The compiled GRU op: as for the peephole LSTM.",
        "elman": (
            f"The compiled Elman op. {FIXED}; and a step's one H x H product (32 x 128 x 128: "
            "~9 µs) is small against its fixed costs (a GEMM call and a fork/join of the "
            "pointwise pass each way)."),
        "irnn": "The Elman op (ReLU): as for elman.",
        "jordan": (
            "The compiled Jordan loop (csrc/jordan.cpp): two products a step each way, each a "
            "separate small GEMM call (perf: the loop's own code is ~2% of the backward, the "
            "rest the products' calls); at H=128, T=50 the call's fixed cost is 11% of its "
            "floor."),
        "fully": "The compiled loop: within 1.1x at H=512, T=200; as for jordan elsewhere.",
        "clockwork": (
            f"The compiled loop multiplies only the modules due at a step, so its floor is the "
            f"smallest (0.2-0.3 of an LSTM's), where it is still 0.3-0.5x torch's LSTM. "
            f"{FIXED}."),
        "scrn": f"The compiled loop, as for jordan. {FIXED}.",
        "ctrnn": f"The compiled loop, as for elman. {FIXED}.",
    },
    "train_ratio": {
        "lstm": (
            "These rows call torch's own LSTM kernel, the reference itself, so they sit at 1.0x; "
            "0.95x would need rnnkit's LSTM op to beat oneDNN's fused LSTM (ops_gain.py)."),
        "peephole_lstm": (
            "The compiled op with the peephole terms in its pointwise pass: at or under torch's "
            "LSTM at T=200, above it at T=50, where the step's and the call's fixed costs weigh "
            "most (see the floor target)."),
        "fully": (
            "Its products are 0.94-1.2x an LSTM's (5H² against 4H² a step at H=512, fewer input "
            "products at H=128): judged on its own floor (the first target)."),
    },
    "infer_matched": {
        "lstm": (
            "torch's own kernel, the reference: 1.0x by construction (the aim of 0.8x would need "
            "rnnkit's op to beat it)."),
        "peephole_lstm": (
            "torch's oneDNN LSTM forward runs at 0.82-0.91x the replayed products (one fused "
            "primitive, which this 'floor-matched' scale credits to every cell); the compiled "
            "op's forward runs at 1.0-1.3x its own floor."),
        "gru": (
            "The compiled GRU op's forward, faster than torch's own GRU kernel (in the row "
            "beside); as for the peephole LSTM, and 1.0-1.8x its own floor."),
        "elman": (
            "The compiled Elman op's forward, faster than torch.nn.RNN (in the row beside); a "
            "step's one small GEMM call and its pointwise pass's fork/join, and an inference "
            "call's fixed cost (0.12-0.17 ms, the fixed-cost table), weigh most at H=128."),
        "irnn": "As for elman.",
        "jordan": "The loop's forward: as for elman, with two GEMM calls a step.",
        "fully": "The loop's forward: as for jordan.",
        "clockwork": "As in training: a small floor, so the step's fixed costs weigh most.",
        "scrn": "The loop's forward: as for jordan.",
        "ctrnn": "The loop's forward: as for elman, with the heaviest pointwise pass.",
    },
}


def _shape_list(items: list[tuple[dict, str]]) -> str:
    return ", ".join(f"H={r['H']} T={r['T']}: {v}" for r, v in items)


def targets(rows: list[dict]) -> list[str]:
    """The project's targets, met or missed, for every rnnkit row of this run."""
    ours = [r for r in rows if r["name"].startswith("rnnkit.")]
    if not ours:
        return []
    by_name: dict[str, list[dict]] = {}
    for r in ours:
        by_name.setdefault(r["name"], []).append(r)

    twin_of = {named: twin for twin, named in TWIN_NAMES.values()}
    twin_of.update({rnnkit_name(c): twin for c, (twin, _) in TWIN_NAMES.items()})
    at = {(r["H"], r["T"], r["name"]): r for r in rows}

    def value(r: dict, key: str, fmt: str) -> str:
        text = fmt.format(r[key])
        twin = at.get((r["H"], r["T"], twin_of.get(r["name"], "")))
        if twin is not None and key != "train_speedup_tr":  # torch's own kernel, same shape
            text += f" (its torch twin {twin['name']}: {fmt.format(twin[key])})"
        return text

    def check(title: str, key: str, ok, fmt: str) -> list[str]:
        return check_rows(ours, title, key, ok, fmt)

    def check_rows(rows_: list[dict], title: str, key: str, ok, fmt: str) -> list[str]:
        names: dict[str, list[dict]] = {}
        for r in rows_:
            names.setdefault(r["name"], []).append(r)
        met, missed, lines, explained = [], [], [], set()
        for name, rs in names.items():
            bad = [r for r in rs if r[key] is not None and not ok(r[key])]
            if all(r[key] is None for r in rs):
                continue
            if not bad:
                met.append(name)
                continue
            missed.append(name)
            lines.append(f"  - {name}: {_shape_list([(r, value(r, key, fmt)) for r in bad])}")
            cell = rs[0]["cell"]
            why = WHY.get(key, {}).get(cell)
            if why and cell not in explained:  # once per cell (rnnkit.GRU and 'gru' share it)
                explained.add(cell)
                lines.append(f"    Why: {why}")
        head = (f"- **{title}**: met by {len(met)} of {len(met) + len(missed)}"
                + (f" ({', '.join(met)})" if met else "") + ("; missed by:" if missed else "."))
        return [head, *lines]

    light = [r for r in ours if (r.get("work_vs_lstm") or 9) <= LIGHT]
    lines = ["", "### Targets", "",
             "Measured in this run (the wall-clock ratios carry a few % of machine noise).", ""]
    lines += check("Train step ≤ 1.1× the cell's own GEMM floor", "train_floor",
                   lambda v: v <= 1.1, "{:.2f}× floor")
    lines += check_rows(
        light, f"Train step ≤ 0.95× torch.nn.LSTM, for the cells with at most an LSTM's product "
        f"work (GEMM floor ≤ {LIGHT}× the LSTM's)", "train_ratio", lambda v: v <= 0.95,
        "{:.2f}×")
    lines += check("Inference ≤ 1.0× torch.nn.LSTM's, scaled to the cell's floor (floor-matched)",
                   "infer_matched", lambda v: v <= 1.0, "{:.2f}×")
    lines += check("First call ≤ 2 s", "first_ms", lambda v: v <= 2000, "{:.0f} ms")
    lines += check("Peak memory of a train step ≤ 1.2× torch.nn.LSTM", "peak_ratio",
                   lambda v: v <= 1.2, "{:.2f}×")
    return lines


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU, {torch.get_num_threads()} threads"
    return f"CUDA, {torch.cuda.get_device_name(torch.device(device))}"


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| H | T | network | train step (ms) | × torch LSTM | × floor | inference (ms) "
        "| × torch LSTM | × floor | first call (ms) | peak memory (MiB) | × torch LSTM "
        "| rnnkit speed-up vs torchrecurrent |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['H']} | {r['T']} | {r['name']} | {r['train_ms']:.1f} | "
            f"{r['train_ratio']:.2f} | {_num(r.get('train_floor'), '{:.2f}')} | "
            f"{r['infer_ms']:.1f} | {r['infer_ratio']:.2f} | "
            f"{_num(r.get('infer_floor'), '{:.2f}')} | "
            f"{r['first_ms']:.1f} | {_num(r['peak_mb'], '{:.1f}')} | "
            f"{_num(r['peak_ratio'], '{:.2f}')} | {speedup(r)} |"
        )
    return lines


def floor_table(rows: list[dict]) -> list[str]:
    """Each cell's GEMM floor at each shape, and its product work against the LSTM's."""
    seen, lines = set(), ["", "### GEMM floors", "",
                          "| H | T | cell | train step floor (ms) | inference floor (ms) "
                          "| work vs LSTM |", "|---|---|---|---|---|---|"]
    for r in rows:
        key = (r["H"], r["T"], r["cell"])
        if r.get("floor_train_ms") is None or key in seen:
            continue
        seen.add(key)
        lines.append(f"| {r['H']} | {r['T']} | {r['cell']} | {r['floor_train_ms']:.2f} | "
                     f"{r['floor_infer_ms']:.2f} | {r['work_vs_lstm']:.2f} |")
    return lines if len(lines) > 5 else []


def report(rows: list[dict], repeats: int, seconds: float | None = None) -> str:
    tr = (f"torchrecurrent {importlib.metadata.version('torchrecurrent')}"
          if torchrecurrent is not None else
          "torchrecurrent: not installed, its rows are skipped (`pip install -e '.[bench]'`)")
    devices = list(dict.fromkeys(r["device"] for r in rows))
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {machine()}; {tr}",
        f"- B={B}, I={I}, float32, 1 layer, on {' and '.join(devices)}; medians of {repeats} "
        "interleaved (round-robin) repeats; ratios are to `torch.nn.LSTM` at the same H, T on "
        "the same device in the same run.",
        "- Train step = forward + backward of `output.sum()`; inference = forward under "
        "`torch.inference_mode()`; first call = the first train step of a freshly built module "
        "(in a process already running, so `import` is not counted); it is one sample per "
        "module and shape, so it carries all of a shared machine's noise: re-check a lone miss "
        "with `--cells <cell> --shapes HxT`.",
        "- Peak memory on the CPU = how much one train step raises the process's peak RSS "
        f"(VmHWM), in a fresh process per network and shape, median of {MEMORY_RUNS} processes: "
        "activations, saved tensors, gradients and kernel workspaces, inside torch's allocator "
        "or not. It moves by tens of % between identical runs (malloc arenas), so read ratios "
        "near the 1.2 target with care. torch's profiler memory events were tried first and "
        "left allocations out. On CUDA it is the rise of torch's allocator peak over the step.",
        "- `rnnkit.RecurrentNetwork('<cell>')` rows are every registered cell with its defaults "
        "(`native=True, fused=True`): the LSTM runs torch's own kernel; every other case runs "
        "rnnkit's registered op of the cell (`torch.ops.rnnkit.<cell>_sequence`, hand-derived "
        "BPTT backward), which runs its compiled C++ loop on the CPU where the ops built (all "
        "eight did here).",
        "- vs torchrecurrent = torchrecurrent's time / rnnkit's, train / inference, on the rnnkit "
        "row of the matching cell (> 1: rnnkit is faster); 'the floor allows' = torchrecurrent's "
        "time / the cell's GEMM floor, the speed-up of a kernel that did nothing but its products.",
        "- × floor = the time / the cell's GEMM floor: its matrix products alone, read off its "
        "rnnkit kernel with torch's profiler and replayed with the same routines on operands of "
        "the same shapes (benchmarks/floor.py), timed in the same round-robin. torch's twin of a "
        "cell is measured against the same floor (its cell's products).",
    ]
    if seconds is not None:
        lines.append(f"- Whole run: {seconds / 60:.1f} min.")
    for device in devices:
        mine = [r for r in rows if r["device"] == device]
        lines += (["", f"## {device_name(device)}", ""] + table(mine) + floor_table(mine)
                  + targets(mine))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help="comma-separated HxT shapes (default: %(default)s)")
    parser.add_argument("--cells", default="all",
                        help="comma-separated registered cell names, or 'all' (default); "
                        f"choices: {', '.join(rnnkit.cell_names())}")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed repeats per model (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                        help="where to write the Markdown table")
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                        help="where to run: 'all' (default) is the CPU, then CUDA if available")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory runs (three fresh processes per row)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny shape 8x3, 1 repeat (unless given)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="no timing: rewrite --out from the rows a run saved beside it")
    args = parser.parse_args(argv)
    if args.render is not None:  # e.g. after editing the report's text
        saved = json.loads(args.render.read_text())
        text = report(saved["rows"], saved["repeats"], saved["seconds"])
        write_section(args.out, "speed", text)
        print(text)
        return saved["rows"]
    if args.quick:
        if args.shapes == DEFAULT_SHAPES:
            args.shapes = "8x3"
        if args.repeats == DEFAULT_REPEATS:
            args.repeats = 1
    cells = rnnkit.cell_names() if args.cells == "all" else args.cells.split(",")
    unknown = set(cells) - set(rnnkit.cell_names())
    if unknown:
        parser.error(f"unknown cells {sorted(unknown)}; registered: {rnnkit.cell_names()}")
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    start = time.perf_counter()
    # generic one-time set-up (autograd, BLAS), so it is not charged to whichever module is first
    warm = nn.Linear(I, 8)
    warm(torch.randn(2, I)).sum().backward()
    devices = ["cpu"] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append("cuda")
        elif args.device == "cuda":
            parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    rows = []
    for device in devices:
        for H, T in shapes:
            rows += bench_shape(H, T, args.repeats, cells, args.threads, args.memory, device)
            print(f"{device} H={H} T={T} done ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    seconds = time.perf_counter() - start
    text = report(rows, args.repeats, seconds)
    write_section(args.out, "speed", text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"repeats": args.repeats, "seconds": seconds, "rows": rows}, indent=1))
    print(text)
    return rows


if __name__ == "__main__":
    main()
