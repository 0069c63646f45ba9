"""The fused Jordan and fully recurrent kernels (the ops ``torch.ops.rnnkit.jordan_sequence``
and ``fully_sequence``) equal rnnkit.scan, values and gradients, for every combination of the
cells' options."""

import itertools

import pytest
import torch
from kernel_checks import (
    LENGTHS,
    H,
    I,
    N,
    T,
    check_default_state_inference_and_partial_grads,
    check_equal,
    leaves,
    make_cell,
)

from rnnkit import scan
from rnnkit.cells.fully import FullyRecurrentCell, FullyState
from rnnkit.cells.jordan import JordanCell
from rnnkit.kernels.fully import fully_sequence
from rnnkit.kernels.jordan import jordan_sequence
from rnnkit.ops.fully import fully_sequence as fully_op
from rnnkit.ops.jordan import jordan_sequence as jordan_op

KERNELS = {JordanCell: jordan_sequence, FullyRecurrentCell: fully_sequence}
HIDDEN = ["tanh", "relu", "sigmoid"]
OUTPUT = ["tanh", "sigmoid", "identity", "softmax"]
# (output_size, bias): O = H with biases, O != H (smaller and larger) without
SHAPES = {"O=H": (None, True), "O<H-nobias": (3, False), "O>H": (8, True)}
OPTIONS = {
    f"{h}-{o}-{s}": {"activation": h, "output_activation": o, "output_size": SHAPES[s][0],
                     "bias": SHAPES[s][1]}
    for h, o, s in itertools.product(HIDDEN, OUTPUT, SHAPES)
}


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_jordan_equals_scan(name, lengths, reverse):
    check_equal(make_cell(JordanCell, OPTIONS[name]), lengths, reverse)


@pytest.mark.parametrize("name", OPTIONS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fully_equals_scan(name, lengths, reverse):
    check_equal(make_cell(FullyRecurrentCell, OPTIONS[name]), lengths, reverse)


def _valid():
    return torch.arange(4).unsqueeze(1) < torch.tensor([4, 2, 1])  # (T=4, N=3), ragged


def _rand(g, *shape):
    return (torch.rand(*shape, dtype=torch.float64, generator=g) * 2 - 1).requires_grad_()


ACTS = [("tanh", "tanh"), ("relu", "softmax"), ("sigmoid", "identity"), ("tanh", "sigmoid"),
        ("relu", "tanh")]


@pytest.mark.parametrize("act_h,act_y", ACTS)
def test_jordan_gradcheck(act_h, act_y):
    Hg, Og = 4, 3
    g = torch.Generator().manual_seed(0)
    us, y0 = _rand(g, 4, 3, Hg), _rand(g, 3, Og)
    w_yh, b_yh, w_hy, b_hy = _rand(g, Hg, Og), _rand(g, Hg), _rand(g, Og, Hg), _rand(g, Og)
    for reverse in (False, True):
        def f(us, y0, w_yh, b_yh, w_hy, b_hy, reverse=reverse):
            return jordan_op(us, y0, w_yh, b_yh, w_hy, b_hy, _valid(), act_h, act_y, reverse)
        assert torch.autograd.gradcheck(f, (us, y0, w_yh, b_yh, w_hy, b_hy))


@pytest.mark.parametrize("act_h,act_y", ACTS)
def test_fully_gradcheck(act_h, act_y):
    Hg, Og = 4, 3
    g = torch.Generator().manual_seed(0)
    us, h0, y0 = _rand(g, 4, 3, Hg), _rand(g, 3, Hg), _rand(g, 3, Og)
    w_mh, w_hy, w_my = _rand(g, Hg, Hg + Og), _rand(g, Og, Hg), _rand(g, Og, Hg + Og)
    b_hy = _rand(g, Og)
    for reverse in (False, True):
        def f(us, h0, y0, w_mh, w_hy, w_my, b_hy, reverse=reverse):
            return fully_op(us, h0, y0, w_mh, w_hy, w_my, b_hy, _valid(), act_h, act_y,
                            reverse)
        assert torch.autograd.gradcheck(f, (us, h0, y0, w_mh, w_hy, w_my, b_hy))


def test_gradcheck_without_biases():
    g = torch.Generator().manual_seed(1)
    us, h0, y0 = _rand(g, 4, 3, 4), _rand(g, 3, 4), _rand(g, 3, 2)
    w_yh, w_hy = _rand(g, 4, 2), _rand(g, 2, 4)
    w_mh, w_my = _rand(g, 4, 6), _rand(g, 2, 6)
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda us, y0, a, b, r=reverse: jordan_op(
                us, y0, a, None, b, None, _valid(), "tanh", "tanh", r),
            (us, y0, w_yh, w_hy))
        assert torch.autograd.gradcheck(
            lambda us, h0, y0, a, b, c, r=reverse: fully_op(
                us, h0, y0, a, b, c, None, _valid(), "tanh", "tanh", r),
            (us, h0, y0, w_mh, w_hy, w_my))


