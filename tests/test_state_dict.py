"""State-dict and parameter interop with torch.nn: rnnkit.RNN/LSTM/GRU are drop-in replacements.

Same keys in the same order with the same shapes, strict loading both ways (also inside a parent
module and through torch.save/torch.load), torch's parameter names as attributes, all_weights,
and the same default initialisation from the same seed.
"""

import itertools

import pytest
import torch
from torch import nn

import rnnkit

# torch's own kernel says so once per process for LSTMs with proj_size; not rnnkit's business
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")

I, H, P, T, N = 3, 5, 2, 4, 2  # input features, hidden units, projection, time steps, batch

KINDS = [
    ("RNN", {"nonlinearity": "tanh"}, "RNN_tanh"),
    ("RNN", {"nonlinearity": "relu"}, "RNN_relu"),
    ("LSTM", {}, "LSTM"),
    ("LSTM", {"proj_size": P}, "LSTM_proj"),
    ("GRU", {}, "GRU"),
]
CONFIGS = [
    pytest.param(
        kind, dict(options, num_layers=layers, bidirectional=bi, bias=bias),
        id=f"{label}-L{layers}-{'bi' if bi else 'uni'}-{'bias' if bias else 'nobias'}",
    )
    for (kind, options, label), layers, bi, bias in itertools.product(
        KINDS, (1, 2, 3), (False, True), (True, False)
    )
]


def build(kind, kwargs, seed=None, torch_twin=False, **extra):
    """``rnnkit.<kind>`` (or ``torch.nn.<kind>``) with ``kwargs``, after ``manual_seed(seed)``."""
    if seed is not None:
        torch.manual_seed(seed)
    return getattr(nn if torch_twin else rnnkit, kind)(I, H, **kwargs, **extra)


def assert_same_tensors(a: dict, b: dict):
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def torch_names(twin: nn.Module) -> list[str]:
    return [name for names in twin._all_weights for name in names]


# ---- keys, loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_state_dict_keys_order_and_shapes(kind, kwargs):
    ours, twin = build(kind, kwargs), build(kind, kwargs, torch_twin=True)
    sd_ours, sd_twin = ours.state_dict(), twin.state_dict()
    assert list(sd_ours) == list(sd_twin)
    assert [v.shape for v in sd_ours.values()] == [v.shape for v in sd_twin.values()]


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_torch_loads_ours_strict(kind, kwargs):
    ours, twin = build(kind, kwargs, seed=1), build(kind, kwargs, seed=2, torch_twin=True)
    result = twin.load_state_dict(ours.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_tensors(twin.state_dict(), ours.state_dict())
    for name, p in twin.named_parameters():
        assert torch.equal(p, getattr(ours, name)), name


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_ours_loads_torch_strict(kind, kwargs):
    ours, twin = build(kind, kwargs, seed=1), build(kind, kwargs, seed=2, torch_twin=True)
    result = ours.load_state_dict(twin.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert_same_tensors(ours.state_dict(), twin.state_dict())
    for name, p in twin.named_parameters():
        assert torch.equal(p, getattr(ours, name)), name
    # the loaded weights are the ones used: the native path computes torch's numbers exactly
    # (fused=False: on the CPU a GRU or an Elman network runs rnnkit's op), the others to
    # float rounding
    x = torch.randn(T, N, I)
    with torch.no_grad():
        ours.fused = False
        torch.testing.assert_close(ours(x)[0], twin(x)[0], rtol=0, atol=0)
        ours.fused = True
    expected, _ = twin(x)
    torch.testing.assert_close(ours(x)[0], expected)
    ours.native = False
    torch.testing.assert_close(ours(x)[0], expected)


def test_ours_loads_torch_with_assign():
    ours, twin = build("LSTM", {"num_layers": 2, "proj_size": P}, seed=1), \
        build("LSTM", {"num_layers": 2, "proj_size": P}, seed=2, torch_twin=True)
    ours.load_state_dict(twin.state_dict(), assign=True)
    params = {id(p) for p in ours.parameters()}
    for name in torch_names(twin):
        assert isinstance(getattr(ours, name), nn.Parameter)
        assert id(getattr(ours, name)) in params, name
        assert torch.equal(getattr(ours, name), getattr(twin, name)), name



def test_missing_keys_reported_by_torch_names():
    ours, twin = build("LSTM", {"num_layers": 2}), build("LSTM", {"num_layers": 2}, torch_twin=True)
    sd = twin.state_dict()
    del sd["bias_hh_l1"]
    sd["extra"] = torch.zeros(1)
    expected = twin.load_state_dict(sd, strict=False)
    assert ours.load_state_dict(sd, strict=False) == expected
    with pytest.raises(RuntimeError, match='Missing key.*"bias_hh_l1"'):
        ours.load_state_dict(sd)


# ---- inside a parent module -------------------------------------------------------------------


class Tagger(nn.Module):
    def __init__(self, rnn_cls):
        super().__init__()
        self.embed = nn.Embedding(7, I)
        self.encoder = rnn_cls(I, H, num_layers=2, bidirectional=True, proj_size=P)
        self.head = nn.Linear(2 * P, 3)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda cls: Tagger(cls), id="custom"),
        pytest.param(lambda cls: nn.Sequential(nn.Linear(I, I), cls(I, H, num_layers=2)),
                     id="sequential"),
    ],
)
def test_parent_module_state_dict(make):
    torch.manual_seed(1)
    ours = make(rnnkit.LSTM)
    torch.manual_seed(2)
    twin = make(nn.LSTM)
    child = "encoder" if isinstance(ours, Tagger) else "1"
    keys = list(ours.state_dict())
    assert keys == list(twin.state_dict())
    assert f"{child}.weight_ih_l0" in keys and f"{child}.bias_hh_l1" in keys
    assert not [k for k in keys if "stack" in k or "cell" in k]

    twin.load_state_dict(ours.state_dict(), strict=True)
    assert_same_tensors(twin.state_dict(), ours.state_dict())

    torch.manual_seed(3)
    back = make(rnnkit.LSTM)
    back.load_state_dict(twin.state_dict(), strict=True)
    assert_same_tensors(back.state_dict(), twin.state_dict())


