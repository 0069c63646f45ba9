"""Layer normalization inside the fused kernels (``csrc/layer_norm.h``; the ops' ``ln_<site>``
inputs, :mod:`rnnkit.ops._wiring`): for every cell whose kernel normalizes, the kernel equals
the reference loop (``rnnkit.scan``, whose cells call ``F.layer_norm``) in outputs and in the
gradients of the inputs, the states and every parameter, the gains and biases included; with
padding, in reverse, with recurrent dropout and zoneout; float64 gradcheck through the op;
opcheck; the pure-torch implementation (from the reference) computes the same; float32 at a
size that vectorizes."""

import pytest
import torch
from kernel_checks import gen, graph_names, randn
from test_layer_norm import CELLS, LENGTHS, inputs, make
from torch.autograd import gradcheck

import rnnkit
from rnnkit import scan
from rnnkit.cells import ClockworkCell
from rnnkit.cells.base import state_from_leaves
from rnnkit.kernels import fused_scan
from rnnkit.ops import _wiring
from rnnkit.regularize import Masks, zoned_sizes

T, N = 5, 3
NORMALIZED = [name for name in CELLS if fused_scan(make(name)) is not None]
OTHERS = [name for name in CELLS if name not in NORMALIZED]


def masks_for(cell, which, seed=5):
    """Recurrent dropout (scaled 0/(1/0.7)) and 0/1 zoneout weights for ``cell``, by ``which``."""
    if which == "none":
        return None
    g = gen(seed)
    drop = (torch.rand(N, cell.recurrent_input_size, generator=g, dtype=torch.float64)
            > 0.3).double() / 0.7
    S = sum(zoned_sizes(cell))
    zone = (torch.rand(T, N, S, generator=g, dtype=torch.float64) < 0.4).double()
    return Masks(drop if which != "zone" else None, zone if which != "drop" else None, True)


def run(fn, cell, xs, leaves, reverse, lengths, masks):
    state = state_from_leaves(cell.state_size, leaves)
    ys, final = fn(cell, xs, state, reverse=reverse, lengths=lengths, masks=masks)
    finals = list(final) if isinstance(final, tuple) else [final]
    return [ys, *[f for f in finals if f.is_floating_point()]]


def outputs_and_grads(fn, cell, reverse, lengths, masks):
    xs, leaves = inputs(cell)
    xs.requires_grad_()
    # (not the clockwork's step counter)
    leaves = [leaf if isinstance(cell, ClockworkCell) and k == 1 else leaf.requires_grad_()
              for k, leaf in enumerate(leaves)]
    outs = run(fn, cell, xs, leaves, reverse, lengths, masks)
    weights = [randn(*o.shape, seed=11 + k) for k, o in enumerate(outs)]
    loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
    wrt = [xs, *[leaf for leaf in leaves if leaf.requires_grad], *cell.parameters()]
    return outs, torch.autograd.grad(loss, wrt, allow_unused=True)


@pytest.mark.parametrize("which", ["none", "both"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", NORMALIZED)
def test_kernel_equals_reference_loop(name, reverse, lengths, which):
    cell = make(name)
    kernel = fused_scan(cell)
    assert kernel is not None
    masks = masks_for(cell, which)
    got, got_grads = outputs_and_grads(kernel, cell, reverse, lengths, masks)
    assert any("rnnkit" in n.lower() for n in graph_names(got[0]))  # the op ran
    want, want_grads = outputs_and_grads(scan, cell, reverse, lengths, masks)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    names = ["xs", "state"] + [n for n, _ in cell.named_parameters()]
    for n, a, b in zip(names, got_grads, want_grads, strict=False):
        if b is None:
            assert a is None or not a.abs().any(), n
            continue
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=lambda m, n=n: f"{n}: {m}")
    ln = [g for (n, _), g in zip(cell.named_parameters(), got_grads[-len(names) + 2:],
                                 strict=True) if "_ln_" in n]
    assert ln and all(g is not None and g.abs().sum() > 0 for g in ln)


def captured_op_call(cell, masks, reverse=True):
    """The op name and arguments a kernel call of ``cell`` makes (padded, ``masks``)."""
    seen = []
    real = _wiring.call

    def spy(name, *args):
        seen.append((name, args))
        return real(name, *args)

    xs, leaves = inputs(cell)
    _wiring.call = spy
    try:
        run(fused_scan(cell), cell, xs, leaves, reverse, LENGTHS, masks)
    finally:
        _wiring.call = real
    (name, args), = seen
    return name, args


@pytest.mark.parametrize("name", NORMALIZED)
def test_op_gradchecks_and_passes_opcheck(name):
    """float64 gradcheck of the op's hand-derived backward with every layer normalization site
    on, with respect to every differentiable input (the gains and biases too), padded, with
    recurrent dropout and zoneout (without them: test_kernel_equals_reference_loop)."""
    cell = make(name)
    op_name, args = captured_op_call(cell, masks_for(cell, "both"))
    op = getattr(torch.ops.rnnkit, op_name)
    n_in, n_states, _, _ = _wiring._specs[op_name]
    n_norms = len(_wiring._norms[op_name])
    args = [a.detach().clone().requires_grad_(i < n_in or i >= len(args) - n_norms)
            if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for i, a in enumerate(args)]
    assert all(a is not None for a in args[-n_norms:])
    present = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*leaves):
        full = list(args)
        for i, leaf in zip(present, leaves, strict=True):
            full[i] = leaf
        return op(*full)[: 1 + n_states]

    assert gradcheck(f, [args[i] for i in present])
    torch.library.opcheck(op.default, tuple(args))