CELLS = {"jordan": JordanCell, "fully": FullyRecurrentCell}


@pytest.mark.parametrize("kind", CELLS)
def test_default_state_inference_and_partial_grads(kind):
    cls = CELLS[kind]
    cell = make_cell(cls, {"output_size": 3})
    check_default_state_inference_and_partial_grads(
        cell, "weight_yh" if cls is JordanCell else "weight_my")


@pytest.mark.parametrize("kind", CELLS)
def test_final_state_does_not_alias(kind):
    """The returned outputs and final state are fresh tensors, not views of one another."""
    cell = make_cell(CELLS[kind], {"output_activation": "sigmoid"})
    xs = torch.randn(T, N, I, dtype=torch.float64)
    with torch.no_grad():
        ys, fin = KERNELS[type(cell)](cell, xs)
        ref = [t.clone() for t in leaves(fin)]
        ys.zero_()
    for a, b in zip(leaves(fin), ref, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("out", ["tanh", "softmax"])
def test_float32(kind, out):
    torch.manual_seed(0)
    cell = CELLS[kind](I, H, output_size=4, output_activation=out)
    xs = torch.randn(T, N, I, requires_grad=True)
    ys, fin = scan(cell, xs, lengths=torch.tensor(LENGTHS))
    ys2, fin2 = KERNELS[type(cell)](cell, xs, lengths=torch.tensor(LENGTHS))
    assert ys2.dtype == torch.float32 and (ys - ys2).abs().max() < 1e-5
    for a, b in zip(leaves(fin), leaves(fin2), strict=True):
        assert b.dtype == torch.float32 and (a - b).abs().max() < 1e-5
    up = torch.randn_like(ys)
    wrt = [xs, *cell.parameters()]
    ref = torch.autograd.grad((ys * up).sum() + leaves(fin)[0].sum(), wrt)
    got = torch.autograd.grad((ys2 * up).sum() + leaves(fin2)[0].sum(), wrt)
    for a, b in zip(ref, got, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_errors():
    jordan = JordanCell(I, H, output_size=3)
    fully = FullyRecurrentCell(I, H, output_size=3)
    xs = torch.randn(T, N, I)
    with pytest.raises(TypeError, match="JordanCell"):
        jordan_sequence(fully, xs)
    with pytest.raises(TypeError, match="FullyRecurrentCell"):
        fully_sequence(jordan, xs)
    with pytest.raises(ValueError, match="state"):
        jordan_sequence(jordan, xs, torch.zeros(N, H))  # (N, H), not (N, O)
    with pytest.raises(TypeError, match="state"):
        jordan_sequence(jordan, xs, FullyState(torch.zeros(N, H), torch.zeros(N, 3)))
    with pytest.raises(TypeError, match="state"):
        fully_sequence(fully, xs, torch.zeros(N, H + 3))
    with pytest.raises(ValueError, match=r"state\.y"):
        fully_sequence(fully, xs, FullyState(torch.zeros(N, H), torch.zeros(N, H)))
    with pytest.raises(ValueError, match=r"state\.h"):
        fully_sequence(fully, xs, FullyState(torch.zeros(N + 1, H), torch.zeros(N + 1, 3)))
    with pytest.raises(ValueError, match="xs"):
        jordan_sequence(jordan, xs.double())
    with pytest.raises(ValueError, match="xs"):
        fully_sequence(fully, xs[:, :, :2])
    with pytest.raises(ValueError, match="lengths"):
        fully_sequence(fully, xs, lengths=[T + 1, 1, 1, 1])
