"""Streaming (``net.initial_state`` / ``net.step``): a sequence fed one step at a time gives the
whole-sequence ``forward``'s outputs and final state, for every cell, stacked, with lengths
(``valid``), in float64 to rounding and float32 within 1e-6; the state mixes with ``forward``'s
``hx``/``h_n``; bad calls get errors that name what is wrong."""

import pytest
import torch

import rnnkit
from rnnkit.cells import cell_names
from rnnkit.cells.base import state_leaves
from rnnkit.cells.lstm import LSTMState

F64 = torch.float64
T, N, I, H = 6, 4, 3, 8
LENGTHS = torch.tensor([6, 3, 1, 5])

CASES = [(name, {}) for name in cell_names()] + [
    ("lstm", {"proj_size": 5}),
    ("lstm", {"native": False}),
    ("peephole_lstm", {"peephole": "full"}),
    ("elman", {"nonlinearity": "relu"}),
]


def _net(name, dtype=F64, **opts):
    torch.manual_seed(0)
    return rnnkit.RecurrentNetwork(name, I, H, num_layers=2, dtype=dtype, **opts).eval()


def _stream(net, x, state=None, lengths=None, **kw):
    ys = []
    for t in range(x.shape[0]):
        valid = None if lengths is None else t < lengths
        y, state = net.step(x[t], state, valid=valid, **kw)
        ys.append(y)
    return torch.stack(ys), state


def _close(a, b, tol):
    for u, v in zip(state_leaves(a), state_leaves(b), strict=True):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("name, opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_steps_give_the_sequence(name, opts, lengths):
    net = _net(name, **opts)
    x = torch.randn(T, N, I, dtype=F64, generator=torch.Generator().manual_seed(1))
    want_y, want_h = net(x, lengths=lengths)
    got_y, got_h = _stream(net, x, net.initial_state(N), lengths)
    torch.testing.assert_close(got_y, want_y, rtol=1e-12, atol=1e-12)
    _close(got_h, want_h, 1e-12)


@pytest.mark.parametrize("name", ["lstm", "gru", "clockwork", "scrn", "jordan", "fully"])
def test_float32_within_1e_6(name):
    net = _net(name, dtype=torch.float32)
    x = torch.randn(T, N, I, generator=torch.Generator().manual_seed(2))
    want_y, want_h = net(x, lengths=LENGTHS)
    got_y, got_h = _stream(net, x, None, LENGTHS)
    torch.testing.assert_close(got_y, want_y, rtol=1e-6, atol=1e-6)
    _close(got_h, want_h, 1e-6)


@pytest.mark.parametrize("name", ["lstm", "clockwork", "ctrnn"])
def test_forward_then_step_continues_the_sequence(name):
    """A prompt read by forward, the rest fed step by step: the whole sequence's numbers."""
    net = _net(name)
    x = torch.randn(T, N, I, dtype=F64)
    want_y, want_h = net(x)
    y0, h0 = net(x[:2])
    y1, h1 = _stream(net, x[2:], h0)
    torch.testing.assert_close(torch.cat([y0, y1]), want_y, rtol=1e-12, atol=1e-12)
    _close(h1, want_h, 1e-12)
    _, stepped = _stream(net, x[:2])  # and a stepped state feeds forward
    y2, _ = net(x[2:], stepped)
    torch.testing.assert_close(y2, want_y[2:], rtol=1e-12, atol=1e-12)


def test_state_layout_is_forwards_hx():
    net = _net("lstm", proj_size=5)
    s = net.initial_state(N)
    assert isinstance(s, LSTMState)
    assert s.h.shape == (2, N, 5) and s.c.shape == (2, N, H)
    assert _net("gru").initial_state(N).shape == (2, N, H)
    clock = _net("clockwork").initial_state(N)
    assert clock.t.shape == (2, N, 1)


def test_facades_and_batch_first_and_unbatched():
    torch.manual_seed(0)
    net = rnnkit.GRU(I, H, num_layers=2, batch_first=True, dtype=F64)
    x = torch.randn(N, T, I, dtype=F64)
    want, _ = net(x)
    got, _ = _stream(net, x.transpose(0, 1))
    torch.testing.assert_close(got.transpose(0, 1), want, rtol=1e-12, atol=1e-12)
    y, h = net.step(x[0, 0])  # unbatched: (I,) -> (H,), state (L, H)
    assert y.shape == (H,) and h.shape == (2, H)
    torch.testing.assert_close(y, want[0, 0], rtol=1e-12, atol=1e-12)


def test_ctrnn_with_dt_per_step():
    torch.manual_seed(0)
    net = rnnkit.CTRNN(I, H, num_layers=2, dt=None, dtype=F64)
    x = torch.randn(T, N, I, dtype=F64)
    dt = torch.rand(T, N, dtype=F64) + 0.1
    want, want_h = net(x, dt=dt, lengths=LENGTHS)
    state, ys = None, []
    for t in range(T):
        y, state = net.step(x[t], state, valid=t < LENGTHS, dt=dt[t])
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, want_h, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="dt"):
        net.step(x[0])


def test_bad_calls_name_the_problem():
    net = _net("lstm")
    with pytest.raises(ValueError, match="bidirectional"):
        rnnkit.LSTM(I, H, bidirectional=True).step(torch.randn(N, I))
    with pytest.raises(ValueError, match="bidirectional"):
        rnnkit.GRU(I, H, bidirectional=True).initial_state(N)
    x = torch.randn(N, I, dtype=F64)
    with pytest.raises(ValueError, match=r"input of shape \(N, input_size=3\)"):
        net.step(torch.randn(N, I + 1, dtype=F64))
    with pytest.raises(TypeError, match="state: expected a tuple of 2"):
        net.step(x, torch.zeros(2, N, H, dtype=F64))
    bad = LSTMState(torch.zeros(2, N + 1, H, dtype=F64), torch.zeros(2, N, H, dtype=F64))
    with pytest.raises(Exception, match=r"state\.h"):
        net.step(x, bad)
    with pytest.raises(ValueError, match=r"valid: expected a bool tensor of shape \(4,\)"):
        net.step(x, valid=torch.ones(N))
    with pytest.raises(ValueError, match="batch_size"):
        net.initial_state(0)
    with pytest.raises(ValueError, match="dtype"):
        net.step(x.float())
