"""torch's weight utilities on rnnkit networks: the flat weights are real parameters.

weight_norm and spectral_norm (the old hook-based functions and the parametrizations),
register_parametrization, plain ``nn.Parameter`` assignment, AWD-LSTM's weight drop and
``torch.func.functional_call`` act on ``net.weight_hh_l0`` & co. exactly as on torch.nn's RNNs:

- against torch.nn twins (RNN, LSTM with and without projection, GRU), on every rnnkit path:
  outputs, final states, every gradient, state_dict keys and state_dict loading;
- for every registered cell and path: the reparametrized network equals a plain copy holding
  the reparametrized value, and the gradients of the new parameters are the chain rule's;
- a parametrization is computed once per forward; wrong shapes are named; pickling and
  deepcopy keep a reparametrized network working on its own weights;
- a backward differentiates its own forward's weights (double backward too), and
  reset_parameters() re-initialises what a reparametrized weight is computed from, as torch's.
"""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn
from torch.nn.utils import parametrizations

import rnnkit
from rnnkit.cells import cell_names, make_cell
from rnnkit.kernels import fused_scan

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported"),
    # the old hook-based weight_norm is deprecated in favour of the parametrization; both tested
    pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*is deprecated"),
]

DT = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-10}
I, H, T, N = 3, 5, 5, 2
P_DROP = 0.5  # weight-drop probability

PATHS = {"native": {"native": True}, "fused": {"native": False, "fused": True},
         "scan": {"native": False, "fused": False}}


def cell_paths(cell: str, hidden_size: int = H, **options) -> list[str]:
    """The paths that compute ``cell`` differently: native where a torch kernel computes it,
    fused where rnnkit has a kernel for it, and always the reference scan."""
    c = make_cell(cell, I, hidden_size, **options)
    return ([p for p, has in (("native", c.native_mode() is not None),
                              ("fused", fused_scan(c) is not None)) if has] + ["scan"])


# ---- the utilities, applied alike to an rnnkit network and a torch.nn twin --------------------


class RowScale(nn.Module):
    """A custom parametrization with a parameter of its own: rows scaled, plus a nonlinearity."""

    def __init__(self, rows: int):
        super().__init__()
        self.scale = nn.Parameter(1 + 0.5 * torch.rand(rows, dtype=DT))

    def forward(self, X):
        return row_scale_value(X, self.scale)


def row_scale_value(X, scale):
    return X * scale[:, None] + 0.1 * torch.tanh(X)


def weight_norm_value(g, v):
    """``g * v / ||v||`` with the norm over every dimension but 0 (weight_norm's dim=0)."""
    return g * v / v.norm(dim=1, keepdim=True)


class Count(nn.Module):
    """An identity parametrization that counts how often the weight is computed."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, X):
        self.calls += 1
        return X


UTILS = ["weight_norm_old", "spectral_norm_old", "weight_norm", "spectral_norm", "custom",
         "parameter", "weight_drop"]


def apply_util(util: str, m: nn.Module, names: list[str], seed: int) -> None:
    """Apply ``util`` to the flat weights ``names`` of ``m`` after ``manual_seed(seed)``; set
    the mode the comparison runs in (spectral_norm's parametrization: eval, see module doc)."""
    torch.manual_seed(seed)
    for name in names:
        shape = getattr(m, name).shape
        if util == "weight_norm_old":
            nn.utils.weight_norm(m, name)
        elif util == "spectral_norm_old":
            nn.utils.spectral_norm(m, name)
        elif util == "weight_norm":
            parametrizations.weight_norm(m, name)
        elif util == "spectral_norm":
            parametrizations.spectral_norm(m, name)
        elif util == "custom":
            parametrize.register_parametrization(m, name, RowScale(shape[0]))
        elif util == "parameter":
            setattr(m, name, nn.Parameter(torch.randn(shape, dtype=DT)))
        elif util == "weight_drop":  # AWD-LSTM: the raw weight is the parameter
            w = getattr(m, name)
            del m._parameters[name]
            m.register_parameter(name + "_raw", nn.Parameter(w.detach().clone()))
        else:
            raise AssertionError(util)
    # parametrizations.spectral_norm runs a power iteration per read of the weight in training
    # mode, and torch.nn's RNNs read it several times per forward: compare in eval mode
    m.train(util != "spectral_norm")


def prepare_forward(util: str, m: nn.Module, names: list[str], seed: int) -> None:
    """What a training loop does before each forward: weight drop draws a new mask."""
    if util == "weight_drop":
        torch.manual_seed(seed)
        for name in names:
            setattr(m, name, F.dropout(getattr(m, name + "_raw"), P_DROP, training=True))


# ---- helpers ------------------------------------------------------------------------------------


def leaves_of(h):
    return list(h) if isinstance(h, tuple) else [h]


def random_loss(out, finals, seed: int):
    """A random linear function of everything the forward returned."""
    gen = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=gen)).sum()
    for h in leaves_of(finals):
        loss = loss + (h * torch.randn(h.shape, dtype=h.dtype, generator=gen)).sum()
    return loss


