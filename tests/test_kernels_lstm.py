"""The fused LSTM kernel equals rnnkit.scan, values and gradients, for every LSTMCell option."""

import pytest
import torch

from rnnkit import scan
from rnnkit.cells.lstm import LSTMCell, LSTMState
from rnnkit.kernels import lstm_sequence

T, N, I, H = 5, 4, 3, 6
OPTIONS = {
    "plain": {},
    "diagonal": {"peephole": "diagonal"},
    "full": {"peephole": "full"},
    "full+proj": {"peephole": "full", "proj_size": 3},
    "plain+proj": {"proj_size": 2},
    "diagonal+nobias+identity": {"peephole": "diagonal", "bias": False,
                                 "candidate_activation": "identity",
                                 "cell_activation": "identity"},
    "identity-candidate": {"candidate_activation": "identity"},
    "identity-cell+full": {"peephole": "full", "cell_activation": "identity"},
}


def _cell(opts, seed=0):
    torch.manual_seed(seed)
    cell = LSTMCell(I, H, dtype=torch.float64, **opts)
    with torch.no_grad():  # random peephole weights too (they start U(-1/sqrt H, ..) anyway)
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def _inputs(cell, seed=1):
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": g}
    xs = torch.randn(T, N, I, **kw).requires_grad_()
    h0 = torch.randn(N, cell.output_size, **kw).requires_grad_()
    c0 = torch.randn(N, H, **kw).requires_grad_()
    return xs, h0, c0


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("lengths", [None, [T, 2, T - 1, 1]], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_equals_scan(name, lengths, reverse):
    cell = _cell(OPTIONS[name])
    xs, h0, c0 = _inputs(cell)
    lengths = None if lengths is None else torch.tensor(lengths)
    wrt = [xs, h0, c0, *cell.parameters()]
    ys, (h, c) = scan(cell, xs, LSTMState(h0, c0), reverse=reverse, lengths=lengths)
    ys2, h2, c2 = lstm_sequence(cell, xs, h0, c0, reverse=reverse, lengths=lengths)
    for a, b in ((ys, ys2), (h, h2), (c, c2)):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-10
    if lengths is not None:  # padded outputs are exactly zero
        assert (ys2[2:, 1] == 0).all() and (ys2[1:, 3] == 0).all()
    g = torch.Generator().manual_seed(2)
    gys, gh, gc = (torch.randn(t.shape, dtype=t.dtype, generator=g) for t in (ys, h, c))

    def loss(ys, h, c):
        return (ys * gys).sum() + (h * gh).sum() + (c * gc).sum()

    ref = torch.autograd.grad(loss(ys, h, c), wrt)
    got = torch.autograd.grad(loss(ys2, h2, c2), wrt)
    names = ["xs", "h0", "c0", *(n for n, _ in cell.named_parameters())]
    for n, a, b in zip(names, ref, got, strict=True):
        assert a.shape == b.shape, n
        assert (a - b).abs().max() < 1e-10, n


@pytest.mark.parametrize("name", ["plain", "full"])
def test_gradcheck(name):
    Tg, Ng, Ig, Hg = 4, 3, 3, 4
    torch.manual_seed(0)
    cell = LSTMCell(Ig, Hg, dtype=torch.float64, peephole=OPTIONS[name].get("peephole"))
    xs = torch.randn(Tg, Ng, Ig, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(Ng, Hg, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(Ng, Hg, dtype=torch.float64, requires_grad=True)
    peep = cell.weight_ch.detach().clone().requires_grad_() if name == "full" else None
    params = [p.detach().clone().requires_grad_()
              for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    valid = torch.arange(Tg).unsqueeze(1) < torch.tensor([Tg, 2, 1])
    for reverse in (False, True):
        def f(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, peep, reverse=reverse):
            return torch.ops.rnnkit.lstm_sequence(
                xs, h0, c0, w_ih, w_hh, b_ih, b_hh, None, peep, valid, cell.peephole or "none",
                True, True, reverse)[:3]
        assert torch.autograd.gradcheck(f, (xs, h0, c0, *params, peep))


def test_needs_input_grad_and_inference():
    cell = _cell({"peephole": "diagonal"})
    xs, h0, c0 = _inputs(cell)
    for p in cell.parameters():
        p.requires_grad_(False)
    h0.requires_grad_(False)
    ys, h, c = lstm_sequence(cell, xs, h0, c0, lengths=torch.tensor([T, 2, 3, 1]))
    (gx, gc0) = torch.autograd.grad(ys.sum() + c.sum(), (xs, c0))
    ys_ref, (_, c_ref) = scan(cell, xs, LSTMState(h0, c0), lengths=torch.tensor([T, 2, 3, 1]))
    rx, rc0 = torch.autograd.grad(ys_ref.sum() + c_ref.sum(), (xs, c0))
    assert (gx - rx).abs().max() < 1e-10 and (gc0 - rc0).abs().max() < 1e-10
    with torch.no_grad():
        ys2, h2, c2 = lstm_sequence(cell, xs, h0, c0)
    assert ys2.grad_fn is None and ys2.shape == (T, N, H)


def test_float32_and_errors():
    cell = LSTMCell(I, H)
    xs, h0, c0 = torch.randn(T, N, I), torch.zeros(N, H), torch.zeros(N, H)
    ys, _ = scan(cell, xs, LSTMState(h0, c0))
    ys2, _, _ = lstm_sequence(cell, xs, h0, c0)
    assert (ys - ys2).abs().max() < 1e-5
    with pytest.raises(ValueError, match="state.h"):
        lstm_sequence(cell, xs, torch.zeros(N, H + 1), c0)
    with pytest.raises(ValueError, match="xs"):
        lstm_sequence(cell, xs.double(), h0.double(), c0.double())
    with pytest.raises(ValueError, match="lengths"):
        lstm_sequence(cell, xs, h0, c0, lengths=[T + 1, 1, 1, 1])
    with pytest.raises(TypeError, match="LSTMCell"):
        lstm_sequence(torch.nn.Linear(2, 2), xs, h0, c0)
