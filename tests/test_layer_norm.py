"""Layer normalization (Ba, Kiros & Hinton 2016), the ``layer_norm=True`` option of every cell
and network, checked against the equations written out here.

- ``scan`` equals a naive loop per cell configuration, with a layer norm of our own (mean,
  biased variance, eps 1e-5, gain, bias) and random gains and biases (float64, 1e-12), forward
  and reverse, padded or not; a network equals the naive stack read from its flat names;
- gradcheck through ``scan`` (LN parameters included), gradgradcheck for two cells;
- every façade: fused and reference paths agree; off is bit-identical to no option; seeds draw
  the other parameters as without it; names, shapes, initial values, ``reset_parameters``;
- regularizers, streaming, repr, no torch kernel, config; errors.
"""

import math

import pytest
import torch
from kernel_checks import gen, graph_names, randn

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
    irnn,
)
from rnnkit.cells.base import bind, state_from_leaves, state_leaves
from rnnkit.config import Config, load_config
from rnnkit.kernels import fused_scan
from rnnkit.tasks.base import recurrent_from_config, regularizer_options

F64 = torch.float64
T, N, I, H = 5, 3, 3, 4
LENGTHS = torch.tensor([5, 2, 4])
TIGHT = {"atol": 1e-12, "rtol": 1e-12}


def randomize_ln(module, seed=7):
    """Random gains (around 1) and biases for every layer normalization parameter."""
    g = gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "_ln_" in name:
                noise = torch.randn(p.shape, dtype=p.dtype, generator=g)
                p.copy_(1 + 0.5 * noise if name.startswith("weight_ln_") else 0.3 * noise)


# ---- the equations, naively ----------------------------------------------------------------------


def ln(z, c, name):
    """Our own layer norm over the last dim: (z - mean) / sqrt(biased var + 1e-5) * g + b."""
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    return (z - mu) / torch.sqrt(var + 1e-5) * getattr(c, f"weight_ln_{name}") \
        + getattr(c, f"bias_ln_{name}")


def mm(x, w):
    return x @ w.T


def identity(z):
    return z


def elman_step(c, x, state):
    phi = {"tanh": torch.tanh, "relu": torch.relu}[c.nonlinearity]
    (h,) = state
    h = phi(ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih + ln(mm(h, c.weight_hh), c, "hh")
            + c.bias_hh)
    return h, [h]


def gru_step(c, x, state):
    (h,) = state
    u_r, u_z, u_n = (ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih).chunk(3, dim=1)
    g_r, g_z, g_n = (ln(mm(h, c.weight_hh), c, "hh") + c.bias_hh).chunk(3, dim=1)
    r, z = torch.sigmoid(u_r + g_r), torch.sigmoid(u_z + g_z)
    n = torch.tanh(u_n + r * g_n)
    h = (1 - z) * n + z * h
    return h, [h]


def lstm_step(c, x, state):
    act = {"tanh": torch.tanh, "identity": identity}
    h, cell = state
    z = ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih + ln(mm(h, c.weight_hh), c, "hh") + c.bias_hh
    i, f, g, o = z.chunk(4, dim=1)
    if c.peephole == "diagonal":
        p_i, p_f, p_o = c.weight_peephole.chunk(3)
        i, f = i + p_i * cell, f + p_f * cell
    elif c.peephole == "full":
        P_i, P_f, P_o = c.weight_ch.chunk(3)
        i, f = i + mm(cell, P_i), f + mm(cell, P_f)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * act[c.candidate_activation](g)
    if c.peephole == "diagonal":
        o = o + p_o * cell
    elif c.peephole == "full":
        o = o + mm(cell, P_o)
    h = torch.sigmoid(o) * act[c.cell_activation](ln(cell, c, "c"))
    if c.proj_size:
        h = mm(h, c.weight_hr)
    return h, [h, cell]


def jordan_step(c, x, state):
    (y,) = state
    h = torch.tanh(ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih + ln(mm(y, c.weight_yh), c, "hh")
                   + c.bias_yh)
    y = torch.tanh(mm(h, c.weight_hy) + c.bias_hy)  # the output layer: not normalized
    return y, [y]


def fully_step(c, x, state):
    m = torch.cat(state, dim=1)
    h = torch.tanh(ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih + ln(mm(m, c.weight_mh), c, "hh"))
    y = torch.tanh(mm(h, c.weight_hy) + c.bias_hy + mm(m, c.weight_my))
    return y, [h, y]


