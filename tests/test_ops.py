"""The registered ops (``torch.ops.rnnkit``): opcheck, gradients, both implementations (the
compiled C++ loop and the pure-torch one with the same schema), the build's fallback, and the
PyTorch stack (torch.compile with fullgraph, torch.export with dynamic dimensions)."""

import os
import subprocess
import sys

import pytest
import torch
from kernel_checks import check_compiles_like_eager
from torch.autograd import gradcheck, gradgradcheck

import rnnkit
from rnnkit import ops
from rnnkit.ops import _wiring, elman, gru, indrnn, lstm, minrnn

F64 = torch.float64
T, N, I, H = 5, 3, 4, 6
VALID = torch.arange(T).unsqueeze(1) < torch.tensor([5, 2, 4])  # (T, N), one full sequence

def _rand(seed):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=F64, generator=g)).requires_grad_()
    return rand


def gated_args(G):
    """``make(bias, seed)`` -> x, h0, w_ih, w_hh, b_ih, b_hh of a cell with G gates
    (float64, requiring grad)."""
    def make(bias=True, seed=0):
        rand = _rand(seed)
        b = (rand(G * H), rand(G * H)) if bias else (None, None)
        return rand(T, N, I), rand(N, H), rand(G * H, I), rand(G * H, H, scale=0.5), *b
    return make


def lstm_args(peephole, proj):
    """``make(bias, seed)`` -> the inputs of ``lstm_sequence`` (projection to R = 4)."""
    def make(bias=True, seed=0):
        rand = _rand(seed)
        R = 4 if proj else H
        b = (rand(4 * H), rand(4 * H)) if bias else (None, None)
        peep = {"none": None, "diagonal": (3 * H,), "full": (3 * H, H)}[peephole]
        return (rand(T, N, I), rand(N, R), rand(N, H), rand(4 * H, I),
                rand(4 * H, R, scale=0.5), *b, rand(R, H, scale=0.5) if proj else None,
                rand(*peep, scale=0.4) if peep else None)
    return make


def indrnn_args(bias=True, seed=0):
    """x, h0, w_ih, u (a vector), b_ih of ``indrnn_sequence`` (float64, requiring grad)."""
    rand = _rand(seed)
    return (rand(T, N, I), rand(N, H), rand(H, I), rand(H, scale=0.6),
            rand(H) if bias else None)


def minrnn_args(G):
    """``make(bias, seed)`` -> x, h0, w_ih, b_ih of ``minrnn_sequence`` with G blocks of H
    (minGRU 2, minLSTM 3; float64, requiring grad)."""
    def make(bias=True, seed=0):
        rand = _rand(seed)
        return rand(T, N, I), rand(N, H), rand(G * H, I), rand(G * H) if bias else None
    return make


# op -> (its module, [(its inputs' maker, the flags after `valid`)])
OPS = {
    "elman_sequence": (elman, [(gated_args(1), (relu, rev))
                               for relu in (False, True) for rev in (False, True)]),
    "gru_sequence": (gru, [(gated_args(3), (rev,)) for rev in (False, True)]),
    "indrnn_sequence": (indrnn, [(indrnn_args, (relu, rev))
                                 for relu in (False, True) for rev in (False, True)]),
    "minrnn_sequence": (minrnn, [(minrnn_args(3 if lstm_ else 2), (lstm_, rev))
                                 for lstm_ in (False, True) for rev in (False, True)]),
    "lstm_sequence": (lstm, [
        (lstm_args(peep, proj), (peep, True, True, rev))
        for (peep, proj), rev in zip(
            [(p, q) for p in ("none", "diagonal", "full") for q in (False, True)],
            (False, True, True, False, False, True), strict=True)
    ] + [(lstm_args("diagonal", False), ("diagonal", False, False, False)),
         (lstm_args("none", True), ("none", False, True, True))]),
}
CASES = [(name, make, flags, masked) for name, (_, cases) in OPS.items()
         for make, flags in cases for masked in (False, True)]
IDS = [f"{n.split('_')[0]}-{'-'.join(map(str, f))}-{'masked' if m else 'full'}"
       for n, _, f, m in CASES]


def op(name):
    return getattr(torch.ops.rnnkit, name)