# ---- attributes, all_weights ------------------------------------------------------------------


def test_attribute_by_torch_name_is_the_parameter():
    ours = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True)
    w = ours.weight_hh_l1_reverse
    assert isinstance(w, nn.Parameter)
    assert sum(p is w for p in ours.parameters()) == 1
    assert ours.state_dict(keep_vars=True)["weight_hh_l1_reverse"] is w
    assert w.shape == (4 * H, H)


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_attributes_by_torch_name(kind, kwargs):
    ours, twin = build(kind, kwargs), build(kind, kwargs, torch_twin=True)
    params = list(ours.parameters())
    named = ours.state_dict(keep_vars=True)
    for name in torch_names(twin):
        p = getattr(ours, name)
        assert isinstance(p, nn.Parameter), name
        assert sum(q is p for q in params) == 1, name
        assert named[name] is p, name
        assert p.shape == getattr(twin, name).shape, name
    assert len(params) == len(torch_names(twin))


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_unknown_attributes_raise(kind, kwargs):
    ours, twin = build(kind, kwargs), build(kind, kwargs, torch_twin=True)
    L = kwargs["num_layers"]
    absent = ["nope", f"weight_ih_l{L}", f"weight_ih_l{L}_reverse", "weight_ih", "weight_ih_l0_"]
    if not kwargs["bidirectional"]:
        absent.append("weight_hh_l0_reverse")
    if not kwargs["bias"]:
        absent += ["bias_ih_l0", "bias_hh_l0"]
    if not kwargs.get("proj_size"):
        absent.append("weight_hr_l0")
    for name in absent:
        assert not hasattr(twin, name), name  # the premise: torch has none of these either
        with pytest.raises(AttributeError, match=name):
            getattr(ours, name)


@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_all_weights(kind, kwargs):
    ours, twin = build(kind, kwargs), build(kind, kwargs, torch_twin=True)
    D = 2 if kwargs["bidirectional"] else 1
    assert len(ours.all_weights) == kwargs["num_layers"] * D
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
        [[w.shape for w in ws] for ws in twin.all_weights]
    assert all(
        a is getattr(ours, name)
        for ws, names in zip(ours.all_weights, twin._all_weights, strict=True)
        for a, name in zip(ws, names, strict=True)
    )


# ---- initialisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1234])
@pytest.mark.parametrize("kind, kwargs", CONFIGS)
def test_default_initialisation_matches_torch(kind, kwargs, seed):
    ours = build(kind, kwargs, seed=seed)
    after_ours = torch.rand(3)  # the generator is left in the same state, too
    twin = build(kind, kwargs, seed=seed, torch_twin=True)
    after_twin = torch.rand(3)
    assert_same_tensors(ours.state_dict(), twin.state_dict())
    assert torch.equal(after_ours, after_twin)


