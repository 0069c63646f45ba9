"""ClockworkCell and CTRNNCell against naive loops written straight from their equations.

The naive loops use plain tensor ops over t, one sequence at a time (each unpadded sequence on
its own, reversed for ``reverse=True``); Clockwork's loops over its modules with its own block
masks and its own integer step counter. ``rnnkit.scan`` must give the same outputs, final states
and gradients (w.r.t. the input, the initial state and every parameter) within 1e-10 in float64.
Then the reductions to simpler models, and the option checks.
"""

import re

import pytest
import torch

import rnnkit
from rnnkit.cells import ClockworkCell, ClockworkState, CTRNNCell, ElmanCell

DT = torch.float64
I, T, N = 3, 7, 4
LENGTHS = torch.tensor([7, 2, 5, 1])
PHI = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
       "identity": lambda v: v}


def randn(*shape, seed):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def randomize(cell, scale=0.5, seed=100):
    """Every parameter N(0, scale^2), including Clockwork's masked part of weight_hh (the cell
    must ignore it), and CTRNN's log_tau (tau in about [0.5, 2])."""
    with torch.no_grad():
        for i, p in enumerate(cell.parameters()):
            p.copy_(scale * randn(*p.shape, seed=seed + i))
    return cell


# ---- the naive loops: one sequence x (L, I) -------------------------------------------------


def naive_clockwork(cell, x, h, t):
    """h (H,), t a 0-d tensor holding an integer -> ys (L, H), final [h, t]."""
    phi, periods = PHI[cell.activation], cell.periods
    g, H = len(periods), cell.hidden_size
    m = H // g
    zero = torch.zeros(H, dtype=DT)
    b_ih = cell.bias_ih if cell.bias_ih is not None else zero
    b_hh = cell.bias_hh if cell.bias_hh is not None else zero
    count, ys = int(t), []
    for s in range(x.shape[0]):
        modules = []
        for k in range(g):
            rows = slice(k * m, (k + 1) * m)
            if count % periods[k] == 0:
                z = cell.weight_ih[rows] @ x[s] + b_ih[rows] + b_hh[rows]
                for j in range(k, g):  # the modules at least as slow as module k
                    cols = slice(j * m, (j + 1) * m)
                    z = z + cell.weight_hh[rows, cols] @ h[cols]
                modules.append(phi(z))
            else:
                modules.append(h[rows])
        h = torch.cat(modules)
        count += 1
        ys.append(h)
    return torch.stack(ys), [h, t + x.shape[0]]


def naive_ctrnn(cell, x, h):
    """Euler steps of tau dh/dt = -h + W_hh phi(h) + W_ih x + b; h (H,) -> ys (L, H), [h]."""
    phi = PHI[cell.activation]
    tau = torch.exp(cell.log_tau)
    b = cell.bias if cell.bias is not None else torch.zeros(cell.hidden_size, dtype=DT)
    ys = []
    for s in range(x.shape[0]):
        if cell.dt_input:
            inp, dt = x[s, :-1], x[s, -1]
        else:
            inp, dt = x[s], cell.dt
        h = h + dt / tau * (-h + cell.weight_hh @ phi(h) + cell.weight_ih @ inp + b)
        ys.append(phi(h))
    return torch.stack(ys), [h]


def naive_scan(naive, cell, xs, leaves, lengths, reverse):
    """The naive loop on each sequence alone (unpadded; reversed for reverse), re-padded."""
    outs, finals = [], []
    for n in range(xs.shape[1]):
        L = xs.shape[0] if lengths is None else int(lengths[n])
        x = xs[:L, n].flip(0) if reverse else xs[:L, n]
        y, final = naive(cell, x, *(leaf[n] for leaf in leaves))
        y = y.flip(0) if reverse else y
        outs.append(torch.cat([y, y.new_zeros(xs.shape[0] - L, y.shape[1])]))
        finals.append(final)
    return torch.stack(outs, dim=1), [torch.stack(f) for f in zip(*finals, strict=True)]


# ---- scan == naive loop -----------------------------------------------------------------------


def clockwork_case(periods, **opts):
    def make():
        cell = randomize(ClockworkCell(I, 6, periods=periods, dtype=DT, **opts))
        t0 = torch.randint(0, 9, (N, 1), generator=torch.Generator().manual_seed(5)).to(DT)
        return cell, randn(T, N, I, seed=1), [randn(N, 6, seed=2), t0], naive_clockwork
    return make


def ctrnn_case(**opts):
    def make():
        cell = randomize(CTRNNCell(I, 5, dtype=DT, **opts))
        xs = randn(T, N, I, seed=1)
        if opts.get("dt_input"):  # irregular sampling: a positive step per sample and step
            gen = torch.Generator().manual_seed(3)
            xs[..., -1] = 0.05 + 1.5 * torch.rand(T, N, dtype=DT, generator=gen)
        return cell, xs, [randn(N, 5, seed=2)], naive_ctrnn
    return make


