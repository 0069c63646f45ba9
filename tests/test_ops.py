"""The registered ops (``torch.ops.rnnkit``): opcheck, gradients, both implementations (the
compiled C++ loop and the pure-torch one with the same schema), the build's fallback, and the
PyTorch stack (torch.compile with fullgraph, torch.export with dynamic dimensions)."""

import os
import subprocess
import sys

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import rnnkit
from rnnkit import ops
from rnnkit.ops import elman

F64 = torch.float64
T, N, I, H = 5, 3, 4, 6
VALID = torch.arange(T).unsqueeze(1) < torch.tensor([5, 2, 4])  # (T, N), one full sequence


def elman_args(bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=F64, generator=g)).requires_grad_()

    b = (rand(H), rand(H)) if bias else (None, None)
    return rand(T, N, I), rand(N, H), rand(H, I), rand(H, H, scale=0.5), *b


CASES = [(relu, rev, masked) for relu in (False, True) for rev in (False, True)
         for masked in (False, True)]
IDS = [f"{'relu' if r else 'tanh'}-{'rev' if v else 'fwd'}-{'masked' if m else 'full'}"
       for r, v, m in CASES]


@pytest.mark.parametrize("relu, reverse, masked", CASES, ids=IDS)
def test_elman_op_equals_its_reference_and_passes_opcheck(relu, reverse, masked):
    valid = VALID if masked else None
    for bias in (True, False):
        args = elman_args(bias)
        got = torch.ops.rnnkit.elman_sequence(*args, valid, relu, reverse)
        want = elman.reference(*args, valid, relu, reverse)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.library.opcheck(torch.ops.rnnkit.elman_sequence.default,
                              (*args, valid, relu, reverse))


@pytest.mark.parametrize("relu, reverse, masked", CASES, ids=IDS)
def test_elman_op_gradcheck_and_gradgradcheck(relu, reverse, masked):
    valid = VALID if masked else None
    args = elman_args()

    def f(*a):
        return torch.ops.rnnkit.elman_sequence(*a, valid, relu, reverse)[:2]

    assert gradcheck(f, args)
    assert gradgradcheck(f, args)