def clockwork_step(c, x, state):
    h, t = state
    periods = torch.tensor(c.periods).repeat_interleave(c.hidden_size // len(c.periods))
    mask = (periods[None, :] >= periods[:, None]).to(F64)  # unit i reads unit j if T_j >= T_i
    candidate = torch.tanh(ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih
                           + ln(mm(h, c.weight_hh * mask), c, "hh") + c.bias_hh)
    active = t.long() % periods == 0  # (N, H)
    h = torch.where(active, candidate, h)
    return h, [h, t + 1]


def scrn_step(c, x, state):
    h, s = state
    alpha = torch.sigmoid(c.alpha_logit) if c.learn_alpha else c.alpha_init
    s = (1 - alpha) * mm(x, c.weight_B) + alpha * s  # the context: not normalized
    h = torch.sigmoid(ln(mm(x, c.weight_A), c, "ih") + c.bias + mm(s, c.weight_P)
                      + ln(mm(h, c.weight_R), c, "hh"))
    return torch.cat([h, s], dim=1), [h, s]


def indrnn_step(c, x, state):
    (h,) = state
    phi = torch.tanh if c.nonlinearity == "tanh" else torch.relu
    h = phi(ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih + c.weight_hh * h)  # u h: nothing to norm
    return h, [h]


def min_step(c, x, state):
    """minGRU's and minLSTM's step (their docstrings), the input product normalized."""
    (h,) = state
    H = c.hidden_size
    u = ln(mm(x, c.weight_ih), c, "ih") + c.bias_ih
    cand = torch.where(u[:, -H:] >= 0, u[:, -H:] + 0.5, torch.sigmoid(u[:, -H:]))
    if isinstance(c, MinLSTMCell):
        f, i = torch.sigmoid(u[:, :H]), torch.sigmoid(u[:, H : 2 * H])
        h = f / (f + i) * h + i / (f + i) * cand
    else:
        z = torch.sigmoid(u[:, :H])
        h = (1 - z) * h + z * cand
    return h, [h]


def ctrnn_step(c, x, state):
    (h,) = state
    dt = c.dt
    if c.dt_input:
        x, dt = x[:, :-1], x[:, -1:]
    alpha = dt / torch.exp(c.log_tau)
    drive = ln(mm(x, c.weight_ih), c, "ih") + c.bias
    h = (1 - alpha) * h + alpha * (ln(mm(torch.tanh(h), c.weight_hh), c, "hh") + drive)
    return torch.tanh(h), [h]


CELLS = {  # name: (factory, options, naive step)
    "elman-tanh": (ElmanCell, {}, elman_step),
    "elman-relu": (ElmanCell, {"nonlinearity": "relu"}, elman_step),
    "irnn": (irnn, {}, elman_step),
    "gru": (GRUCell, {}, gru_step),
    "lstm": (LSTMCell, {}, lstm_step),
    "lstm-diagonal": (LSTMCell, {"peephole": "diagonal"}, lstm_step),
    "lstm-full": (LSTMCell, {"peephole": "full"}, lstm_step),
    "lstm-proj": (LSTMCell, {"proj_size": 2}, lstm_step),
    "lstm-identity": (LSTMCell, {"cell_activation": "identity"}, lstm_step),
    "jordan": (JordanCell, {"output_size": 3}, jordan_step),
    "fully": (FullyRecurrentCell, {"output_size": 3}, fully_step),
    "clockwork": (ClockworkCell, {"periods": (1, 2)}, clockwork_step),
    "scrn": (SCRNCell, {"context_size": 2}, scrn_step),
    "scrn-learned": (SCRNCell, {"context_size": 2, "learn_alpha": True, "alpha": 0.7},
                     scrn_step),
    "ctrnn": (CTRNNCell, {"dt": 0.5}, ctrnn_step),
    "ctrnn-dt-input": (CTRNNCell, {"dt_input": True}, ctrnn_step),
    "indrnn": (IndRNNCell, {}, indrnn_step),
    "indrnn-tanh": (IndRNNCell, {"nonlinearity": "tanh"}, indrnn_step),
    "mingru": (MinGRUCell, {}, min_step),
    "minlstm": (MinLSTMCell, {}, min_step),
}


def make(name, input_size=I, hidden_size=H, seed=0):
    """A float64 layer-normalized cell with random LN parameters (and time constants)."""
    factory, options, _ = CELLS[name]
    torch.manual_seed(seed)
    cell = factory(input_size, hidden_size, layer_norm=True, dtype=F64, **options)
    randomize_ln(cell)
    if isinstance(cell, CTRNNCell):
        with torch.no_grad():
            cell.log_tau.copy_(0.3 * randn(hidden_size, seed=3))
    return cell


def inputs(cell, t=T, n=N, seed=1):
    """Random inputs (a positive last channel for a Δt input) and a random initial state
    (leaves), the clockwork counter at small integers."""
    xs = randn(t, n, cell.input_size, seed=seed)
    if getattr(cell, "dt_input", False):
        xs[..., -1] = xs[..., -1].abs() + 0.1
    leaves = [0.5 * randn(n, size, seed=seed + 1 + k)
              for k, size in enumerate(state_leaves(cell.state_size))]
    if isinstance(cell, ClockworkCell):
        leaves[1] = torch.arange(n, dtype=F64).unsqueeze(1)
    return xs, leaves


def naive_scan(step, c, xs, leaves, *, reverse=False, lengths=None):
    """The loop: outputs past a length are zero and the state is carried there."""
    ys = [None] * xs.shape[0]
    for t in (reversed(range(xs.shape[0])) if reverse else range(xs.shape[0])):
        y, new = step(c, xs[t], leaves)
        if lengths is not None:
            m = (t < lengths).unsqueeze(1)
            y = torch.where(m, y, torch.zeros_like(y))
            new = [torch.where(m, a, b) for a, b in zip(new, leaves, strict=True)]
        ys[t], leaves = y, new
    return torch.stack(ys), leaves


# ---- 1. scan equals the naive loop ---------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CELLS))
def test_scan_equals_naive_loop(name, reverse, lengths):
    cell = make(name)
    xs, leaves = inputs(cell)
    ys, final = scan(cell, xs, state_from_leaves(cell.state_size, leaves), reverse=reverse,
                     lengths=lengths)
    with torch.no_grad():
        want, want_final = naive_scan(CELLS[name][2], cell, xs, leaves, reverse=reverse,
                                      lengths=lengths)
    torch.testing.assert_close(ys, want, **TIGHT)
    for a, b in zip(state_leaves(final), want_final, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("name", ["lstm-full", "gru", "scrn-learned", "ctrnn-dt-input"])
def test_cell_forward_is_one_naive_step(name):
    cell = make(name)
    xs, leaves = inputs(cell)
    y, new = cell(xs[0], state_from_leaves(cell.state_size, leaves))
    want, want_new = CELLS[name][2](cell, xs[0], leaves)
    torch.testing.assert_close(y, want, **TIGHT)
    for a, b in zip(state_leaves(new), want_new, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


def test_layer_norm_changes_the_numbers():
    """Sanity of the naive check: the same weights without normalization differ."""
    cell = make("lstm")
    xs, leaves = inputs(cell)
    plain = LSTMCell(I, H, dtype=F64)
    plain.load_state_dict({k: v for k, v in cell.state_dict().items() if "_ln_" not in k})
    state = state_from_leaves(cell.state_size, leaves)
    assert (scan(cell, xs, state)[0] - scan(plain, xs, state)[0]).abs().max() > 1e-2


# ---- 2. gradients --------------------------------------------------------------------------------


def scan_function(cell, reverse, lengths):
    """``f(xs, *state leaves, *parameters)`` -> outputs and final state leaves, through scan."""
    names = [n for n, _ in cell.named_parameters()]
    k = len(state_leaves(cell.state_size))

    def f(xs, *rest):
        leaves, params = rest[:k], rest[k:]
        with bind({cell: dict(zip(names, params, strict=True))}):
            ys, final = scan(cell, xs, state_from_leaves(cell.state_size, list(leaves)),
                             reverse=reverse, lengths=lengths)
        return (ys, *state_leaves(final))

    return f, [p.detach().clone() for _, p in cell.named_parameters()]


def grad_inputs(cell, seed=1):
    xs, leaves = inputs(cell, t=3, n=2, seed=seed)
    if isinstance(cell, ClockworkCell):  # the counter is not differentiable: a constant
        leaves = [leaves[0].requires_grad_(), leaves[1]]
    else:
        leaves = [leaf.requires_grad_() for leaf in leaves]
    return xs.requires_grad_(), leaves


@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_through_scan(name):
    reverse = name.endswith(("relu", "full", "learned", "gru", "proj"))
    if name == "clockwork":  # three modules of one unit
        cell = ClockworkCell(2, 3, periods=(1, 2, 4), layer_norm=True, dtype=F64)
        randomize_ln(cell)
    else:
        cell = make(name, input_size=2 + (name == "ctrnn-dt-input"), hidden_size=3)
    f, params = scan_function(cell, reverse, torch.tensor([3, 2]))
    xs, leaves = grad_inputs(cell)
    assert torch.autograd.gradcheck(f, (xs, *leaves, *[p.requires_grad_() for p in params]))


@pytest.mark.parametrize("name", ["lstm-diagonal", "gru"])
def test_gradgradcheck_through_scan(name):
    cell = make(name, input_size=2, hidden_size=2)
    f, params = scan_function(cell, True, torch.tensor([3, 1]))
    xs, leaves = grad_inputs(cell)
    ln_params = [p.requires_grad_(n.startswith(("weight_ln", "bias_ln")))
                 for (n, _), p in zip(cell.named_parameters(), params, strict=True)]
    assert torch.autograd.gradgradcheck(f, (xs, *leaves, *ln_params))


# ---- 3. networks ---------------------------------------------------------------------------------

FACADES = {  # name: (class, options, layer norm widths per cell)
    "RNN": (rnnkit.RNN, {}, {"ih": H, "hh": H}),
    "LSTM": (rnnkit.LSTM, {}, {"ih": 4 * H, "hh": 4 * H, "c": H}),
    "LSTM-proj-peephole": (rnnkit.LSTM, {"proj_size": 2, "peephole": "full"},
                           {"ih": 4 * H, "hh": 4 * H, "c": H}),
    "GRU": (rnnkit.GRU, {}, {"ih": 3 * H, "hh": 3 * H}),
    "IRNN": (rnnkit.IRNN, {}, {"ih": H, "hh": H}),
    "Jordan": (rnnkit.Jordan, {"output_size": 3}, {"ih": H, "hh": H}),
    "FullyRecurrent": (rnnkit.FullyRecurrent, {"output_size": 3}, {"ih": H, "hh": H}),
    "Clockwork": (rnnkit.Clockwork, {"periods": (1, 2)}, {"ih": H, "hh": H}),
    "SCRN": (rnnkit.SCRN, {"context_size": 2, "learn_alpha": True}, {"ih": H, "hh": H}),
    "CTRNN": (rnnkit.CTRNN, {"dt": 0.5}, {"ih": H, "hh": H}),
    "CTRNN-dt": (rnnkit.CTRNN, {"dt": None}, {"ih": H, "hh": H}),
}


def facade(name, seed=0, num_layers=2, bidirectional=True, **options):
    cls, opts, _ = FACADES[name]
    torch.manual_seed(seed)
    return cls(I, H, num_layers=num_layers, bidirectional=bidirectional, dtype=F64,
               **{**opts, **options})


def run(net, x, lengths=None):
    if isinstance(net, rnnkit.CTRNN) and net.dt is None:
        dt = x[..., 0].abs().detach() + 0.1  # (T, N)
        return net(x, lengths=lengths, dt=dt)
    return net(x, lengths=lengths)


def outputs_and_grads(net, x, lengths):
    x = x.clone().requires_grad_()
    out, state = run(net, x, lengths)
    leaves = list(state) if isinstance(state, tuple) else [state]
    weights = randn(*out.shape, seed=9)
    loss = (out * weights).sum() + sum(leaf.sum() * (k + 2) for k, leaf in enumerate(leaves))
    params = [p for _, p in net.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *params], allow_unused=True)
    return [out, *leaves], grads


def assert_all_close(a, b, **tol):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        if u is None or v is None:
            assert u is None and v is None
        else:
            torch.testing.assert_close(u, v, **(tol or TIGHT))


@pytest.mark.parametrize("name", list(FACADES))
def test_network_fused_equals_reference(name):
    net = facade(name, layer_norm=True)
    randomize_ln(net)
    x = randn(T, N, I)
    net.fused = True
    fused = outputs_and_grads(net, x, LENGTHS)
    net.fused = False
    ref = outputs_and_grads(net, x, LENGTHS)
    assert_all_close(fused[0], ref[0])
    assert_all_close(fused[1], ref[1])
    names = [n for n, _ in net.named_parameters()]
    ln_grads = [g for n, g in zip(names, fused[1][1:], strict=True) if "_ln_" in n]
    assert ln_grads and all(g is not None and g.abs().sum() > 0 for g in ln_grads)


class FlatWeights:
    """A cell's weights read from a network's state dict by flat name; options from ``cell``."""

    def __init__(self, cell, state_dict, suffix):
        self._cell, self._sd, self._suffix = cell, state_dict, suffix

    def __getattr__(self, name):
        key = name + self._suffix
        return self._sd[key] if key in self._sd else getattr(self._cell, name)


@pytest.mark.parametrize("name, cell_name", [("LSTM", "lstm"), ("GRU", "gru"),
                                             ("SCRN", "scrn-learned")])
def test_network_equals_naive_stack_by_flat_names(name, cell_name):
    net = facade(name, layer_norm=True)
    randomize_ln(net)
    template = make(cell_name)
    own = [n for n, _ in template.named_parameters()]
    sd = net.state_dict()
    x = randn(T, N, I)
    out, state = net(x, lengths=LENGTHS)
    xs, finals = x, []
    for layer in range(2):
        ys = []
        for d, suffix in enumerate((f"_l{layer}", f"_l{layer}_reverse")):
            assert all(n + suffix in sd for n in own)
            w = FlatWeights(template, sd, suffix)
            zeros = [torch.zeros(N, s, dtype=F64) for s in state_leaves(template.state_size)]
            y, final = naive_scan(CELLS[cell_name][2], w, xs, zeros, reverse=bool(d),
                                  lengths=LENGTHS)
            ys.append(y)
            finals.append(final)
        xs = torch.cat(ys, dim=-1)
    torch.testing.assert_close(out, xs, **TIGHT)
    leaves = list(state) if isinstance(state, tuple) else [state]
    for k, leaf in enumerate(leaves):
        torch.testing.assert_close(leaf, torch.stack([f[k] for f in finals]), **TIGHT)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "Jordan"])
