"""Regularizers (recurrent dropout, zoneout, weight drop, variational dropout) and the chrono
initialisation, checked against the equations of :mod:`rnnkit.regularize`.

- ``scan`` with masks equals a naive loop written here from each cell's docstring equations
  (float64, 1e-12), forward and reverse, padded or not, training draws and the evaluation
  expectation;
- every façade: the fused path equals the reference path under one seed (outputs, final states,
  gradients); off means bit-identical to a network built without the options; seeds reproduce;
  the masks are drawn in the documented order;
- the masks' shapes and values, weight drop against a hand-dropped weight, locked and sequence
  dropout, errors naming the option, chrono biases, gradcheck, streaming in eval, config.
"""

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from kernel_checks import gen, graph_names, randn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import kernels, scan
from rnnkit.cells import (
    ClockworkCell,
    CTRNNCell,
    ElmanCell,
    FullyRecurrentCell,
    GRUCell,
    IndRNNCell,
    JordanCell,
    LSTMCell,
    MinGRUCell,
    MinLSTMCell,
    SCRNCell,
)
from rnnkit.cells.base import bind, state_from_leaves, state_leaves
from rnnkit.config import Config
from rnnkit.errors import ConfigError
from rnnkit.kernels import fused_scan
from rnnkit.regularize import (
    Masks,
    Regularizers,
    SequenceDropout,
    bernoulli,
    locked_dropout,
    zone_merge,
    zoned_sizes,
)
from rnnkit.tasks.base import recurrent_from_config, regularizer_options

F64 = torch.float64
T, N, I, H = 5, 4, 3, 6
LENGTHS = torch.tensor([5, 2, 4, 1])
TIGHT = {"atol": 1e-12, "rtol": 1e-12}
CLOSE = {"atol": 1e-10, "rtol": 1e-10}


# ---- cells and their equations, naively -------------------------------------------------------

CELLS = {
    "elman-tanh": (ElmanCell, {}),
    "elman-relu": (ElmanCell, {"nonlinearity": "relu"}),
    "gru": (GRUCell, {}),
    "lstm": (LSTMCell, {}),
    "lstm-diagonal": (LSTMCell, {"peephole": "diagonal"}),
    "lstm-full": (LSTMCell, {"peephole": "full"}),
    "lstm-proj": (LSTMCell, {"proj_size": 4}),
    "jordan": (JordanCell, {"output_size": 4}),
    "fully": (FullyRecurrentCell, {"output_size": 4}),
    "clockwork": (ClockworkCell, {"periods": (1, 2, 3)}),
    "scrn": (SCRNCell, {"context_size": 4}),
    "scrn-learned": (SCRNCell, {"context_size": 4, "learn_alpha": True, "alpha": 0.7}),
    "ctrnn": (CTRNNCell, {"dt": 0.5}),
    "indrnn": (IndRNNCell, {}),
    "indrnn-tanh": (IndRNNCell, {"nonlinearity": "tanh"}),
    "mingru": (MinGRUCell, {}),
    "minlstm": (MinLSTMCell, {}),
}


def make_cell(name, seed=0, hidden=H, inputs=I):
    """A float64 cell with every parameter U(-0.8, 0.8) (nothing trivially small); narrower
    than H, its other sizes are 2."""
    cls, opts = CELLS[name]
    if hidden < H:
        opts = {k: 2 if k in ("proj_size", "output_size", "context_size") else v
                for k, v in opts.items()}
    torch.manual_seed(seed)
    cell = cls(inputs, hidden, dtype=F64, **opts)
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def make_state(cell, n=N, seed=2):
    """Random state leaves (N, size); a clockwork counter gets whole step counts."""
    leaves = []
    for i, size in enumerate(state_leaves(cell.state_size)):
        if isinstance(cell, ClockworkCell) and i == 1:
            leaves.append(torch.arange(n, dtype=F64).mul(3).remainder(7).unsqueeze(1))
        else:
            leaves.append(randn(n, size, seed=seed + i))
    return leaves


def sig(z):
    return 1 / (1 + torch.exp(-z))


def lin(x, w, b=None):
    return x @ w.T + (0 if b is None else b)


