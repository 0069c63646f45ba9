"""Experiment: does a C++ (ATen) time loop beat rnnkit's pure-Python fused LSTM kernel?

The diagonal-peephole LSTM's forward loop and BPTT loop (``cpp_loop.cpp`` beside this file) are
built with ``torch.utils.cpp_extension.load_inline`` into a build directory under /tmp and
wrapped in an autograd.Function; the input projection and the weight gradients stay in Python,
exactly as in ``rnnkit/kernels/lstm.py``.

    python benchmarks/experiments/cpp_loop.py check          # float64 vs rnnkit.scan
    python benchmarks/experiments/cpp_loop.py bench --threads 1
    python benchmarks/experiments/cpp_loop.py firstcall      # fresh process, cached build
    python benchmarks/experiments/cpp_loop.py all            # everything, incl. a cold compile
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

HERE = Path(__file__).resolve().parent
BUILD_DIR = Path(os.environ.get("CPP_LOOP_BUILD", "/tmp/rnnkit_cpp_loop_build"))
NAME = "rnnkit_cpp_loop"

_ext = None


def load(build_dir: Path = BUILD_DIR, verbose: bool = False):
    """Build (or load the cached build of) the extension; returns (module, seconds)."""
    global _ext
    from torch.utils.cpp_extension import load_inline

    build_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _ext = load_inline(NAME, cpp_sources=[(HERE / "cpp_loop.cpp").read_text()],
                       extra_cflags=["-O3"], build_directory=str(build_dir), verbose=verbose)
    return _ext, time.perf_counter() - t0


class CppPeepholeLSTM(torch.autograd.Function):
    """apply(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, w_peep) -> (ys, h_T, c_T)."""

    @staticmethod
    def forward(ctx, xs, h0, c0, w_ih, w_hh, b_ih, b_hh, w_peep):
        ys, h_t, c_t, saved = _forward(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, w_peep)
        ctx.save_for_backward(xs, w_ih, w_hh, w_peep, *saved)
        return ys, h_t, c_t

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh_t, gc_t):
        xs, w_ih, w_hh, w_peep, gates, hs, cs, ks = ctx.saved_tensors
        T, N, H4 = gates.shape
        H = H4 // 4
        h_prev, c_prev, c_new = hs[:T], cs[:T], cs[1:]
        g4 = gates.view(T, N, 4, H)
        i, f, g, o = g4.unbind(2)
        sd = torch.addcmul(gates, gates, gates, value=-1).view(T, N, 4, H)
        a = torch.empty(T, N, 3, H, dtype=gates.dtype)
        torch.mul(sd[:, :, 0], g, out=a[:, :, 0])
        torch.mul(sd[:, :, 1], c_prev, out=a[:, :, 1])
        torch.addcmul(i, i * g, g, value=-1, out=a[:, :, 2])
        b_o = ks * sd[:, :, 3]
        b_c = torch.addcmul(o, o * ks, ks, value=-1)
        del sd
        dz = torch.empty_like(gates)
        gy = gy.contiguous()
        dh, dc = _ext.backward_loop(gates, a.view(T, N, 3 * H), b_o, b_c, w_hh, w_peep, gy,
                                    gh_t.contiguous(), gc_t.contiguous(), dz)
        dz2 = dz.view(T * N, H4)
        g_xs = (dz2 @ w_ih).view(xs.shape)
        g_w_ih = dz2.t() @ xs.reshape(T * N, -1)
        g_w_hh = dz2.t() @ h_prev.reshape(T * N, -1)
        g_b = dz2.sum(0)
        dz4 = dz.view(T, N, 4, H)
        g_peep = torch.cat([
            (dz4[:, :, :2] * c_prev.unsqueeze(2)).sum((0, 1)).view(2 * H),
            (dz4[:, :, 3] * c_new).sum((0, 1)),
        ])
        return g_xs, dh, dc, g_w_ih, g_w_hh, g_b, g_b.clone(), g_peep


def _forward(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, w_peep):
    T, N, _ = xs.shape
    H4 = w_hh.shape[0]
    H = H4 // 4
    scale = xs.new_ones(H4, 1)
    scale[2 * H : 3 * H] = 2
    w_ih_s, w_hh_s = w_ih * scale, w_hh * scale
    gates = torch.addmm((b_ih + b_hh) * scale.view(H4), xs.reshape(T * N, -1), w_ih_s.t())
    gates = gates.view(T, N, H4)
    hs = xs.new_empty(T + 1, N, H)
    cs = xs.new_empty(T + 1, N, H)
    ks = xs.new_empty(T, N, H)
    hs[0].copy_(h0)
    cs[0].copy_(c0)
    _ext.forward_loop(gates, w_hh_s.t(), w_peep.contiguous(), hs, cs, ks)
    return hs[1:].clone(), hs[T].clone(), cs[T].clone(), (gates, hs, cs, ks)


def cpp_lstm_sequence(cell, xs, h0, c0):
    assert cell.peephole == "diagonal" and cell.weight_hr is None and cell.bias
    args = (xs, h0, c0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
            cell.weight_peephole)
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        return CppPeepholeLSTM.apply(*args)
    with torch.no_grad():
        ys, h_t, c_t, _ = _forward(*args)
    return ys, h_t, c_t


# ---------------------------------------------------------------------------------------------
def _check_one(T: int, N: int, I: int, H: int) -> float:
    import rnnkit
    from rnnkit.cells.lstm import LSTMCell, LSTMState
    from rnnkit.kernels import lstm_sequence

    torch.manual_seed(T + H)
    cell = LSTMCell(I, H, peephole="diagonal", dtype=torch.float64)
    with torch.no_grad():  # non-trivial peepholes
        cell.weight_peephole.uniform_(-0.5, 0.5)
    xs = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    leaves = [xs, h0, c0, *cell.parameters()]
    gys = torch.randn(T, N, H, dtype=torch.float64)
    ghc = torch.randn(2, N, H, dtype=torch.float64)

    def run(fn):
        ys, h, c = fn()
        loss = (ys * gys).sum() + (h * ghc[0]).sum() + (c * ghc[1]).sum()
        grads = torch.autograd.grad(loss, leaves)
        return [ys, h, c, *grads]

    def ref():
        ys, st = rnnkit.scan(cell, xs, LSTMState(h0, c0))
        return ys, st.h, st.c

    r = run(ref)
    worst = 0.0
    for name, fn in (("cpp", lambda: cpp_lstm_sequence(cell, xs, h0, c0)),
                     ("py-fused", lambda: lstm_sequence(cell, xs, h0, c0))):
        out = run(fn)
        err = max((a - b).abs().max().item() for a, b in zip(out, r, strict=True))
        print(f"  T={T} N={N} I={I} H={H} {name:9s} max |diff| vs scan (out+grads) = {err:.2e}")
        worst = max(worst, err)
    with torch.no_grad():  # inference path
        y_inf = cpp_lstm_sequence(cell, xs, h0, c0)[0]
    return max(worst, (y_inf - r[0]).abs().max().item())


def check() -> float:
    """float64: outputs and gradients of the C++ loop (and the Python fused kernel) vs scan."""
    worst = max(_check_one(*shape) for shape in [(7, 3, 5, 4), (30, 8, 16, 32), (50, 32, 64, 128)])
    print(f"  worst = {worst:.2e} -> {'PASS' if worst < 1e-10 else 'FAIL'} (tol 1e-10)")
    return worst


def _impls(H, I):
    from rnnkit.cells.lstm import LSTMCell, LSTMState
    from rnnkit.functional import scan
    from rnnkit.kernels import lstm_sequence

    torch.manual_seed(0)
    native = torch.nn.LSTM(I, H)
    cell = LSTMCell(I, H, peephole="diagonal")

    def f_native(xs, h0, c0):
        return native(xs, (h0.unsqueeze(0), c0.unsqueeze(0)))[0]

    def f_scan(xs, h0, c0):
        return scan(cell, xs, LSTMState(h0, c0))[0]

    def f_py(xs, h0, c0):
        return lstm_sequence(cell, xs, h0, c0)[0]

    def f_cpp(xs, h0, c0):
        return cpp_lstm_sequence(cell, xs, h0, c0)[0]

    return {"torch.nn.LSTM": (f_native, native), "rnnkit.scan (peephole)": (f_scan, cell),
            "python fused lstm_sequence": (f_py, cell), "C++ loop (ATen)": (f_cpp, cell)}


def _time_train(fn, mod, xs, h0, c0):
    mod.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    fn(xs, h0, c0).sum().backward()
    return time.perf_counter() - t0


def _time_infer(fn, xs, h0, c0):
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(xs, h0, c0)
    return time.perf_counter() - t0


def bench(threads: int, reps: int, shapes) -> list[dict]:
    torch.set_num_threads(threads)
    B, I = 32, 64
    rows = []
    for H, T in shapes:
        print(f"  (load average before H={H} T={T}: {os.getloadavg()[0]:.2f})", flush=True)
        impls = _impls(H, I)
        torch.manual_seed(1)
        xs = torch.randn(T, B, I, requires_grad=True)
        h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
        times = {k: {"train": [], "infer": []} for k in impls}
        for _ in range(2):  # warm-up
            for fn, mod in impls.values():
                _time_train(fn, mod, xs, h0, c0)
                _time_infer(fn, xs, h0, c0)
        for _ in range(reps):  # round-robin
            for name, (fn, mod) in impls.items():
                times[name]["train"].append(_time_train(fn, mod, xs, h0, c0))
                times[name]["infer"].append(_time_infer(fn, xs, h0, c0))
        ref = {m: statistics.median(times["torch.nn.LSTM"][m]) for m in ("train", "infer")}
        for name in impls:
            tr = statistics.median(times[name]["train"])
            inf = statistics.median(times[name]["infer"])
            row = dict(threads=threads, H=H, T=T, impl=name, train_ms=tr * 1e3,
                       train_x=tr / ref["train"], infer_ms=inf * 1e3, infer_x=inf / ref["infer"])
            rows.append(row)
            print(f"  thr={threads} H={H:4d} T={T:3d} {name:28s} train {tr*1e3:8.2f} ms "
                  f"({tr/ref['train']:.2f}x)  infer {inf*1e3:7.2f} ms ({inf/ref['infer']:.2f}x)",
                  flush=True)
    return rows


def firstcall(threads: int = 2) -> dict:
    """In this (fresh) process: cached load, then the first train step at H=128, T=50."""
    t_imp = time.perf_counter()
    import rnnkit  # noqa: F401
    t_imp = time.perf_counter() - t_imp
    _, t_load = load()
    torch.set_num_threads(threads)
    from rnnkit.cells.lstm import LSTMCell
    cell = LSTMCell(64, 128, peephole="diagonal")
    xs = torch.randn(50, 32, 64)
    h0, c0 = torch.zeros(32, 128), torch.zeros(32, 128)
    t0 = time.perf_counter()
    cpp_lstm_sequence(cell, xs, h0, c0)[0].sum().backward()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpp_lstm_sequence(cell, xs, h0, c0)[0].sum().backward()
    t_second = time.perf_counter() - t0
    res = dict(threads=threads, loadavg_1min=os.getloadavg()[0], import_rnnkit_s=t_imp,
               cached_load_s=t_load, first_train_step_ms=t_first * 1e3,
               second_train_step_ms=t_second * 1e3)
    print(json.dumps(res))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["check", "bench", "firstcall", "cold", "all"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shapes", default="128x50,128x200,512x50,512x200")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.what == "cold":  # compile from scratch into a fresh directory
        cold = BUILD_DIR.with_name(BUILD_DIR.name + "_cold")
        shutil.rmtree(cold, ignore_errors=True)
        _, t = load(cold)
        print(json.dumps({"cold_compile_s": t}))
        return
    _, t = load()
    print(f"load (build or cached): {t:.2f} s")
    if args.what in ("check", "all"):
        check()
    if args.what == "bench":
        rows = bench(args.threads, args.reps, shapes)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.what == "firstcall":
        firstcall(args.threads)
    if args.what == "all":
        for cmd in (["cold"], ["firstcall"], ["bench", "--threads", "1"],
                    ["bench", "--threads", "2"]):
            subprocess.run([sys.executable, __file__, *cmd], check=True)


if __name__ == "__main__":
    main()