def test_layer_norm_false_is_bit_identical(name):
    a, b = facade(name), facade(name, layer_norm=False)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))
    assert not any(c.layer_norm for _, _, c in b._cells())
    x = randn(T, N, I)
    for u, v in zip(outputs_and_grads(a, x, LENGTHS), outputs_and_grads(b, x, LENGTHS),
                    strict=True):
        assert all(torch.equal(p, q) for p, q in zip(u, v, strict=True))


@pytest.mark.parametrize("name", list(FACADES))
def test_seeded_network_draws_other_parameters_as_without(name):
    plain, normed = facade(name).state_dict(), facade(name, layer_norm=True).state_dict()
    assert set(normed) - set(plain) == {k for k in normed if "_ln_" in k}
    assert set(plain) <= set(normed)
    for key, value in plain.items():
        assert torch.equal(normed[key], value), key


# ---- 4. names, shapes, initial values, reset_parameters ------------------------------------------


@pytest.mark.parametrize("name", list(FACADES))
def test_names_shapes_and_initial_values(name):
    net = facade(name, layer_norm=True)
    widths = FACADES[name][2]
    sd = net.state_dict()
    want = {f"{kind}_ln_{part}_l{layer}{sfx}": (width,)
            for layer in range(2) for sfx in ("", "_reverse")
            for part, width in widths.items() for kind in ("weight", "bias")}
    assert {k: tuple(v.shape) for k, v in sd.items() if "_ln_" in k} == want
    for key in want:
        assert torch.equal(sd[key], torch.full_like(sd[key], key.startswith("weight")))
    for suffix in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):  # after the cell's others
        names = [k for k in sd if k.endswith(suffix)]
        n_ln = 2 * len(widths)
        assert all("_ln_" in k for k in names[-n_ln:])
        assert not any("_ln_" in k for k in names[:-n_ln])