def naive_step(cell, x, s, m):
    """The cell's new state (a list of leaves) from its docstring equations, with the recurrent
    dropout mask ``m`` on the state entering the recurrent weight product only."""
    p = dict(cell.named_parameters())
    b = {k: v for k, v in p.items() if "bias" in k}
    if isinstance(cell, ElmanCell):
        phi = torch.tanh if cell.nonlinearity == "tanh" else (lambda z: z.clamp(min=0))
        (h,) = s
        return [phi(lin(x, p["weight_ih"], b["bias_ih"])
                    + lin(m * h, p["weight_hh"], b["bias_hh"]))]
    if isinstance(cell, GRUCell):
        (h,) = s
        Wi, Wh = p["weight_ih"].chunk(3), p["weight_hh"].chunk(3)
        bi, bh = p["bias_ih"].chunk(3), p["bias_hh"].chunk(3)
        r = sig(lin(x, Wi[0], bi[0]) + lin(m * h, Wh[0], bh[0]))
        z = sig(lin(x, Wi[1], bi[1]) + lin(m * h, Wh[1], bh[1]))
        n = torch.tanh(lin(x, Wi[2], bi[2]) + r * lin(m * h, Wh[2], bh[2]))
        return [(1 - z) * n + z * h]  # z h_{t-1}: the carried h, not dropped
    if isinstance(cell, LSTMCell):
        h, c = s
        Hc = cell.hidden_size
        pre = lin(x, p["weight_ih"], b["bias_ih"]) + lin(m * h, p["weight_hh"], b["bias_hh"])
        zi, zf, zg, zo = pre.split(Hc, dim=1)
        if cell.peephole == "diagonal":
            pi, pf, po = p["weight_peephole"].split(Hc)
            i, f = sig(zi + pi * c), sig(zf + pf * c)
            c_new = f * c + i * torch.tanh(zg)
            o = sig(zo + po * c_new)
        elif cell.peephole == "full":
            Pi, Pf, Po = p["weight_ch"].split(Hc)
            i, f = sig(zi + lin(c, Pi)), sig(zf + lin(c, Pf))
            c_new = f * c + i * torch.tanh(zg)
            o = sig(zo + lin(c_new, Po))
        else:
            i, f, o = sig(zi), sig(zf), sig(zo)
            c_new = f * c + i * torch.tanh(zg)
        h_new = o * torch.tanh(c_new)
        if cell.proj_size:
            h_new = lin(h_new, p["weight_hr"])
        return [h_new, c_new]
    if isinstance(cell, JordanCell):
        (y,) = s
        h = torch.tanh(lin(x, p["weight_ih"], b["bias_ih"]) + lin(m * y, p["weight_yh"],
                                                                   b["bias_yh"]))
        return [torch.tanh(lin(h, p["weight_hy"], b["bias_hy"]))]
    if isinstance(cell, FullyRecurrentCell):
        mm = m * torch.cat(s, dim=1)  # [h; y]_{t-1}, dropped in both products
        h = torch.tanh(lin(x, p["weight_ih"], b["bias_ih"]) + lin(mm, p["weight_mh"]))
        y = torch.tanh(lin(h, p["weight_hy"], b["bias_hy"]) + lin(mm, p["weight_my"]))
        return [h, y]
    if isinstance(cell, ClockworkCell):
        h, t = s
        g, Hc = len(cell.periods), cell.hidden_size
        period = torch.tensor(cell.periods, dtype=F64).repeat_interleave(Hc // g)  # (H,)
        reads = (period.unsqueeze(0) >= period.unsqueeze(1)).to(F64)  # T_j >= T_k
        cand = torch.tanh(lin(x, p["weight_ih"], b["bias_ih"])
                          + lin(m * h, p["weight_hh"] * reads, b["bias_hh"]))
        active = torch.remainder(t, period) == 0  # (N, H)
        return [torch.where(active, cand, h), t + 1]
    if isinstance(cell, SCRNCell):
        h, s_ctx = s
        alpha = (cell.alpha_init if not cell.learn_alpha else sig(p["alpha_logit"]))
        s_new = (1 - alpha) * lin(x, p["weight_B"]) + alpha * s_ctx
        h_new = sig(lin(s_new, p["weight_P"]) + lin(x, p["weight_A"]) + lin(m * h, p["weight_R"])
                    + p["bias"])
        return [h_new, s_new]
    if isinstance(cell, IndRNNCell):
        phi = torch.tanh if cell.nonlinearity == "tanh" else (lambda z: z.clamp(min=0))
        (h,) = s
        return [phi(lin(x, p["weight_ih"], b["bias_ih"]) + p["weight_hh"] * (m * h))]
    if isinstance(cell, (MinGRUCell, MinLSTMCell)):  # no recurrent product: m drops the candidate
        (h,) = s
        Hc = cell.hidden_size
        u = lin(x, p["weight_ih"], b["bias_ih"])
        cand = torch.where(u[:, -Hc:] >= 0, u[:, -Hc:] + 0.5, sig(u[:, -Hc:]))
        if isinstance(cell, MinLSTMCell):
            f, i = sig(u[:, :Hc]), sig(u[:, Hc : 2 * Hc])
            return [f / (f + i) * h + i / (f + i) * (m * cand)]
        z = sig(u[:, :Hc])
        return [(1 - z) * h + z * (m * cand)]
    if isinstance(cell, CTRNNCell):
        (h,) = s
        a = cell.dt / torch.exp(p["log_tau"])
        drive = lin(m * torch.tanh(h), p["weight_hh"]) + lin(x, p["weight_ih"], p["bias"])
        return [(1 - a) * h + a * drive]
    raise AssertionError(type(cell))


def naive_output(cell, s):
    """The step's output from its (zoned) state."""
    if isinstance(cell, FullyRecurrentCell):
        return s[1]
    if isinstance(cell, SCRNCell):
        return torch.cat(s, dim=1)
    if isinstance(cell, CTRNNCell):
        return torch.tanh(s[0])
    return s[0]


def naive_scan(cell, xs, s, drop, zone, reverse=False, lengths=None):
    """ys and the final state leaves: s_t = d s_{t-1} + (1 - d) s~_t on the zoned leaves (all
    but a clockwork counter); past a length the state is carried and the output zero."""
    m = 1.0 if drop is None else drop
    zoned = [i for i in range(len(s)) if not (isinstance(cell, ClockworkCell) and i == 1)]
    ys = [None] * xs.shape[0]
    for t in (reversed(range(xs.shape[0])) if reverse else range(xs.shape[0])):
        new = naive_step(cell, xs[t], s, m)
        if zone is not None:
            col, merged = 0, []
            for i, (a, old) in enumerate(zip(new, s, strict=True)):
                if i in zoned:
                    d = zone[t][:, col : col + a.shape[1]]
                    col += a.shape[1]
                    a = d * old + (1 - d) * a
                merged.append(a)
            new = merged
        y = naive_output(cell, new)
        if lengths is not None:
            valid = (t < lengths).unsqueeze(1)
            y = torch.where(valid, y, torch.zeros_like(y))
            new = [torch.where(valid, a, old) for a, old in zip(new, s, strict=True)]
        ys[t], s = y, new
    return torch.stack(ys), s


def random_masks(cell, kind, seed=5, n=N, steps=T):
    """``Masks`` for ``kind``: "both" (a scaled drop mask and 0/1 zone weights), "drop",
    "zone", or "eval" (zone = p everywhere, no drop)."""
    g = gen(seed)
    R, S = cell.recurrent_input_size, sum(zoned_sizes(cell))
    drop = (torch.rand(n, R, generator=g) < 0.7).to(F64) / 0.7
    zone = (torch.rand(steps, n, S, generator=g) < 0.4).to(F64)
    if kind == "eval":
        return Masks(None, torch.full((steps, n, S), 0.3, dtype=F64), False)
    return Masks(drop if kind != "zone" else None, zone if kind != "drop" else None, True)


# ---- 1. scan with masks == the equations --------------------------------------------------------


@pytest.mark.parametrize("kind", ["both", "drop", "zone", "eval"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("name", list(CELLS))
def test_scan_with_masks_follows_the_equations(name, reverse, lengths, kind):
    cell = make_cell(name)
    xs = randn(T, N, I)
    state = make_state(cell)
    masks = random_masks(cell, kind)
    want_y, want_s = naive_scan(cell, xs, state, masks.drop, masks.zone, reverse, lengths)
    ys, fin = scan(cell, xs, state_from_leaves(cell.state_size, state), reverse=reverse,
                   lengths=lengths, masks=masks)
    torch.testing.assert_close(ys, want_y, **TIGHT)
    for a, b in zip(state_leaves(fin), want_s, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)
    if lengths is not None:  # padded steps: output exactly zero
        for n, length in enumerate(LENGTHS.tolist()):
            assert (ys[length:, n] == 0).all()


@pytest.mark.parametrize("name", ["gru", "lstm-proj", "fully", "scrn"])
def test_masks_change_what_scan_computes(name):
    """Each mask alone changes the outputs (the naive comparison is not vacuous)."""
    cell = make_cell(name)
    xs, state = randn(T, N, I), state_from_leaves(cell.state_size, make_state(cell))
    plain = scan(cell, xs, state)[0]
    for kind in ("drop", "zone", "eval"):
        got = scan(cell, xs, state, masks=random_masks(cell, kind))[0]
        assert (got - plain).abs().max() > 1e-3, kind


def test_all_ones_drop_and_zero_zone_are_the_plain_scan():
    cell = make_cell("lstm-diagonal")
    xs, state = randn(T, N, I), state_from_leaves(cell.state_size, make_state(cell))
    masks = Masks(torch.ones(N, cell.recurrent_input_size, dtype=F64),
                  torch.zeros(T, N, sum(zoned_sizes(cell)), dtype=F64), True)
    want = scan(cell, xs, state, lengths=LENGTHS)
    got = scan(cell, xs, state, lengths=LENGTHS, masks=masks)
    for a, b in zip(state_leaves(got), state_leaves(want), strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


def test_zone_merge_keeps_old_where_d_is_one_and_leaves_the_counter():
    cell = make_cell("clockwork")
    old, new = make_state(cell, seed=3), make_state(cell, seed=7)
    new[1] = old[1] + 1
    d = torch.zeros(N, H, dtype=F64)
    d[:, ::2] = 1
    h, t = zone_merge(cell, state_from_leaves(cell.state_size, new),
                      state_from_leaves(cell.state_size, old), d)
    assert torch.equal(h[:, ::2], old[0][:, ::2]) and torch.equal(h[:, 1::2], new[0][:, 1::2])
    assert torch.equal(t, new[1])


# ---- 2. networks: fused path == reference path, every façade ---------------------------------

FACADES = {
    "RNN": (rnnkit.RNN, {}),
    "RNN-relu": (rnnkit.RNN, {"nonlinearity": "relu"}),
    "IRNN": (rnnkit.IRNN, {}),
    "LSTM": (rnnkit.LSTM, {}),
    "LSTM-proj": (rnnkit.LSTM, {"proj_size": 3}),
    "LSTM-peephole": (rnnkit.LSTM, {"peephole": "diagonal"}),
    "GRU": (rnnkit.GRU, {}),
    "Jordan": (rnnkit.Jordan, {"output_size": 3}),
    "FullyRecurrent": (rnnkit.FullyRecurrent, {"output_size": 3}),
    "Clockwork": (rnnkit.Clockwork, {"periods": (1, 2)}),
    "SCRN": (rnnkit.SCRN, {"context_size": 2}),
    "CTRNN": (rnnkit.CTRNN, {"dt": 0.5}),
    "CTRNN-dt": (rnnkit.CTRNN, {"dt": None}),
    "IndRNN": (rnnkit.IndRNN, {}),
    "MinGRU": (rnnkit.MinGRU, {}),
    "MinLSTM": (rnnkit.MinLSTM, {}),
}
NO_RECURRENT_WEIGHT = {"MinGRU", "MinLSTM"}  # (weight_drop is refused: nothing to drop)
ALL = {"recurrent_dropout": 0.3, "zoneout": 0.2, "weight_drop": 0.25, "dropout": 0.2,
       "dropout_mode": "variational"}
REGS = {
    "all": ALL,
    "weight_drop": {"weight_drop": 0.25},  # the fused kernels run, with the dropped weights
    "variational": {"dropout": 0.3, "dropout_mode": "variational"},
}
NH = 4  # the networks' hidden size


def facade(name, seed=0, layers=2, bidirectional=True, **options):
    cls, opts = FACADES[name]
    if name in NO_RECURRENT_WEIGHT:
        options.pop("weight_drop", None)
    torch.manual_seed(seed)
    return cls(I, NH, num_layers=layers, bidirectional=bidirectional, dtype=F64,
               **opts, **options)


def run(net, x, lengths=None, **kw):
    """``net(x, lengths=...)``; a CTRNN built with dt=None gets a Δt per step."""
    if isinstance(net, rnnkit.CTRNN) and net.dt is None:
        kw["dt"] = torch.rand(x.shape[:-1], dtype=F64, generator=gen(9)) + 0.2
    return net(x, lengths=lengths, **kw)


def forward_backward(net, x, lengths, seed):
    """Seeded forward (training mode) and backward: outputs, final state leaves, and the
    gradients of x and every parameter (by name)."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    out, fin = run(net, x, lengths)
    leaves = state_leaves(fin)
    loss = sum((o * randn(*o.shape, seed=10 + i)).sum() for i, o in enumerate([out, *leaves]))
    names = [n for n, _ in net.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *net.parameters()], allow_unused=True)
    return out, leaves, dict(zip(["x", *names], grads, strict=True))


def twins(name, **options):
    """The same network on the fused path (native=False) and on the reference path."""
    fused = facade(name, native=False, fused=True, **options)
    ref = facade(name, seed=1, native=False, fused=False, **options)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


@pytest.mark.parametrize("regs", list(REGS))
@pytest.mark.parametrize("name", list(FACADES))
def test_fused_equals_reference_under_a_seed(name, regs):
    if regs == "weight_drop" and name in NO_RECURRENT_WEIGHT:
        pytest.skip(f"{name} has no recurrent weight (weight_drop refused)")
    fused, ref = twins(name, **REGS[regs])
    x = randn(T, N, I)
    out, fin, grads = forward_backward(fused, x, LENGTHS, seed=4)
    out2, fin2, grads2 = forward_backward(ref, x, LENGTHS, seed=4)
    torch.testing.assert_close(out, out2, **CLOSE)
    for a, b in zip(fin, fin2, strict=True):
        torch.testing.assert_close(a, b, **CLOSE)
    kernel = fused_scan(fused._cells()[0][2])
    if regs != "all" or kernel in kernels._TAKES_MASKS:  # the fused kernel ran, not scan
        nodes = graph_names(out)
        assert any("sequence" in n.lower() for n in nodes), nodes
        assert not any(n.startswith(("Lerp", "Stack")) for n in nodes), nodes
    assert grads.keys() == grads2.keys()
    for key, g in grads.items():
        if g is None:  # (a clockwork's counter, nothing else)
            assert grads2[key] is None, key
            continue
        torch.testing.assert_close(g, grads2[key], **CLOSE, msg=key)
    # the regularizers did something: the eval-mode output differs
    with torch.no_grad():
        plain = run(fused.eval(), x, LENGTHS)[0]
    assert (plain - out).abs().max() > 1e-2 * out.abs().max()


@pytest.mark.parametrize("name", list(FACADES))
def test_eval_mode_is_deterministic_and_paths_agree(name):
    fused, ref = twins(name, **ALL)
    fused.eval(), ref.eval()
    x = randn(T, N, I).requires_grad_()
    torch.manual_seed(0)
    a = run(fused, x, LENGTHS)[0]
    torch.manual_seed(1)
    b = run(fused, x, LENGTHS)[0]
    assert torch.equal(a, b)
    with torch.no_grad():
        c = run(fused, x, LENGTHS)[0]
    torch.testing.assert_close(c, a, **CLOSE)
    torch.testing.assert_close(run(ref, x, LENGTHS)[0], a, **CLOSE)


def test_eval_zoneout_is_the_expectation_elman():
    """Evaluation: h_t = p h_{t-1} + (1 - p) tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), and
    neither recurrent dropout nor weight drop acts."""
    p = 0.35
    torch.manual_seed(0)
    net = rnnkit.RNN(I, NH, dtype=F64, zoneout=p, recurrent_dropout=0.5, weight_drop=0.5).eval()
    x, h0 = randn(T, N, I), randn(1, N, NH, seed=3)
    out, h_n = net(x, h0)
    W_ih, W_hh, b_ih, b_hh = (getattr(net, f"{k}_l0") for k in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h, ys = h0[0], []
    for t in range(T):
        h = p * h + (1 - p) * torch.tanh(lin(x[t], W_ih, b_ih) + lin(h, W_hh, b_hh))
        ys.append(h)
    torch.testing.assert_close(out, torch.stack(ys), **TIGHT)
    torch.testing.assert_close(h_n[0], h, **TIGHT)


def test_packed_input_equals_lengths_under_a_seed():
    net = facade("LSTM", native=False, **ALL)
    x = randn(T, N, I)
    torch.manual_seed(3)
    want, (h, c) = net(x, lengths=LENGTHS)
    torch.manual_seed(3)
    packed, (h2, c2) = net(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))
    got = torch.nn.utils.rnn.pad_packed_sequence(packed, total_length=T)[0]
    torch.testing.assert_close(got, want, **TIGHT)
    torch.testing.assert_close(h2, h, **TIGHT)
    torch.testing.assert_close(c2, c, **TIGHT)


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_masks_are_drawn_in_the_documented_order(fused):
    """Weight drop per cell (torch's order), then per layer: dropout between layers, the
    forward direction's masks, the reverse's (each: recurrent dropout, then zoneout)."""
    net = facade("LSTM", native=False, fused=fused, **ALL)
    x = randn(T, N, I)
    torch.manual_seed(8)
    want, want_fin = net(x, lengths=LENGTHS)

    torch.manual_seed(8)
    cells = net._cells()
    dropped = {id(c): {"weight_hh": F.dropout(getattr(net, f"weight_hh_l{l}{'_reverse' * d}"),
                                              0.25, training=True)} for l, d, c in cells}
    xs, finals = x, []
    for l in range(2):
        if l:
            xs = locked_dropout(xs, 0.2)
        outs = []
        for l2, d, c in cells:
            if l2 != l:
                continue
            masks = net.regularizers.masks(c, T, N, xs, True)
            with bind({c: dropped[id(c)]}):
                y, s = scan(c, xs, None, reverse=bool(d), lengths=LENGTHS, masks=masks)
            outs.append(y)
            finals.append(s)
        xs = torch.cat(outs, dim=-1)
    torch.testing.assert_close(xs, want, **CLOSE)
    torch.testing.assert_close(torch.stack([s.h for s in finals]), want_fin[0], **CLOSE)
    torch.testing.assert_close(torch.stack([s.c for s in finals]), want_fin[1], **CLOSE)


def test_masks_draw_recurrent_dropout_then_zoneout():
    cell = make_cell("elman-tanh")
    reg = Regularizers.checked(cell, recurrent_dropout=0.3, zoneout=0.4)
    like = torch.zeros((), dtype=F64)
    torch.manual_seed(2)
    masks = reg.masks(cell, T, N, like, True)
    torch.manual_seed(2)
    drop = torch.empty(N, H, dtype=F64).bernoulli_(0.7).div_(0.7)
    zone = bernoulli((T, N, H), 0.4, like)
    assert torch.equal(masks.drop, drop) and torch.equal(masks.zone, zone) and masks.training


def test_fast_bernoulli_draws_with_its_probability():
    """Zoneout's draws (15 random bits each, four per 64-bit number): 0/1 in the dtype asked,
    each of the four lanes of a number at rate p, p rounded to a multiple of 2^-15."""
    torch.manual_seed(0)
    for p in (0.05, 0.5, 0.93):
        x = bernoulli((400, 50, 100), p, torch.zeros((), dtype=F64))
        assert x.dtype == F64 and set(x.unique().tolist()) <= {0.0, 1.0}
        lanes = x.reshape(-1, 4).mean(0)  # draw k of each 64-bit number
        assert (lanes - p).abs().max() < 0.005, (p, lanes)
    assert bernoulli((3, 2), 0.0, torch.zeros(())).sum() == 0
    # one probability per column (zoneout's (p_h, p_c) in one draw), in a half dtype too
    x = bernoulli((400, 50, 100), [0.05] * 60 + [0.7] * 40, torch.zeros((), dtype=torch.half))
    assert x.dtype == torch.half and set(x.unique().tolist()) <= {0.0, 1.0}
    rate = x.float().mean((0, 1))
    assert (rate[:60] - 0.05).abs().max() < 0.02 and (rate[60:] - 0.7).abs().max() < 0.02
    with pytest.raises(ValueError, match="one per column"):
        bernoulli((3, 2), [0.1, 0.2, 0.3], torch.zeros(()))


# ---- 3. off means bit-identical ------------------------------------------------------------------

OFF = {"recurrent_dropout": 0.0, "zoneout": 0.0, "weight_drop": 0.0, "dropout_mode": "standard"}


@pytest.mark.parametrize("name, opts", [
    ("LSTM", {}), ("LSTM", {"zoneout": (0.0, 0.0)}), ("GRU", {}), ("Jordan", {}), ("SCRN", {}),
    ("Clockwork", {"zoneout": [0]}),
])
def test_options_off_are_bit_identical(name, opts):
    plain = facade(name, dropout=0.3)
    off = facade(name, seed=1, dropout=0.3, **{**OFF, **opts})
    off.load_state_dict(plain.state_dict())
    assert off.zoneout == () and not off.regularizers.per_step
    x = randn(T, N, I)
    out, fin, grads = forward_backward(plain, x, LENGTHS, seed=6)
    out2, fin2, grads2 = forward_backward(off, x, LENGTHS, seed=6)
    assert torch.equal(out, out2)
    assert all(torch.equal(a, b) for a, b in zip(fin, fin2, strict=True))
    for key, g in grads.items():
        assert (g is None and grads2[key] is None) or torch.equal(g, grads2[key]), key


@pytest.mark.parametrize("options, training, native", [
    (OFF, True, True),
    ({"weight_drop": 0.3, "dropout": 0.2}, True, True),  # the dropped weight goes to torch
    ({"recurrent_dropout": 0.3, "dropout": 0.2, "dropout_mode": "variational"}, False, True),
    ({"forget_bias": "chrono", "max_lag": 9}, True, True),
    ({"recurrent_dropout": 0.3}, True, False),
    ({"dropout": 0.2, "dropout_mode": "variational"}, True, False),
    ({"zoneout": 0.1}, True, False),
    ({"zoneout": 0.1}, False, False),
])
def test_which_lstm_path_runs(monkeypatch, options, training, native):
    """torch's whole-stack kernel runs unless a regularizer changes the recurrence or what
    passes between layers in this mode."""
    net = facade("LSTM", **options).train(training)

    def refuse(*args):
        raise AssertionError("the other path ran")

    monkeypatch.setattr(net, "_forward_scan" if native else "_forward_native", refuse)
    net(randn(T, N, I), lengths=LENGTHS)


# ---- 4. reproducible under a seed ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["LSTM", "GRU", "Clockwork", "FullyRecurrent"])
def test_seed_reproduces_and_other_seeds_differ(name):
    net = facade(name, **ALL)
    x = randn(T, N, I)

    def draw(seed):
        torch.manual_seed(seed)
        return run(net, x, LENGTHS)[0]

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    torch.manual_seed(5)  # a run resumed with its generator's state continues exactly
    draw(5)
    state = torch.get_rng_state()
    a = run(net, x, LENGTHS)[0]
    torch.set_rng_state(state)
    assert torch.equal(run(net, x, LENGTHS)[0], a)


# ---- 5. semantics -------------------------------------------------------------------------------

RECURRENT_WIDTH = {"elman-tanh": H, "gru": H, "lstm": H, "lstm-proj": 4, "jordan": 4,
                   "fully": H + 4, "clockwork": H, "scrn": H, "ctrnn": H}
ZONED = {"elman-tanh": [H], "gru": [H], "lstm": [H, H], "lstm-proj": [4, H], "jordan": [4],
         "fully": [H, 4], "clockwork": [H], "scrn": [H, 4], "ctrnn": [H]}


@pytest.mark.parametrize("name", list(ZONED))
def test_mask_shapes_and_values(name):
    cell = make_cell(name)
    assert cell.recurrent_input_size == RECURRENT_WIDTH[name]
    assert zoned_sizes(cell) == ZONED[name]
    reg = Regularizers.checked(cell, recurrent_dropout=0.3, zoneout=0.4)
    like = torch.zeros((), dtype=F64)
    torch.manual_seed(0)
    big_T, big_N = 50, 40
    m = reg.masks(cell, big_T, big_N, like, True)
    S = sum(ZONED[name])
    assert m.training and m.drop.shape == (big_N, RECURRENT_WIDTH[name])
    assert m.zone.shape == (big_T, big_N, S) and m.drop.dtype == m.zone.dtype == F64
    assert set(m.drop.unique().tolist()) == {0.0, 1 / 0.7}
    assert set(m.zone.unique().tolist()) == {0.0, 1.0}
    assert abs((m.drop == 0).to(F64).mean() - 0.3) < 0.1
    assert abs(m.zone.mean() - 0.4) < 0.05
    changed = (m.zone[1:] != m.zone[:-1]).to(F64).mean()  # drawn anew at every step
    assert abs(changed - 2 * 0.4 * 0.6) < 0.05
    e = reg.masks(cell, T, N, like, False)  # evaluation: no drop, zone = p
    assert e.drop is None and not e.training and e.zone.shape == (T, N, S)
    assert (e.zone == 0.4).all()
    assert Regularizers.checked(cell, recurrent_dropout=0.3).masks(cell, T, N, like, False) \
        is None
    assert Regularizers.checked(cell).masks(cell, T, N, like, True) is None


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_recurrent_dropout_mask_is_one_per_sequence(fused):
    """h_t = relu(W_hh (m * h_{t-1})) with W_hh = I, no input, h_0 = 1: h_t = m^t, which holds
    only if the same mask m acts at every step."""
    p = 0.5
    torch.manual_seed(0)
    net = rnnkit.RNN(I, 16, nonlinearity="relu", bias=False, dtype=F64, native=False,
                     fused=fused, recurrent_dropout=p)
    with torch.no_grad():
        net.weight_hh_l0.copy_(torch.eye(16, dtype=F64))
    torch.manual_seed(1)
    out, _ = net(torch.zeros(T, 8, I, dtype=F64), torch.ones(1, 8, 16, dtype=F64))
    m = out[0]  # m * 1
    assert set(m.unique().tolist()) == {0.0, 1 / (1 - p)}
    for t in range(T):
        torch.testing.assert_close(out[t], m ** (t + 1), **TIGHT)


def test_lstm_zoneout_per_state_tensor():
    cell = make_cell("lstm-proj")
    reg = Regularizers.checked(cell, zoneout=(0.1, 0.9))
    assert reg.zoneout == (0.1, 0.9)
    like = torch.zeros((), dtype=F64)
    e = reg.masks(cell, T, N, like, False)
    assert (e.zone[..., :4] == 0.1).all() and (e.zone[..., 4:] == 0.9).all()
    torch.manual_seed(0)
    m = reg.masks(cell, 40, 40, like, True)
    assert abs(m.zone[..., :4].mean() - 0.1) < 0.05 and abs(m.zone[..., 4:].mean() - 0.9) < 0.05
    only_c = Regularizers.checked(cell, zoneout=(0, 0.5)).masks(cell, T, N, like, True)
    assert (only_c.zone[..., :4] == 0).all()


def test_network_exposes_its_regularizers():
    net = facade("LSTM", recurrent_dropout=0.3, zoneout=(0.1, 0.2), weight_drop=0.25,
                 dropout=0.2, dropout_mode="variational")
    assert (net.recurrent_dropout, net.zoneout, net.weight_drop, net.dropout_mode) == \
        (0.3, (0.1, 0.2), 0.25, "variational")
    text = repr(net)
    for part in ("recurrent_dropout=0.3", "zoneout=(0.1, 0.2)", "weight_drop=0.25",
                 "dropout_mode='variational'"):
        assert part in text
    assert "zoneout" not in repr(facade("LSTM"))


WEIGHT_DROP_CASES = ["RNN", "LSTM", "GRU", "Jordan", "FullyRecurrent", "SCRN", "CTRNN",
                     "Clockwork"]


@pytest.mark.parametrize("native", [True, False], ids=["native", "rnnkit"])
@pytest.mark.parametrize("name", WEIGHT_DROP_CASES)
def test_weight_drop_uses_the_dropped_recurrent_weights(name, native):
    """Training: the forward is the plain network's with each recurrent weight replaced by
    F.dropout(W, p) drawn in torch's cell order; the gradient reaching W is the dropped
    weight's times M / (1 - p). Evaluation: the plain network's, exactly."""
    p = 0.4
    net = facade(name, bidirectional=False, native=native, weight_drop=p)
    plain = facade(name, seed=1, bidirectional=False, native=native)
    plain.load_state_dict(net.state_dict())
    x = randn(T, N, I)
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing warns (torch's kernel takes the weight as is)
        out, fin, grads = forward_backward(net, x, None, seed=3)
    torch.manual_seed(3)
    names = [f"{w}_l{l}" for l, _, c in net._cells() for w in c.recurrent_weight_names()]
    dropped = {n: F.dropout(getattr(net, n), p, training=True).detach() for n in names}
    with torch.no_grad():
        for n, w in dropped.items():
            getattr(plain, n).copy_(w)
    out2, fin2, grads2 = forward_backward(plain, x, None, seed=3)
    torch.testing.assert_close(out, out2, **CLOSE)
    for a, b in zip(fin, fin2, strict=True):
        torch.testing.assert_close(a, b, **CLOSE)
    for key, g in grads.items():
        if key in dropped:
            scale = (dropped[key] != 0).to(F64) / (1 - p)
            torch.testing.assert_close(g, grads2[key] * scale, **CLOSE, msg=key)
            assert (g[dropped[key] == 0] == 0).all()
        elif g is not None:
            torch.testing.assert_close(g, grads2[key], **CLOSE, msg=key)
    net.eval()
    plain.load_state_dict(net.state_dict())
    plain.eval()
    with torch.no_grad():
        assert torch.equal(run(net, x)[0], run(plain, x)[0])
        assert (run(net, x)[0] - out).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(NO_RECURRENT_WEIGHT))
def test_weight_drop_is_refused_where_no_weight_meets_the_state(name):
    cls, opts = FACADES[name]
    with pytest.raises(ValueError, match=r"^weight_drop: Min(GRU|LSTM)Cell has no recurrent "
                                         r"weight to drop .*got 0\.3"):
        cls(I, NH, weight_drop=0.3, **opts)


def test_weight_drop_leaves_the_parameters_alone():
    net = facade("LSTM", weight_drop=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net(randn(T, N, I))[0].sum().backward()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())
    assert set(net.state_dict()) == set(facade("LSTM").state_dict())


def test_locked_dropout_shares_one_mask_over_time():
    x = torch.rand(7, 5, 9, dtype=F64, generator=gen(0)) + 0.5  # (T, N, F)
    torch.manual_seed(0)
    out = locked_dropout(x, 0.4)
    ratio = out / x
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio), atol=0, rtol=1e-15)
    assert set(ratio.unique().round(decimals=12).tolist()) == {0.0, round(1 / 0.6, 12)}
    assert locked_dropout(x, 0.0) is x


@pytest.mark.parametrize("mode", ["standard", "variational"])
def test_sequence_dropout(mode):
    sd = SequenceDropout(0.5, mode)
    x = torch.ones(6, 8, 10, dtype=F64)  # (N, T, F), batch first
    torch.manual_seed(0)
    out = sd(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    shared = torch.equal(out, out[:, :1].expand_as(out))
    assert shared == (mode == "variational")
    if mode == "standard":  # nn.Dropout's draw
        torch.manual_seed(0)
        assert torch.equal(out, F.dropout(x, 0.5, training=True))
    pooled = torch.ones(6, 10, dtype=F64)  # (N, F): standard dropout in both modes
    torch.manual_seed(1)
    got = sd(pooled)
    torch.manual_seed(1)
    assert torch.equal(got, F.dropout(pooled, 0.5, training=True))
    sd.eval()
    assert sd(x) is x
    assert SequenceDropout(0.0, mode).train()(x) is x
    assert ("mode='variational'" in repr(sd)) == (mode == "variational")


def test_variational_dropout_of_one_drops_everything():
    x = torch.ones(T, N, I, dtype=F64)
    assert torch.equal(locked_dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(SequenceDropout(1.0, "variational")(x), torch.zeros_like(x))
    net = facade("GRU", bidirectional=False, dropout=1.0, dropout_mode="variational")
    assert not net(x)[0].isnan().any()


def test_variational_dropout_between_layers_is_one_mask_per_sequence():
    """The first layer's outputs reach the second layer through one mask per sequence: with
    a second layer that sees only its input (W_hh = 0), zeroed features stay zero at every
    step."""
    torch.manual_seed(0)
    net = rnnkit.RNN(I, NH, num_layers=2, dtype=F64, dropout=0.5, dropout_mode="variational",
                     nonlinearity="relu", bias=False, native=False)
    with torch.no_grad():
        net.weight_hh_l1.zero_()
        net.weight_ih_l1.copy_(torch.eye(NH, dtype=F64))
        net.weight_hh_l0.zero_()
    x = randn(T, N, I).abs()
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.rand(NH, I, dtype=F64) + 0.1)  # first layer output > 0
        torch.manual_seed(1)
        out = net(x)[0]
    first = torch.relu(lin(x, net.weight_ih_l0))
    ratio = out / first
    assert set(ratio.unique().round(decimals=12).tolist()) == {0.0, 2.0}
    assert torch.equal(ratio, ratio[:1].expand_as(ratio))
    standard = rnnkit.RNN(I, NH, num_layers=2, dtype=F64, dropout=0.5, nonlinearity="relu",
                          bias=False, native=False)
    standard.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.manual_seed(1)
        ratio = standard(x)[0] / first
    assert not torch.equal(ratio, ratio[:1].expand_as(ratio))  # standard: one mask per step


# ---- 6. errors name the option -------------------------------------------------------------------


@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout", "weight_drop"])
@pytest.mark.parametrize("value, error", [
    (1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), (True, TypeError),
    ("0.1", TypeError), (None, TypeError),
])
def test_bad_probability_names_the_option(option, value, error):
    with pytest.raises(error, match=rf"^{option}\b.*probability in \[0, 1\)"):
        rnnkit.GRU(I, NH, **{option: value})
    with pytest.raises(error, match=rf"^{option}\b"):
        rnnkit.RecurrentNetwork("jordan", I, NH, **{option: value})


@pytest.mark.parametrize("name, value, names", [
    ("LSTM", (0.1,), "LSTMCell: h, c"), ("LSTM", (0.1, 0.2, 0.3), "LSTMCell: h, c"),
    ("FullyRecurrent", (0.1,), "FullyRecurrentCell: h, y"), ("SCRN", [0.1], "SCRNCell: h, s"),
    ("Clockwork", (0.1, 0.2), "ClockworkCell: h"), ("Jordan", (0.1, 0.1), "JordanCell: y"),
])
def test_zoneout_tuple_length_lists_the_state_tensors(name, value, names):
    with pytest.raises(ValueError, match=rf"^zoneout: .*{re.escape(names)}\), got "
                                         rf"{len(value)}\b"):
        facade(name, zoneout=value)


def test_zoneout_tuple_entry_names_its_state_tensor():
    with pytest.raises(ValueError, match=r"^zoneout\[1\] \(c\).*1\.0"):
        facade("LSTM", zoneout=(0.1, 1.0))
    with pytest.raises(TypeError, match=r"^zoneout\[0\] \(h\)"):
        facade("FullyRecurrent", zoneout=("0.1", 0.1))


def test_bad_dropout_mode():
    with pytest.raises(ValueError, match=r"^dropout_mode: .*'standard', 'variational'.*'locked'"):
        facade("GRU", dropout=0.1, dropout_mode="locked")
    with pytest.raises(ValueError, match=r"^dropout_mode"):
        SequenceDropout(0.1, "Variational")


@pytest.mark.parametrize("cls, cell, option", [
    (rnnkit.RNN, "elman", {"forget_bias": 1.0}),
    (rnnkit.Jordan, "jordan", {"forget_bias": "chrono", "max_lag": 5}),
    (rnnkit.CTRNN, "ctrnn", {"forget_bias": 1.0}),
    (rnnkit.Clockwork, "clockwork", {"max_lag": 5}),
    (rnnkit.LSTM, "lstm", {"tau_init": "chrono"}),
])
def test_gate_option_on_a_cell_without_it(cls, cell, option):
    first = next(iter(option))
    with pytest.raises(TypeError, match=rf"^{first}: not an option of the {cell} cell"):
        cls(I, NH, **option)


@pytest.mark.parametrize("cls, option", [
    (rnnkit.LSTM, "forget_bias"), (rnnkit.GRU, "forget_bias"), (rnnkit.CTRNN, "tau_init"),
])
@pytest.mark.parametrize("max_lag", [None, 1, 0, True, 2.5])
def test_chrono_needs_max_lag_of_at_least_two(cls, option, max_lag):
    with pytest.raises(ValueError, match=rf"^max_lag: {option}='chrono'.*int >= 2.*"
                                         rf"{re.escape(repr(max_lag))}"):
        cls(I, NH, **{option: "chrono", "max_lag": max_lag})


@pytest.mark.parametrize("make", [
    lambda: rnnkit.LSTM(I, NH, max_lag=10),
    lambda: rnnkit.LSTM(I, NH, forget_bias=1.0, max_lag=10),
    lambda: GRUCell(I, NH, max_lag=10),
    lambda: CTRNNCell(I, NH, tau_init=2.0, max_lag=10),
])
def test_max_lag_without_chrono(make):
    with pytest.raises(ValueError, match=r"^max_lag: used only with .*='chrono'"):
        make()


def test_chrono_without_bias():
    with pytest.raises(ValueError, match=r"^forget_bias"):
        rnnkit.LSTM(I, NH, bias=False, forget_bias="chrono", max_lag=10)


@pytest.mark.parametrize("options", [
    {"recurrent_dropout": 0.1}, {"zoneout": 0.1}, {"weight_drop": 0.1},
    {"dropout": 0.1, "dropout_mode": "variational"},
])
def test_step_in_training_mode_with_a_regularizer_asks_for_eval(options):
    net = facade("GRU", bidirectional=False, **options)
    x = randn(N, I)
    with pytest.raises(RuntimeError, match=r"GRU\.step: .*training mode.*\.eval\(\)"):
        net.step(x)
    net.eval()
    net.step(x)


def test_step_in_training_mode_with_standard_dropout_runs():
    net = facade("GRU", bidirectional=False, dropout=0.1)
    assert net.step(randn(N, I))[0].shape == (N, NH)


# ---- 7. chrono initialisation -------------------------------------------------------------------

CH, LAG = 32, 50


def _blocks(t, k):
    return t.detach().split(CH)[k]


def test_lstm_chrono_biases():
    torch.manual_seed(0)
    net = rnnkit.LSTM(I, CH, num_layers=2, bidirectional=True, forget_bias="chrono",
                      max_lag=LAG, proj_size=5)
    assert net._cells()[0][2].native_mode() == "lstm"  # only an initialisation
    for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        b_ih, b_hh = getattr(net, "bias_ih" + sfx), getattr(net, "bias_hh" + sfx)
        b_f = _blocks(b_ih, 1)
        assert (b_f >= 0).all() and (b_f <= math.log(LAG - 1)).all()
        assert b_f.max() - b_f.min() > 1.0  # spread over the lags, not one value
        assert torch.equal(_blocks(b_ih, 0), -b_f)
        assert (b_hh.detach()[: 2 * CH] == 0).all()
        k = 1 / math.sqrt(CH)  # g and o blocks: torch's init
        assert (b_ih.detach()[2 * CH :].abs() <= k).all() and (b_hh.detach()[2 * CH :] != 0).all()
    before = net.bias_ih_l1.detach().clone()
    net.reset_parameters()  # redraws, still chrono
    after = _blocks(net.bias_ih_l1, 1)
    assert not torch.equal(after, _blocks(before, 1))
    assert (after >= 0).all() and (after <= math.log(LAG - 1)).all()
    assert torch.equal(_blocks(net.bias_ih_l1, 0), -after)
    assert "forget_bias='chrono', max_lag=50" in repr(LSTMCell(I, CH, forget_bias="chrono",
                                                               max_lag=LAG))


def test_lstm_cell_chrono_reset_parameters_redraws():
    torch.manual_seed(0)
    cell = LSTMCell(I, CH, forget_bias="chrono", max_lag=3)  # log U(1, 2)
    first = _blocks(cell.bias_ih, 1).clone()
    assert (first >= 0).all() and (first <= math.log(2)).all()
    cell.reset_parameters()
    assert not torch.equal(_blocks(cell.bias_ih, 1), first)


def test_gru_chrono_and_numeric_update_bias():
    torch.manual_seed(0)
    net = rnnkit.GRU(I, CH, num_layers=2, forget_bias="chrono", max_lag=LAG)
    for sfx in ("_l0", "_l1"):
        b_ih, b_hh = getattr(net, "bias_ih" + sfx), getattr(net, "bias_hh" + sfx)
        b_z = _blocks(b_ih, 1)
        assert (b_z >= 0).all() and (b_z <= math.log(LAG - 1)).all() and b_z.std() > 0.3
        assert (_blocks(b_hh, 1) == 0).all()
        k = 1 / math.sqrt(CH)  # r and n blocks: torch's init
        assert (_blocks(b_ih, 0).abs() <= k).all() and (_blocks(b_ih, 2).abs() <= k).all()
    before = _blocks(net.bias_ih_l0, 1).clone()
    net.reset_parameters()
    assert not torch.equal(_blocks(net.bias_ih_l0, 1), before)
    cell = GRUCell(I, CH, forget_bias=1.5)
    assert (_blocks(cell.bias_ih, 1) == 1.5).all() and (_blocks(cell.bias_hh, 1) == 0).all()
    assert (_blocks(cell.bias_ih, 0) != 1.5).all()
    net = rnnkit.GRU(I, CH, forget_bias=-2)
    assert (_blocks(net.bias_ih_l0, 1) == -2).all()
    net.reset_parameters()
    assert (_blocks(net.bias_ih_l0, 1) == -2).all() and (_blocks(net.bias_hh_l0, 1) == 0).all()


@pytest.mark.parametrize("dt", [1.0, 0.5, None])
def test_ctrnn_chrono_time_constants(dt):
    torch.manual_seed(0)
    net = rnnkit.CTRNN(I, CH, num_layers=2, dt=dt, tau_init="chrono", max_lag=20)
    step = 1.0 if dt is None else dt
    for name in ("log_tau_l0", "log_tau_l1"):
        tau = getattr(net, name).detach().exp() / step  # tau / dt ~ 1 + U(1, T - 1)
        assert (tau >= 2 - 1e-6).all() and (tau <= 20 + 1e-6).all() and tau.std() > 1
    before = net.log_tau_l0.detach().clone()
    net.reset_parameters()
    assert not torch.equal(net.log_tau_l0.detach(), before)


# ---- 8. gradcheck -------------------------------------------------------------------------------

GT, GN, GH = 3, 2, 3


def gradcheck_scan(run_fn, cell, masks, reverse, lengths, second_order=False):
    """torch.autograd.gradcheck (and gradgradcheck) of ``run_fn`` (scan's signature) with
    respect to the inputs, the initial state and every parameter, the masks fixed."""
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    xs = randn(GT, GN, 2, seed=3).requires_grad_()
    state = [s.requires_grad_() for s in make_state(cell, n=GN)]
    n_state = len(state)

    def fn(xs, *rest):
        s, ps = rest[:n_state], rest[n_state:]
        with bind({cell: dict(zip(names, ps, strict=True))}):
            ys, fin = run_fn(cell, xs, state_from_leaves(cell.state_size, list(s)),
                             reverse=reverse, lengths=lengths, masks=masks)
        return (ys, *state_leaves(fin))

    assert torch.autograd.gradcheck(fn, (xs, *state, *params))
    if second_order:
        assert torch.autograd.gradgradcheck(fn, (xs, *state, *params))


@pytest.mark.parametrize("kind", ["both", "eval"])
@pytest.mark.parametrize("name, reverse, lengths", [
    ("lstm-diagonal", False, None), ("gru", True, torch.tensor([3, 1])),
    ("fully", False, torch.tensor([2, 3])), ("scrn-learned", True, None),
])
def test_gradcheck_scan_with_masks(name, reverse, lengths, kind):
    cell = make_cell(name, hidden=GH, inputs=2)
    masks = random_masks(cell, kind, n=GN, steps=GT)
    gradcheck_scan(scan, cell, masks, reverse, lengths)


def _cases_with_mask_kernels():
    """The cell configurations whose fused kernel takes masks (none yet: one skipped case)."""
    names = [n for n, (cls, _) in CELLS.items()
             if kernels._KERNELS.get(cls) in kernels._TAKES_MASKS]
    return names or [pytest.param(None, marks=pytest.mark.skip(
        reason="no fused kernel takes masks yet (rnnkit.kernels._TAKES_MASKS is empty)"))]


@pytest.mark.parametrize("name", _cases_with_mask_kernels())
def test_mask_kernels_equal_scan_and_gradcheck(name):
    cell = make_cell(name)
    kernel = fused_scan(cell)
    xs = randn(T, N, I).requires_grad_()
    state = state_from_leaves(cell.state_size,
                              [s.requires_grad_() for s in make_state(cell)])
    masks = random_masks(cell, "both")
    assert kernels.takes_masks(kernel, masks, xs, cell)
    for reverse in (False, True):
        for lengths in (None, LENGTHS):
            want = scan(cell, xs, state, reverse=reverse, lengths=lengths, masks=masks)
            got = kernel(cell, xs, state, reverse=reverse, lengths=lengths, masks=masks)
            outs, outs2 = [want[0], *state_leaves(want[1])], [got[0], *state_leaves(got[1])]
            for a, b in zip(outs, outs2, strict=True):
                torch.testing.assert_close(b, a, **CLOSE)
            ups = [randn(*o.shape, seed=20 + i) for i, o in enumerate(outs)]
            wrt = [xs, *state_leaves(state), *cell.parameters()]
            ref = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs, ups, strict=True)),
                                      wrt, allow_unused=True)
            new = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs2, ups, strict=True)),
                                      wrt, allow_unused=True)
            for a, b in zip(ref, new, strict=True):
                if a is not None:
                    torch.testing.assert_close(b, a, **CLOSE)
    ev = random_masks(cell, "eval")
    with torch.no_grad():  # the evaluation expectation, not recorded
        want = scan(cell, xs, state, lengths=LENGTHS, masks=ev)
        got = kernel(cell, xs, state, lengths=LENGTHS, masks=ev)
    for a, b in zip(state_leaves(want), state_leaves(got), strict=True):
        torch.testing.assert_close(b, a, **CLOSE)
    small = make_cell(name, hidden=GH, inputs=2)
    if not isinstance(small, ClockworkCell):  # (its counter takes no gradient)
        gradcheck_scan(kernel, small, random_masks(small, "both", n=GN, steps=GT), True,
                       torch.tensor([3, 1]), second_order=True)


# ---- 9. streaming in eval, with zoneout ---------------------------------------------------------


@pytest.mark.parametrize("name, zoneout", [
    ("LSTM", (0.1, 0.3)), ("LSTM-proj", 0.2), ("GRU", 0.25), ("Clockwork", 0.3), ("SCRN", 0.2),
    ("CTRNN-dt", 0.2), ("FullyRecurrent", 0.2),
])
def test_streaming_in_eval_equals_forward(name, zoneout):
    net = facade(name, bidirectional=False, zoneout=zoneout, recurrent_dropout=0.3,
                 weight_drop=0.2, dropout=0.2, dropout_mode="variational").eval()
    x = randn(T, N, I)
    kw = {}
    if name == "CTRNN-dt":
        kw["dt"] = torch.rand(T, N, dtype=F64, generator=gen(9)) + 0.2
    want, want_state = net(x, lengths=LENGTHS, **kw)
    state, ys = net.initial_state(N), []
    for t in range(T):
        step_kw = {"dt": kw["dt"][t]} if kw else {}
        y, state = net.step(x[t], state, valid=t < LENGTHS, **step_kw)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys), want, **TIGHT)
    for a, b in zip(state_leaves(state), state_leaves(want_state), strict=True):
        torch.testing.assert_close(a, b, **TIGHT)
    plain = facade(name, bidirectional=False).eval()  # zoneout did change the numbers
    plain.load_state_dict(net.state_dict())
    assert (run(plain, x, LENGTHS)[0] - want).abs().max() > 1e-3


# ---- 10. config --------------------------------------------------------------------------------


def model_config(cell="lstm", **fields):
    cfg = Config().model
    cfg.cell = cell
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg


@pytest.mark.parametrize("cell, fields, want", [
    ("lstm", {}, {}),
    ("lstm", {"dropout_mode": "variational", "recurrent_dropout": 0.2, "weight_drop": 0.3,
              "zoneout": 0.1, "zoneout_cell": 0.05, "forget_bias": "chrono", "max_lag": 30},
     {"dropout_mode": "variational", "recurrent_dropout": 0.2, "weight_drop": 0.3,
      "zoneout": (0.1, 0.05), "forget_bias": "chrono", "max_lag": 30}),
    ("lstm", {"zoneout": 0.1}, {"zoneout": (0.1, 0.1)}),
    ("lstm", {"zoneout_cell": 0.2}, {"zoneout": (0.0, 0.2)}),
    ("peephole_lstm", {"zoneout": 0.1, "zoneout_cell": 0.3}, {"zoneout": (0.1, 0.3)}),
    ("lstm", {"forget_bias": "1"}, {"forget_bias": 1.0}),
    ("gru", {"zoneout": 0.1, "forget_bias": "chrono", "max_lag": 8},
     {"zoneout": 0.1, "forget_bias": "chrono", "max_lag": 8}),
    ("gru", {"forget_bias": "-0.5"}, {"forget_bias": -0.5}),
    ("ctrnn", {"forget_bias": "chrono", "max_lag": 10}, {"tau_init": "chrono", "max_lag": 10}),
    ("ctrnn", {"forget_bias": "2"}, {"tau_init": 2.0}),
    ("elman", {"zoneout": 0.3, "recurrent_dropout": 0.1},
     {"zoneout": 0.3, "recurrent_dropout": 0.1}),
    ("indrnn", {"max_recurrent_weight": 1.0007}, {"max_recurrent_weight": 1.0007}),
])
def test_config_maps_to_network_options(cell, fields, want):
    cfg = model_config(cell, **fields)
    assert regularizer_options(cfg) == want
    net = recurrent_from_config(cfg, input_size=3)
    reg = net.regularizers
    assert reg.recurrent_dropout == want.get("recurrent_dropout", 0.0)
    assert reg.weight_drop == want.get("weight_drop", 0.0)
    assert reg.dropout_mode == want.get("dropout_mode", "standard")
    zone = want.get("zoneout", ())
    assert reg.zoneout == (zone if isinstance(zone, tuple) else (zone,))
    first = net._cells()[0][2]
    for key in ("forget_bias", "tau_init", "max_lag", "max_recurrent_weight"):
        if key in want:
            assert getattr(first, key) == want[key]


@pytest.mark.parametrize("cell, fields, match", [
    ("gru", {"zoneout_cell": 0.1}, r"^model\.zoneout_cell: .*model\.cell=gru"),
    ("elman", {"zoneout": 0.1, "zoneout_cell": 0.0}, r"^model\.zoneout_cell"),
    ("lstm", {"forget_bias": "chrono"}, r"^model\.max_lag: .*integer >= 2, got 0"),
    ("lstm", {"forget_bias": "chrono", "max_lag": 1}, r"^model\.max_lag: .*got 1"),
    ("ctrnn", {"forget_bias": "chrono", "max_lag": 1}, r"^model\.max_lag"),
    ("gru", {"max_lag": 10}, r"^model\.max_lag: used only with model\.forget_bias=chrono"),
    ("elman", {"max_recurrent_weight": 1.0}, r"^model\.max_recurrent_weight: .*model\.cell=elman"),
    ("indrnn", {"max_recurrent_weight": -0.5}, r"^model\.max_recurrent_weight: .*got -0\.5"),
])
def test_config_errors(cell, fields, match):
    with pytest.raises(ConfigError, match=match):
        regularizer_options(model_config(cell, **fields))


def test_config_max_lag_with_a_numeric_forget_bias_is_refused():
    with pytest.raises(ConfigError, match=r"^model\.max_lag"):
        regularizer_options(model_config("lstm", forget_bias="1.0", max_lag=10))


def test_config_gate_option_on_another_cell_is_the_networks_error():
    with pytest.raises(TypeError, match=r"^forget_bias: not an option of the jordan cell"):
        recurrent_from_config(model_config("jordan", forget_bias="1.0"), input_size=3)
