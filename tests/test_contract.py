"""The cell contract, for every registered cell.

A cell added to the registry is tested here by its name alone: shapes, state structure, batch
independence, dtype following the input, scan's padding semantics, float64 gradcheck of the cell,
of scan (reverse, lengths) and of a stacked bidirectional padded network.
"""

import pytest
import torch
from torch.func import functional_call

import rnnkit
from rnnkit.cells import cell_names, make_cell, map_state, state_leaves

# Every registered name with its defaults, plus variants whose options change the structure.
VARIANTS = {"elman": [{"nonlinearity": "relu"}],
            "lstm": [{"proj_size": 2}, {"peephole": "diagonal"},
                     {"peephole": "full", "proj_size": 2}, {"forget_bias": 1.0},
                     {"candidate_activation": "identity", "cell_activation": "identity"}],
            "scrn": [{"context_size": 5, "learn_alpha": True}],
            "jordan": [{"output_size": 2, "output_activation": "softmax"},
                       {"output_activation": "identity", "activation": "relu"}],
            "fully": [{"output_size": 2, "output_activation": "sigmoid"},
                      {"activation": "sigmoid", "output_activation": "identity"}],
            "clockwork": [{"periods": (3,), "activation": "sigmoid"}],
            "ctrnn": [{"dt": 0.3, "activation": "sigmoid", "tau_init": 2.0}, {"dt_input": True}]}
CONFIGS = [(name, {}) for name in cell_names()] + [
    (name, opts) for name, variants in VARIANTS.items() for opts in variants
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CONFIGS]
I, H, N, T = 3, 4, 5, 6
LENGTHS = torch.tensor([6, 2, 5, 1, 3])
GC_T, GC_LENGTHS = 4, torch.tensor([4, 1, 3])  # gradcheck is O(inputs x params): keep it small