@pytest.mark.parametrize("native", [True, False], ids=["native", "scan"])
def test_default_initialisation_independent_of_native(native):
    ours = build("GRU", {"num_layers": 2, "bidirectional": True}, seed=7, native=native)
    twin = build("GRU", {"num_layers": 2, "bidirectional": True}, seed=7, torch_twin=True)
    assert_same_tensors(ours.state_dict(), twin.state_dict())


# ---- dtype conversion, save/load --------------------------------------------------------------


@pytest.fixture(params=["default", "overwrite", "swap"])
def conversion_mode(request):
    """torch.__future__ switches that change how Module.to() replaces parameters."""
    future = torch.__future__
    switches = {
        "overwrite": (future.get_overwrite_module_params_on_conversion,
                      future.set_overwrite_module_params_on_conversion),
        "swap": (future.get_swap_module_params_on_conversion,
                 future.set_swap_module_params_on_conversion),
    }
    if request.param not in switches:
        yield request.param
        return
    get, set_ = switches[request.param]
    before = get()
    set_(True)
    try:
        yield request.param
    finally:
        set_(before)


@pytest.mark.parametrize("kind, kwargs", [
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": P}),
    ("GRU", {"num_layers": 2, "bias": False}),
    ("RNN", {"nonlinearity": "relu", "bidirectional": True}),
])
def test_to_float64_keeps_torch_names_on_converted_parameters(kind, kwargs, conversion_mode):
    ours, twin = build(kind, kwargs, seed=1), build(kind, kwargs, seed=1, torch_twin=True)
    assert ours.to(torch.float64) is ours
    twin.to(torch.float64)
    params = {id(p) for p in ours.parameters()}
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    for name in torch_names(twin):
        p = getattr(ours, name)
        assert isinstance(p, nn.Parameter) and p.dtype == torch.float64, name
        assert id(p) in params, name
    assert [w.dtype for ws in ours.all_weights for w in ws] == [torch.float64] * len(params)
    assert_same_tensors(ours.state_dict(), twin.state_dict())
    x = torch.randn(T, N, I, dtype=torch.float64)
    with torch.no_grad():  # (the native path: on the CPU a GRU or Elman net runs rnnkit's op)
        torch.testing.assert_close(ours(x)[0], twin(x)[0])
        ours.fused = False
        torch.testing.assert_close(ours(x)[0], twin(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("kind, kwargs", [
    ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": P}),
    ("GRU", {"num_layers": 3, "bias": False}),
    ("RNN", {"nonlinearity": "tanh", "bidirectional": True}),
])
def test_torch_save_load_round_trip(kind, kwargs, tmp_path):
    ours = build(kind, kwargs, seed=1)
    path = tmp_path / "rnn.pt"
    torch.save(ours.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert_same_tensors(sd, ours.state_dict())

    other = build(kind, kwargs, seed=2)
    other.load_state_dict(sd, strict=True)
    assert_same_tensors(other.state_dict(), ours.state_dict())

    twin = build(kind, kwargs, seed=3, torch_twin=True)
    twin.load_state_dict(sd, strict=True)
    assert_same_tensors(twin.state_dict(), ours.state_dict())

    torch.save(twin.state_dict(), path)  # and a checkpoint written by torch.nn
    back = build(kind, kwargs, seed=4)
    back.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert_same_tensors(back.state_dict(), twin.state_dict())


def test_torch_save_load_parent_module(tmp_path):
    torch.manual_seed(1)
    ours = Tagger(rnnkit.LSTM)
    path = tmp_path / "tagger.pt"
    torch.save(ours.state_dict(), path)
    torch.manual_seed(2)
    twin = Tagger(nn.LSTM)
    twin.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert_same_tensors(twin.state_dict(), ours.state_dict())


def test_repr_reads_like_torch():
    assert repr(rnnkit.LSTM(3, 5, 2, bidirectional=True)).startswith(
        "LSTM(\n  3, 5, num_layers=2, bidirectional=True\n")
    assert "nonlinearity='relu'" in repr(rnnkit.RNN(3, 5, nonlinearity="relu"))
    assert repr(rnnkit.RecurrentNetwork("gru", 3, 5)).startswith("RecurrentNetwork(\n  'gru', 3, 5")
