"""The fused Clockwork and CTRNN kernels equal rnnkit.scan, values and gradients, every option."""

import pytest
import torch

from rnnkit import scan
from rnnkit.cells.clockwork import ClockworkCell, ClockworkState
from rnnkit.cells.ctrnn import CTRNNCell
from rnnkit.kernels.clockwork import _plan, clockwork_sequence
from rnnkit.kernels.ctrnn import ctrnn_sequence
from rnnkit.ops.clockwork import clockwork_sequence as clockwork_op
from rnnkit.ops.ctrnn import ctrnn_sequence as ctrnn_op

T, N, I = 7, 4, 3
F64 = torch.float64
LENGTHS = {"full": None, "ragged": [T, 2, T - 1, 1]}


def _randomize(cell, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():  # larger than the init, masked-out clockwork entries included
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def _max_diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _compare(cell, xs, state, lengths, reverse, fused):
    """Outputs, final state and every gradient (upstream random on ys and every final leaf)."""
    lengths = None if lengths is None else torch.tensor(lengths)
    leaves = list(state) if isinstance(state, tuple) else [state]
    wrt = [xs, *leaves, *cell.parameters()]
    ys, s = scan(cell, xs, state, reverse=reverse, lengths=lengths)
    ys2, s2 = fused(cell, xs, state, reverse=reverse, lengths=lengths)
    assert type(s2) is type(s)
    out = [ys, *(s if isinstance(s, tuple) else [s])]
    out2 = [ys2, *(s2 if isinstance(s2, tuple) else [s2])]
    for a, b in zip(out, out2, strict=True):
        assert _max_diff(a, b) < 1e-10
    if lengths is not None:  # padded outputs are exactly zero
        assert (ys2[2:, 1] == 0).all() and (ys2[1:, 3] == 0).all()
    g = torch.Generator().manual_seed(2)
    ups = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in out]
    ref = torch.autograd.grad(sum((a * u).sum() for a, u in zip(out, ups, strict=True)), wrt)
    got = torch.autograd.grad(sum((a * u).sum() for a, u in zip(out2, ups, strict=True)), wrt)
    names = ["xs", *(f"state{i}" for i in range(len(leaves))),
             *(n for n, _ in cell.named_parameters())]
    for n, a, b in zip(names, ref, got, strict=True):
        assert _max_diff(a, b) < 1e-10, n
    return ref


# ---------------------------------------------------------------------------- Clockwork

CW_OPTIONS = {
    "pow2-tanh": ((1, 2, 4, 8), 8, {}),
    "pow2-sigmoid": ((1, 2, 4, 8), 8, {"activation": "sigmoid"}),
    "pow2-relu-nobias": ((1, 2, 4, 8), 8, {"activation": "relu", "bias": False}),
    "pow2-identity": ((1, 2, 4), 6, {"activation": "identity"}),
    "coprime-tanh": ((2, 3), 6, {}),  # the active modules are not a prefix; some steps none
    "135-relu": ((1, 3, 5), 6, {"activation": "relu"}),
    "one-module": ((1,), 3, {"activation": "sigmoid"}),
}
# the initial counters: fresh (the fast path), uniform non-zero (fast, other phase),
# per-sample (the full path; 3.2 rounds to 3)
T0 = {"zero": [0.0] * N, "uniform": [3.0] * N, "mixed": [0.0, 3.2, 5.0, 2.0]}


def _cw(name, dtype=F64):
    periods, H, kw = CW_OPTIONS[name]
    return _randomize(ClockworkCell(I, H, periods=periods, dtype=dtype, **kw))


def _cw_inputs(cell, t0, seed=1):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(T, N, I, dtype=F64, generator=g).requires_grad_()
    h0 = torch.randn(N, cell.hidden_size, dtype=F64, generator=g).requires_grad_()
    t0 = torch.tensor(T0[t0], dtype=F64).unsqueeze(1).requires_grad_()
    return xs, ClockworkState(h0, t0)


@pytest.mark.parametrize("name", CW_OPTIONS)
@pytest.mark.parametrize("t0", T0)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_clockwork_equals_scan(name, t0, lengths, reverse):
    cell = _cw(name)
    xs, state = _cw_inputs(cell, t0)
    ref = _compare(cell, xs, state, LENGTHS[lengths], reverse, clockwork_sequence)
    assert (ref[2] != 0).all()  # the counter's gradient passes straight through (nonzero)
    mask_grad = ref[4]  # weight_hh: zero outside the block upper-triangular mask
    assert (mask_grad[cell.mask == 0] == 0).all()


def test_clockwork_plan_fast_and_full_steps():
    cell = _cw("pow2-tanh")
    args = (cell.unit_periods, cell.periods, T)
    fresh = torch.zeros(N, 1, dtype=F64)
    plan = _plan(fresh, *args, False, None)
    assert plan.active is None
    # counters 0..6: modules of periods 1, 2, 4, 8 active as a prefix of units (2 a module)
    assert [rs[0][1] for rs in plan.runs] == [8, 2, 4, 2, 6, 2, 4]
    mixed = torch.tensor(T0["mixed"], dtype=F64).unsqueeze(1)
    plan = _plan(mixed, *args, False, None)
    assert plan.runs == [None] * T and plan.active.shape == (T, N, 8)
    # ragged, forward: every step but the partial ones is fast; reverse: none is
    valid = torch.arange(T).unsqueeze(1) < torch.tensor(LENGTHS["ragged"])
    assert [r is None for r in _plan(fresh, *args, False, valid).runs] == [False] + [True] * 6
    assert _plan(fresh, *args, True, valid).runs == [None] * T


