"""LSTM variants (peepholes, forget-gate bias, identity activations) and the SCRN cell.

Each cell is checked against a naive loop written here straight from its equations (plain tensor
ops over t, one gate at a time, no rnnkit code): outputs, final states and the gradients with
respect to the input, the initial state and every parameter, in float64, with and without
padding (the naive loop then runs on each unpadded sequence). Then the reductions: zero
peepholes give torch.nn.LSTM, forget_bias is only an initialisation, SCRN with alpha = 0 is an
Elman network with sigmoid units.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells import LSTMCell, LSTMState, SCRNCell, SCRNState, get_cell, make_cell

I, H, N, T = 3, 4, 5, 6
LENGTHS = [6, 2, 5, 1, 3]
F64 = torch.float64
TOL = {"atol": 1e-10, "rtol": 0}


def randn(*shape, seed):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


# ---- naive loops, from the equations ---------------------------------------------------------

ACT = {"tanh": torch.tanh, "identity": lambda v: v}


def naive_lstm(xs, h, c, p, peephole=None, proj_size=0, bias=True,
               candidate_activation="tanh", cell_activation="tanh"):
    """i, f from c_{t-1}; o from the new c_t; p: the cell's parameters by name."""
    gamma, phi = ACT[candidate_activation], ACT[cell_activation]
    Hc = c.shape[1]
    W_ii, W_if, W_ig, W_io = p["weight_ih"].split(Hc)
    W_hi, W_hf, W_hg, W_ho = p["weight_hh"].split(Hc)
    zeros = torch.zeros(4 * Hc, dtype=F64)
    b_ii, b_if, b_ig, b_io = (p["bias_ih"] if bias else zeros).split(Hc)
    b_hi, b_hf, b_hg, b_ho = (p["bias_hh"] if bias else zeros).split(Hc)
    ys = []
    for x in xs:
        a_i = x @ W_ii.T + b_ii + h @ W_hi.T + b_hi
        a_f = x @ W_if.T + b_if + h @ W_hf.T + b_hf
        a_g = x @ W_ig.T + b_ig + h @ W_hg.T + b_hg
        a_o = x @ W_io.T + b_io + h @ W_ho.T + b_ho
        if peephole == "diagonal":
            p_i, p_f, p_o = p["weight_peephole"].split(Hc)
            a_i, a_f = a_i + p_i * c, a_f + p_f * c
        elif peephole == "full":
            P_i, P_f, P_o = p["weight_ch"].split(Hc)
            a_i, a_f = a_i + c @ P_i.T, a_f + c @ P_f.T
        i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), gamma(a_g)
        c = f * c + i * g
        if peephole == "diagonal":
            a_o = a_o + p_o * c
        elif peephole == "full":
            a_o = a_o + c @ P_o.T
        o = torch.sigmoid(a_o)
        h = o * phi(c)
        if proj_size:
            h = h @ p["weight_hr"].T
        ys.append(h)
    return torch.stack(ys), [h, c]


def naive_scrn(xs, h, s, p, alpha=0.95, learn_alpha=False, bias=True, **_):
    B, P, A, R = p["weight_B"], p["weight_P"], p["weight_A"], p["weight_R"]
    if learn_alpha:
        alpha = torch.sigmoid(p["alpha_logit"])
    b = p["bias"] if bias else 0.0
    ys = []
    for x in xs:
        s = (1 - alpha) * (x @ B.T) + alpha * s
        h = torch.sigmoid(s @ P.T + x @ A.T + h @ R.T + b)
        ys.append(torch.cat([h, s], dim=1))
    return torch.stack(ys), [h, s]


# ---- scan vs naive loop ----------------------------------------------------------------------