def param_grads(model, loss, extra=()):
    """``{name: grad}`` for every named parameter (zeros where unused) and the ``extra``."""
    named = dict(model.named_parameters())
    inputs = list(extra) + list(named.values())
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)]
    return dict(zip([f"extra{i}" for i in range(len(extra))] + list(named), grads, strict=True))


def assert_close_all(a, b, what):
    a, b = leaves_of(a), leaves_of(b)
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        torch.testing.assert_close(x, y, **TOL, msg=f"{what}[{i}]")


# ---- 1. against torch.nn twins ------------------------------------------------------------------

TWINS = {
    "rnn_tanh": ("RNN", "elman", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", "elman", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", "lstm", {}),
    "lstm_proj": ("LSTM", "lstm", {"proj_size": 3}),
    "gru": ("GRU", "gru", {}),
}
TWIN_PATHS = [(kind, path) for kind, (_, cell, kw) in TWINS.items()
              for path in cell_paths(cell, **kw)]
TWIN_NAMES = ["weight_hh_l0", "weight_ih_l1_reverse"]


def make_twins(kind: str, path: str, seed: int = 0):
    cls, _, kw = TWINS[kind]
    torch.manual_seed(seed)
    twin = getattr(nn, cls)(I, H, num_layers=2, bidirectional=True, dtype=DT, **kw)
    ours = getattr(rnnkit, cls)(I, H, num_layers=2, bidirectional=True, dtype=DT, **kw,
                                **PATHS[path])
    ours.load_state_dict(twin.state_dict())
    return ours, twin


def twin_inputs(twin, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, I, dtype=DT, generator=gen, requires_grad=True)
    L = 2 * twin.num_layers
    h_size = getattr(twin, "proj_size", 0) or H
    sizes = [h_size, H] if isinstance(twin, nn.LSTM) else [h_size]
    hx = [torch.randn(L, N, s, dtype=DT, generator=gen, requires_grad=True) for s in sizes]
    return x, hx


def as_hx(hx):
    return hx[0] if len(hx) == 1 else tuple(hx)


def test_twin_paths_cover_the_fused_kernels():
    """The premise of TWIN_PATHS: every twin has a native, a fused (the Elman cell's is the
    registered op) and a scan path."""
    assert ("lstm", "fused") in TWIN_PATHS and ("gru", "fused") in TWIN_PATHS
    assert ("rnn_tanh", "fused") in TWIN_PATHS and ("rnn_relu", "fused") in TWIN_PATHS
    assert len(TWIN_PATHS) == 15


