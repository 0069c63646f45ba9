"""rnnkit.RNN/LSTM/GRU equal torch.nn.RNN/LSTM/GRU after a state-dict copy.

Outputs, final states and gradients (input, initial state, every parameter) are compared for
every combination of layers, directions, batch layout, initial state and padding form, on the
native path, on rnnkit's fused kernel (LSTM) and on the pure-scan path.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit

KINDS = {
    "rnn_tanh": (rnnkit.RNN, nn.RNN, {}),
    "rnn_relu": (rnnkit.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnkit.LSTM, nn.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, nn.LSTM, {"proj_size": 3}),
    "gru": (rnnkit.GRU, nn.GRU, {}),
}
I, H, T, N = 4, 5, 6, 3
LENGTHS = [4, 6, 2]  # unsorted, one full-length, one short
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# the three ways rnnkit can compute a torch-twin network: torch's kernel, rnnkit's fused kernel
# (where the cell has one: LSTM), and the reference scan
PATHS = {"native": {"native": True}, "fused": {"native": False, "fused": True},
         "scan": {"native": False, "fused": False}}
# the fused path exists for the LSTM family only so far; elsewhere it would be the scan path again
KIND_PATHS = [(k, p) for k in KINDS for p in PATHS if p != "fused" or k.startswith("lstm")]


def make_pair(kind, num_layers, bidirectional, batch_first, dtype, path):
    ours_cls, torch_cls, kw = KINDS[kind]
    args = (I, H, num_layers)
    common = {"bidirectional": bidirectional, "batch_first": batch_first, "dtype": dtype}
    ours = ours_cls(*args, **PATHS[path], **common, **kw)
    twin = torch_cls(*args, **common, **kw)
    twin.load_state_dict(ours.state_dict())
    return ours, twin


def initial_state(model, dtype, gen):
    """Random initial state in torch's layout, as leaf tensors that require grad."""
    L = model.num_layers * (2 if model.bidirectional else 1)
    h_out = getattr(model, "proj_size", 0) or H
    sizes = [h_out, H] if isinstance(model, (rnnkit.LSTM, nn.LSTM)) else [h_out]
    leaves = [torch.randn(L, N, s, dtype=dtype, generator=gen).requires_grad_() for s in sizes]
    return leaves


def run(model, x, hx_leaves, form, batch_first, ours):
    """Forward in the given form; returns padded output (in the batch layout) and final leaves."""
    hx = None
    if hx_leaves is not None:
        hx = hx_leaves[0] if len(hx_leaves) == 1 else tuple(hx_leaves)
    if form == "full":
        out, h = model(x, hx)
    elif form == "lengths" and ours:
        out, h = model(x, hx, lengths=torch.tensor(LENGTHS))
    else:  # a PackedSequence in and out (torch's twin takes the "lengths" form this way too)
        packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
        out, h = model(packed, hx)
        assert isinstance(out, PackedSequence)
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        assert torch.equal(out.sorted_indices, packed.sorted_indices)
        assert torch.equal(out.unsorted_indices, packed.unsorted_indices)
        out = pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0]
    return out, (list(h) if isinstance(h, tuple) else [h])


def grads(model, x, hx_leaves, out, finals, gen):
    """Gradients of a random linear function of everything the forward returned."""
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=gen)).sum()
    for h in finals:
        loss = loss + (h * torch.randn(h.shape, dtype=h.dtype, generator=gen)).sum()
    params = dict(model.state_dict(keep_vars=True))
    inputs = [x] + (hx_leaves or []) + list(params.values())
    g = torch.autograd.grad(loss, inputs)
    names = ["x"] + [f"hx{i}" for i in range(len(hx_leaves or []))] + list(params)
    return dict(zip(names, g, strict=True))


@pytest.mark.parametrize("form", ["full", "lengths", "packed"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zero_hx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind, path", KIND_PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_equals_torch(dtype, kind, num_layers, bidirectional, batch_first, with_hx, form, path):
    gen = torch.Generator().manual_seed(1234)
    ours, twin = make_pair(kind, num_layers, bidirectional, batch_first, dtype, path)
    shape = (N, T, I) if batch_first else (T, N, I)
    x = torch.randn(shape, dtype=dtype, generator=gen, requires_grad=True)
    hx = initial_state(ours, dtype, gen) if with_hx else None

    out_o, fin_o = run(ours, x, hx, form, batch_first, ours=True)
    out_t, fin_t = run(twin, x, hx, form, batch_first, ours=False)
    tol = TOL[dtype]
    torch.testing.assert_close(out_o, out_t, atol=tol, rtol=tol)
    assert len(fin_o) == len(fin_t)
    for a, b in zip(fin_o, fin_t, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)

    g_o = grads(ours, x, hx, out_o, fin_o, torch.Generator().manual_seed(7))
    g_t = grads(twin, x, hx, out_t, fin_t, torch.Generator().manual_seed(7))
    assert g_o.keys() == g_t.keys()
    for name in g_o:
        torch.testing.assert_close(g_o[name], g_t[name], atol=tol, rtol=tol, msg=name)


@pytest.mark.parametrize("kind, path", KIND_PATHS)
def test_unbatched_input_equals_torch(kind, path):
    ours, twin = make_pair(kind, 2, True, False, torch.float64, path)
    x = torch.randn(T, I, dtype=torch.float64)
    out_o, h_o = ours(x)
    out_t, h_t = twin(x)
    torch.testing.assert_close(out_o, out_t, atol=1e-10, rtol=1e-10)
    h_o, h_t = (h_o, h_t) if isinstance(h_o, tuple) else ((h_o,), (h_t,))
    for a, b in zip(h_o, h_t, strict=True):
        assert a.dim() == 2
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # an unbatched initial state goes back in unchanged in layout
    out2_o, _ = ours(x, h_o if len(h_o) > 1 else h_o[0])
    out2_t, _ = twin(x, h_t if len(h_t) > 1 else h_t[0])
    torch.testing.assert_close(out2_o, out2_t, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("path", list(PATHS))
def test_dropout_between_layers_not_after_last(path):
    """With p=1 every input to layers 2.. is zero, and the last layer's output is not dropped."""
    torch.manual_seed(0)
    ours = rnnkit.LSTM(I, H, num_layers=2, dropout=1.0, dtype=torch.float64, **PATHS[path])
    top = rnnkit.LSTM(H, H, dtype=torch.float64)
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in ours.state_dict().items()
                         if "_l1" in k})
    x = torch.randn(T, N, I, dtype=torch.float64)
    ours.train()
    out, _ = ours(x)
    expected, _ = top(torch.zeros(T, N, H, dtype=torch.float64))
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    assert out.abs().min() > 0
    ours.eval()  # no dropout in eval mode: the first layer's output reaches the second
    assert not torch.allclose(ours(x)[0], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind, path", KIND_PATHS)
def test_equals_torch_on_cuda(kind, path):
    ours, twin = make_pair(kind, 2, True, True, torch.float64, path)
    ours, twin = ours.cuda(), twin.cuda()
    x = torch.randn(N, T, I, dtype=torch.float64, device="cuda")
    lengths = torch.tensor(LENGTHS)
    out_o, _ = ours(x, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_t = pad_packed_sequence(twin(packed)[0], batch_first=True, total_length=T)[0]
    torch.testing.assert_close(out_o, out_t, atol=1e-8, rtol=1e-8)
