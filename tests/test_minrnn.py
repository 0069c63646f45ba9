"""minGRU and minLSTM (Feng et al. 2024): the cells against the paper's equations written out,
the parallel scan against the sequential steps (1e-6 in float32 over long sequences), its
depth, and what the networks take and refuse. (Gradcheck and opcheck of the op: test_ops;
layer normalization, regularizers, compile, export and ONNX: their suites sweep these cells.)"""

import pytest
import torch
from torch.overrides import TorchFunctionMode

import rnnkit
from rnnkit.cells import MinGRUCell, MinLSTMCell
from rnnkit.ops.minrnn import linear_scan, linear_scan_

F64 = torch.float64


def g(v):
    """The paper's g: v + 1/2 for v >= 0, sigmoid(v) below."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def paper_step(cell, x, h):
    """One step from the paper's equations (its sequential mode), with the cell's weights."""
    H = cell.hidden_size
    u = x @ cell.weight_ih.T + cell.bias_ih
    if isinstance(cell, MinLSTMCell):
        f, i = torch.sigmoid(u[:, :H]), torch.sigmoid(u[:, H : 2 * H])
        f2, i2 = f / (f + i), i / (f + i)
        return f2 * h + i2 * g(u[:, 2 * H :])
    z = torch.sigmoid(u[:, :H])
    return (1 - z) * h + z * g(u[:, H:])


@pytest.mark.parametrize("cls", [MinGRUCell, MinLSTMCell])
def test_cell_step_is_the_papers_equations(cls):
    torch.manual_seed(0)
    cell = cls(5, 7, dtype=F64)
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-2, 2)  # saturating gates, both branches of g
    x, h = torch.randn(4, 5, dtype=F64), torch.randn(4, 7, dtype=F64)
    y, h_new = cell(x, h)
    torch.testing.assert_close(h_new, paper_step(cell, x, h), rtol=1e-13, atol=1e-13)
    assert y is h_new


@pytest.mark.parametrize("T", [1, 2, 3, 7, 64, 1000, 1025])
def test_linear_scan_is_the_loop(T):
    gen = torch.Generator().manual_seed(T)
    a = torch.rand(T, 3, 4, dtype=F64, generator=gen)
    b = torch.randn(T, 3, 4, dtype=F64, generator=gen)
    h, want = torch.zeros(3, 4, dtype=F64), []
    for t in range(T):
        h = a[t] * h + b[t]
        want.append(h)
    torch.testing.assert_close(linear_scan(a, b), torch.stack(want), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(linear_scan_(a.clone(), b.clone()), torch.stack(want), rtol=1e-12,
                               atol=1e-12)


class _Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_scan_depth_grows_with_log_t():
    """The scan's torch calls (each a pass over all the steps of its level) grow with log2 T:
    4096 steps take twice the calls of 64, not 64 times."""
    def calls(T):
        a, b = torch.rand(T, 2, 3), torch.randn(T, 2, 3)
        with _Count() as count:
            linear_scan(a, b)
        return count.calls

    c64, c4096 = calls(64), calls(4096)
    assert c4096 <= 2 * c64, (c64, c4096)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM"])
def test_scan_equals_the_sequential_steps_in_float32(name):
    """Training's parallel scan and streaming's sequential steps agree to 1e-6 in float32
    over 2000 steps, bidirectional and masked, from a nonzero state (of either sign)."""
    torch.manual_seed(0)
    net = getattr(rnnkit, name)(8, 16, num_layers=2, bidirectional=True)
    x = torch.randn(2000, 3, 8)
    h0 = torch.randn(4, 3, 16)
    lengths = torch.tensor([2000, 1500, 7])
    y, h = net(x, h0, lengths=lengths)
    net.fused = False  # rnnkit.scan: one cell step after another
    with torch.no_grad():
        y_seq, h_seq = net(x, h0, lengths=lengths)
    torch.testing.assert_close(y.detach(), y_seq, rtol=0, atol=1e-6)
    torch.testing.assert_close(h.detach(), h_seq, rtol=0, atol=1e-6)
    # and the streaming API, net.step one step at a time, ends where the scan does
    net = getattr(rnnkit, name)(8, 16, num_layers=2)
    y, h = net(x[:300])
    state = None
    with torch.no_grad():
        for t in range(300):
            out, state = net.step(x[t], state)
    torch.testing.assert_close(out, y[-1].detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(state, h.detach(), rtol=0, atol=1e-6)


def test_training_through_the_scan_runs_the_op():
    net = rnnkit.MinGRU(4, 6)
    y, _ = net(torch.randn(9, 2, 4))
    assert type(y.grad_fn).__name__ == "rnnkit_minrnn_sequenceBackward"


@pytest.mark.parametrize("cls", [MinGRUCell, MinLSTMCell])
def test_layer_widths(cls):
    cell = cls(3, 4)
    assert cell.weight_ih.shape == (cls.gates * 4, 3)
    assert "weight_hh" not in dict(cell.named_parameters())
    assert cell.recurrent_weight_names() == ()
