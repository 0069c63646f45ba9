"""Bad input gets a clear error that names the argument, what was expected and what came.

Every error is a ValueError or TypeError raised by rnnkit itself (never a RuntimeError or
IndexError from deep inside torch), and nothing is silently broadcast. Each test asserts the
exception type and that the message contains the argument's name (as a word), the expected value
and the actual one.
"""

import re

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import cell_names, get_cell, make_cell, scan

I, H, T, N = 3, 4, 5, 2  # input features, hidden units, time steps, batch
NETS = [rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU]
CELLS = ["elman", "lstm", "gru"]


def msg(arg: str, *values: str) -> str:
    """A ``match`` pattern: ``arg`` as a whole word and every value literally, in any order."""
    looks = [rf"(?=.*(?<![\w.]){re.escape(arg)}(?!\w))"]
    looks += [f"(?=.*{re.escape(v)})" for v in values]
    return "(?s)^" + "".join(looks)


@pytest.fixture(params=NETS, ids=lambda c: c.__name__)
def cls(request):
    return request.param


@pytest.fixture(params=[True, False], ids=["native", "scan"])
def native(request):
    return request.param


@pytest.fixture(params=[False, True], ids=["time_first", "batch_first"])
def batch_first(request):
    return request.param


def batch(batch_first=False, t=T, n=N, i=I, dtype=torch.float32):
    shape = (n, t, i) if batch_first else (t, n, i)
    return torch.randn(shape, dtype=dtype)


def hx_for(cls, shape, dtype=torch.float32):
    """A zero initial state of ``shape`` in the form ``cls`` takes: (h, c) for LSTM."""
    h = torch.zeros(shape, dtype=dtype)
    return (h, torch.zeros(shape, dtype=dtype)) if cls is rnnkit.LSTM else h


# ---- input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(T,), (T, N, I, 1)], ids=["rank1", "rank4"])
def test_input_of_wrong_rank(cls, native, batch_first, shape):
    net = cls(I, H, batch_first=batch_first, native=native)
    layout = "(N, T, input_size)" if batch_first else "(T, N, input_size)"
    with pytest.raises(ValueError, match=msg("input", layout, str(shape))):
        net(torch.randn(shape))


def test_input_not_a_tensor(cls, native):
    net = cls(I, H, native=native)
    with pytest.raises(TypeError, match=msg("input", "Tensor", "list")):
        net([[0.0] * I] * T)


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
def test_input_wrong_feature_size(cls, native, batch_first, unbatched):
    net = cls(I, H, batch_first=batch_first, native=native)
    x = torch.randn(T, I + 4) if unbatched else batch(batch_first, i=I + 4)
    with pytest.raises(ValueError, match=msg("input", f"input_size {I}", f"got {I + 4}")):
        net(x)


def test_input_dtype_differs_from_parameters(cls, native):
    net = cls(I, H, native=native)
    with pytest.raises(ValueError, match=msg("input", "torch.float32", "torch.float64")):
        net(batch(dtype=torch.float64))



def test_input_with_no_time_steps(cls, native, batch_first):
    net = cls(I, H, batch_first=batch_first, native=native)
    x = batch(batch_first, t=0)
    with pytest.raises(ValueError, match=msg("input", ">= 1", str(tuple(x.shape)))):
        net(x)


# ---- hx ---------------------------------------------------------------------------------------

L = 4  # num_layers=2, bidirectional=True


@pytest.mark.parametrize(
    "wrong",
    [(2, N, H), (L, N + 1, H), (L, N, H + 1)],
    ids=["num_layers_times_directions", "batch", "hidden_size"],
)
def test_hx_of_wrong_shape(cls, native, batch_first, wrong):
    net = cls(I, H, num_layers=2, bidirectional=True, batch_first=batch_first, native=native)
    with pytest.raises(ValueError, match=msg("hx", str((L, N, H)), str(wrong))):
        net(batch(batch_first), hx_for(cls, wrong))


def test_hx_of_right_shape_is_accepted(cls, native, batch_first):
    net = cls(I, H, num_layers=2, bidirectional=True, batch_first=batch_first, native=native)
    out, _ = net(batch(batch_first), hx_for(cls, (L, N, H)))
    assert out.shape == ((N, T, 2 * H) if batch_first else (T, N, 2 * H))


def test_lstm_c0_of_wrong_shape(native):
    net = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, native=native)
    hx = (torch.zeros(L, N, H), torch.zeros(L, N, H + 1))
    with pytest.raises(ValueError, match=msg("hx[1]", str((L, N, H)), str((L, N, H + 1)))):
        net(batch(), hx)