@pytest.mark.parametrize("util", UTILS)
@pytest.mark.parametrize("kind, path", TWIN_PATHS, ids=[f"{k}-{p}" for k, p in TWIN_PATHS])
def test_utility_matches_torch(kind, path, util):
    ours, twin = make_twins(kind, path)
    names = TWIN_NAMES + (["weight_hr_l1"] if kind == "lstm_proj" else [])
    for m in (twin, ours):
        apply_util(util, m, names, seed=11)
    for name in names:  # a parameter no more, except the one assigned, alike in both
        assert (name in twin._parameters) == (util == "parameter"), name
        assert (name in ours._parameters) == (util == "parameter"), name
        if util == "parameter":
            assert torch.equal(ours._parameters[name], twin._parameters[name]), name
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert list(ours.state_dict()) == list(twin.state_dict())

    x, hx = twin_inputs(twin, seed=3)
    for m in (twin, ours):
        prepare_forward(util, m, names, seed=12)
    out_o, h_o = ours(x, as_hx(hx))
    out_t, h_t = twin(x, as_hx(hx))
    assert_close_all(out_o, out_t, "output")
    assert_close_all(h_o, h_t, "h_n")

    g_o = param_grads(ours, random_loss(out_o, h_o, seed=5), extra=[x, *hx])
    g_t = param_grads(twin, random_loss(out_t, h_t, seed=5), extra=[x, *hx])
    assert list(g_o) == list(g_t)
    for name in g_o:
        torch.testing.assert_close(g_o[name], g_t[name], **TOL, msg=name)
    assert list(ours.state_dict()) == list(twin.state_dict())

    # without autograd (where a GRU on the CPU takes torch's kernel on the native path)
    with torch.no_grad():
        assert_close_all(ours(x, as_hx(hx)), twin(x, as_hx(hx)), "no_grad forward")


@pytest.mark.parametrize("util", UTILS)
@pytest.mark.parametrize("kind, path", TWIN_PATHS, ids=[f"{k}-{p}" for k, p in TWIN_PATHS])
def test_loads_torch_reparametrized_state_dict(kind, path, util):
    _, twin = make_twins(kind, path)
    names = TWIN_NAMES + (["weight_hr_l1"] if kind == "lstm_proj" else [])
    apply_util(util, twin, names, seed=11)
    x, hx = twin_inputs(twin, seed=3)
    prepare_forward(util, twin, names, seed=12)
    twin(x, as_hx(hx))  # spectral_norm's u (and v) move on from their first values
    fresh, _ = make_twins(kind, path, seed=1)  # other weights, other u, v, scale
    apply_util(util, fresh, names, seed=21)
    assert list(fresh.state_dict()) == list(twin.state_dict())

    with torch.no_grad():
        for m in (twin, fresh):
            prepare_forward(util, m, names, seed=13)
        assert not torch.allclose(fresh(x, as_hx(hx))[0], twin(x, as_hx(hx))[0])
        result = fresh.load_state_dict(twin.state_dict())
        assert result.missing_keys == [] and result.unexpected_keys == []
        for m in (twin, fresh):
            prepare_forward(util, m, names, seed=14)
        assert_close_all(fresh(x, as_hx(hx)), twin(x, as_hx(hx)), "after load")


# ---- 2. every cell and path: equal to a plain copy holding the reparametrized value -----------

HC = 6  # hidden units in the per-cell tests (clockwork: 3 modules of 2)
CELL_OPTIONS = {
    "clockwork": {"periods": (1, 2, 4)},
    "ctrnn": {"dt": 0.5, "tau_init": 2.0},
    "fully": {"output_size": 4},
    "jordan": {"output_size": 4},
    "scrn": {"context_size": 3, "learn_alpha": True},
}
# the recurrent matrix of each cell (an input matrix comes first in SCRN's parameters)
# (an IndRNN's recurrent weight is a vector, one per unit, and minGRU's and minLSTM's state meets
# no weight: their matrix is the input's)
RECURRENT = {"fully": "weight_mh", "jordan": "weight_yh", "scrn": "weight_R",
             "indrnn": "weight_ih", "mingru": "weight_ih", "minlstm": "weight_ih"}


def recurrent_matrix(cell: str) -> str:
    """The cell's recurrent matrix, by default its first 2-D parameter other than weight_ih."""
    if cell in RECURRENT:
        return RECURRENT[cell]
    net = rnnkit.RecurrentNetwork(cell, I, HC, **CELL_OPTIONS.get(cell, {}))
    return next(n[:-3] for n, p in net.named_parameters()
                if p.dim() == 2 and not n.startswith("weight_ih"))


CELL_PATHS = [(cell, path) for cell in cell_names()
              for path in cell_paths(cell, HC, **CELL_OPTIONS.get(cell, {}))]
CELL_IDS = [f"{c}-{p}" for c, p in CELL_PATHS]

# util -> (names of the new leaves for the flat weight `name`, the weight as a function of them)
REPARAM = {
    "weight_norm": (lambda n: [f"parametrizations.{n}.original0",
                               f"parametrizations.{n}.original1"], weight_norm_value),
    "weight_norm_old": (lambda n: [f"{n}_g", f"{n}_v"], weight_norm_value),
    "custom": (lambda n: [f"parametrizations.{n}.original", f"parametrizations.{n}.0.scale"],
               row_scale_value),
}


