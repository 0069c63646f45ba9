"""Jordan, fully recurrent and IRNN cells, checked against their equations.

Each cell is compared with a naive loop written here straight from the equations in its
docstring (plain tensor ops, one sequence at a time, no rnnkit code): outputs, final state and
the gradients with respect to the inputs, the initial state and every parameter, in float64
within 1e-10, through ``rnnkit.scan`` (also padded, both directions) and through layer 0 (forward
direction) of a 2-layer bidirectional ``RecurrentNetwork``. IRNN is an initialisation of the
Elman cell: its numbers, and its equality with ``torch.nn.RNN(nonlinearity="relu")``.
"""

import re

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.cells import ElmanCell, FullyRecurrentCell, FullyState, JordanCell, irnn, make_cell

I, H, O, N, T = 3, 4, 2, 3, 5  # input features, hidden units, output units, batch, time steps
LENGTHS = torch.tensor([5, 2, 4])
TOL = {"atol": 1e-10, "rtol": 1e-10}
F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=1):
    return torch.randn(*shape, dtype=F64, generator=gen(seed))


def msg(arg: str, *values: str) -> str:
    """A ``match`` pattern: ``arg`` as a whole word and every value literally, in any order."""
    looks = [rf"(?=.*(?<![\w.]){re.escape(arg)}(?!\w))"]
    looks += [f"(?=.*{re.escape(v)})" for v in values]
    return "(?s)^" + "".join(looks)


# ---- the equations, naively -------------------------------------------------------------------

PHI = {
    "tanh": torch.tanh,
    "relu": lambda z: torch.clamp(z, min=0),
    "sigmoid": lambda z: 1 / (1 + torch.exp(-z)),
    "identity": lambda z: z,
    "softmax": lambda z: torch.exp(z - z.max()) / torch.exp(z - z.max()).sum(),  # over O units
}


def naive_jordan(p, opts, xs, state):
    """One sequence: xs (T, I), state [y0 (O,)] -> ys (T, O), [y_T].
    h_t = phi_h(W_ih x_t + b_ih + W_yh y_{t-1} + b_yh);  y_t = phi_y(W_hy h_t + b_hy)."""
    phi_h, phi_y = PHI[opts.get("activation", "tanh")], PHI[opts.get("output_activation", "tanh")]
    b = {k: p.get(k, 0.0) for k in ("bias_ih", "bias_yh", "bias_hy")}
    (y,), ys = state, []
    for x in xs:
        h = phi_h(p["weight_ih"] @ x + b["bias_ih"] + p["weight_yh"] @ y + b["bias_yh"])
        y = phi_y(p["weight_hy"] @ h + b["bias_hy"])
        ys.append(y)
    return torch.stack(ys), [y]


def naive_fully(p, opts, xs, state):
    """One sequence: xs (T, I), state [h0 (H,), y0 (O,)] -> ys (T, O), [h_T, y_T].
    m = [h_{t-1}; y_{t-1}];  h_t = phi_h(W_ih x_t + b_ih + W_mh m);  y_t = phi_y(W_hy h_t +
    W_my m + b_hy)."""
    phi_h, phi_y = PHI[opts.get("activation", "tanh")], PHI[opts.get("output_activation", "tanh")]
    b = {k: p.get(k, 0.0) for k in ("bias_ih", "bias_hy")}
    (h, y), ys = state, []
    for x in xs:
        m = torch.cat([h, y])
        h = phi_h(p["weight_ih"] @ x + b["bias_ih"] + p["weight_mh"] @ m)
        y = phi_y(p["weight_hy"] @ h + p["weight_my"] @ m + b["bias_hy"])
        ys.append(y)
    return torch.stack(ys), [h, y]


NAIVE = {"jordan": naive_jordan, "fully": naive_fully}


def naive_batch(name, p, opts, xs, leaves, lengths=None, reverse=False):
    """Each sequence run alone over its own steps (reversed if ``reverse``); outputs zero-padded
    to T, final state leaves stacked over the batch."""
    outs, finals = [], []
    for n in range(xs.shape[1]):
        L = xs.shape[0] if lengths is None else int(lengths[n])
        x = xs[:L, n].flip(0) if reverse else xs[:L, n]
        ys, final = NAIVE[name](p, opts, x, [leaf[n] for leaf in leaves])
        ys = ys.flip(0) if reverse else ys
        outs.append(torch.cat([ys, ys.new_zeros(xs.shape[0] - L, ys.shape[1])]))
        finals.append(final)
    return [torch.stack(outs, 1), *(torch.stack(f) for f in zip(*finals, strict=True))]