def test_lstm_with_projection_h0_of_hidden_size(native):
    """With proj_size=P, h_0 has P features, not H: the usual mistake gets a clear error."""
    net = rnnkit.LSTM(I, H, proj_size=2, native=native)
    hx = (torch.zeros(1, N, H), torch.zeros(1, N, H))
    with pytest.raises(ValueError, match=msg("hx[0]", str((1, N, 2)), str((1, N, H)))):
        net(batch(), hx)


def test_hx_3d_for_unbatched_input(cls, native):
    net = cls(I, H, num_layers=2, bidirectional=True, native=native)
    with pytest.raises(ValueError, match=msg("hx", str((L, H)), str((L, 1, H)))):
        net(torch.randn(T, I), hx_for(cls, (L, 1, H)))


def test_hx_2d_for_batched_input(cls, native, batch_first):
    net = cls(I, H, num_layers=2, bidirectional=True, batch_first=batch_first, native=native)
    with pytest.raises(ValueError, match=msg("hx", str((L, N, H)), str((L, H)))):
        net(batch(batch_first), hx_for(cls, (L, H)))


def test_lstm_hx_tensor_instead_of_tuple(native):
    net = rnnkit.LSTM(I, H, native=native)
    with pytest.raises(TypeError, match=msg("hx", "tuple", "got Tensor")):
        net(batch(), torch.zeros(1, N, H))


@pytest.mark.parametrize("cls", [rnnkit.RNN, rnnkit.GRU], ids=lambda c: c.__name__)
@pytest.mark.parametrize("n_items", [1, 2])
def test_single_state_hx_given_a_tuple(cls, native, n_items):
    net = cls(I, H, native=native)
    with pytest.raises(TypeError, match=msg("hx", "tensor", "tuple")):
        net(batch(), (torch.zeros(1, N, H),) * n_items)


@pytest.mark.parametrize("n_items", [1, 3])
def test_lstm_hx_tuple_of_wrong_length(native, n_items):
    net = rnnkit.LSTM(I, H, native=native)
    with pytest.raises(TypeError, match=msg("hx", "2", f"got {n_items}")):
        net(batch(), (torch.zeros(1, N, H),) * n_items)


def test_hx_of_wrong_dtype(cls, native):
    net = cls(I, H, native=native)
    with pytest.raises(ValueError, match=msg("hx", "torch.float32", "torch.float64")):
        net(batch(), hx_for(cls, (1, N, H), dtype=torch.float64))


# ---- lengths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, T + 1], ids=["zero", "negative", "longer_than_T"])
def test_lengths_out_of_range(cls, native, batch_first, bad):
    net = cls(I, H, batch_first=batch_first, native=native)
    with pytest.raises(ValueError, match=msg("lengths", f"[1, {T}]", f"got {bad}")):
        net(batch(batch_first), lengths=[T, bad])


@pytest.mark.parametrize("n", [N - 1, N + 1], ids=["N-1", "N+1"])
def test_lengths_of_wrong_size(cls, native, batch_first, n):
    net = cls(I, H, batch_first=batch_first, native=native)
    with pytest.raises(ValueError, match=msg("lengths", f"({N},)", f"({n},)")):
        net(batch(batch_first), lengths=torch.full((n,), T))


def test_lengths_2d(cls, native, batch_first):
    net = cls(I, H, batch_first=batch_first, native=native)
    with pytest.raises(ValueError, match=msg("lengths", f"({N},)", f"(1, {N})")):
        net(batch(batch_first), lengths=torch.full((1, N), T))


def test_lengths_float(cls, native, batch_first):
    net = cls(I, H, batch_first=batch_first, native=native)
    with pytest.raises(TypeError, match=msg("lengths", "integer", "torch.float32")):
        net(batch(batch_first), lengths=torch.tensor([5.0, 3.0]))



def test_lengths_with_packed_sequence(cls, native):
    net = cls(I, H, native=native)
    packed = pack_padded_sequence(batch(), torch.tensor([T, 3]))
    with pytest.raises(ValueError, match=msg("lengths", "None", "[5, 3]")):
        net(packed, lengths=[5, 3])


def test_lengths_as_list_of_ints_works(cls, native, batch_first):
    net = cls(I, H, batch_first=batch_first, native=native)
    out, state = net(batch(batch_first), lengths=[T, 2])
    assert out.shape == ((N, T, H) if batch_first else (T, N, H))
    h_n = state[0] if cls is rnnkit.LSTM else state
    assert h_n.shape == (1, N, H)
    padding = out[1, 2:] if batch_first else out[2:, 1]
    assert torch.all(padding == 0)


# ---- cell registry ----------------------------------------------------------------------------


def test_make_cell_unknown_name():
    with pytest.raises(ValueError, match=msg("cell", "'nope'", *cell_names())):
        make_cell("nope", I, H)


