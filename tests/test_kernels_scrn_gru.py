"""The fused SCRN and GRU kernels equal rnnkit.scan, values and gradients, for every option."""

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
    make_cell,
    make_state,
)

from rnnkit import scan
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.scrn import SCRNCell, SCRNState
from rnnkit.kernels.gru import gru_sequence
from rnnkit.kernels.scrn import scrn_sequence
from rnnkit.ops.scrn import scrn_sequence as scrn_op

SCRN_OPTIONS = {
    "default": {},
    "context3": {"context_size": 3},
    "alpha0": {"alpha": 0.0},  # s0 gets no gradient (0 * s0)
    "alpha1": {"alpha": 1.0},  # B gets none ((1 - 1) * B)
    "learn_alpha": {"learn_alpha": True, "context_size": 4},
    "nobias": {"bias": False, "alpha": 0.5},
}
GRU_OPTIONS = {"default": {}, "nobias": {"bias": False}}
KERNELS = {SCRNCell: scrn_sequence, GRUCell: gru_sequence}


@pytest.mark.parametrize("name", SCRN_OPTIONS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_scrn_equals_scan(name, lengths, reverse):
    zero = {"alpha0": ("state1",), "alpha1": ("weight_B",)}.get(name, ())
    check_equal(make_cell(SCRNCell, SCRN_OPTIONS[name]), lengths, reverse, zero)


@pytest.mark.parametrize("name", GRU_OPTIONS)
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gru_equals_scan(name, lengths, reverse):
    check_equal(make_cell(GRUCell, GRU_OPTIONS[name]), lengths, reverse)


def test_gru_equals_torch_gru():
    cell = make_cell(GRUCell, {})
    ref = torch.nn.GRU(I, H, dtype=torch.float64)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, name + "_l0").copy_(getattr(cell, name))
    xs = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    h0 = make_state(cell)
    ys, h = gru_sequence(cell, xs, h0)
    ys2, h2 = ref(xs, h0.unsqueeze(0))
    assert (ys - ys2).abs().max() < 1e-10 and (h - h2[0]).abs().max() < 1e-10
    up = torch.randn_like(ys)
    got = torch.autograd.grad((ys * up).sum() + h.sum(), [xs, h0, *cell.parameters()])
    want = torch.autograd.grad((ys2 * up).sum() + h2.sum(), [xs, h0, *ref.parameters()])
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() < 1e-10


def _valid():
    return torch.arange(4).unsqueeze(1) < torch.tensor([4, 2, 1])


@pytest.mark.parametrize("learned", [False, True], ids=["fixed-alpha", "learned-alpha"])
def test_scrn_gradcheck(learned):
    Hg, Sg = 4, 3
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, dtype=torch.float64, generator=g) * 2 - 1).requires_grad_()

    us, h0, s0 = rand(4, 3, Sg + Hg), rand(3, Hg), rand(3, Sg)
    w_P, w_R = rand(Hg, Sg), rand(Hg, Hg)
    alpha = torch.rand(Sg, dtype=torch.float64, generator=g).requires_grad_() if learned \
        else 0.7
    for reverse in (False, True):
        def f(us, h0, s0, w_P, w_R, *alpha_, reverse=reverse):
            learned, fixed = (alpha_[0], 0.0) if alpha_ else (None, alpha)
            return scrn_op(us, h0, s0, learned, w_P, w_R, _valid(), fixed, reverse)
        assert torch.autograd.gradcheck(f, (us, h0, s0, w_P, w_R, *([alpha] if learned else [])))


def test_gru_gradcheck():
    Hg = 4
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, dtype=torch.float64, generator=g) * 2 - 1).requires_grad_()

    xs, h0 = rand(4, 3, 2), rand(3, Hg)
    w_ih, w_hh, b_ih, b_hh = rand(3 * Hg, 2), rand(3 * Hg, Hg), rand(3 * Hg), rand(3 * Hg)
    for reverse in (False, True):
        def f(xs, h0, w_ih, w_hh, b_ih, b_hh, reverse=reverse):
            return torch.ops.rnnkit.gru_sequence(xs, h0, w_ih, w_hh, b_ih, b_hh, _valid(),
                                                 reverse)[:2]
        assert torch.autograd.gradcheck(f, (xs, h0, w_ih, w_hh, b_ih, b_hh))


@pytest.mark.parametrize("cls", [SCRNCell, GRUCell], ids=["scrn", "gru"])
def test_default_state_inference_and_partial_grads(cls):
    opts = {"learn_alpha": True} if cls is SCRNCell else {}
    cell = make_cell(cls, opts)
    check_default_state_inference_and_partial_grads(
        cell, "weight_R" if cls is SCRNCell else "weight_hh")


@pytest.mark.parametrize("cls", [SCRNCell, GRUCell], ids=["scrn", "gru"])
def test_float32(cls):
    torch.manual_seed(0)
    cell = cls(I, H)
    xs = torch.randn(T, N, I, requires_grad=True)
    ys, _ = scan(cell, xs, lengths=torch.tensor(LENGTHS))
    ys2, _ = KERNELS[cls](cell, xs, lengths=torch.tensor(LENGTHS))
    assert ys2.dtype == torch.float32 and (ys - ys2).abs().max() < 1e-5
    (gx,) = torch.autograd.grad(ys.sum(), [xs])
    (gx2,) = torch.autograd.grad(ys2.sum(), [xs])
    assert (gx - gx2).abs().max() < 1e-5


def test_errors():
    scrn, gru = SCRNCell(I, H, context_size=2), GRUCell(I, H)
    xs = torch.randn(T, N, I)
    with pytest.raises(TypeError, match="SCRNCell"):
        scrn_sequence(gru, xs)
    with pytest.raises(TypeError, match="GRUCell"):
        gru_sequence(scrn, xs)
    with pytest.raises(ValueError, match=r"state\.s"):
        scrn_sequence(scrn, xs, SCRNState(torch.zeros(N, H), torch.zeros(N, 3)))
    with pytest.raises(TypeError, match="state"):
        scrn_sequence(scrn, xs, torch.zeros(N, H))
    with pytest.raises(ValueError, match="state"):
        gru_sequence(gru, xs, torch.zeros(N, H + 1))
    with pytest.raises(ValueError, match="xs"):
        gru_sequence(gru, xs.double())
    with pytest.raises(ValueError, match="lengths"):
        scrn_sequence(scrn, xs, lengths=[T + 1, 1, 1, 1])