CASES = {
    "clockwork-periods125": clockwork_case((1, 2, 5)),
    "clockwork-periods23-sigmoid-nobias": clockwork_case((2, 3), activation="sigmoid",
                                                         bias=False),
    "ctrnn-dt0.3": ctrnn_case(dt=0.3),
    "ctrnn-relu-nobias": ctrnn_case(dt=0.7, activation="relu", bias=False),
    "ctrnn-irregular-dt": ctrnn_case(dt_input=True, activation="sigmoid"),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_scan_matches_the_naive_loop(case, padded, reverse):
    cell, xs, leaves, naive = CASES[case]()
    lengths = LENGTHS if padded else None
    xs.requires_grad_()
    for leaf in leaves:
        leaf.requires_grad_()
    state = ClockworkState(*leaves) if len(leaves) == 2 else leaves[0]
    ys, final = rnnkit.scan(cell, xs, state, reverse=reverse, lengths=lengths)
    final = list(final) if isinstance(final, tuple) else [final]
    ys_ref, final_ref = naive_scan(naive, cell, xs, leaves, lengths, reverse)

    tol = {"atol": 1e-10, "rtol": 1e-10}
    torch.testing.assert_close(ys, ys_ref, **tol)
    for a, b in zip(final, final_ref, strict=True):
        torch.testing.assert_close(a, b, **tol)

    # gradients of the same random linear functional of outputs and final state
    weights = [randn(*v.shape, seed=50 + i) for i, v in enumerate([ys, *final])]
    wrt = [xs, *leaves, *cell.parameters()]

    def grads(outputs):
        loss = sum((w * v).sum() for w, v in zip(weights, outputs, strict=True))
        gs = torch.autograd.grad(loss, wrt, allow_unused=True)
        return [torch.zeros_like(v) if g is None else g for g, v in zip(gs, wrt, strict=True)]

    names = ["xs", *(f"state[{i}]" for i in range(len(leaves))),
             *(n for n, _ in cell.named_parameters())]
    for name, a, b in zip(names, grads([ys, *final]), grads([ys_ref, *final_ref]), strict=True):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"d/d{name}: {m}")


# ---- Clockwork reductions and properties ------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_clockwork_one_module_of_period_one_is_elman(activation):
    H = 5
    cw = randomize(ClockworkCell(I, H, periods=(1,), activation=activation, dtype=DT))
    elman = ElmanCell(I, H, nonlinearity=activation, dtype=DT)
    elman.load_state_dict(cw.state_dict())  # the same parameter names and shapes
    xs, h0 = randn(T, N, I, seed=1), randn(N, H, seed=2)
    t0 = torch.arange(N, dtype=DT).unsqueeze(1)
    for reverse in (False, True):
        ys, (h, t) = rnnkit.scan(cw, xs, ClockworkState(h0, t0), reverse=reverse,
                                 lengths=LENGTHS)
        ys_e, h_e = rnnkit.scan(elman, xs, h0, reverse=reverse, lengths=LENGTHS)
        assert torch.equal(ys, ys_e) and torch.equal(h, h_e)
        assert torch.equal(t, t0 + LENGTHS.unsqueeze(1).to(DT))

    rnn = torch.nn.RNN(I, H, nonlinearity=activation, dtype=DT)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, name + "_l0").copy_(getattr(cw, name))
    ys_torch, h_torch = rnn(xs, h0.unsqueeze(0))
    ys, (h, _) = rnnkit.scan(cw, xs, ClockworkState(h0, t0))
    torch.testing.assert_close(ys, ys_torch, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, h_torch[0], atol=1e-12, rtol=1e-12)


def test_clockwork_in_chunks_equals_the_whole_sequence():
    cell = randomize(ClockworkCell(I, 8, periods=(1, 2, 4, 8), dtype=DT))
    Tl = 12
    xs = randn(Tl, N, I, seed=1)
    t0 = torch.tensor([[0.0], [1.0], [3.0], [6.0]], dtype=DT)
    state = ClockworkState(randn(N, 8, seed=2), t0)
    ys, (h, t) = rnnkit.scan(cell, xs, state)
    parts, s = [], state
    for a, b in ((0, 3), (3, 7), (7, Tl)):
        y, s = rnnkit.scan(cell, xs[a:b], s)
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts), ys, atol=1e-14, rtol=0)
    torch.testing.assert_close(s.h, h, atol=1e-14, rtol=0)
    assert torch.equal(s.t, t) and torch.equal(t, state.t + Tl)