def test_recurrent_network_unknown_cell_name():
    with pytest.raises(ValueError, match=msg("cell", "'nope'", *cell_names())):
        rnnkit.RecurrentNetwork("nope", I, H)



def test_get_cell_not_a_string():
    with pytest.raises(TypeError, match=msg("cell", "int", *cell_names())):
        get_cell(3)



def test_recurrent_network_cell_neither_name_nor_factory():
    with pytest.raises(TypeError, match=msg("cell", "got 3", *cell_names())):
        rnnkit.RecurrentNetwork(3, I, H)


# ---- constructor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, exc, arg, expected, got",
    [
        ((I, 0), {}, ValueError, "hidden_size", ">= 1", "got 0"),
        ((I, H), {"num_layers": 0}, ValueError, "num_layers", ">= 1", "got 0"),
        ((0, H), {}, ValueError, "input_size", ">= 1", "got 0"),
        ((3.0, H), {}, TypeError, "input_size", "int", "3.0"),
        ((I, 4.0), {}, TypeError, "hidden_size", "int", "4.0"),
        ((I, H), {"dropout": -0.1}, ValueError, "dropout", "[0, 1]", "-0.1"),
        ((I, H), {"dropout": 1.5}, ValueError, "dropout", "[0, 1]", "1.5"),
        ((I, H), {"bias": "yes"}, TypeError, "bias", "bool", "'yes'"),
        ((I, H), {"batch_first": 1}, TypeError, "batch_first", "bool", "int"),
        ((I, H), {"bidirectional": None}, TypeError, "bidirectional", "bool", "None"),
    ],
    ids=["hidden_size_0", "num_layers_0", "input_size_0", "input_size_float",
         "hidden_size_float", "dropout_negative", "dropout_above_1", "bias_str",
         "batch_first_int", "bidirectional_none"],
)
def test_constructor_bad_argument(cls, native, args, kwargs, exc, arg, expected, got):
    with pytest.raises(exc, match=msg(arg, expected, got)):
        cls(*args, native=native, **kwargs)


@pytest.mark.parametrize(
    "bad", ["sigmoid", None, pytest.param(["tanh"])],
    ids=["sigmoid", "None", "list"],
)
def test_rnn_unknown_nonlinearity(native, bad):
    with pytest.raises(ValueError, match=msg("nonlinearity", "'tanh'", "'relu'", repr(bad))):
        rnnkit.RNN(I, H, nonlinearity=bad, native=native)


@pytest.mark.parametrize("proj_size", [H, H + 1, -1])
def test_lstm_proj_size_out_of_range(native, proj_size):
    with pytest.raises(ValueError, match=msg("proj_size", f"hidden_size={H}", f"got {proj_size}")):
        rnnkit.LSTM(I, H, proj_size=proj_size, native=native)



@pytest.mark.parametrize("proj_size", [2.0, "2", True])
def test_lstm_proj_size_not_an_int(native, proj_size):
    with pytest.raises(TypeError, match=msg("proj_size", "int", repr(proj_size))):
        rnnkit.LSTM(I, H, proj_size=proj_size, native=native)


def test_dropout_with_one_layer_warns(cls, native):
    with pytest.warns(UserWarning, match=msg("dropout", "num_layers=1")):
        cls(I, H, dropout=0.5, native=native)


def test_dropout_with_two_layers_does_not_warn(cls, recwarn):
    cls(I, H, num_layers=2, dropout=0.5)
    assert not [w for w in recwarn if "dropout" in str(w.message)]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: rnnkit.RecurrentNetwork("gru", I, H, dropout=0.5), id="direct"),
        *[pytest.param(lambda c=c: c(I, H, dropout=0.5), id=c.__name__) for c in NETS],
    ],
)
def test_dropout_warning_points_at_the_caller(build):
    with pytest.warns(UserWarning, match="dropout") as record:
        build()
    assert [w.filename for w in record if "dropout" in str(w.message)] == [__file__]



@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(
    "sizes, exc, arg, expected, got",
    [
        ((I, 0), ValueError, "hidden_size", ">= 1", "got 0"),
        ((I, -1), ValueError, "hidden_size", ">= 1", "got -1"),
        ((3.0, H), TypeError, "input_size", "int", "3.0"),
    ],
    ids=["hidden_size_0", "hidden_size_negative", "input_size_float"],
)
def test_make_cell_bad_size(name, sizes, exc, arg, expected, got):
    with pytest.raises(exc, match=msg(arg, expected, got)):
        make_cell(name, *sizes)


# ---- scan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_scan_xs_2d(name):
    with pytest.raises(ValueError, match=msg("xs", f"input_size={I}", str((T, I)))):
        scan(make_cell(name, I, H), torch.randn(T, I))