def check_against_naive(cell, naive, state_type, lengths):
    """scan(cell) == naive loop: outputs, final states and gradients of a random linear loss
    with respect to the input, the initial state and every parameter."""
    params = dict(cell.named_parameters())
    xs = randn(T, N, I, seed=1).requires_grad_()
    state0 = [randn(N, size, seed=2 + k).requires_grad_()
              for k, size in enumerate(cell.state_size)]
    ys, final = rnnkit.scan(cell, xs, state_type(*state0),
                            lengths=None if lengths is None else torch.tensor(lengths))
    final = list(final)
    if lengths is None:
        ys_naive, final_naive = naive(xs, *state0, params)
    else:  # each sequence alone, unpadded; zeros past its length
        outs, finals = [], []
        for n, length in enumerate(lengths):
            y, f = naive(xs[:length, n:n + 1], *(leaf[n:n + 1] for leaf in state0), params)
            outs.append(torch.cat([y, y.new_zeros(T - length, 1, y.shape[2])]))
            finals.append(f)
        ys_naive = torch.cat(outs, dim=1)
        final_naive = [torch.cat(leaves) for leaves in zip(*finals, strict=True)]
    assert ys.shape == (T, N, cell.output_size)
    torch.testing.assert_close(ys, ys_naive, **TOL)
    for a, b in zip(final, final_naive, strict=True):
        torch.testing.assert_close(a, b, **TOL)

    weights = [randn(*t.shape, seed=10 + k) for k, t in enumerate([ys, *final])]
    inputs = [xs, *state0, *params.values()]
    names = ["xs", *(f"state.{f}" for f in state_type._fields), *params]

    def grads(outs):
        loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
        return torch.autograd.grad(loss, inputs)

    for name, a, b in zip(names, grads([ys, *final]), grads([ys_naive, *final_naive]),
                          strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"grad {name}: {m}")


LSTM_CASES = {
    "diagonal": {"peephole": "diagonal"},
    "full": {"peephole": "full"},
    "full-proj": {"peephole": "full", "proj_size": 2},
    "diagonal-proj-nobias-identity_c": {"peephole": "diagonal", "proj_size": 3, "bias": False,
                                        "cell_activation": "identity"},
    "identity": {"candidate_activation": "identity", "cell_activation": "identity"},
}
SCRN_CASES = {
    "fixed": {"context_size": 2},
    "fixed-nobias": {"context_size": 5, "alpha": 0.3, "bias": False},
    "learned": {"context_size": 3, "alpha": 0.7, "learn_alpha": True},
}
PADDING = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])


