"""The compiled loops split each step's pointwise pass across threads (``at::parallel_for`` over
the batch rows); the rest of the suite runs on one thread (conftest), so this checks that the
split changes nothing: every op-backed network, masked and bidirectional, gives the same outputs
and gradients on 2 threads as on 1, at a batch and width large enough to split."""

import pytest
import torch

import rnnkit
from rnnkit.cells import cell_names
from rnnkit.ops import _wiring

F64 = torch.float64
# (cell, options): every cell whose network runs a registered op, with the variants whose loops
# differ (peepholes, projection, relu, the cell's own options)
CASES = [(name, {}) for name in cell_names() if name != "lstm"] + [
    ("lstm", {"native": False}),
    ("lstm", {"native": False, "proj_size": 24}),
    ("peephole_lstm", {"peephole": "full"}),
    ("elman", {"nonlinearity": "relu"}),
]
OP_OF = {"irnn": "elman", "peephole_lstm": "lstm", "mingru": "minrnn", "minlstm": "minrnn"}


def _run(name, opts, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = rnnkit.RecurrentNetwork(name, input_size=11, hidden_size=72, num_layers=2,
                                      bidirectional=True, dtype=F64, **opts)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(9, 37, 11, dtype=F64, generator=g)
        lengths = torch.randint(1, 10, (37,), generator=g)
        lengths[0] = 9
        y, _ = net(x, lengths=lengths)
        (y * torch.randn(y.shape, dtype=F64, generator=g)).sum().backward()
        return [y.detach()] + [p.grad for p in net.parameters()]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("name, opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_two_threads_match_one(name, opts):
    if not _wiring.compiled_on_cpu(f"{OP_OF.get(name, name)}_sequence"):
        pytest.skip("no compiled CPU loop here")
    one, two = _run(name, opts, 1), _run(name, opts, 2)
    assert len(one) == len(two)
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