@pytest.mark.parametrize("t0", ["uniform", "mixed"])
def test_clockwork_gradcheck(t0):
    cell = _cw("coprime-tanh")
    us = torch.randn(4, 3, 6, dtype=F64, requires_grad=True)
    h0 = torch.randn(3, 6, dtype=F64, requires_grad=True)
    t0 = torch.tensor(T0[t0][:3], dtype=F64).unsqueeze(1).requires_grad_()
    w = cell.weight_hh.detach().clone().requires_grad_()
    b = cell.bias_hh.detach().clone().requires_grad_()
    valid = torch.arange(4).unsqueeze(1) < torch.tensor([4, 2, 1])
    for v in (None, valid):
        for reverse in (False, True):
            def f(us, h0, t0, w, b, reverse=reverse, v=v):
                return clockwork_op(us, h0, t0, w, b, v, list(cell.periods), "tanh", reverse)
            assert torch.autograd.gradcheck(f, (us, h0, t0, w, b))


def test_clockwork_state_none_inference_partial_grads():
    cell = _cw("pow2-sigmoid")
    xs, _ = _cw_inputs(cell, "zero")
    ys, (h, t) = scan(cell, xs)
    ys2, (h2, t2) = clockwork_sequence(cell, xs)
    assert _max_diff(ys, ys2) < 1e-10 and _max_diff(h, h2) < 1e-10 and (t2 == T).all()
    with torch.no_grad():
        ys3, (h3, t3) = clockwork_sequence(cell, xs, lengths=torch.tensor([T, 2, 3, 1]))
    assert ys3.grad_fn is None and h3.grad_fn is None
    ref, (hr, tr) = scan(cell, xs, lengths=torch.tensor([T, 2, 3, 1]))
    assert _max_diff(ys3, ref) < 1e-10 and _max_diff(h3, hr) < 1e-10
    assert t3.flatten().tolist() == [T, 2, 3, 1] == tr.flatten().tolist()
    # only xs and weight_hh require grad
    cell.bias_ih.requires_grad_(False)
    cell.bias_hh.requires_grad_(False)
    cell.weight_ih.requires_grad_(False)
    ys, _ = scan(cell, xs)
    ys2, _ = clockwork_sequence(cell, xs)
    ref = torch.autograd.grad(ys.square().sum(), (xs, cell.weight_hh))
    got = torch.autograd.grad(ys2.square().sum(), (xs, cell.weight_hh))
    assert all(_max_diff(a, b) < 1e-10 for a, b in zip(ref, got, strict=True))
    # no tensor requires grad at all: the forward alone, without a graph
    xs = xs.detach()
    for p in cell.parameters():
        p.requires_grad_(False)
    ys, _ = clockwork_sequence(cell, xs)
    assert ys.grad_fn is None


def test_clockwork_float32_and_errors():
    torch.manual_seed(0)
    cell = ClockworkCell(I, 8)
    xs = torch.randn(T, N, I)
    state = ClockworkState(torch.randn(N, 8), torch.tensor([[0.0], [1.0], [2.0], [5.0]]))
    for s in (None, state):
        ys, (h, t) = scan(cell, xs, s, reverse=True)
        ys2, (h2, t2) = clockwork_sequence(cell, xs, s, reverse=True)
        assert _max_diff(ys, ys2) < 1e-5 and _max_diff(h, h2) < 1e-5 and (t == t2).all()
    with pytest.raises(ValueError, match="state"):
        clockwork_sequence(cell, xs, ClockworkState(torch.zeros(N, 9), torch.zeros(N, 1)))
    with pytest.raises(ValueError, match="xs"):
        clockwork_sequence(cell, xs.double())
    with pytest.raises(TypeError, match="ClockworkCell"):
        clockwork_sequence(CTRNNCell(I, 8), xs)


# ---------------------------------------------------------------------------- CTRNN

H_CT = 6
CT_OPTIONS = {
    "tanh": {"dt": 0.3},
    "tanh-default": {},  # dt = tau: the non-leaky step
    "sigmoid": {"activation": "sigmoid", "dt": 0.5, "tau_init": 2.0},
    "relu-nobias": {"activation": "relu", "bias": False, "dt": 0.7},
    "identity": {"activation": "identity", "dt": 0.2},
    "dt_input-tanh": {"dt_input": True},
    "dt_input-sigmoid": {"dt_input": True, "activation": "sigmoid"},
    "dt_input-relu-nobias": {"dt_input": True, "activation": "relu", "bias": False},
    "dt_input-identity": {"dt_input": True, "activation": "identity"},
}