@pytest.mark.parametrize("name", NORMALIZED)
def test_pure_torch_implementation_computes_the_same(name):
    """Where the compiled loop did not build, a call with layer normalization computes from the
    op's reference: the same outputs and gradients."""
    cell = make(name)
    op_name, args = captured_op_call(cell, masks_for(cell, "zone"))
    n_in, n_states, n_flags, n_masks = _wiring._specs[op_name]
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    forward, backward = _wiring._by_reference[op_name]
    op = getattr(torch.ops.rnnkit, op_name)
    got, want = op(*args), forward(*args)
    for a, b in zip(got[: 1 + n_states], want[: 1 + n_states], strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    grads = [randn(*o.shape, seed=3 + k) for k, o in enumerate(got[: 1 + n_states])]
    inputs_ = args[:n_in]
    back = (*grads, *inputs_, *got[1 + n_states :], *args[n_in:])
    for a, b in zip(getattr(torch.ops.rnnkit, op_name + "_backward")(*back), backward(*back),
                    strict=True):
        if a.numel() or b.numel():
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NORMALIZED)
def test_float32_matches_the_reference_at_a_vector_width(name):
    """float32 at H = 37 (vector lanes and a scalar tail in every row; 37 a module, for a cell
    whose H divides into modules, the Clockwork's): within float32's rounding of the reference
    loop."""
    modules = len(CELLS[name][1].get("periods", (1,)))
    cell = make(name, input_size=5, hidden_size=37 * modules).float()
    g = gen(2)
    xs = torch.randn(7, 4, 5, generator=g)
    if getattr(cell, "dt_input", False):
        xs[..., -1] = xs[..., -1].abs() + 0.1
    lengths = torch.tensor([7, 3, 6, 1])
    got = fused_scan(cell)(cell, xs, None, lengths=lengths)[0]
    want = scan(cell, xs, None, lengths=lengths)[0]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_every_cells_kernel_normalizes():
    assert not OTHERS, f"layer-normalized cells without a normalizing kernel: {OTHERS}"


@pytest.mark.parametrize("cls, options", [(rnnkit.LSTM, {"peephole": "diagonal"}),
                                          (rnnkit.Jordan, {"output_size": 3})],
                         ids=["LSTM", "Jordan"])
def test_layer_normalized_network_captures_in_one_graph(cls, options):
    """torch.compile(fullgraph=True) sees the op with its layer normalization inputs (fakes and
    autograd registered): outputs and every gradient equal eager's (aot_eager: the capture,
    not inductor's code, is under test here)."""
    torch.manual_seed(0)
    net = cls(4, 5, num_layers=2, bidirectional=True, layer_norm=True, dtype=torch.float64,
              **options)
    x = randn(6, 3, 4).requires_grad_()
    lengths = torch.tensor([6, 2, 5])
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    got = compiled(x, lengths=lengths)[0]
    want = net(x, lengths=lengths)[0]
    torch.testing.assert_close(got, want)
    g = randn(*got.shape, seed=4)
    params = list(net.parameters())
    for a, b in zip(torch.autograd.grad(got, [x, *params], g),
                    torch.autograd.grad(want, [x, *params], g), strict=True):
        torch.testing.assert_close(a, b)