def test_clockwork_a_module_that_does_not_tick_keeps_its_value_exactly():
    periods, H = (1, 2, 4), 6
    cell = randomize(ClockworkCell(I, H, periods=periods, dtype=DT))
    x, h = randn(5, I, seed=1), randn(5, H, seed=2)
    counts = [0, 1, 2, 3, 6]
    for t in (torch.tensor(counts, dtype=DT).unsqueeze(1),
              torch.tensor(counts, dtype=DT).unsqueeze(1) + 1e-6,  # perturbed, as gradcheck
              torch.tensor(counts, dtype=DT).unsqueeze(1) - 0.3):
        y, new = cell(x, ClockworkState(h, t))
        assert torch.equal(y, new.h) and torch.equal(new.t, t + 1)
        for n, count in enumerate(counts):
            for k, period in enumerate(periods):
                block = slice(2 * k, 2 * k + 2)
                kept = torch.equal(new.h[n, block], h[n, block])
                assert kept == (count % period != 0), (count, period)


def test_clockwork_masked_recurrent_weights_are_zero_and_get_zero_gradient():
    cell = ClockworkCell(I, 8, periods=(1, 2, 5, 7), dtype=DT)
    unit_periods = torch.tensor([1, 1, 2, 2, 5, 5, 7, 7])
    outside = unit_periods.unsqueeze(0) < unit_periods.unsqueeze(1)  # unit i may not read j
    assert torch.equal(cell.mask == 0, outside)
    assert torch.count_nonzero(cell.weight_hh[outside]) == 0
    assert torch.count_nonzero(cell.weight_hh[~outside]) == (~outside).sum()
    cell.reset_parameters()
    assert torch.count_nonzero(cell.weight_hh[outside]) == 0
    assert "mask" not in cell.state_dict() and "unit_periods" not in cell.state_dict()

    with torch.no_grad():  # even a nonzero masked entry has no effect and gets no gradient
        cell.weight_hh.add_(1.0)
    ys, (h, t) = rnnkit.scan(cell, randn(T, N, I, seed=1), lengths=LENGTHS)
    (ys.square().sum() + h.sum()).backward()
    grad = cell.weight_hh.grad
    assert torch.count_nonzero(grad[outside]) == 0
    assert torch.count_nonzero(grad[~outside]) > 0


def test_clockwork_default_periods():
    assert ClockworkCell(I, 8).periods == (1, 2, 4, 8)
    assert ClockworkCell(I, 6).periods == (1, 2, 4)
    assert ClockworkCell(I, 10).periods == (1, 2)
    assert ClockworkCell(I, 7).periods == (1,)


def test_clockwork_in_a_bidirectional_network_carries_the_counter():
    net = rnnkit.RecurrentNetwork("clockwork", I, 4, num_layers=2, bidirectional=True,
                                  dtype=DT)
    out, (h_n, t_n) = net(randn(T, N, I, seed=1), lengths=LENGTHS)
    assert out.shape == (T, N, 8) and h_n.shape == (4, N, 4)
    assert torch.equal(t_n, LENGTHS.to(DT).expand(4, N).unsqueeze(2))


# ---- CTRNN reductions -------------------------------------------------------------------------


def test_ctrnn_with_dt_equal_to_tau_is_the_non_leaky_update_exactly():
    cell = CTRNNCell(I, 5, dtype=DT)  # dt = 1.0 = tau_init
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias"):
            getattr(cell, name).copy_(randn(*getattr(cell, name).shape, seed=len(name)))
    assert torch.equal(torch.exp(cell.log_tau), torch.ones(5, dtype=DT))
    xs, h = randn(T, N, I, seed=1), randn(N, 5, seed=2)
    ys, final = rnnkit.scan(cell, xs, h)
    drive = torch.nn.functional.linear(xs, cell.weight_ih, cell.bias)  # as precompute
    for t in range(T):
        h = torch.nn.functional.linear(torch.tanh(h), cell.weight_hh) + drive[t]
        assert torch.equal(ys[t], torch.tanh(h))
    assert torch.equal(final, h)


def test_ctrnn_dt_input_with_a_constant_channel_is_the_constant_dt_cell():
    fixed = randomize(CTRNNCell(I, 5, dt=0.25, activation="sigmoid", dtype=DT))
    timed = CTRNNCell(I + 1, 5, dt_input=True, activation="sigmoid", dtype=DT)
    timed.load_state_dict(fixed.state_dict())
    xs, h0 = randn(T, N, I, seed=1), randn(N, 5, seed=2)
    xs_timed = torch.cat([xs, torch.full((T, N, 1), 0.25, dtype=DT)], dim=-1)
    for reverse in (False, True):
        ys, h = rnnkit.scan(fixed, xs, h0, reverse=reverse, lengths=LENGTHS)
        ys_t, h_t = rnnkit.scan(timed, xs_timed, h0, reverse=reverse, lengths=LENGTHS)
        assert torch.equal(ys, ys_t) and torch.equal(h, h_t)