def _ct(name, dtype=F64):
    kw = CT_OPTIONS[name]
    cell = _randomize(CTRNNCell(I + kw.get("dt_input", False), H_CT, dtype=dtype, **kw))
    with torch.no_grad():  # time constants around 1, per unit
        cell.log_tau.uniform_(-0.5, 0.5)
    return cell


def _ct_inputs(cell, lengths=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(T, N, cell.input_size, dtype=F64, generator=g)
    if cell.dt_input:
        xs[:, :, -1] = torch.rand(T, N, dtype=F64, generator=g) * 0.6 + 0.05
        if lengths is not None:  # a padded step may hold dt = 0
            xs[:, :, -1].masked_fill_(torch.arange(T).unsqueeze(1) >= torch.tensor(lengths), 0)
    h0 = torch.randn(N, H_CT, dtype=F64, generator=g)
    return xs.requires_grad_(), h0.requires_grad_()


@pytest.mark.parametrize("name", CT_OPTIONS)
@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_ctrnn_equals_scan(name, lengths, reverse):
    cell = _ct(name)
    xs, h0 = _ct_inputs(cell, LENGTHS[lengths])
    ref = _compare(cell, xs, h0, LENGTHS[lengths], reverse, ctrnn_sequence)
    if cell.dt_input:  # the dt channel gets a gradient (zero at padded steps)
        assert (ref[0][0, :, -1] != 0).all()
        if lengths == "ragged":
            assert (ref[0][2:, 1, -1] == 0).all()


@pytest.mark.parametrize("dt_input", [False, True])
def test_ctrnn_gradcheck(dt_input):
    Tg, Ng, Hg = 4, 3, 4
    torch.manual_seed(0)
    us = torch.randn(Tg, Ng, Hg + dt_input, dtype=F64)
    if dt_input:
        us[:, :, -1] = torch.rand(Tg, Ng, dtype=F64) + 0.1
    us.requires_grad_()
    h0 = torch.randn(Ng, Hg, dtype=F64, requires_grad=True)
    w = (torch.rand(Hg, Hg, dtype=F64) * 1.6 - 0.8).requires_grad_()
    log_tau = (torch.rand(Hg, dtype=F64) - 0.5).requires_grad_()
    valid = torch.arange(Tg).unsqueeze(1) < torch.tensor([Tg, 2, 1])
    for act in ("tanh", "identity"):
        for reverse in (False, True):
            def f(us, h0, w, log_tau, act=act, reverse=reverse):
                return ctrnn_op(us, h0, w, log_tau, valid, 0.4, dt_input, act, reverse)
            assert torch.autograd.gradcheck(f, (us, h0, w, log_tau))


def test_ctrnn_state_none_inference_partial_grads():
    cell = _ct("sigmoid")
    xs, _ = _ct_inputs(cell)
    ys, h = scan(cell, xs)
    ys2, h2 = ctrnn_sequence(cell, xs)
    assert _max_diff(ys, ys2) < 1e-10 and _max_diff(h, h2) < 1e-10
    lengths = torch.tensor([T, 2, 3, 1])
    with torch.no_grad():
        ys3, h3 = ctrnn_sequence(cell, xs, lengths=lengths, reverse=True)
    assert ys3.grad_fn is None and h3.grad_fn is None
    ref, hr = scan(cell, xs, lengths=lengths, reverse=True)
    assert _max_diff(ys3, ref) < 1e-10 and _max_diff(h3, hr) < 1e-10
    # only log_tau requires grad
    for p in cell.parameters():
        p.requires_grad_(p is cell.log_tau)
    xs = xs.detach()
    ys, h = scan(cell, xs, lengths=lengths)
    ys2, h2 = ctrnn_sequence(cell, xs, lengths=lengths)
    (ref,) = torch.autograd.grad(ys.square().sum() + h.sum(), cell.log_tau)
    (got,) = torch.autograd.grad(ys2.square().sum() + h2.sum(), cell.log_tau)
    assert _max_diff(ref, got) < 1e-10


def test_ctrnn_float32_and_errors():
    torch.manual_seed(0)
    for kw in ({}, {"dt_input": True, "activation": "relu"}):
        cell = CTRNNCell(I + 1, 8, **kw)
        xs = torch.rand(T, N, I + 1)
        h0 = torch.randn(N, 8)
        ys, h = scan(cell, xs, h0, lengths=torch.tensor([T, 3, 1, 5]))
        ys2, h2 = ctrnn_sequence(cell, xs, h0, lengths=torch.tensor([T, 3, 1, 5]))
        assert _max_diff(ys, ys2) < 1e-5 and _max_diff(h, h2) < 1e-5
    with pytest.raises(ValueError, match="state"):
        ctrnn_sequence(cell, xs, torch.zeros(N, 9))
    with pytest.raises(ValueError, match="xs"):
        ctrnn_sequence(cell, xs[:, :, :-1])
    with pytest.raises(ValueError, match="lengths"):
        ctrnn_sequence(cell, xs, lengths=[T + 1, 1, 1, 1])
    with pytest.raises(TypeError, match="CTRNNCell"):
        ctrnn_sequence(ClockworkCell(I + 1, 8), xs)
