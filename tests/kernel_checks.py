"""What the per-kernel test files share: sizes, random cells and states, and the check that a
fused kernel equals ``rnnkit.scan`` (values, final states and every gradient)."""

import torch

from rnnkit import scan
from rnnkit.cells.base import state_from_leaves, state_leaves
from rnnkit.kernels import fused_scan

T, N, I, H = 5, 4, 3, 6
LENGTHS = [T, 2, T - 1, 1]  # a full sequence and a length-1 one


def make_cell(cls, opts, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    cell = cls(I, H, dtype=dtype, **opts)
    with torch.no_grad():  # larger than the default init, so nothing is trivially small
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def make_state(cell, seed=1, dtype=torch.float64, requires_grad=True):
    """A random state with the cell's structure, leaves ``(N, size)``."""
    g = torch.Generator().manual_seed(seed)
    made = [torch.randn(N, n, dtype=dtype, generator=g).requires_grad_(requires_grad)
            for n in state_leaves(cell.state_size)]
    return state_from_leaves(cell.state_size, made)


def leaves(state):
    return list(state) if isinstance(state, tuple) else [state]


def check_equal(cell, lengths, reverse, zero=()):
    """``fused_scan(cell)`` == ``scan`` within 1e-10: outputs, final states, the gradients of xs,
    the initial state and every parameter. Gradients named in ``zero`` are exactly zero in both;
    every other one is non-trivial."""
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(T, N, I, dtype=torch.float64, generator=g).requires_grad_()
    state = make_state(cell)
    lengths = None if lengths is None else torch.tensor(lengths)
    ys, fin = scan(cell, xs, state, reverse=reverse, lengths=lengths)
    ys2, fin2 = fused_scan(cell)(cell, xs, state, reverse=reverse, lengths=lengths)
    assert type(fin2) is type(fin)
    outs, outs2 = [ys, *leaves(fin)], [ys2, *leaves(fin2)]
    for a, b in zip(outs, outs2, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert (a - b).abs().max() < 1e-10
    if lengths is not None:  # padded outputs are exactly zero
        assert (ys2[2:, 1] == 0).all() and (ys2[1:, 3] == 0).all() and (ys2[4:, 2] == 0).all()
    ups = [torch.randn(o.shape, dtype=o.dtype, generator=g) for o in outs]
    wrt = [xs, *leaves(state), *cell.parameters()]
    names = ["xs", *(f"state{i}" for i in range(len(leaves(state)))),
             *(n for n, _ in cell.named_parameters())]
    ref = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs, ups, strict=True)), wrt)
    got = torch.autograd.grad(sum((o * u).sum() for o, u in zip(outs2, ups, strict=True)), wrt)
    for n, a, b in zip(names, ref, got, strict=True):
        assert a.shape == b.shape, n
        assert (a - b).abs().max() < 1e-10, n
        if n in zero:  # the cell's own gradient is exactly zero there: so is the kernel's
            assert (a == 0).all() and (b == 0).all(), n
        else:
            assert a.abs().max() > 1e-3, n  # the comparison is not trivial