@pytest.mark.parametrize("name, make, flags, masked", CASES, ids=IDS)
def test_op_equals_its_reference_and_passes_opcheck(name, make, flags, masked):
    valid = VALID if masked else None
    for bias in (True, False):
        args = make(bias)
        got = op(name)(*args, valid, *flags)
        want = OPS[name][0].reference(*args, valid, *flags)
        for a, b in zip(got[: len(want)], want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.library.opcheck(op(name).default, (*args, valid, *flags))


@pytest.mark.parametrize("name, make, flags, masked", CASES, ids=IDS)
def test_op_gradcheck_and_gradgradcheck(name, make, flags, masked):
    valid = VALID if masked else None
    args = tuple(a for a in make() if a is not None)
    states = _wiring._specs[name][1]

    def f(*a):
        it = iter(a)
        full = [next(it) if t is not None else None for t in make()]
        return op(name)(*full, valid, *flags)[: 1 + states]

    assert gradcheck(f, args)
    if masked:  # (the double backward differentiates the reference: once per case suffices)
        assert gradgradcheck(f, args)


@pytest.mark.parametrize("name", list(OPS))
def test_both_implementations_agree(name):
    """The compiled op and the pure-torch one (called directly) give the same forward, saved
    buffers and backward: the fallback computes what the compiled op does."""
    module, cases = OPS[name]
    states = _wiring._specs[name][1]
    with torch.no_grad():
        for make, flags in cases:
            args = make()
            for valid in (None, VALID):
                fwd = op(name)(*args, valid, *flags)
                py = module._python_forward(*args, valid, *flags)
                # (after the pure-torch loop's outputs, the layer normalization's: none here)
                assert all(o.numel() == 0 for o in fwd[len(py) :])
                for a, b in zip(fwd[: len(py)], py, strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
                g = torch.Generator().manual_seed(1)
                grads = [torch.randn(o.shape, dtype=F64, generator=g) for o in fwd[: 1 + states]]
                py_grads = module._python_backward(*grads, *args, *py[1 + states :], valid,
                                                   *flags)
                got = op(name + "_backward")(*grads, *args, *fwd[1 + states :], valid, *flags)
                assert all(o.numel() == 0 for o in got[len(py_grads) :])
                for a, b in zip(got[: len(py_grads)], py_grads, strict=True):
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


NETS = {"rnn": lambda **kw: rnnkit.RNN(I, H, num_layers=2, bidirectional=True,
                                        nonlinearity="relu", **kw),
        "gru": lambda **kw: rnnkit.GRU(I, H, num_layers=2, bidirectional=True, **kw),
        "lstm": lambda **kw: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=4,
                                         **kw),
        "peephole": lambda **kw: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True,
                                             peephole="full", **kw)}


@pytest.mark.parametrize("native", [True, False], ids=["native", "op"])
@pytest.mark.parametrize("kind", list(NETS))
def test_compiles_fullgraph_with_torchs_numbers(kind, native):
    """torch.nn.RNN/GRU/LSTM cannot be compiled with fullgraph=True (Dynamo refuses their
    kernels); rnnkit's can: under compile they run the registered ops. Forward, backward,
    lengths, and no recompilation for a new length or batch size."""
    torch.manual_seed(0)
    net = NETS[kind](native=native)
    x = torch.randn(T, N, I, requires_grad=True)
    check_compiles_like_eager(net, x, torch.tensor([5, 2, 4]))


@pytest.mark.parametrize("kind", list(NETS))
def test_exports_with_dynamic_time_and_batch(kind):
    """torch.export of torch.nn.RNN/GRU fails with a dynamic T; rnnkit's program, exported once,
    runs any length and batch size with eager's numbers."""
    from torch.export import Dim

    torch.manual_seed(0)
    net = NETS[kind]().eval()
    program = torch.export.export(
        net, (torch.randn(T, N, I),),
        dynamic_shapes={"input": {0: Dim("T", min=2, max=4096), 1: Dim("N", min=2, max=1024)}})
    assert any(str(node.target).startswith("rnnkit.") for node in program.graph.nodes)
    for shape in [(T, N, I), (9, 5, I), (2, 7, I)]:
        x = torch.randn(*shape)
        torch.testing.assert_close(program.module()(x)[0], net(x)[0])


def test_the_pure_torch_kernels_stay_tested():
    """With RNNKIT_KERNELS=python the networks run today's pure-torch kernels (the fallback where
    no compiler is): their equivalence, gradient and double-backward tests pass there too."""
    if os.environ.get("RNNKIT_KERNELS") == "python":
        pytest.skip("already running on the pure-torch kernels")
    here = os.path.dirname(__file__)
    files = ["test_kernels_scrn_gru.py", "test_kernels_lstm.py", "test_double_backward.py",
             "test_fused_networks.py", "test_ops.py"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         *(os.path.join(here, f) for f in files),
         "-k", "(gru or elman or GRU or RNN or test_kernels_lstm) and not gradgradcheck"],
        capture_output=True, text=True, env={**os.environ, "RNNKIT_KERNELS": "python"},
        timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout.splitlines()[-1]


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_rnn_and_gru_run_the_compiled_op_on_the_cpu(monkeypatch, kind):
    """Where the ops built, an Elman or GRU network on the CPU runs the op (faster than torch's
    kernel, RESULTS), training and inference, with torch.nn's numbers; without the fused
    kernels (fused=False) it runs torch's."""
    if not ops.compiled():
        pytest.skip("the compiled ops did not load here")
    from kernel_checks import graph_names

    torch.manual_seed(0)
    if kind == "rnn":
        net, op = rnnkit.RNN(I, H, num_layers=2, nonlinearity="relu"), "elman"
        twin = torch.nn.RNN(I, H, num_layers=2, nonlinearity="relu")
    else:
        net, op, twin = rnnkit.GRU(I, H, num_layers=2), "gru", torch.nn.GRU(I, H, num_layers=2)
    twin.load_state_dict(net.state_dict())
    x = torch.randn(T, N, I)
    out, _ = net(x)
    assert any(f"rnnkit_{op}_sequence" in n for n in graph_names(out))
    torch.testing.assert_close(out, twin(x)[0])
    calls = []
    native = rnnkit.RecurrentNetwork._forward_native
    monkeypatch.setattr(rnnkit.RecurrentNetwork, "_forward_native",
                        lambda self, *a: calls.append(1) or native(self, *a))
    with torch.no_grad():
        torch.testing.assert_close(net(x)[0], twin(x)[0])
    assert calls == []
    net.fused = False
    with torch.no_grad():
        net(x)
    assert calls == [1]