@pytest.mark.parametrize("name", CELLS)
def test_scan_xs_wrong_feature_size(name):
    with pytest.raises(ValueError, match=msg("xs", f"input_size={I}", str((T, N, I + 4)))):
        scan(make_cell(name, I, H), torch.randn(T, N, I + 4))


@pytest.mark.parametrize(
    "lengths, exc, expected, got",
    [
        ([0, T], ValueError, f"[1, {T}]", "got 0"),
        ([-1, T], ValueError, f"[1, {T}]", "got -1"),
        ([T + 1, T], ValueError, f"[1, {T}]", f"got {T + 1}"),
        ([T], ValueError, f"({N},)", "(1,)"),
        ([T] * (N + 1), ValueError, f"({N},)", f"({N + 1},)"),
        (torch.full((1, N), T), ValueError, f"({N},)", f"(1, {N})"),
        (torch.tensor([5.0, 3.0]), TypeError, "integer", "torch.float32"),
        ([5.0, 3.0], TypeError, "integer", "[5.0, 3.0]"),
    ],
    ids=["zero", "negative", "longer_than_T", "N-1", "N+1", "2d", "float_tensor", "float_list"],
)
@pytest.mark.parametrize("name", CELLS)
def test_scan_bad_lengths(name, lengths, exc, expected, got):
    with pytest.raises(exc, match=msg("lengths", expected, got)):
        scan(make_cell(name, I, H), torch.randn(T, N, I), lengths=lengths)



@pytest.mark.parametrize("name", CELLS)
def test_scan_xs_dtype_differs_from_parameters(name):
    with pytest.raises(ValueError, match=msg("xs", "torch.float32", "torch.float64")):
        scan(make_cell(name, I, H), torch.randn(T, N, I, dtype=torch.float64))



@pytest.mark.parametrize("name", CELLS)
def test_scan_xs_with_no_time_steps(name):
    with pytest.raises(ValueError, match=msg("xs", ">= 1", str((0, N, I)))):
        scan(make_cell(name, I, H), torch.randn(0, N, I))


def _state_of(name, shape):
    return (torch.zeros(shape), torch.zeros(shape)) if name == "lstm" else torch.zeros(shape)



@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("shape", [(N + 1, H), (1, H), (H,), (N, H + 1)],
                         ids=["batch+1", "batch_1_broadcast", "no_batch_dim", "hidden+1"])
def test_scan_state_of_wrong_shape(name, shape):
    with pytest.raises(ValueError, match=msg("state", str((N, H)), str(shape))):
        scan(make_cell(name, I, H), torch.randn(T, N, I), _state_of(name, shape))



def test_scan_lstm_state_tensor_instead_of_tuple():
    with pytest.raises(TypeError, match=msg("state", "tuple", "Tensor")):
        scan(make_cell("lstm", I, H), torch.randn(T, N, I), torch.zeros(N, H))


# ---- one cell step ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("shape", [(I,), (1, N, I), (N, I + 2)], ids=["1d", "3d", "features"])
def test_cell_step_x_of_wrong_shape(name, shape):
    cell = make_cell(name, I, H)
    with pytest.raises(ValueError, match=msg("x", f"(N, input_size={I})", str(shape))):
        cell(torch.randn(shape))



@pytest.mark.parametrize("name", CELLS)
def test_cell_step_x_not_a_tensor(name):
    with pytest.raises(TypeError, match=msg("x", "Tensor", "list")):
        make_cell(name, I, H)([[0.0] * I])



@pytest.mark.parametrize("name", CELLS)
def test_cell_step_x_dtype_differs_from_parameters(name):
    with pytest.raises(ValueError, match=msg("x", "torch.float32", "torch.float64")):
        make_cell(name, I, H)(torch.randn(N, I, dtype=torch.float64))



@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("shape", [(N + 1, H), (1, H), (H,), (N, H + 1)],
                         ids=["batch+1", "batch_1_broadcast", "no_batch_dim", "hidden+1"])
def test_cell_step_state_of_wrong_shape(name, shape):
    with pytest.raises(ValueError, match=msg("state", str((N, H)), str(shape))):
        make_cell(name, I, H)(torch.randn(N, I), _state_of(name, shape))



def test_cell_step_lstm_state_tensor_instead_of_tuple():
    with pytest.raises(TypeError, match=msg("state", "tuple", "Tensor")):
        make_cell("lstm", I, H)(torch.randn(N, I), torch.zeros(N, H))


def test_lengths_for_an_empty_batch(cls, native):
    net = cls(I, H, native=native)
    with pytest.raises(ValueError, match=msg("lengths", "non-empty batch", "0 sequences")):
        net(torch.zeros(T, 0, I), lengths=[])


def test_empty_batch_without_lengths_gives_torch_shapes(cls, native):
    out, _ = cls(I, H, native=native)(torch.zeros(T, 0, I))
    assert out.shape == (T, 0, H)
