"""What the per-kernel test files share: sizes, random cells and states, the check that a
fused kernel equals ``rnnkit.scan`` (values, final states and every gradient), and the names of
the autograd nodes behind a tensor (which kernel ran)."""

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


def check_default_state_inference_and_partial_grads(cell, weight):
    """``fused_scan(cell)`` == ``scan`` with state=None; under no_grad (no graph); and when only
    xs, only the parameter named ``weight``, only the initial state, or nothing needs a
    gradient."""
    fused = fused_scan(cell)
    xs = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    # state=None: zeros
    ys, fin = scan(cell, xs, lengths=lengths)
    ys2, fin2 = fused(cell, xs, lengths=lengths)
    assert type(fin2) is type(fin)
    for a, b in zip([ys, *leaves(fin)], [ys2, *leaves(fin2)], strict=True):
        assert (a - b).abs().max() < 1e-10
    # inference: no graph, same numbers
    with torch.no_grad():
        ys3, fin3 = fused(cell, xs, lengths=lengths, reverse=True)
    ys4, fin4 = scan(cell, xs, lengths=lengths, reverse=True)
    assert ys3.grad_fn is None and all(t.grad_fn is None for t in leaves(fin3))
    for a, b in zip([ys3, *leaves(fin3)], [ys4, *leaves(fin4)], strict=True):
        assert (a - b).abs().max() < 1e-10
    # only xs requires grad (frozen cell, constant state)
    for p in cell.parameters():
        p.requires_grad_(False)
    state = make_state(cell, requires_grad=False)
    ys, fin = scan(cell, xs, state, lengths=lengths)
    ys2, fin2 = fused(cell, xs, state, lengths=lengths)
    (gx,) = torch.autograd.grad(ys.sum() + leaves(fin)[0].sum(), [xs])
    (gx2,) = torch.autograd.grad(ys2.sum() + leaves(fin2)[0].sum(), [xs])
    assert (gx - gx2).abs().max() < 1e-10
    # only one parameter requires grad (xs and state do not)
    w = getattr(cell, weight)
    w.requires_grad_(True)
    x0 = xs.detach()
    (gw,) = torch.autograd.grad(scan(cell, x0, state)[0].sum(), [w])
    (gw2,) = torch.autograd.grad(fused(cell, x0, state)[0].sum(), [w])
    assert (gw - gw2).abs().max() < 1e-10
    # only the initial state requires grad
    w.requires_grad_(False)
    state = make_state(cell)
    gs = torch.autograd.grad(scan(cell, x0, state, lengths=lengths)[0].sum(), leaves(state))
    gs2 = torch.autograd.grad(fused(cell, x0, state, lengths=lengths)[0].sum(), leaves(state))
    for a, b in zip(gs, gs2, strict=True):
        assert a.abs().max() > 1e-3 and (a - b).abs().max() < 1e-10
    # nothing requires grad: no graph even with grad mode on
    state = make_state(cell, requires_grad=False)
    ys, fin = fused(cell, x0, state)
    assert ys.grad_fn is None and all(t.grad_fn is None for t in leaves(fin))


def graph_names(t) -> set[str]:
    """Names of the autograd nodes behind ``t`` (``GRUSequenceBackward``: the fused kernel ran)."""
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


def total(out, state):
    """A loss that reaches every output: the outputs' and the final states' sums."""
    return out.sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))


def check_compiles_like_eager(net, x, lengths, extra=lambda x: {}) -> None:
    """``torch.compile(net, fullgraph=True, dynamic=True)``: forward and input gradient, without
    and with ``lengths``, equal eager's; a new length and a new batch size do not recompile.
    ``extra(x)``: more keyword arguments for a call on ``x`` (CTRNN's per-step dt)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # (every network compiles the same forward: a fresh cache per test)
    compiled = torch.compile(net, fullgraph=True, dynamic=True)
    for kw in ({}, {"lengths": lengths}):
        out, h = compiled(x, **kw, **extra(x))
        (gx,) = torch.autograd.grad(total(out, h), x)
        want, h_want = net(x, **kw, **extra(x))
        (gx_want,) = torch.autograd.grad(total(want, h_want), x)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(h, h_want)
        torch.testing.assert_close(gx, gx_want)
    graphs = counters["stats"]["unique_graphs"]
    T, N, I = x.shape
    for shape in [(T + 4, N, I), (T - 1, N + 4, I)]:  # (requires_grad kept: it would recompile)
        xx = torch.randn(*shape, requires_grad=True)
        torch.testing.assert_close(compiled(xx, **extra(xx))[0], net(xx, **extra(xx))[0])
    assert counters["stats"]["unique_graphs"] == graphs  # no recompilation


def gen(seed):
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=1):
    """float64 normal numbers of ``shape``, the same for the same seed."""
    return torch.randn(*shape, dtype=torch.float64, generator=gen(seed))