def test_ctrnn_parameters_and_initialisation():
    cell = CTRNNCell(4, 5, dt_input=True, tau_init=3.0, dtype=DT)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh", "bias",
                                                        "log_tau"]
    assert cell.weight_ih.shape == (5, 3)
    torch.testing.assert_close(cell.log_tau.exp(), torch.full((5,), 3.0, dtype=DT))
    bound = 5 ** -0.5
    for p in (cell.weight_ih, cell.weight_hh, cell.bias):
        assert p.abs().max() <= bound
    nobias = CTRNNCell(4, 5, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == [
        "weight_ih", "weight_hh", "log_tau"]


# ---- bad options ------------------------------------------------------------------------------


def msg(arg, *values):
    looks = [rf"(?=.*(?<![\w.]){re.escape(arg)}(?!\w))"]
    looks += [f"(?=.*{re.escape(v)})" for v in values]
    return "(?s)^" + "".join(looks)


BAD = [
    (ClockworkCell, (I, 5), {"periods": (1, 2)}, ValueError, "hidden_size", ["2", "got 5"]),
    (ClockworkCell, (I, 4), {"periods": (1, 1)}, ValueError, "periods", ["increasing"]),
    (ClockworkCell, (I, 4), {"periods": (2, 1)}, ValueError, "periods", ["(2, 1)"]),
    (ClockworkCell, (I, 4), {"periods": (0, 1)}, ValueError, "periods", ["positive"]),
    (ClockworkCell, (I, 4), {"periods": (1, 2.0)}, TypeError, "periods", ["int", "2.0"]),
    (ClockworkCell, (I, 4), {"periods": (True,)}, TypeError, "periods", ["int", "True"]),
    (ClockworkCell, (I, 4), {"periods": ()}, TypeError, "periods", ["non-empty", "()"]),
    (ClockworkCell, (I, 4), {"periods": 4}, TypeError, "periods", ["tuple", "4"]),
    (ClockworkCell, (I, 4), {"activation": "gelu"}, ValueError, "activation", ["tanh", "gelu"]),
    (ClockworkCell, (I, 4), {"bias": 1}, TypeError, "bias", ["bool", "int"]),
    (ClockworkCell, (I, 0), {}, ValueError, "hidden_size", [">= 1", "0"]),
    (CTRNNCell, (I, 4), {"dt": 0.0}, ValueError, "dt", ["> 0", "0.0"]),
    (CTRNNCell, (I, 4), {"dt": -1}, ValueError, "dt", ["> 0", "-1"]),
    (CTRNNCell, (I, 4), {"dt": float("inf")}, ValueError, "dt", ["finite", "inf"]),
    (CTRNNCell, (I, 4), {"dt": "1"}, TypeError, "dt", ["number", "str"]),
    (CTRNNCell, (I, 4), {"tau_init": 0}, ValueError, "tau_init", ["> 0", "0"]),
    (CTRNNCell, (I, 4), {"tau_init": None}, TypeError, "tau_init", ["number", "None"]),
    (CTRNNCell, (I, 4), {"activation": "gelu"}, ValueError, "activation", ["tanh", "gelu"]),
    (CTRNNCell, (I, 4), {"dt_input": 1}, TypeError, "dt_input", ["bool", "int"]),
    (CTRNNCell, (I, 4), {"dt_input": True, "dt": 0.5}, ValueError, "dt", ["dt_input", "0.5"]),
    (CTRNNCell, (1, 4), {"dt_input": True}, ValueError, "input_size", [">= 2", "got 1"]),
    (CTRNNCell, (I, 4), {"bias": None}, TypeError, "bias", ["bool", "None"]),
]


@pytest.mark.parametrize("factory, args, kwargs, exc, arg, values", BAD,
                         ids=[f"{f.__name__}-{a}-{i}" for i, (f, _, _, _, a, _) in enumerate(BAD)])
def test_bad_options(factory, args, kwargs, exc, arg, values):
    with pytest.raises(exc, match=msg(arg, *values)):
        factory(*args, **kwargs)


def test_bad_options_through_a_network_and_a_state_without_the_counter():
    with pytest.raises(ValueError, match=msg("hidden_size", "got 5")):
        rnnkit.RecurrentNetwork("clockwork", I, 5, periods=(1, 2))
    with pytest.raises(TypeError, match=msg("state", "tuple", "h, t")):
        rnnkit.scan(ClockworkCell(I, 4), torch.randn(T, N, I), torch.zeros(N, 4))