def make_net(cell: str, path: str, num_layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return rnnkit.RecurrentNetwork(cell, I, HC, num_layers=num_layers, bidirectional=True,
                                   dtype=DT, **PATHS[path], **CELL_OPTIONS.get(cell, {}))


def cell_input(seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(T, N, I, dtype=DT, generator=gen, requires_grad=True)


def test_every_cell_is_covered_on_its_paths():
    assert {"peephole_lstm", "jordan", "fully", "clockwork", "scrn", "ctrnn", "irnn"} \
        <= set(cell_names())
    assert ("irnn", "native") in CELL_PATHS and ("jordan", "fused") in CELL_PATHS
    assert ("peephole_lstm", "native") not in CELL_PATHS
    assert recurrent_matrix("peephole_lstm") == "weight_hh"


@pytest.mark.parametrize("util", list(REPARAM))
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell, path", CELL_PATHS, ids=CELL_IDS)
def test_reparametrized_equals_plain_copy(cell, path, num_layers, util):
    net = make_net(cell, path, num_layers)
    rec = recurrent_matrix(cell)
    names = [f"{rec}_l0", f"{rec}_l{num_layers - 1}_reverse"]
    plain = copy.deepcopy(net)
    apply_util(util, net, names, seed=11)
    leaf_names, value = REPARAM[util]
    params = dict(net.named_parameters())
    for name in names:
        assert name not in params
        assert all(leaf in params for leaf in leaf_names(name)), list(params)

    # the plain copy holds the reparametrized values
    with torch.no_grad():
        for name in names:
            getattr(plain, name).copy_(value(*(params[leaf] for leaf in leaf_names(name))))
    x = cell_input()
    out, h_n = net(x)
    out_p, h_p = plain(x)
    assert_close_all(out, out_p, "output")
    assert_close_all(h_n, h_p, "h_n")
    with torch.no_grad():
        assert_close_all(net(x), plain(x), "no_grad forward")

    # gradients: the plain copy's, chain-ruled through the reparametrization
    g = param_grads(net, random_loss(out, h_n, seed=5), extra=[x])
    g_p = param_grads(plain, random_loss(out_p, h_p, seed=5), extra=[x])
    expected = {k: v for k, v in g_p.items() if k not in names}
    for name in names:
        leaves = [params[leaf].detach().requires_grad_() for leaf in leaf_names(name)]
        chained = torch.autograd.grad(value(*leaves), leaves, g_p[name])
        expected.update(zip(leaf_names(name), chained, strict=True))
    assert sorted(g) == sorted(expected)
    for key in g:
        torch.testing.assert_close(g[key], expected[key], **TOL, msg=key)
    for name in names:
        for leaf in leaf_names(name):
            assert g[leaf].abs().sum() > 0, leaf  # the gradient reaches the new parameters


@pytest.mark.parametrize("cell, path", CELL_PATHS, ids=CELL_IDS)
def test_spectral_norm_train_mode_read_once(cell, path):
    """In training mode parametrizations.spectral_norm runs one power iteration per read: the
    network reads the weight once per forward, and computes with W / sigma(u, v) for the u, v
    that this read left behind."""
    net = make_net(cell, path)
    name = f"{recurrent_matrix(cell)}_l1_reverse"
    plain = copy.deepcopy(net)
    torch.manual_seed(11)
    parametrizations.spectral_norm(net, name)
    count = Count()
    parametrize.register_parametrization(net, name, count)
    count.calls = 0  # registering computed the weight once, to check its shape
    net.train()
    x = cell_input()
    sn = net.parametrizations[name][0]
    W = net.parametrizations[name].original
    gen = torch.Generator().manual_seed(7)
    for forward in (1, 2):
        with torch.no_grad():  # far from converged, so that every power iteration shows
            sn._u.copy_(F.normalize(torch.randn(sn._u.shape, dtype=DT, generator=gen), dim=0))
            sn._v.copy_(F.normalize(torch.randn(sn._v.shape, dtype=DT, generator=gen), dim=0))
            u_one = F.normalize(W @ sn._v, dim=0)  # u after exactly one power iteration
        out, h_n = net(x)
        assert count.calls == forward  # one read per forward
        torch.testing.assert_close(sn._u, u_one, **TOL)  # one power iteration per forward
        torch.testing.assert_close(sn._v, F.normalize(W.T @ u_one, dim=0), **TOL)
        with torch.no_grad():
            getattr(plain, name).copy_(W / torch.vdot(sn._u, W @ sn._v))
        assert_close_all(out, plain(x)[0], f"output of forward {forward}")
    loss = random_loss(out, h_n, seed=5)
    (g,) = torch.autograd.grad(loss, [net.parametrizations[name].original])
    assert g.abs().sum() > 0
    assert count.calls == 2  # backward does not read the weight again


@pytest.mark.parametrize("util", ["weight_norm", "custom"])
@pytest.mark.parametrize("cell, path", CELL_PATHS, ids=CELL_IDS)
def test_parametrization_computed_once_per_forward(cell, path, util):
    net = make_net(cell, path)
    rec = recurrent_matrix(cell)
    names = [f"{rec}_l0", f"{rec}_l1_reverse"]
    apply_util(util, net, names, seed=11)
    counts = {name: Count() for name in names}
    for name, count in counts.items():
        parametrize.register_parametrization(net, name, count)
        count.calls = 0  # registering computed the weight once, to check its shape
    x = cell_input()
    out, h_n = net(x)
    random_loss(out, h_n, seed=5).backward()
    with torch.no_grad():
        net(x)
    assert {n: c.calls for n, c in counts.items()} == {n: 2 for n in names}


# ---- 3. wrong shapes --------------------------------------------------------------------------


class DropColumn(nn.Module):
    """An unsafe parametrization: one column fewer than the weight it replaces."""

    def forward(self, X):
        return X[:, 1:]


WRONG_SHAPE_CASES = [
    pytest.param(cell, name, shape, path, id=f"{cell}-{path}")
    for cell, name, shape in [("lstm", "weight_hh_l0", (24, 6)),
                              ("jordan", "weight_yh_l1_reverse", (6, 4)),
                              ("scrn", "weight_R_l0", (6, 6))]
    for path in cell_paths(cell, HC, **CELL_OPTIONS.get(cell, {}))
]


@pytest.mark.parametrize("how", ["parameter", "tensor", "parametrization"])
@pytest.mark.parametrize("cell, name, shape, path", WRONG_SHAPE_CASES)
def test_wrong_shape_named(cell, name, shape, path, how):
    net = make_net(cell, path)
    assert tuple(getattr(net, name).shape) == shape  # the premise
    x = cell_input()
    expected, _ = net(x)
    original = getattr(net, name)
    if how == "parameter":
        setattr(net, name, nn.Parameter(torch.randn(3, 3, dtype=DT)))
    elif how == "tensor":  # as weight drop assigns it
        del net._parameters[name]
        setattr(net, name, torch.randn(3, 3, dtype=DT))
    else:
        parametrize.register_parametrization(net, name, DropColumn(), unsafe=True)
    wrong = tuple(getattr(net, name).shape)
    assert wrong != shape
    with pytest.raises(ValueError, match=name) as info:
        net(x)
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert f"expected a tensor of shape {shape}" in message and str(wrong) in message, message
    # the right shape again: the network computes as before
    if how == "parametrization":
        parametrize.remove_parametrizations(net, name, leave_parametrized=False)
    else:
        if how == "tensor":
            delattr(net, name)
        setattr(net, name, original)
    torch.testing.assert_close(net(x)[0], expected, rtol=0, atol=0)


# ---- 4. torch.func.functional_call ------------------------------------------------------------


FUNCTIONAL_CASES = [
    pytest.param(cell, name, path, id=f"{cell}-{name}-{path}")
    for cell, name in [("jordan", "weight_yh_l0"), ("lstm", "weight_hh_l0"),
                       ("lstm", "weight_ih_l1_reverse")]
    for path in cell_paths(cell, HC, **CELL_OPTIONS.get(cell, {}))
]


@pytest.mark.parametrize("cell, name, path", FUNCTIONAL_CASES)
def test_functional_call(cell, name, path):
    net = make_net(cell, path)
    own = getattr(net, name)
    x = cell_input()
    before, h_before = net(x)
    w2 = torch.randn(own.shape, dtype=DT, requires_grad=True)
    out, h_n = torch.func.functional_call(net, {name: w2}, (x,))
    plain = copy.deepcopy(net)
    with torch.no_grad():
        getattr(plain, name).copy_(w2)
    out_p, h_p = plain(x)
    assert_close_all(out, out_p, "output")
    assert_close_all(h_n, h_p, "h_n")
    assert not torch.allclose(out, before)
    (g,) = torch.autograd.grad(random_loss(out, h_n, seed=5), [w2])
    (g_p,) = torch.autograd.grad(random_loss(out_p, h_p, seed=5), [getattr(plain, name)])
    torch.testing.assert_close(g, g_p, **TOL)
    # afterwards the network computes with its own parameter again
    assert getattr(net, name) is own and net._parameters[name] is own
    after, h_after = net(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert_close_all(h_after, h_before, "h_n after")


# ---- 5. pickling and deepcopy -----------------------------------------------------------------

COPY_CELLS = [("lstm", "native"), ("lstm", "scan"), ("jordan", "fused"), ("scrn", "fused")]


def leaf_name(util: str, name: str) -> str:
    """A parameter that the reparametrized weight depends on."""
    return {"weight_norm_old": f"{name}_g", "spectral_norm_old": f"{name}_orig",
            "weight_norm": f"parametrizations.{name}.original1",
            "spectral_norm": f"parametrizations.{name}.original",
            "custom": f"parametrizations.{name}.0.scale", "parameter": name,
            "weight_drop": f"{name}_raw"}[util]


def torch_save_load(m):
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("how, util", [
    *[("pickle", u) for u in ["weight_norm_old", "spectral_norm_old", "parameter",
                              "weight_drop"]],
    *[("deepcopy", u) for u in ["weight_norm", "spectral_norm", "custom", "parameter"]],
])
@pytest.mark.parametrize("cell, path", COPY_CELLS, ids=[f"{c}-{p}" for c, p in COPY_CELLS])
def test_copy_of_reparametrized_network(cell, path, how, util):
    net = make_net(cell, path)
    rec = recurrent_matrix(cell)
    names = [f"{rec}_l0", f"{rec}_l1_reverse"]
    apply_util(util, net, names, seed=11)
    x = cell_input()
    prepare_forward(util, net, names, seed=12)
    net(x)  # a forward (and power iteration) before copying
    twin = torch_save_load(net) if how == "pickle" else copy.deepcopy(net)
    assert type(twin) is type(net)
    assert list(twin.state_dict()) == list(net.state_dict())

    def forward(m, seed=13):
        prepare_forward(util, m, names, seed)
        return m(x)

    out, h_n = forward(twin)
    expected, h_expected = forward(net)
    assert_close_all(out, expected, "output")
    assert_close_all(h_n, h_expected, "h_n")

    # each computes with its own parameters: a change to one does not reach the other (in eval
    # mode, where spectral_norm's u stays put; not a scaling, to which the norms are blind)
    net.eval()
    twin.eval()
    out = forward(twin)[0]
    leaf = leaf_name(util, names[1])
    with torch.no_grad():
        dict(net.named_parameters())[leaf].add_(0.25)
    torch.testing.assert_close(forward(twin)[0], out, rtol=0, atol=0)
    with torch.no_grad():
        dict(twin.named_parameters())[leaf].add_(0.25)
    changed, h_changed = forward(twin)
    assert not torch.allclose(changed, out)
    assert_close_all(changed, forward(net)[0], "both changed alike")
    random_loss(changed, h_changed, seed=5).backward()
    assert dict(twin.named_parameters())[leaf].grad.abs().sum() > 0
    assert dict(net.named_parameters())[leaf].grad is None


@pytest.mark.parametrize("util", ["weight_norm", "spectral_norm", "custom"])
def test_pickling_parametrized_network_refused_as_torch(util):
    """torch refuses to pickle a module with parametrizations (state_dict is the way): so does
    rnnkit, with torch's message."""
    ours, twin = make_twins("lstm", "native")
    messages = []
    for m in (twin, ours):
        apply_util(util, m, TWIN_NAMES, seed=11)
        with pytest.raises(RuntimeError) as info:
            torch.save(m, io.BytesIO())
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "state_dict" in messages[1]


# ---- 6. backward, double backward and reset_parameters of a reparametrized network ------------


@pytest.mark.parametrize("cell, path", CELL_PATHS, ids=CELL_IDS)
def test_backward_uses_the_weights_of_its_forward(cell, path):
    """Weight drop assigns the next step's weight before this step's backward may run (e.g.
    with gradient accumulation): the backward still differentiates the forward it belongs to."""
    net = make_net(cell, path)
    rec = recurrent_matrix(cell)
    names = [f"{rec}_l0", f"{rec}_l1_reverse"]
    apply_util("weight_drop", net, names, seed=11)
    x = cell_input()
    grads = []
    for reassign in (False, True):
        prepare_forward("weight_drop", net, names, seed=12)
        used = getattr(net, names[0])
        out, h_n = net(x)
        loss = random_loss(out, h_n, seed=5)
        if reassign:
            prepare_forward("weight_drop", net, names, seed=13)
            assert not torch.equal(getattr(net, names[0]), used)  # the premise: a new mask
        grads.append(param_grads(net, loss, extra=[x]))
    assert list(grads[0]) == list(grads[1])
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], **TOL, msg=key)


@pytest.mark.parametrize("cell, path", [cp for cp in CELL_PATHS if cp[1] != "scan"],
                         ids=[i for cp, i in zip(CELL_PATHS, CELL_IDS, strict=True)
                              if cp[1] != "scan"])
def test_double_backward_through_parametrization(cell, path):
    """A gradient penalty (create_graph=True) through a weight-normed recurrent matrix: the
    native and fused paths equal the reference scan."""
    rec = recurrent_matrix(cell)
    names = [f"{rec}_l0", f"{rec}_l1_reverse"]
    results = []
    for p in (path, "scan"):
        net = make_net(cell, p)
        apply_util("weight_norm", net, names, seed=11)
        x = cell_input()
        out, h_n = net(x)
        (gx,) = torch.autograd.grad(random_loss(out, h_n, seed=5), [x], create_graph=True)
        results.append(param_grads(net, gx.pow(2).sum(), extra=[x]))
    ours, reference = results
    assert list(ours) == list(reference)
    for key in ours:
        torch.testing.assert_close(ours[key], reference[key], **TOL, msg=key)
    for name in names:
        assert reference[f"parametrizations.{name}.original1"].abs().sum() > 0  # the premise


def source_names(util: str, name: str) -> list[str]:
    """The parameters the flat weight ``name`` is computed from after ``util``."""
    return {"weight_norm_old": [f"{name}_g", f"{name}_v"],
            "spectral_norm_old": [f"{name}_orig"],
            "weight_norm": [f"parametrizations.{name}.original0",
                            f"parametrizations.{name}.original1"],
            "spectral_norm": [f"parametrizations.{name}.original"],
            "custom": [f"parametrizations.{name}.original"],
            "parameter": [name],
            "weight_drop": [f"{name}_raw"]}[util]


@pytest.mark.parametrize("util", UTILS)
def test_reset_parameters_reinitialises_reparametrized_weights(util):
    """torch.nn's reset_parameters() re-initialises every parameter, so those a reparametrized
    weight is computed from too; rnnkit's must not leave them (and so the weight) as they were."""
    ours, twin = make_twins("lstm", "native")
    for m in (twin, ours):
        apply_util(util, m, TWIN_NAMES, seed=11)
    for m in (twin, ours):  # torch first: the expectation is its behaviour
        who = "torch.nn" if m is twin else "rnnkit"
        before = {k: v.detach().clone() for k, v in m.named_parameters()}
        torch.manual_seed(5)
        try:
            m.reset_parameters()
        except AttributeError as e:
            pytest.fail(f"{who}: reset_parameters() raised AttributeError: {e}")
        after = dict(m.named_parameters())
        unchanged = [k for k in before if torch.equal(before[k], after[k])]
        sources = [s for name in TWIN_NAMES for s in source_names(util, name)]
        assert not [k for k in unchanged if k in sources], \
            f"{who}: reset_parameters() left {unchanged} as they were"
        assert "weight_ih_l0" not in unchanged
