"""rnnkit.gpu: the Triton kernels behind the ops' CUDA implementation.

Without a GPU: the kernels run under triton's interpreter (``TRITON_INTERPRET=1``, in a
subprocess: ``tests/gpu_interpret.py``) on small CPU tensors, every op and LSTM variant, the
per-step path and the persistent kernel, against the CPU ops (forward outputs and saved buffers,
and the backward drivers' gradients against autograd through the CPU op); and every kernel
variant is compiled for sm_90 by triton's compiler (``tests/gpu_compile.py``). With a GPU, the
registered CUDA ops against the CPU ops, gradcheck in float64, the persistent kernel against the
per-step loop at larger shapes, and rnnkit's networks on CUDA against the same networks on the
CPU. Skipped where triton is not installed.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import gpu_interpret  # noqa: E402  (tests/, beside this file)
from gpu_interpret import CASES, IDS, NET_IDS, TOL  # noqa: E402

import rnnkit  # noqa: E402

HERE = Path(__file__).resolve().parent
BY_ID = {c["id"]: c for c in CASES}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, cwd=HERE.parent)


# ---- without a GPU: triton's interpreter --------------------------------------------------


@pytest.fixture(scope="module")
def interpreted():
    """Every case of gpu_interpret.py, run once in one interpreter process: {id: its row}."""
    r = subprocess.run([sys.executable, str(HERE / "gpu_interpret.py")], capture_output=True,
                       text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=600)
    rows = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["id"]] = row
    return rows, r


@pytest.mark.parametrize("case_id", IDS + NET_IDS)
def test_interpreted_kernels_equal_the_cpu_op(interpreted, case_id):
    """An op case: the drivers against the CPU op; a ``net-`` case: a network on the drivers
    (registered as the ops' CPU kernels) against the same network on the CPU ops."""
    rows, run = interpreted
    assert case_id in rows, (f"the interpreter's process did not report {case_id} (exit "
                             f"{run.returncode}):\n{run.stderr[-3000:]}")
    assert rows[case_id]["ok"], rows[case_id]["error"]


def test_every_kernel_variant_compiles_for_the_gpus(tmp_path):
    """What the interpreter cannot see: triton's compiler and ptxas (from the wheel, no GPU
    needed) take every kernel variant the drivers launch, to an sm_90 (H100/H200) cubin; the
    persistent kernel's shared memory stays under an H100's 227 KiB."""
    r = subprocess.run([sys.executable, str(HERE / "gpu_compile.py"), "90"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_CACHE_DIR": str(tmp_path)})
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0 and len(rows) > 50, r.stderr[-3000:]
    failed = [f"{row['id']}: {row['error']}" for row in rows if not row["ok"]]
    assert not failed, "\n".join(failed)
    assert max(row["shared"] for row in rows) <= 227 * 1024


def test_the_cases_cover_every_op_variant_and_both_lstm_paths():
    lstm = [c for c in CASES if c["op"] == "lstm" and c["dtype"] == torch.float32]
    for persistent in (False, True):
        mine = [c["opts"] for c in lstm if c["opts"]["persistent"] == persistent]
        assert {o["peephole"] for o in mine} == {"none", "diagonal", "full"}
        assert any("proj" in o for o in mine)
        assert any(not o.get("tanh_g", True) for o in mine)
        assert any(not o.get("tanh_phi", True) for o in mine)
    for op in ("elman", "gru", "lstm"):
        mine = [c for c in CASES if c["op"] == op]
        assert {c["masked"] for c in mine} == {c["reverse"] for c in mine} == {False, True}
        assert {c["bias"] for c in mine} == {False, True}
        assert any(c["dtype"] == torch.float64 for c in mine)
    assert {c["H"] for c in CASES} == {4, 8}


def test_importing_rnnkit_gpu_imports_neither_triton_nor_its_kernels():
    r = _python("import sys, rnnkit.gpu; print('triton' in sys.modules, "
                "'rnnkit.gpu.lstm' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine registers the GPU path")
def test_without_cuda_rnnkit_and_its_ops_do_not_import_triton():
    r = _python("import sys, torch, rnnkit, rnnkit.ops, rnnkit.gpu\n"
                "x = torch.randn(3, 2, 4)\n"
                "torch.ops.rnnkit.elman_sequence(x, torch.zeros(2, 5), torch.randn(5, 4), "
                "torch.randn(5, 5), None, None, None, False, False)\n"
                "rnnkit.LSTM(4, 5, native=False)(x)\n"
                "print('triton' in sys.modules, rnnkit.gpu.available(), rnnkit.gpu.registered())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "False"]


def test_the_persistent_kernel_is_for_small_float32_weights():
    from rnnkit.gpu import lstm, persistent

    def fits(H, R=None, proj=False, peephole="none", dtype=torch.float32, T=50, N=32):
        R = R or H
        w_hh = torch.empty(4 * H, R, dtype=dtype)
        return persistent.fits(T, N, w_hh, torch.empty(R, H) if proj else None, peephole, dtype)

    assert fits(64) and fits(16) and fits(5) and fits(32, peephole="full")
    assert fits(64, R=32, proj=True) and fits(64, peephole="diagonal")
    assert not fits(65) and not fits(128) and not fits(64, peephole="full")
    assert not fits(64, dtype=torch.float64) and fits(32, dtype=torch.float64)
    assert not fits(64, T=2**20, N=2**10)  # 32-bit offsets
    # only on CUDA, in float32, and while enabled
    x = torch.randn(5, 3, 4)
    assert not lstm.use_persistent(x, torch.empty(32, 8), None, "none")


def test_gpu_benchmark_runs_under_the_interpreter(tmp_path):
    """benchmarks/gpu.py end to end, on CPU tensors with the drivers as the ops' CPU kernels
    (CUDA's calls stubbed): every model and path, its section written with the card's name."""
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin speed -->\nkept\n<!-- end speed -->\n")
    code = f"""
import sys
sys.path[:0] = ["tests", "benchmarks"]
import torch
import gpu_interpret, gpu as bench
import rnnkit.ops, rnnkit.gpu
calls = []
gpu_interpret._register_drivers(False, calls)
bench.DEVICE = "cpu"
torch.cuda.is_available = lambda: True
torch.cuda.synchronize = lambda: None
torch.cuda.get_device_name = lambda *a: "THE CARD"
rnnkit.gpu.registered = lambda: True
rows = bench.main(["--quick", "--shapes", "16x3", "--repeats", "1", "--out", {str(out)!r}])
print(sorted({{r["name"] for r in rows}}), len(calls) > 0)
"""
    r = _python(code, TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(sorted([
        "torch.nn.LSTM (cuDNN)", "rnnkit.RNN", "rnnkit.GRU", "rnnkit.LSTM",
        "rnnkit peephole LSTM", "rnnkit.LSTM, per-step", "rnnkit peephole LSTM, per-step"])) \
        + " True"
    text = out.read_text()
    assert "kept" in text and "<!-- begin gpu -->" in text and "Card: THE CARD" in text
    assert "| 16 | 3 | rnnkit.LSTM | persistent |" in text


# ---- with a GPU: the registered CUDA ops ----------------------------------------------------


def _on(device, tensors, grad=True):
    return [t.detach().to(device).requires_grad_(grad) if t is not None else None
            for t in tensors]


def _run_op(name, inputs, valid, flags, grads):
    """The op's outputs and autograd's gradients of its present inputs, ``grads`` the outputs'."""
    out = getattr(torch.ops.rnnkit, name)(*inputs, valid, *flags)
    present = [t for t in inputs if t is not None]
    got = torch.autograd.grad(out[: len(grads)], present, grads)
    return out, got


@cuda
def test_the_cuda_implementation_is_registered():
    import rnnkit.gpu
    import rnnkit.ops  # noqa: F401

    assert rnnkit.gpu.available() and rnnkit.gpu.registered()


@cuda
@pytest.mark.parametrize("case_id", IDS)
def test_cuda_ops_equal_the_cpu_ops(case_id, monkeypatch):
    """Every case through the registered op and its autograd, CUDA against CPU: all outputs
    (saved buffers included) and the inputs' gradients, the persistent kernel where the case
    says so."""
    from rnnkit.gpu import persistent

    case = BY_ID[case_id]
    monkeypatch.setattr(persistent, "ENABLED", case["opts"].get("persistent", False))
    inputs, flags, valid = gpu_interpret.make(case)
    name = f"{case['op']}_sequence"
    states = 2 if case["op"] == "lstm" else 1
    with torch.no_grad():
        shapes = getattr(torch.ops.rnnkit, name)(*inputs, valid, *flags)[: 1 + states]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(o.shape, dtype=o.dtype, generator=g) for o in shapes]
    want, want_g = _run_op(name, _on("cpu", inputs), valid, flags, grads)
    got, got_g = _run_op(name, _on("cuda", inputs), valid.cuda() if valid is not None else None,
                         flags, [t.cuda() for t in grads])
    atol, rtol = TOL[case["dtype"]]["forward"]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.cpu(), b.detach(), atol=atol, rtol=rtol)
    atol, rtol = TOL[case["dtype"]]["backward"]
    for a, b in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=atol, rtol=rtol)


@cuda
@pytest.mark.parametrize("case_id", [i for i in IDS if "float64" in i])
def test_cuda_ops_pass_gradcheck(case_id):
    case = BY_ID[case_id]
    inputs, flags, valid = gpu_interpret.make(case)
    inputs = _on("cuda", inputs)
    valid = valid.cuda() if valid is not None else None
    name = f"{case['op']}_sequence"
    states = 2 if case["op"] == "lstm" else 1
    present = [i for i, t in enumerate(inputs) if t is not None]

    def f(*xs):
        args = list(inputs)
        for i, x in zip(present, xs, strict=True):
            args[i] = x
        return getattr(torch.ops.rnnkit, name)(*args, valid, *flags)[: 1 + states]

    assert torch.autograd.gradcheck(f, [inputs[i] for i in present], atol=1e-6, rtol=1e-5)


@cuda
@pytest.mark.parametrize("H", [16, 40, 64])
def test_cuda_persistent_kernel_equals_the_step_loop(H):
    """At shapes past one tile (N = 37 sequences, H not a power of two) and lengths."""
    from rnnkit.gpu import lstm, persistent

    T, N, I = 30, 37, 24
    g = torch.Generator().manual_seed(H)

    def r(*s, scale=1.0):
        return (scale * torch.randn(*s, generator=g)).cuda()

    lengths = torch.randint(1, T + 1, (N,), generator=g)
    valid = (torch.arange(T).unsqueeze(1) < lengths).cuda()
    for peephole, w_peep in (("none", None), ("diagonal", r(3 * H, scale=0.3)),
                             ("full", r(3 * H, H, scale=0.1))):
        if not persistent.fits(T, N, torch.empty(4 * H, H), None, peephole, torch.float32):
            continue  # (H = 64 with a full peephole)
        for reverse in (False, True):
            args = (r(T, N, I), r(N, H), r(N, H), r(4 * H, I, scale=0.2),
                    r(4 * H, H, scale=0.1), r(4 * H), r(4 * H), None, w_peep, valid, peephole,
                    True, True, reverse)
            a = lstm.forward(*args, persistent_kernel=True)
            b = lstm.forward(*args, persistent_kernel=False)
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@cuda
def test_gpu_benchmark_quick_on_cuda(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run([sys.executable, str(HERE.parent / "benchmarks" / "gpu.py"), "--quick",
                        "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert torch.cuda.get_device_name() in text and "| 64 | 20 | rnnkit.LSTM | persistent |" in text


NETS = {
    "rnn": lambda: rnnkit.RNN(6, 20, num_layers=2, bidirectional=True, native=False),
    "gru": lambda: rnnkit.GRU(6, 20, num_layers=2, bidirectional=True, native=False),
    "lstm": lambda: rnnkit.LSTM(6, 20, num_layers=2, bidirectional=True, native=False),
    "lstm-proj": lambda: rnnkit.LSTM(6, 96, bidirectional=True, proj_size=12, native=False),
    "peephole": lambda: rnnkit.LSTM(6, 20, peephole="full", native=False),
    "lstm-wide": lambda: rnnkit.LSTM(6, 130, native=False),  # the per-step path
}


@cuda
@pytest.mark.parametrize("kind", list(NETS))
def test_networks_on_cuda_equal_the_cpu(kind):
    """``rnnkit.<Net>(..., native=False).cuda()``: forward and every parameter's gradient as on
    the CPU, with padded sequences (a PackedSequence) and without."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    cpu = NETS[kind]()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(9, 5, 6)
    lengths = torch.tensor([9, 7, 4, 2, 1])
    for packed in (False, True):
        outs = []
        for net, dev in ((cpu, "cpu"), (gpu, "cuda")):
            net.zero_grad()
            inp = x.to(dev)
            if packed:
                inp = pack_padded_sequence(inp, lengths, enforce_sorted=True)
            out, state = net(inp)
            out = out.data if packed else out
            leaves = state if isinstance(state, tuple) else (state,)
            (out.square().sum() + sum(s.sum() for s in leaves)).backward()
            outs.append((out, [p.grad for p in net.parameters()]))
        (o_cpu, g_cpu), (o_gpu, g_gpu) = outs
        torch.testing.assert_close(o_gpu.cpu(), o_cpu, atol=1e-5, rtol=1e-5)
        for a, b in zip(g_gpu, g_cpu, strict=True):
            torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)
