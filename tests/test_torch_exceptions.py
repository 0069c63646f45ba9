"""Bad input raises what torch.nn raises: rnnkit's messages, each error also an instance of
the type torch's RNNs raise for the same mistake, so `except RuntimeError:` (or ValueError)
written for torch.nn still catches it."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit.errors import ShapeError

T, N, I, H = 7, 3, 10, 20


def call(make, *args):
    return lambda lib: make(lib)(*args)


def packed(features):
    return pack_padded_sequence(torch.randn(T, N, features), [7, 5, 2])


CASES = {
    # mistake: (what to run against torch.nn or rnnkit, a word rnnkit's message must hold)
    "input features": (call(lambda m: m.LSTM(I, H), torch.randn(T, N, 5)), "input_size"),
    "input features (GRU)": (call(lambda m: m.GRU(I, H), torch.randn(T, N, 5)), "input_size"),
    "input features (RNN)": (call(lambda m: m.RNN(I, H), torch.randn(T, N, 5)), "input_size"),
    "packed features": (call(lambda m: m.GRU(I, H), packed(5)), "PackedSequence data"),
    "hx shape": (call(lambda m: m.GRU(I, H, num_layers=2), torch.randn(T, N, I),
                      torch.zeros(1, N, H)), "hx"),
    "(h0, c0) shape": (call(lambda m: m.LSTM(I, H, num_layers=2), torch.randn(T, N, I),
                            (torch.zeros(1, N, H), torch.zeros(2, N, H))), "hx[0]"),
    "unbatched input, batched hx": (call(lambda m: m.RNN(I, H), torch.randn(T, I),
                                         torch.zeros(1, N, H)), "hx"),
    "no time step": (call(lambda m: m.LSTM(I, H), torch.randn(0, N, I)), "at least one"),
    "4-D input": (call(lambda m: m.LSTM(I, H), torch.randn(T, N, I, 1)), "4-D"),
    "dtype": (call(lambda m: m.GRU(I, H), torch.randn(T, N, I, dtype=torch.float64)),
              "dtype"),
    "proj_size on RNN": (lambda m: m.RNN(I, H, proj_size=5), "proj_size"),
    "proj_size on GRU": (lambda m: m.GRU(I, H, proj_size=5), "proj_size"),
    "proj_size >= hidden_size": (lambda m: m.LSTM(I, H, proj_size=H), "proj_size"),
    "nonlinearity": (lambda m: m.RNN(I, H, nonlinearity="sigmoid"), "Unknown nonlinearity"),
    "dropout": (lambda m: m.LSTM(I, H, dropout=1.5), "dropout"),
    "hidden_size 0": (lambda m: m.GRU(I, 0), "hidden_size"),
    "num_layers 0": (lambda m: m.RNN(I, H, num_layers=0), "num_layers"),
}


def raised(fn, lib):
    with pytest.raises(Exception) as e:
        fn(lib)
    return e.value


@pytest.mark.parametrize("case", list(CASES))
def test_rnnkit_raises_an_instance_of_torchs_exception(case):
    fn, word = CASES[case]
    theirs = raised(fn, torch.nn)
    ours = raised(fn, rnnkit)
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs), str(ours))
    assert word in str(ours)
    # code written for torch catches it with the clause it uses
    try:
        raise ours
    except type(theirs):
        pass


@pytest.mark.parametrize("case", ["input features", "hx shape", "no time step"])
def test_shape_errors_are_value_and_runtime_errors(case):
    ours = raised(CASES[case][0], rnnkit)
    assert isinstance(ours, ShapeError)
    for clause in (ValueError, RuntimeError):
        try:
            raise ours
        except clause:
            pass


@pytest.mark.parametrize("name", ["IRNN", "Jordan", "FullyRecurrent", "Clockwork", "SCRN",
                                  "CTRNN"])
def test_every_family_network_raises_runtime_errors_for_shapes(name):
    """The networks without a torch twin follow the same rule."""
    net = getattr(rnnkit, name)(I, H)
    with pytest.raises(RuntimeError, match="input_size"):
        net(torch.randn(T, N, 5))
    with pytest.raises(RuntimeError, match="at least one time step"):
        net(torch.randn(0, N, I))