@PADDING
@pytest.mark.parametrize("opts", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_variant_equals_naive_loop(opts, lengths):
    torch.manual_seed(0)
    cell = LSTMCell(I, H, dtype=F64, **opts)
    assert cell.native_mode() is None
    check_against_naive(cell, lambda *a: naive_lstm(*a, **opts), LSTMState, lengths)


@PADDING
@pytest.mark.parametrize("opts", SCRN_CASES.values(), ids=SCRN_CASES.keys())
def test_scrn_equals_naive_loop(opts, lengths):
    torch.manual_seed(0)
    cell = SCRNCell(I, H, dtype=F64, **opts)
    check_against_naive(cell, lambda *a: naive_scrn(*a, **opts), SCRNState, lengths)


# ---- LSTM: reductions to torch ---------------------------------------------------------------


def zero_peepholes(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "peephole" in name or "weight_ch" in name:
                p.zero_()


def loss_and_grads(outs, inputs, seed=20):
    loss = sum((o * randn(*o.shape, seed=seed + k)).sum() for k, o in enumerate(outs))
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("peephole", ["diagonal", "full"])
def test_zero_peephole_cell_is_torch_lstm(peephole, proj_size):
    torch.manual_seed(0)
    cell = LSTMCell(I, H, proj_size=proj_size, peephole=peephole, dtype=F64)
    zero_peepholes(cell)
    twin = nn.LSTM(I, H, proj_size=proj_size, dtype=F64)
    torch_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    torch_names += ["weight_hr"] if proj_size else []
    with torch.no_grad():
        for name in torch_names:
            getattr(twin, name + "_l0").copy_(getattr(cell, name))
    xs = randn(T, N, I, seed=1).requires_grad_()
    h0 = randn(N, cell.output_size, seed=2).requires_grad_()
    c0 = randn(N, H, seed=3).requires_grad_()
    ys, (h, c) = rnnkit.scan(cell, xs, LSTMState(h0, c0))
    ys_t, (h_t, c_t) = twin(xs, (h0.unsqueeze(0), c0.unsqueeze(0)))
    torch.testing.assert_close(ys, ys_t, **TOL)
    torch.testing.assert_close(h, h_t[0], **TOL)
    torch.testing.assert_close(c, c_t[0], **TOL)
    ours = loss_and_grads([ys, h, c], [xs, h0, c0, *(getattr(cell, n) for n in torch_names)])
    theirs = loss_and_grads([ys_t, h_t[0], c_t[0]],
                            [xs, h0, c0, *(getattr(twin, n + "_l0") for n in torch_names)])
    for name, a, b in zip(["xs", "h0", "c0", *torch_names], ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("form", ["full", "lengths"])
@pytest.mark.parametrize("peephole", ["diagonal", "full"])
def test_zero_peephole_network_is_torch_lstm(peephole, form):
    """A 2-layer bidirectional network of peephole LSTMs, peepholes zeroed, is torch.nn.LSTM:
    outputs and gradients (input, initial state, every torch parameter)."""
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork("lstm", I, H, num_layers=2, bidirectional=True, dtype=F64,
                                  peephole=peephole)
    assert all(cell.native_mode() is None for _, _, cell in net._cells())
    zero_peepholes(net)
    twin = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=F64)
    keys = twin.load_state_dict(net.state_dict(), strict=False)
    extra = "weight_peephole" if peephole == "diagonal" else "weight_ch"
    assert keys.missing_keys == []
    assert sorted(keys.unexpected_keys) == sorted(
        f"{extra}_l{l}{suffix}" for l in (0, 1) for suffix in ("", "_reverse"))
    xs = randn(T, N, I, seed=1).requires_grad_()
    h0 = randn(4, N, H, seed=2).requires_grad_()
    c0 = randn(4, N, H, seed=3).requires_grad_()
    if form == "full":
        out, (h, c) = net(xs, (h0, c0))
        out_t, (h_t, c_t) = twin(xs, (h0, c0))
    else:
        out, (h, c) = net(xs, (h0, c0), lengths=torch.tensor(LENGTHS))
        packed = pack_padded_sequence(xs, LENGTHS, enforce_sorted=False)
        out_t, (h_t, c_t) = twin(packed, (h0, c0))
        out_t = pad_packed_sequence(out_t, total_length=T)[0]
    torch.testing.assert_close(out, out_t, **TOL)
    torch.testing.assert_close(h, h_t, **TOL)
    torch.testing.assert_close(c, c_t, **TOL)
    ours_params = net.state_dict(keep_vars=True)
    names = list(twin.state_dict())
    ours = loss_and_grads([out, h, c], [xs, h0, c0, *(ours_params[k] for k in names)])
    theirs = loss_and_grads([out_t, h_t, c_t],
                            [xs, h0, c0, *(getattr(twin, k) for k in names)])
    for name, a, b in zip(["xs", "h0", "c0", *names], ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("proj_size", [0, 2])
@pytest.mark.parametrize("value", [1.0, 2, -0.5])
def test_forget_bias_sets_only_the_forget_slice(value, proj_size):
    torch.manual_seed(0)
    cell = LSTMCell(I, H, proj_size=proj_size, forget_bias=value, dtype=F64)
    torch.manual_seed(0)
    twin = nn.LSTM(I, H, proj_size=proj_size, dtype=F64)  # torch's init, same seed
    f = slice(H, 2 * H)
    assert torch.equal(cell.bias_ih[f], torch.full((H,), float(value), dtype=F64))
    assert torch.equal(cell.bias_hh[f], torch.zeros(H, dtype=F64))
    for name in ("bias_ih", "bias_hh"):
        ours, theirs = getattr(cell, name), getattr(twin, name + "_l0")
        assert torch.equal(ours[:H], theirs[:H]) and torch.equal(ours[2 * H:], theirs[2 * H:])
    for name in ("weight_ih", "weight_hh") + (("weight_hr",) if proj_size else ()):
        assert torch.equal(getattr(cell, name), getattr(twin, name + "_l0"))
    assert cell.native_mode() == "lstm"
    assert list(cell.state_dict()) == [k.removesuffix("_l0") for k in twin.state_dict()]
    with torch.no_grad():  # reset_parameters re-applies it
        cell.bias_ih.zero_()
    cell.reset_parameters()
    assert torch.equal(cell.bias_ih[f], torch.full((H,), float(value), dtype=F64))
    assert torch.equal(cell.bias_hh[f], torch.zeros(H, dtype=F64))


def test_forget_bias_network_keeps_torch_keys_and_native_path(monkeypatch):
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork("lstm", I, H, num_layers=2, bidirectional=True, dtype=F64,
                                  forget_bias=1.0)
    twin = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=F64)
    assert list(net.state_dict()) == list(twin.state_dict())
    twin.load_state_dict(net.state_dict())
    assert torch.equal(twin.bias_ih_l1_reverse[H:2 * H], torch.ones(H, dtype=F64))

    def no_scan(*args):
        raise AssertionError("forget_bias left the native path")

    monkeypatch.setattr(net, "_forward_scan", no_scan)
    xs = randn(T, N, I, seed=1)
    torch.testing.assert_close(net(xs)[0], twin(xs)[0], **TOL)


def test_forget_bias_with_peephole_draws_torch_parameters_first():
    torch.manual_seed(0)
    cell = LSTMCell(I, H, peephole="full", forget_bias=1.0, dtype=F64)
    torch.manual_seed(0)
    twin = nn.LSTMCell(I, H, dtype=F64)
    assert torch.equal(cell.weight_ih, twin.weight_ih)
    assert torch.equal(cell.bias_hh[:H], twin.bias_hh[:H])
    assert torch.equal(cell.bias_ih[H:2 * H], torch.ones(H, dtype=F64))
    k = 1 / H ** 0.5
    assert cell.weight_ch.abs().max() <= k and cell.weight_ch.std() > 0


@pytest.mark.parametrize("opts, mode", [
    ({}, "lstm"),
    ({"proj_size": 2, "forget_bias": 1.0}, "lstm"),
    ({"peephole": "diagonal"}, None),
    ({"peephole": "full"}, None),
    ({"candidate_activation": "identity"}, None),
    ({"cell_activation": "identity"}, None),
])
def test_native_mode_only_for_the_torch_lstm(opts, mode):
    assert LSTMCell(I, H, **opts).native_mode() == mode


@pytest.mark.parametrize("opts, names, shapes", [
    ({}, [], []),
    ({"peephole": "diagonal"}, ["weight_peephole"], [(3 * H,)]),
    ({"peephole": "full", "proj_size": 2}, ["weight_ch"], [(3 * H, H)]),
])
def test_peephole_parameters_come_after_torch_ones(opts, names, shapes):
    cell = LSTMCell(I, H, **opts)
    torch_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    torch_names += ["weight_hr"] if opts.get("proj_size") else []
    params = dict(cell.named_parameters())
    assert list(params) == torch_names + names
    assert [tuple(params[n].shape) for n in names] == shapes


def test_default_lstm_is_unchanged():
    torch.manual_seed(0)
    cell = LSTMCell(I, H, dtype=F64)
    torch.manual_seed(0)
    twin = nn.LSTMCell(I, H, dtype=F64)
    assert repr(cell) == "LSTMCell(3, 4)"
    for name, p in twin.named_parameters():
        assert torch.equal(getattr(cell, name), p)
    x, h0, c0 = randn(N, I, seed=1), randn(N, H, seed=2), randn(N, H, seed=3)
    y, (h, c) = cell(x, LSTMState(h0, c0))
    h_t, c_t = twin(x, (h0, c0))
    torch.testing.assert_close(h, h_t, **TOL)
    torch.testing.assert_close(c, c_t, **TOL)


def test_lstm_repr_shows_non_default_options():
    cell = LSTMCell(3, 5, False, 2, peephole="full", forget_bias=None,
                    candidate_activation="identity", cell_activation="identity")
    assert repr(cell) == ("LSTMCell(3, 5, proj_size=2, bias=False, peephole='full', "
                          "candidate_activation='identity', cell_activation='identity')")
    assert repr(LSTMCell(3, 5, forget_bias=1)) == "LSTMCell(3, 5, forget_bias=1.0)"


@pytest.mark.parametrize("opts, exc, pieces", [
    ({"peephole": "diag"}, ValueError, ["peephole", "'diagonal'", "'full'", "None", "'diag'"]),
    ({"peephole": False}, ValueError, ["peephole", "'diagonal'", "got False"]),
    ({"candidate_activation": "relu"}, ValueError,
     ["candidate_activation", "'tanh'", "'identity'", "'relu'"]),
    ({"cell_activation": None}, ValueError, ["cell_activation", "'tanh'", "'identity'", "None"]),
    ({"forget_bias": "1"}, TypeError, ["forget_bias", "number", "'1'"]),
    ({"forget_bias": True}, TypeError, ["forget_bias", "number", "True"]),
    ({"forget_bias": float("inf")}, ValueError, ["forget_bias", "finite", "inf"]),
    ({"forget_bias": 1.0, "bias": False}, ValueError, ["forget_bias", "bias=False", "1.0"]),
])
def test_lstm_bad_options(opts, exc, pieces):
    with pytest.raises(exc) as info:
        LSTMCell(I, H, **opts)
    for piece in pieces:
        assert piece in str(info.value)


def test_peephole_true_means_diagonal():
    assert LSTMCell(I, H, peephole=True).peephole == "diagonal"
    assert "weight_peephole_l0" in rnnkit.LSTM(I, H, peephole=True).state_dict()


def test_forget_bias_without_bias_in_a_network():
    with pytest.raises(ValueError, match="forget_bias"):
        rnnkit.RecurrentNetwork("lstm", I, H, bias=False, forget_bias=1.0)


def test_peephole_lstm_factory():
    factory = get_cell("peephole_lstm")
    assert factory.__doc__.strip().splitlines()[0]
    cell = make_cell("peephole_lstm", I, H)
    assert isinstance(cell, LSTMCell) and cell.peephole == "diagonal"
    cell = make_cell("peephole_lstm", I, H, bias=False, peephole="full", proj_size=2)
    assert (cell.peephole, cell.proj_size, cell.bias) == ("full", 2, False)
    net = rnnkit.RecurrentNetwork("peephole_lstm", I, H, num_layers=2)
    assert "weight_peephole_l1" in net.state_dict()
    out, (h, c) = net(torch.randn(T, N, I))
    assert out.shape == (T, N, H) and c.shape == (2, N, H)


# ---- SCRN ------------------------------------------------------------------------------------


def test_scrn_alpha_zero_is_elman_with_sigmoid():
    """alpha = 0: s_t = B x_t, h_t = sigmoid((P B + A) x_t + R h_{t-1} + b), y = [h; B x]."""
    torch.manual_seed(0)
    cell = SCRNCell(I, H, context_size=3, alpha=0.0, dtype=F64)
    xs, h0, s0 = randn(T, N, I, seed=1), randn(N, H, seed=2), randn(N, 3, seed=3)
    ys, (h, s) = rnnkit.scan(cell, xs, SCRNState(h0, s0))  # s0 is forgotten at once
    W = cell.weight_P @ cell.weight_B + cell.weight_A  # the Elman input weight
    elman, h_e = [], h0
    for x in xs:
        h_e = torch.sigmoid(x @ W.T + h_e @ cell.weight_R.T + cell.bias)
        elman.append(h_e)
    torch.testing.assert_close(ys[..., :H], torch.stack(elman), **TOL)
    torch.testing.assert_close(ys[..., H:], xs @ cell.weight_B.T, **TOL)
    torch.testing.assert_close(h, h_e, **TOL)
    torch.testing.assert_close(s, xs[-1] @ cell.weight_B.T, **TOL)


def test_scrn_learned_alpha_starts_at_alpha_stays_in_unit_interval_and_learns():
    torch.manual_seed(0)
    cell = SCRNCell(I, H, context_size=3, alpha=0.9, learn_alpha=True, dtype=F64)
    torch.testing.assert_close(cell.alpha, torch.full((3,), 0.9, dtype=F64), **TOL)
    torch.manual_seed(0)
    fixed = SCRNCell(I, H, context_size=3, alpha=0.9, dtype=F64)  # the same until trained
    xs = randn(T, N, I, seed=1)
    torch.testing.assert_close(rnnkit.scan(cell, xs)[0], rnnkit.scan(fixed, xs)[0], **TOL)

    opt = torch.optim.Adam(cell.parameters(), lr=0.3)
    for step in range(40):  # one loss then its opposite: alpha moves both ways
        ys, _ = rnnkit.scan(cell, xs)
        sign = 1.0 if step < 20 else -1.0
        loss = sign * (ys[-1, :, H:] - ys[0, :, H:]).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        assert cell.alpha_logit.grad is not None
        assert torch.count_nonzero(cell.alpha_logit.grad) == 3
        opt.step()
        alpha = cell.alpha.detach()
        assert torch.all((alpha > 0) & (alpha < 1))
    assert not torch.allclose(cell.alpha.detach(), torch.full((3,), 0.9, dtype=F64))
    with torch.no_grad():  # any finite logit is a retention in (0, 1)
        cell.alpha_logit.copy_(torch.tensor([-30.0, 0.0, 30.0]))
    assert torch.all((cell.alpha > 0) & (cell.alpha < 1))


def test_scrn_shapes_defaults_and_repr():
    cell = SCRNCell(I, 10)
    assert cell.context_size == 5 and cell.output_size == 15
    assert cell.state_size == SCRNState(h=10, s=5)
    assert cell.alpha == 0.95 and cell.native_mode() is None
    assert SCRNCell(I, 1).context_size == 1
    assert [n for n, _ in SCRNCell(I, H, learn_alpha=True).named_parameters()] == [
        "weight_B", "weight_P", "weight_A", "weight_R", "bias", "alpha_logit"]
    assert list(SCRNCell(I, H, bias=False).state_dict()) == [
        "weight_B", "weight_P", "weight_A", "weight_R"]
    assert repr(cell) == "SCRNCell(3, 10, context_size=5, alpha=0.95)"
    assert repr(SCRNCell(I, H, False, context_size=1, alpha=0.5, learn_alpha=True)) == (
        "SCRNCell(3, 4, context_size=1, alpha=0.5, learn_alpha=True, bias=False)")
    assert make_cell("scrn", I, H).output_size == H + H // 2


@pytest.mark.parametrize("opts, exc, pieces", [
    ({"context_size": 0}, ValueError, ["context_size", ">= 1", "0"]),
    ({"context_size": 2.0}, TypeError, ["context_size", "int", "2.0"]),
    ({"alpha": 1.5}, ValueError, ["alpha", "0 <= alpha <= 1", "1.5"]),
    ({"alpha": -0.1}, ValueError, ["alpha", "0 <= alpha <= 1", "-0.1"]),
    ({"alpha": "high"}, TypeError, ["alpha", "number", "'high'"]),
    ({"alpha": 0.0, "learn_alpha": True}, ValueError, ["alpha", "0 < alpha < 1", "0.0"]),
    ({"alpha": 1.0, "learn_alpha": True}, ValueError, ["alpha", "learn_alpha", "1.0"]),
    ({"learn_alpha": 1}, TypeError, ["learn_alpha", "bool", "1"]),
])
def test_scrn_bad_options(opts, exc, pieces):
    with pytest.raises(exc) as info:
        SCRNCell(I, H, **opts)
    for piece in pieces:
        assert piece in str(info.value)
