"""Every cell's network gives the same numbers fused (the default) and through the reference
``scan`` (``fused=False``): outputs, final states and every gradient, stacked, bidirectional and
padded, on the CPU and, where one is present, on a CUDA device."""

import copy

import pytest
import torch
from kernel_checks import graph_names
from test_contract import CONFIGS, IDS

import rnnkit
from rnnkit.cells.base import state_leaves
from rnnkit.kernels import fused_scan

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]
I, H, T, N = 3, 5, 7, 4
LENGTHS = torch.tensor([7, 1, 4, 6])


def _random_params(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 1.6 - 0.8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_fused_network_equals_scan(name, opts, device):
    net = rnnkit.RecurrentNetwork(name, I, H, num_layers=2, bidirectional=True,
                                  dtype=torch.float64, native=False, device=device, **opts)
    cell = net._cells()[0][2]
    _random_params(net)  # (a clockwork masks its weights in the step, so any values do)
    ref = copy.deepcopy(net)
    ref.fused = False
    g = torch.Generator().manual_seed(1)
    kw = {"dtype": torch.float64, "generator": g}
    xs = torch.randn(T, N, I, **kw).to(device).requires_grad_()
    hx = [torch.randn(4, N, s, **kw).to(device).requires_grad_()
          for s in state_leaves(cell.state_size)]

    def run(module):
        out, finals = module(xs, hx[0] if len(hx) == 1 else hx, lengths=LENGTHS)
        finals = list(finals) if isinstance(finals, tuple) else [finals]
        return [out, *finals]

    got, want = run(net), run(ref)
    seeds = [torch.randn(t.shape, **kw).to(device) for t in want]
    wrt_a = [xs, *hx, *net.parameters()]
    wrt_b = [xs, *hx, *ref.parameters()]

    def grads(outs, wrt):
        loss = sum((t * s).sum() for t, s in zip(outs, seeds, strict=True))
        return torch.autograd.grad(loss, wrt, allow_unused=True)

    ga, gb = grads(got, wrt_a), grads(want, wrt_b)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() < 1e-10
    names = ["xs", *(f"hx{i}" for i in range(len(hx))), *(n for n, _ in net.named_parameters())]
    for n, a, b in zip(names, ga, gb, strict=True):
        if a is None or b is None:
            assert a is None and b is None, n
            continue
        assert (a - b).abs().max() < 1e-10, n


def test_which_cells_have_a_kernel():
    """Every registered cell without a torch kernel for its defaults has a fused one."""
    missing = []
    for name in rnnkit.cell_names():
        cell = rnnkit.make_cell(name, I, H)
        if cell.native_mode() is None and fused_scan(cell) is None:
            missing.append(name)
    assert missing == []


def _fused_gru(node_name: str) -> bool:
    """rnnkit's GRU kernel: the registered op (compiled or pure torch)."""
    return "rnnkit_gru_sequence" in node_name


def test_gru_trains_on_the_fused_kernel_on_the_cpu():
    torch.manual_seed(0)
    net, twin = rnnkit.GRU(3, 4, num_layers=2), torch.nn.GRU(3, 4, num_layers=2)
    twin.load_state_dict(net.state_dict())
    x = torch.randn(6, 2, 3)
    out, _ = net(x)
    assert any(_fused_gru(n) for n in graph_names(out))
    torch.testing.assert_close(out, twin(x)[0])
    net.fused = False  # the user's switch back to torch's kernel
    assert not any(_fused_gru(n) for n in graph_names(net(x)[0]))
    lstm_out, _ = rnnkit.LSTM(3, 4)(x)  # torch's LSTM kernel is the faster one: it stays
    assert not any("rnnkit_lstm_sequence" in n for n in graph_names(lstm_out))


@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_fused_network_batch_first(name, opts):
    """batch_first: the kernels get transposed (non-contiguous) inputs and output gradients."""
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(name, I, H, batch_first=True, dtype=torch.float64,
                                  native=False, **opts)
    ref = copy.deepcopy(net)
    ref.fused = False
    x = torch.randn(N, T, I, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(N, T, net(x)[0].shape[2], dtype=torch.float64)
    (ya, _), (yb, _) = net(x, lengths=LENGTHS), ref(x, lengths=LENGTHS)
    ga = torch.autograd.grad((ya * seed).sum(), [x, *net.parameters()])
    gb = torch.autograd.grad((yb * seed).sum(), [x, *ref.parameters()])
    assert (ya - yb).abs().max() < 1e-10
    for a, b in zip(ga, gb, strict=True):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")
@pytest.mark.parametrize("name, opts", CONFIGS, ids=IDS)
def test_packed_onednn_products_equal_scan_in_float32(name, opts, monkeypatch):
    """Large float32 CPU layers multiply by a packed oneDNN weight (kernels._common.Product);
    forced on here at a small size, the numbers must still be scan's to float32 rounding."""
    from rnnkit.kernels import _common

    monkeypatch.setattr(_common, "PACK_MIN_NUMEL", 0)
    assert _common.Product(torch.randn(4, 3), 2).packed is not None
    torch.manual_seed(0)
    net = rnnkit.RecurrentNetwork(name, I, H, bidirectional=True, native=False, **opts)
    ref = copy.deepcopy(net)
    ref.fused = False
    x = torch.randn(T, N, I, requires_grad=True)
    (ya, _), (yb, _) = net(x, lengths=LENGTHS), ref(x, lengths=LENGTHS)
    seed = torch.randn(ya.shape)
    ga = torch.autograd.grad((ya * seed).sum(), [x, *net.parameters()])
    gb = torch.autograd.grad((yb * seed).sum(), [x, *ref.parameters()])
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-5)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_gru_path_follows_recording_not_the_mode(monkeypatch):
    """As the README says: a GRU that records for backward on the CPU runs the fused kernel in
    train and eval mode alike; without gradients it runs the compiled op where the ops built,
    else torch's kernel."""
    from rnnkit import ops

    calls = []
    native = rnnkit.RecurrentNetwork._forward_native
    monkeypatch.setattr(rnnkit.RecurrentNetwork, "_forward_native",
                        lambda self, *a: calls.append(1) or native(self, *a))
    net, x = rnnkit.GRU(3, 4), torch.randn(6, 2, 3)
    for training in (True, False):
        net.train(training)
        assert any(_fused_gru(n) for n in graph_names(net(x)[0])) and not calls
        with torch.no_grad():
            net(x)
        with torch.inference_mode():
            net(x)
        assert len(calls) == (0 if ops.compiled() else 2)
        calls.clear()