def build(name, opts, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return make_cell(name, I, H, dtype=dtype, **opts)


def randn(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def random_state(cell, seed=2, n=N):
    """A random (nonzero) state with the cell's structure, leaves (n, size)."""
    sizes = state_leaves(cell.state_size)
    leaves = iter([randn(n, s, seed=seed + i) for i, s in enumerate(sizes)])
    return map_state(lambda _: next(leaves), cell.state_size)


def test_registry_has_the_foundation_cells():
    assert {"elman", "lstm", "gru"} <= set(cell_names())


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_shapes_and_state_structure(name, opts):
    cell = build(name, opts)
    assert cell.input_size == I and cell.hidden_size == H
    state = cell.init_state(N)
    assert type(state) is type(cell.state_size) or isinstance(cell.state_size, int)
    for leaf, size in zip(state_leaves(state), state_leaves(cell.state_size), strict=True):
        assert leaf.shape == (N, size) and leaf.dtype == torch.float64
        assert torch.count_nonzero(leaf) == 0
    y, new = cell(randn(N, I), random_state(cell))
    assert y.shape == (N, cell.output_size)
    assert type(new) is type(state)
    for leaf, size in zip(state_leaves(new), state_leaves(cell.state_size), strict=True):
        assert leaf.shape == (N, size)
    # forward == step(precompute(x)), the split scan relies on
    x, s = randn(N, I), random_state(cell)
    y2, new2 = cell.step(cell.precompute(x), s)
    torch.testing.assert_close(cell(x, s)[0], y2, atol=0, rtol=0)
    for a, b in zip(state_leaves(cell(x, s)[1]), state_leaves(new2), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_batch_independence(name, opts):
    """Each sequence's outputs depend on that sequence alone."""
    cell = build(name, opts)
    xs = randn(T, N, I)
    state = random_state(cell)
    ys, final = rnnkit.scan(cell, xs, state)
    for n in range(N):
        one = map_state(lambda leaf, n=n: leaf[n:n + 1], state)
        y1, f1 = rnnkit.scan(cell, xs[:, n:n + 1], one)
        torch.testing.assert_close(ys[:, n:n + 1], y1, atol=1e-12, rtol=1e-12)
        for a, b in zip(state_leaves(final), state_leaves(f1), strict=True):
            torch.testing.assert_close(a[n:n + 1], b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_dtype_follows_the_input(name, opts, dtype):
    cell = build(name, opts, dtype=dtype)
    ys, final = rnnkit.scan(cell, randn(T, N, I, dtype=dtype))
    assert ys.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in state_leaves(final))
    assert all(leaf.dtype == dtype for leaf in state_leaves(cell.init_state(N)))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_scan_padding_equals_each_sequence_alone(name, opts, reverse):
    """Padded scan == each sequence run alone, unpadded: zero outputs past its length, the
    final state at its last step, and a reverse pass that starts at its own last step."""
    cell = build(name, opts)
    xs, state = randn(T, N, I), random_state(cell)
    ys, final = rnnkit.scan(cell, xs, state, reverse=reverse, lengths=LENGTHS)
    for n, length in enumerate(LENGTHS.tolist()):
        one = map_state(lambda leaf, n=n: leaf[n:n + 1], state)
        y1, f1 = rnnkit.scan(cell, xs[:length, n:n + 1], one, reverse=reverse)
        torch.testing.assert_close(ys[:length, n:n + 1], y1, atol=1e-12, rtol=1e-12)
        assert torch.count_nonzero(ys[length:, n]) == 0
        for a, b in zip(state_leaves(final), state_leaves(f1), strict=True):
            torch.testing.assert_close(a[n:n + 1], b, atol=1e-12, rtol=1e-12)


def _gradcheck_with_params(module, fn, inputs):
    """gradcheck ``fn(module, *inputs)`` with respect to the inputs and every parameter."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    k = len(inputs)

    def f(*args):
        params = dict(zip(names, args[k:], strict=True))
        return fn(lambda *a, **kw: functional_call(module, params, a, kw), *args[:k])

    assert torch.autograd.gradcheck(f, (*inputs, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_gradcheck_cell(name, opts):
    cell = build(name, opts)
    leaves = [leaf.requires_grad_() for leaf in state_leaves(random_state(cell))]
    x = randn(N, I).requires_grad_()

    def one_step(call, x, *leaves):
        it = iter(leaves)
        y, new = call(x, map_state(lambda _: next(it), cell.state_size))
        return (y, *state_leaves(new))

    _gradcheck_with_params(cell, one_step, [x, *leaves])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_gradcheck_scan_with_lengths(name, opts, reverse):
    cell = build(name, opts)
    leaves = [leaf.requires_grad_() for leaf in state_leaves(random_state(cell, n=3))]
    xs = randn(GC_T, 3, I).requires_grad_()
    layer = rnnkit.Recurrent(cell, reverse=reverse)

    def run(call, xs, *leaves):
        it = iter(leaves)
        ys, final = call(xs, map_state(lambda _: next(it), cell.state_size), GC_LENGTHS)
        return (ys, *state_leaves(final))

    _gradcheck_with_params(layer, run, [xs, *leaves])


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_gradcheck_stacked_bidirectional_padded_network(name, opts):
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(name, I, 3, num_layers=2, bidirectional=True,
                                  dtype=torch.float64, native=False, **opts)
    xs = randn(GC_T, 3, I).requires_grad_()
    # a random initial state: the network's gradient w.r.t. hx is checked too, and no cell sits
    # at a degenerate point (IRNN's zero biases, 0.001-scale input weights and a zero state put
    # ReLU pre-activations within gradcheck's eps of the kink)
    sizes = state_leaves(net._cells()[0][2].state_size)
    hx = [randn(4, 3, s, seed=2 + i).requires_grad_() for i, s in enumerate(sizes)]

    def run(call, xs, *hx):
        out, finals = call(xs, hx[0] if len(hx) == 1 else hx, lengths=GC_LENGTHS)
        return (out, *(finals if isinstance(finals, tuple) else (finals,)))

    _gradcheck_with_params(net, run, [xs, *hx])


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_network_of_any_cell_has_torch_shapes(name, opts):
    """Every cell becomes a deep bidirectional torch.nn.LSTM-style network by its name."""
    net = rnnkit.RecurrentNetwork(name, I, H, num_layers=3, bidirectional=True,
                                  batch_first=True, **opts)
    cell = net._cells()[0][2]
    out, finals = net(torch.randn(N, T, I), lengths=LENGTHS)
    assert out.shape == (N, T, 2 * cell.output_size)
    finals = finals if isinstance(finals, tuple) else (finals,)
    for leaf, size in zip(finals, state_leaves(cell.state_size), strict=True):
        assert leaf.shape == (6, N, size)
    out2, _ = net(torch.randn(N, T, I), finals if len(finals) > 1 else finals[0])
    assert out2.shape == out.shape