def test_lstm_state_dict_order():
    names = list(facade("LSTM", layer_norm=True).state_dict())
    assert names[:10] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                          "weight_ln_ih_l0", "bias_ln_ih_l0", "weight_ln_hh_l0",
                          "bias_ln_hh_l0", "weight_ln_c_l0", "bias_ln_c_l0"]
    assert names[-2:] == ["weight_ln_c_l1_reverse", "bias_ln_c_l1_reverse"]


def scramble(module):
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(5.0)


def assert_ln_reset(named_params):
    named = dict(named_params)
    ln = {k: v for k, v in named.items() if "_ln_" in k}
    assert ln
    for key, p in ln.items():
        assert torch.equal(p, torch.full_like(p, key.startswith("weight"))), key
    assert all(not torch.all(p == 5.0) for k, p in named.items() if k not in ln)


@pytest.mark.parametrize("name", list(FACADES))
def test_network_reset_parameters_restores_ones_and_zeros(name):
    net = facade(name, layer_norm=True)
    scramble(net)
    net.reset_parameters()
    assert_ln_reset(net.named_parameters())
    if name == "IRNN":
        assert torch.equal(net.weight_hh_l1, torch.eye(H, dtype=F64))
    if name == "SCRN":
        torch.testing.assert_close(net.alpha_logit_l0, torch.full((2,), math.log(0.95 / 0.05),
                                                                  dtype=F64))
    if name == "CTRNN":
        assert torch.equal(net.log_tau_l0, torch.zeros(H, dtype=F64))


