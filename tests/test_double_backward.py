"""Second-order gradients through every cell and every path (native, fused, scan).

A fused kernel's hand-derived backward cannot be differentiated again; when autograd records
the backward (``create_graph=True``) the op differentiates its reference, the cell's step in
plain torch ops, instead (``rnnkit.ops._wiring``). float64
``gradgradcheck`` over input, initial state and every parameter, on a padded bidirectional
batch; and the gradient-penalty pattern written for torch.nn runs unchanged on the façades
with torch's numbers.
"""

import pytest
import torch
from kernel_checks import graph_names
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import rnnkit
from rnnkit.cells.base import state_leaves
from rnnkit.kernels import fused_scan

F64 = torch.float64
I, H, T, N = 2, 3, 3, 2
LENGTHS = torch.tensor([3, 2])

# name -> (cell, options)
CELLS = {
    "elman": ("elman", {}),
    "elman_relu": ("elman", {"nonlinearity": "relu"}),
    "irnn": ("irnn", {}),
    "lstm": ("lstm", {}),
    "lstm_proj": ("lstm", {"proj_size": 2}),
    "lstm_peephole": ("lstm", {"peephole": "diagonal"}),
    "lstm_peephole_full": ("lstm", {"peephole": "full", "cell_activation": "identity"}),
    "gru": ("gru", {}),
    "gru_nobias": ("gru", {"bias": False}),
    "jordan": ("jordan", {"output_size": 2}),
    "jordan_softmax": ("jordan", {"output_size": 2, "output_activation": "softmax"}),
    "fully": ("fully", {"output_size": 2}),
    "clockwork": ("clockwork", {"periods": (1, 2, 4)}),
    "scrn": ("scrn", {"context_size": 2, "learn_alpha": True}),
    "scrn_fixed": ("scrn", {"context_size": 2}),
    "ctrnn": ("ctrnn", {"activation": "tanh"}),
}
PATHS = {"native": {"native": True}, "fused": {"native": False, "fused": True},
         "scan": {"native": False, "fused": False}}


def build(name, path):
    cell, opts = CELLS[name]
    opts = dict(opts)
    bias = opts.pop("bias", True)
    torch.manual_seed(0)
    return rnnkit.RecurrentNetwork(cell, I, H, bidirectional=True, bias=bias, dtype=F64,
                                   **PATHS[path], **opts)


def runs(name, path) -> bool:
    """Whether ``path`` is a path of its own for this cell (else it would repeat another)."""
    net = build(name, "scan")
    first = net._cells()[0][2]
    if path == "native":
        return first.native_mode() is not None
    if path == "fused":
        return fused_scan(first) is not None
    return True


CASES = [(n, p) for n in CELLS for p in PATHS if runs(n, p)]


def inputs(net, seed=1):
    gen = torch.Generator().manual_seed(seed)
    first = net._cells()[0][2]
    x = torch.randn(T, N, I, dtype=F64, generator=gen).requires_grad_()
    hx = [(0.5 * torch.randn(2, N, s, dtype=F64, generator=gen)).requires_grad_()
          for s in state_leaves(first.state_size)]
    if isinstance(first.state_size, tuple) and hasattr(first.state_size, "t"):  # clockwork
        hx[-1] = torch.zeros(2, N, 1, dtype=F64)  # the step counter, not differentiable
    return x, hx


def as_function(net, n_hx: int, hx_fixed):
    """``f(x, *hx_diff, *params) -> (output, *h_n leaves)`` through torch.func."""
    names = [n for n, _ in net.named_parameters()]

    def f(x, *rest):
        hx = list(rest[:n_hx]) + hx_fixed
        params = dict(zip(names, rest[n_hx:], strict=True))
        hx = hx[0] if len(hx) == 1 else tuple(hx)
        out, h_n = torch.func.functional_call(net, params, (x, hx), {"lengths": LENGTHS})
        return (out, *(h_n if isinstance(h_n, tuple) else (h_n,)))

    return f


@pytest.mark.parametrize("name, path", CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_gradgradcheck(name, path):
    net = build(name, path)
    x, hx = inputs(net)
    diff = [h for h in hx if h.requires_grad]
    fixed = [h for h in hx if not h.requires_grad]
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    f = as_function(net, len(diff), fixed)
    if path == "fused":  # the fused kernel really is what runs
        names = graph_names(f(x, *diff, *params)[0])
        assert any(n.endswith("SequenceBackward") or "rnnkit_" in n for n in names), names
    args = (x, *diff, *params)
    assert gradcheck(f, args, fast_mode=True)
    assert gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("name", ["gru", "lstm_peephole", "jordan", "clockwork"])
def test_gradgradcheck_full_mode_on_the_fused_kernels(name):
    """The full (not random-projection) check on a few kernels, unidirectional, padded."""
    cell, opts = CELLS[name]
    opts = {**opts, "periods": (1, 2)} if cell == "clockwork" else opts
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(cell, I, 2, dtype=F64, native=False, **opts)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(T, N, I, dtype=F64, generator=gen).requires_grad_()
    names = [n for n, _ in net.named_parameters()]

    def f(x, *params):
        out, _ = torch.func.functional_call(net, dict(zip(names, params, strict=True)), (x,),
                                            {"lengths": LENGTHS})
        return out

    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    assert gradgradcheck(f, (x, *params))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
def test_gradient_penalty_as_written_for_torch(kind, train):
    """``grad(..., create_graph=True)`` then ``.backward()``: torch.nn's numbers, in train and
    eval mode (rnnkit.GRU runs its fused kernel on the CPU whenever it records)."""
    torch.manual_seed(0)
    twin = getattr(nn, kind)(I, H, num_layers=2, dtype=F64)
    ours = getattr(rnnkit, kind)(I, H, num_layers=2, dtype=F64)
    ours.load_state_dict(twin.state_dict())
    grads = []
    for net in (twin, ours):
        net.train(train)
        x = torch.randn(T, N, I, dtype=F64, generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        out, _ = net(x)
        (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        penalty = g.pow(2).sum()
        penalty.backward()
        assert all(p.grad is not None for p in net.parameters())
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_allow_unused_no_longer_hides_the_dependence():
    """The case the issue names: the gradient of a gradient w.r.t. a weight is a tensor, not
    None (a once-differentiable backward gave None, an all-zero Jacobian)."""
    torch.manual_seed(0)
    net = rnnkit.GRU(I, H, dtype=F64)
    x = torch.randn(T, N, I, dtype=F64, requires_grad=True)
    out, _ = net(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(g.pow(2).sum(), net.weight_hh_l0, allow_unused=True)
    assert gw is not None and gw.abs().sum() > 0


@pytest.mark.parametrize("path", ["fused", "scan"])
def test_gradgradcheck_ctrnn_with_per_step_dt(path):
    """Irregular sampling: Δt per step rides in the kernel's input, and is differentiated too."""
    torch.manual_seed(0)
    net = rnnkit.CTRNN(I, H, bidirectional=True, dt=None, dtype=F64, **PATHS[path])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(T, N, I, dtype=F64, generator=gen).requires_grad_()
    dt = (torch.rand(T, N, dtype=F64, generator=gen) + 0.2).requires_grad_()
    names = [n for n, _ in net.named_parameters()]

    def f(x, dt, *params):
        out, h_n = torch.func.functional_call(net, dict(zip(names, params, strict=True)), (x,),
                                              {"lengths": LENGTHS, "dt": dt})
        return out, h_n

    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    assert gradgradcheck(f, (x, dt, *params), fast_mode=True)