def test_both_implementations_agree():
    """The compiled op and the pure-torch one (called directly) give the same forward, saved
    slots and backward: the fallback computes what the compiled op does."""
    args = elman_args()
    with torch.no_grad():
        for relu, reverse, masked in CASES:
            valid = VALID if masked else None
            fwd = torch.ops.rnnkit.elman_sequence(*args, valid, relu, reverse)
            py = elman._python_forward(*args, valid, relu, reverse)
            for a, b in zip(fwd, py, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            g = torch.Generator().manual_seed(1)
            gy = torch.randn(T, N, H, dtype=F64, generator=g)
            gh = torch.randn(N, H, dtype=F64, generator=g)
            x, _, w_ih, w_hh, *_ = args
            bwd_args = (gy, gh, x, w_ih, w_hh, fwd[2], valid, relu, reverse)
            for a, b in zip(torch.ops.rnnkit.elman_sequence_backward(*bwd_args),
                            elman._python_backward(*bwd_args), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_networks_run_the_op_where_they_do_not_run_torchs_kernel():
    torch.manual_seed(0)
    net = rnnkit.RNN(I, H, num_layers=2, bidirectional=True, native=False, dtype=F64)
    twin = torch.nn.RNN(I, H, num_layers=2, bidirectional=True, dtype=F64)
    twin.load_state_dict(net.state_dict())
    x = torch.randn(T, N, I, dtype=F64)
    out, h = net(x)
    assert "rnnkit_elman_sequence" in out.grad_fn.name() or any(
        "rnnkit_elman" in type(fn).__name__ for fn, _ in out.grad_fn.next_functions if fn)
    torch.testing.assert_close(out, twin(x)[0])


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_rnnkit_kernels_python_forces_the_pure_torch_ops():
    r = _run("import torch, rnnkit.ops as o; print(o.compiled()); "
             "print(o.build.status()); x = torch.randn(3, 2, 4); "
             "print(torch.ops.rnnkit.elman_sequence(x, torch.zeros(2, 5), torch.randn(5, 4), "
             "torch.randn(5, 5), None, None, None, False, False)[0].shape)",
             RNNKIT_KERNELS="python")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["False", "pure-torch kernels (RNNKIT_KERNELS=python)",
                                     "torch.Size([3, 2, 5])"]


def test_a_failed_build_warns_once_names_the_fix_and_falls_back(tmp_path):
    """A build that cannot succeed (here: its directory cannot be made) is one warning with the
    fix; the ops then run the pure-torch implementation, and so do the networks."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = ("import warnings, torch\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import rnnkit.ops as o\n"
            "print(o.compiled(), len(w))\n"
            "print(w[0].message)\n"
            "import rnnkit\n"
            "print(rnnkit.RNN(4, 5, native=False)(torch.randn(3, 2, 4))[0].shape)\n")
    r = _run(code, RNNKIT_BUILD_DIR=str(blocker / "build"))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "False 1"
    assert "could not be built" in lines[1] and "pip install ninja" in lines[1]
    assert lines[-1] == "torch.Size([3, 2, 5])"


def test_unknown_rnnkit_kernels_value_is_named():
    r = _run("import rnnkit.ops", RNNKIT_KERNELS="fast")
    assert r.returncode != 0 and "RNNKIT_KERNELS: expected auto, compiled or python" in r.stderr


def test_compiled_is_what_this_machine_built():
    """On a machine with a compiler (this suite's), the compiled implementation is loaded."""
    if os.environ.get("RNNKIT_KERNELS", "auto") == "python":
        pytest.skip("RNNKIT_KERNELS=python")
    assert ops.compiled(), ops.build.status()


# ---- the PyTorch stack: torch.compile(fullgraph=True) and torch.export ----------------------


@pytest.mark.parametrize("native", [True, False], ids=["native", "op"])
def test_rnn_compiles_fullgraph_with_torchs_numbers(native):
    """torch.nn.RNN cannot be compiled with fullgraph=True (Dynamo refuses its kernel);
    rnnkit.RNN can: under compile it runs the registered op. Forward, backward, lengths, and no
    recompilation for a new length or batch size."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = rnnkit.RNN(I, H, num_layers=2, bidirectional=True, nonlinearity="relu", native=native)
    compiled = torch.compile(net, fullgraph=True, dynamic=True)
    x = torch.randn(T, N, I, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    for kw in ({}, {"lengths": lengths}):
        out, h = compiled(x, **kw)
        (gx,) = torch.autograd.grad(out.sum() + h.sum(), x)
        want, h_want = net(x, **kw)
        (gx_want,) = torch.autograd.grad(want.sum() + h_want.sum(), x)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(h, h_want)
        torch.testing.assert_close(gx, gx_want)
    graphs = counters["stats"]["unique_graphs"]
    for shape in [(9, 3, I), (4, 7, I)]:  # (requires_grad as before: a change would recompile)
        xx = torch.randn(*shape, requires_grad=True)
        torch.testing.assert_close(compiled(xx)[0], net(xx)[0])
    assert counters["stats"]["unique_graphs"] == graphs  # no recompilation


def test_rnn_exports_with_dynamic_time_and_batch():
    """torch.export of torch.nn.RNN fails with a dynamic T; rnnkit.RNN's program, exported once,
    runs any length and batch size with eager's numbers."""
    from torch.export import Dim

    torch.manual_seed(0)
    net = rnnkit.RNN(I, H, num_layers=2, bidirectional=True).eval()
    program = torch.export.export(
        net, (torch.randn(T, N, I),),
        dynamic_shapes={"input": {0: Dim("T", min=2, max=4096), 1: Dim("N", min=2, max=1024)}})
    assert any("rnnkit.elman_sequence" in str(node.target) for node in program.graph.nodes)
    for shape in [(T, N, I), (9, 5, I), (2, 7, I)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(program.module()(x)[0], net(x)[0])