@pytest.mark.parametrize("name", ["elman-tanh", "irnn", "gru", "lstm-full", "clockwork", "scrn",
                                  "scrn-learned", "ctrnn", "jordan", "fully"])
def test_cell_reset_parameters_restores_ones_and_zeros(name):
    cell = make(name)
    scramble(cell)
    cell.reset_parameters()
    assert_ln_reset(cell.named_parameters())
    if name == "irnn":
        assert torch.equal(cell.weight_hh, torch.eye(H, dtype=F64))
        assert torch.equal(cell.bias_hh, torch.zeros(H, dtype=F64))
    if name == "scrn-learned":
        torch.testing.assert_close(cell.alpha_logit, torch.full((2,), math.log(0.7 / 0.3),
                                                                dtype=F64))
    if name == "ctrnn":
        assert torch.equal(cell.log_tau, torch.zeros(H, dtype=F64))
    if name == "clockwork":
        assert torch.equal(cell.weight_hh, cell.weight_hh * cell.mask)


# ---- 5. with the regularizers --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN", "Jordan", "FullyRecurrent", "Clockwork",
                                  "SCRN", "CTRNN"])
def test_regularized_training_fused_equals_reference(name):
    net = facade(name, layer_norm=True, recurrent_dropout=0.25, zoneout=0.2, weight_drop=0.3)
    randomize_ln(net)
    net.train()
    x = randn(T, N, I)
    results = []
    for fused in (True, False):
        net.fused = fused
        torch.manual_seed(5)
        results.append(outputs_and_grads(net, x, LENGTHS))
    assert_all_close(results[0][0], results[1][0])
    assert_all_close(results[0][1], results[1][1])
    torch.manual_seed(6)  # other masks, other numbers: the regularizers did act
    assert (outputs_and_grads(net, x, LENGTHS)[0][0] - results[0][0][0]).abs().max() > 1e-6