@pytest.mark.parametrize("name, make, flags, masked", CASES, ids=IDS)
def test_inference_op_equals_the_forward_and_passes_opcheck(name, make, flags, masked):
    """``<op>_inference``, what runs where autograd does not record, keeps no saved buffers and
    gives the op's outputs."""
    valid = VALID if masked else None
    args = tuple(a.detach() if a is not None else None for a in make())
    states = _wiring._specs[name][1]
    got = op(name + "_inference")(*args, valid, *flags)
    assert len(got) == 1 + states
    for a, b in zip(got, op(name)(*args, valid, *flags)[: 1 + states], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.library.opcheck(op(name + "_inference").default, (*args, valid, *flags))


def test_networks_infer_through_the_inference_ops():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func))
            return func(*args, **(kwargs or {}))

    net = rnnkit.LSTM(I, H, peephole="diagonal")
    x = torch.randn(T, N, I)
    for context, want in ((torch.no_grad, "rnnkit.lstm_sequence_inference.default"),
                          (torch.enable_grad, "rnnkit.lstm_sequence.default")):
        with context(), Ops() as seen:
            net(x)
        assert want in seen.names, seen.names


# ---- the regularizer masks (rnnkit.regularize): drop (N, R) and zoneout weights (T, N, S) ------

MASK_CASES = [(name, make, flags) for name, (_, cases) in OPS.items()
              for make, flags in cases[:2]]
MASK_IDS = [f"{n.split('_')[0]}-{'-'.join(map(str, f))}" for n, _, f in MASK_CASES]


def regularizer_masks(name, args, which, seed=1):
    """A scaled recurrent dropout mask and 0/1 zoneout weights for op ``name``'s states (or
    None, by ``which``: "drop", "zone" or "both")."""
    g = torch.Generator().manual_seed(seed)
    states = args[1 : 1 + _wiring._specs[name][1]]
    drop = (torch.rand(N, states[0].shape[1], generator=g, dtype=F64) > 0.3).to(F64) / 0.7
    zone = (torch.rand(T, N, sum(s.shape[1] for s in states), generator=g, dtype=F64)
            < 0.4).to(F64)
    return (drop if which != "zone" else None), (zone if which != "drop" else None)


@pytest.mark.parametrize("which", ["drop", "zone", "both"])
@pytest.mark.parametrize("name, make, flags", MASK_CASES, ids=MASK_IDS)
def test_masked_op_equals_its_reference_gradchecks_and_passes_opcheck(name, make, flags, which):
    """Recurrent dropout and zoneout inside the op: its outputs and its hand-derived backward
    (compiled where it built) equal the differentiable reference's, float64 gradcheck passes
    (and gradgradcheck, which differentiates the reference), and so does opcheck."""
    args = make()
    masks = regularizer_masks(name, args, which)
    states = _wiring._specs[name][1]
    got = op(name)(*args, VALID, *flags, *masks)[: 1 + states]
    want = OPS[name][0].reference(*args, VALID, *flags, *masks)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    present = tuple(a for a in args if a is not None)

    def f(*a):
        it = iter(a)
        full = [next(it) if t is not None else None for t in args]
        return op(name)(*full, VALID, *flags, *masks)[: 1 + states]

    assert gradcheck(f, present)
    if which == "both" and (name, make, flags) == next(c for c in MASK_CASES if c[0] == name):
        assert gradgradcheck(f, present)  # (one case per op: it differentiates the reference)
    torch.library.opcheck(op(name).default, (*args, VALID, *flags, *masks))


@pytest.mark.parametrize("name, make, flags", MASK_CASES, ids=MASK_IDS)
def test_zoneout_expectation_in_the_inference_op(name, make, flags):
    """At evaluation zoneout mixes old and new states by p (fractional weights): the inference
    op (compiled where it built) computes the reference's numbers, and the pure-torch one too."""
    args = tuple(a.detach() if a is not None else None for a in make())
    states = _wiring._specs[name][1]
    S = sum(s.shape[1] for s in args[1 : 1 + states])
    zone = torch.full((T, N, S), 0.3, dtype=F64)
    want = OPS[name][0].reference(*args, VALID, *flags, None, zone)
    got = op(name + "_inference")(*args, VALID, *flags, None, zone)
    by_reference = _wiring._by_reference[name][0](*args, VALID, *flags, None, zone)
    for a, b, c in zip(got, want, by_reference, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, b, rtol=0, atol=0)