def assert_same_values_and_grads(ours, naive, inputs):
    """Both lists of tensors equal, and the gradients of one random linear function of them
    equal (and nonzero) with respect to every tensor in ``inputs``; returns our gradients."""
    assert len(ours) == len(naive)
    for a, b in zip(ours, naive, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    cot = [randn(*o.shape, seed=100 + i) for i, o in enumerate(ours)]
    g_ours = torch.autograd.grad(sum((c * o).sum() for c, o in zip(cot, ours, strict=True)),
                                 inputs)
    g_naive = torch.autograd.grad(sum((c * o).sum() for c, o in zip(cot, naive, strict=True)),
                                  inputs)
    for i, (a, b) in enumerate(zip(g_ours, g_naive, strict=True)):
        assert torch.count_nonzero(a) > 0, f"input {i} gets no gradient"
        torch.testing.assert_close(a, b, **TOL)
    return g_ours


def randomise(module, seed=5):
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(0.6 * randn(*p.shape, seed=seed + i))


CASES = [
    ("jordan", {}, True),
    ("jordan", {"output_size": O, "activation": "relu", "output_activation": "softmax"}, True),
    ("jordan", {"output_size": 5, "activation": "sigmoid", "output_activation": "identity"},
     False),
    ("jordan", {"output_activation": "sigmoid"}, False),
    ("fully", {}, True),
    ("fully", {"output_size": O, "activation": "relu", "output_activation": "softmax"}, False),
    ("fully", {"output_size": 5, "activation": "sigmoid", "output_activation": "identity"}, True),
    ("fully", {"output_activation": "sigmoid"}, True),
]
IDS = [n + "".join(f"-{v}" for v in o.values()) + ("" if b else "-nobias")
       for n, o, b in CASES]


@pytest.mark.parametrize(
    "lengths, reverse", [(None, False), (LENGTHS, False), (LENGTHS, True)],
    ids=["full", "padded", "padded-reverse"],
)
@pytest.mark.parametrize("name, opts, bias", CASES, ids=IDS)
def test_scan_equals_naive_loop(name, opts, bias, lengths, reverse):
    cell = make_cell(name, I, H, bias=bias, dtype=F64, **opts)
    randomise(cell)
    p = dict(cell.named_parameters())
    xs = randn(T, N, I, seed=1).requires_grad_()
    sizes = [cell.output_size] if name == "jordan" else [H, cell.output_size]
    leaves = [randn(N, s, seed=2 + i).requires_grad_() for i, s in enumerate(sizes)]
    state = leaves[0] if name == "jordan" else FullyState(*leaves)

    ys, final = rnnkit.scan(cell, xs, state, reverse=reverse, lengths=lengths)
    ours = [ys, *([final] if name == "jordan" else final)]
    naive = naive_batch(name, p, opts, xs, leaves, lengths, reverse)
    assert_same_values_and_grads(ours, naive, [xs, *leaves, *p.values()])


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("name, opts, bias", CASES[:2] + CASES[4:6], ids=IDS[:2] + IDS[4:6])
def test_network_layer0_forward_equals_naive_loop(name, opts, bias, lengths):
    """Layer 0, forward direction, of a 2-layer bidirectional network: its outputs (caught with a
    hook), its final state in h_n[0], and gradients w.r.t. input, hx and its parameters, which
    are read by torch's flat names (weight_ih_l0, ...)."""
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(name, I, H, num_layers=2, bidirectional=True, bias=bias,
                                  native=False, dtype=F64, **opts)
    randomise(net)
    cell0 = net.stack.layers[0].fwd.cell
    p = {k: getattr(net, f"{k}_l0") for k, _ in cell0.named_weights()}
    assert p and all(p[k] is v for k, v in cell0.named_weights())
    caught = []
    net.stack.layers[0].fwd.register_forward_hook(lambda m, args, out: caught.append(out[0]))

    xs = randn(T, N, I, seed=1).requires_grad_()
    sizes = [cell0.output_size] if name == "jordan" else [H, cell0.output_size]
    hx = [randn(4, N, s, seed=2 + i).requires_grad_() for i, s in enumerate(sizes)]
    out, h_n = net(xs, hx[0] if len(hx) == 1 else tuple(hx), lengths=lengths)
    h_n = [h_n] if isinstance(h_n, torch.Tensor) else list(h_n)
    assert out.shape == (T, N, 2 * cell0.output_size) and len(caught) == 1
    ours = [caught[0], *(leaf[0] for leaf in h_n)]
    naive = naive_batch(name, p, opts, xs, [leaf[0] for leaf in hx], lengths)
    grads = assert_same_values_and_grads(ours, naive, [xs, *hx, *p.values()])
    for g in grads[1:1 + len(hx)]:  # only hx's layer-0 forward slice reaches layer 0 forward
        assert torch.count_nonzero(g[0]) > 0 and torch.count_nonzero(g[1:]) == 0


# ---- structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_jordan_parameters_state_and_defaults(bias):
    cell = JordanCell(I, H, bias, output_size=O)
    expected = [("weight_ih", (H, I)), ("bias_ih", (H,)), ("weight_yh", (H, O)),
                ("bias_yh", (H,)), ("weight_hy", (O, H)), ("bias_hy", (O,))]
    expected = [e for e in expected if bias or not e[0].startswith("bias")]
    assert [(k, tuple(v.shape)) for k, v in cell.named_parameters()] == expected
    assert (cell.output_size, cell.state_size, cell.native_mode()) == (O, O, None)
    assert JordanCell(I, H).output_size == JordanCell(I, H).state_size == H
    torch.testing.assert_close(cell.precompute(x := torch.randn(N, I)),
                               x @ cell.weight_ih.T + (cell.bias_ih if bias else 0))


@pytest.mark.parametrize("bias", [True, False])
def test_fully_parameters_state_and_defaults(bias):
    cell = FullyRecurrentCell(I, H, bias, output_size=O)
    expected = [("weight_ih", (H, I)), ("bias_ih", (H,)), ("weight_mh", (H, H + O)),
                ("weight_hy", (O, H)), ("weight_my", (O, H + O)), ("bias_hy", (O,))]
    expected = [e for e in expected if bias or not e[0].startswith("bias")]
    assert [(k, tuple(v.shape)) for k, v in cell.named_parameters()] == expected
    assert cell.state_size == FullyState(h=H, y=O) and type(cell.state_size) is FullyState
    assert cell.output_size == O and cell.native_mode() is None
    y, state = cell(torch.randn(N, I))
    assert type(state) is FullyState and state.y is y and state.h.shape == (N, H)
    assert FullyRecurrentCell(I, H).state_size == FullyState(h=H, y=H)


def test_softmax_output_sums_to_one():
    cell = JordanCell(I, H, output_size=O, output_activation="softmax", dtype=F64)
    ys, _ = rnnkit.scan(cell, randn(T, N, I))
    torch.testing.assert_close(ys.sum(-1), torch.ones(T, N, dtype=F64), **TOL)


def test_repr_and_torch_save_roundtrip(tmp_path):
    cell = FullyRecurrentCell(I, H, False, output_size=O, output_activation="softmax")
    assert repr(cell) == ("FullyRecurrentCell(3, 4, output_size=2, "
                          "output_activation='softmax', bias=False)")
    assert repr(JordanCell(I, H, activation="relu")) == "JordanCell(3, 4, activation='relu')"
    torch.save(cell, tmp_path / "cell.pt")
    back = torch.load(tmp_path / "cell.pt", weights_only=False)
    x = torch.randn(N, I)
    torch.testing.assert_close(back(x)[0], cell(x)[0], atol=0, rtol=0)


# ---- IRNN -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("bias", [True, False])
def test_irnn_initialisation(bias, scale):
    cell = irnn(I, H, bias, scale=scale, dtype=F64)
    assert type(cell) is ElmanCell and cell.nonlinearity == "relu"
    assert cell.native_mode() == "rnn_relu"
    assert torch.equal(cell.weight_hh, scale * torch.eye(H, dtype=F64))
    assert cell.weight_hh.dtype == cell.weight_ih.dtype == F64
    if bias:
        assert torch.count_nonzero(cell.bias_ih) == torch.count_nonzero(cell.bias_hh) == 0
    else:
        assert cell.bias_ih is None and cell.bias_hh is None
    assert all(p.requires_grad for p in cell.parameters())


def test_irnn_input_weights_are_normal_0_001_and_seeded():
    torch.manual_seed(0)
    w = irnn(400, 250).weight_ih.detach().double()  # 100 000 draws
    assert abs(w.mean().item()) < 2e-5  # the mean's standard error is 3e-6
    assert abs(w.std().item() / 0.001 - 1) < 0.05  # the std's relative error is 0.2%
    assert abs((w.abs() < 0.001).double().mean().item() - 0.6827) < 0.01  # normal, not uniform
    torch.manual_seed(3)
    a = irnn(I, H)
    torch.manual_seed(3)
    b = irnn(I, H)
    assert torch.equal(a.weight_ih, b.weight_ih) and not torch.equal(a.weight_ih, w[:H, :I])


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "scan"])
def test_irnn_network_equals_torch_rnn_relu(native, lengths):
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork("irnn", I, H, num_layers=2, bidirectional=True,
                                  native=native, dtype=F64, scale=0.9)
    for _, _, cell in net._cells():
        assert torch.equal(cell.weight_hh, 0.9 * torch.eye(H, dtype=F64))
        assert torch.count_nonzero(cell.bias_ih) == 0
    assert net.weight_ih_l1_reverse.shape == (H, 2 * H)
    twin = nn.RNN(I, H, num_layers=2, nonlinearity="relu", bidirectional=True, dtype=F64)
    result = twin.load_state_dict(net.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []

    xs, h0 = randn(T, N, I, seed=1), randn(4, N, H, seed=2)
    out, h_n = net(xs, h0, lengths=lengths)
    if lengths is None:
        out_t, h_t = twin(xs, h0)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(xs, lengths, enforce_sorted=False)
        out_t, h_t = twin(packed, h0)
        out_t = nn.utils.rnn.pad_packed_sequence(out_t, total_length=T)[0]
    torch.testing.assert_close(out, out_t, **TOL)
    torch.testing.assert_close(h_n, h_t, **TOL)


# ---- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [JordanCell, FullyRecurrentCell])
@pytest.mark.parametrize(
    "kwargs, exc, arg, expected, got",
    [
        ({"activation": "gelu"}, ValueError, "activation",
         ["'relu'", "'sigmoid'", "'tanh'"], "'gelu'"),
        ({"activation": "softmax"}, ValueError, "activation", ["'relu'"], "'softmax'"),
        ({"activation": torch.tanh}, ValueError, "activation", ["'tanh'"], "tanh"),
        ({"output_activation": "relu"}, ValueError, "output_activation",
         ["'identity'", "'sigmoid'", "'softmax'", "'tanh'"], "'relu'"),
        ({"output_activation": None}, ValueError, "output_activation", ["'softmax'"], "None"),
        ({"output_size": 0}, ValueError, "output_size", [">= 1"], "got 0"),
        ({"output_size": 2.0}, TypeError, "output_size", ["int"], "2.0"),
    ],
    ids=["activation-gelu", "activation-softmax", "activation-callable", "output_activation-relu",
         "output_activation-None", "output_size-0", "output_size-float"],
)
def test_bad_options(cls, kwargs, exc, arg, expected, got):
    with pytest.raises(exc, match=msg(arg, *expected, got)):
        cls(I, H, **kwargs)


@pytest.mark.parametrize(
    "scale, exc, expected",
    [("big", TypeError, "str ('big')"), (True, TypeError, "bool"),
     (float("inf"), ValueError, "inf"), (float("nan"), ValueError, "nan")],
    ids=["str", "bool", "inf", "nan"],
)
def test_irnn_bad_scale(scale, exc, expected):
    with pytest.raises(exc, match=msg("scale", "real number", expected)):
        irnn(I, H, scale=scale)


def test_bad_options_through_the_registry_and_network():
    with pytest.raises(ValueError, match=msg("output_activation", "'softmax'", "'bogus'")):
        rnnkit.RecurrentNetwork("jordan", I, H, output_activation="bogus")
    with pytest.raises(ValueError, match=msg("activation", "'sigmoid'", "'elu'")):
        make_cell("fully", I, H, activation="elu")
    with pytest.raises(TypeError, match="nonlinearity"):  # IRNN is ReLU by definition
        make_cell("irnn", I, H, nonlinearity="tanh")


def test_irnn_reset_parameters_restores_the_identity_start():
    cell = irnn(3, 5, scale=0.5)
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-1, 1)
    cell.reset_parameters()
    assert torch.equal(cell.weight_hh, 0.5 * torch.eye(5))
    assert torch.count_nonzero(cell.bias_ih) == 0 and torch.count_nonzero(cell.bias_hh) == 0
    assert cell.weight_ih.abs().max() < 0.01