# ---- 6. streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["LSTM", "LSTM-proj-peephole", "GRU", "Clockwork", "SCRN"])
def test_streaming_equals_forward(name, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("torch's cell kernel ran")

    net = facade(name, bidirectional=False, layer_norm=True).eval()
    randomize_ln(net)
    for kernel in ("lstm_cell", "gru_cell", "rnn_tanh_cell"):
        monkeypatch.setattr(torch._VF, kernel, boom, raising=False)
    x = randn(T, N, I)
    with torch.no_grad():
        out, final = net(x, lengths=LENGTHS)
        state, ys = net.initial_state(N), []
        for t in range(T):
            y, state = net.step(x[t], state, valid=t < LENGTHS)
            ys.append(y)
    torch.testing.assert_close(torch.stack(ys), out, **TIGHT)
    for a, b in zip(state_leaves(state), state_leaves(final), strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


# ---- 7. repr, native mode, no torch kernel -------------------------------------------------------


@pytest.mark.parametrize("name", list(CELLS))
def test_repr_shows_layer_norm(name):
    factory, options, _ = CELLS[name]
    assert "layer_norm=True" in repr(make(name))
    assert "layer_norm" not in repr(factory(I, H, **options))


def test_network_repr_shows_layer_norm():
    assert "layer_norm=True" in repr(facade("GRU", layer_norm=True))
    assert "layer_norm" not in repr(facade("GRU"))


@pytest.mark.parametrize("name, mode", [("lstm", "lstm"), ("gru", "gru"),
                                        ("elman-tanh", "rnn_tanh"), ("irnn", "rnn_relu")])
def test_native_mode_is_none_with_layer_norm(name, mode):
    factory, options, _ = CELLS[name]
    assert factory(I, H, **options).native_mode() == mode
    assert make(name).native_mode() is None


@pytest.mark.parametrize("name", list(CELLS))
def test_fused_kernel_for_a_layer_normalized_cell_where_it_normalizes(name):
    factory, options, _ = CELLS[name]
    assert fused_scan(factory(I, H, **options)) is not None
    assert fused_scan(make(name)) is not None  # (every cell's kernel normalizes)


@pytest.mark.parametrize("name, kernel", [("LSTM", "lstm"), ("GRU", "gru"), ("RNN", "rnn_tanh")])
def test_layer_normalized_network_does_not_call_torchs_kernel(name, kernel, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("torch's kernel ran")

    monkeypatch.setattr(torch._VF, kernel, boom)
    x = randn(T, N, I, seed=4).requires_grad_()
    with pytest.raises(AssertionError, match="torch's kernel ran"):  # (the patch bites)
        facade(name, native=True, fused=False)(x)
    net = facade(name, native=True, layer_norm=True)
    for fused, lengths in [(True, None), (True, LENGTHS), (False, None), (False, LENGTHS)]:
        net.fused = fused
        out, _ = net(x, lengths=lengths)
        names = graph_names(out)  # normalized by F.layer_norm, or inside rnnkit's op
        assert "NativeLayerNormBackward0" in names or any("rnnkit_" in n for n in names)


# ---- 8. config -----------------------------------------------------------------------------------


def test_regularizer_options_maps_layer_norm():
    cfg = Config().model
    assert "layer_norm" not in regularizer_options(cfg)
    cfg.layer_norm = True
    assert regularizer_options(cfg) == {"layer_norm": True}


@pytest.mark.parametrize("cell", ["lstm", "gru", "scrn"])
def test_run_config_builds_layer_normalized_network(cell, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(f'[model]\ncell = "{cell}"\nhidden_size = 4\nnum_layers = 2\n'
                    "bidirectional = true\nlayer_norm = true\n")
    cfg = load_config(path)
    assert cfg.model.layer_norm is True
    net = recurrent_from_config(cfg.model, input_size=3)
    assert all(c.layer_norm for _, _, c in net._cells())
    assert "weight_ln_hh_l1_reverse" in net.state_dict()
    off = recurrent_from_config(Config().model, input_size=3)
    assert not any("_ln_" in k for k in off.state_dict())


# ---- 9. errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [
    lambda: LSTMCell(I, H, layer_norm="yes"),
    lambda: ElmanCell(I, H, layer_norm="yes"),
    lambda: rnnkit.GRU(I, H, layer_norm="yes"),
    lambda: rnnkit.SCRN(I, H, layer_norm=1),
], ids=["LSTMCell", "ElmanCell", "GRU", "SCRN-int"])
def test_non_bool_layer_norm_is_a_type_error(build):
    with pytest.raises(TypeError, match="layer_norm"):
        build()


KERNEL_CALLS = {
    "elman-tanh": lambda c, xs, s: kernels.elman_sequence(c, xs, s),
    "gru": lambda c, xs, s: kernels.gru_sequence(c, xs, s),
    "lstm": lambda c, xs, s: kernels.lstm_sequence(c, xs, *s),
    "jordan": lambda c, xs, s: kernels.jordan_sequence(c, xs, s),
    "fully": lambda c, xs, s: kernels.fully_sequence(c, xs, s),
    "clockwork": lambda c, xs, s: kernels.clockwork_sequence(c, xs, s),
    "scrn": lambda c, xs, s: kernels.scrn_sequence(c, xs, s),
    "ctrnn": lambda c, xs, s: kernels.ctrnn_sequence(c, xs, s),
}


@pytest.mark.parametrize("name", list(KERNEL_CALLS))
def test_fused_kernel_refuses_or_matches_a_layer_normalized_cell(name):
    cell = make(name)
    xs, leaves = inputs(cell)
    state = state_from_leaves(cell.state_size, leaves)
    try:
        ys = KERNEL_CALLS[name](cell, xs, state)[0]
    except (TypeError, ValueError, NotImplementedError):
        return
    torch.testing.assert_close(ys, scan(cell, xs, state)[0], **TIGHT)
