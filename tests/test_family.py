"""Every member of the family is a torch.nn.LSTM-style network: change one name, nothing else."""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkit

FAMILY = [rnnkit.RNN, rnnkit.LSTM, rnnkit.GRU, rnnkit.IRNN, rnnkit.Jordan, rnnkit.FullyRecurrent,
          rnnkit.Clockwork, rnnkit.SCRN, rnnkit.CTRNN]
I, H, N, T = 3, 4, 3, 6
LENGTHS = [6, 2, 4]


def leaves(h):
    return list(h) if isinstance(h, tuple) else [h]


def build(cls, **kw):
    torch.manual_seed(0)
    return cls(I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64,
               **kw)


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_same_calls_same_shapes(cls):
    net = build(cls)
    cell = net._cells()[0][2]
    x = torch.randn(N, T, I, dtype=torch.float64)
    out, h = net(x, lengths=LENGTHS)
    assert out.shape == (N, T, 2 * cell.output_size)
    for n, length in enumerate(LENGTHS):
        assert torch.count_nonzero(out[n, length:]) == 0
    sizes = rnnkit.cells.state_leaves(cell.state_size)
    assert [tuple(leaf.shape) for leaf in leaves(h)] == [(4, N, s) for s in sizes]

    # a PackedSequence gives the same numbers as lengths, and comes back packed
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    out_p, h_p = net(packed)
    assert isinstance(out_p, PackedSequence)
    out_p = pad_packed_sequence(out_p, batch_first=True, total_length=T)[0]
    torch.testing.assert_close(out_p, out, atol=1e-12, rtol=1e-12)
    for a, b in zip(leaves(h_p), leaves(h), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)

    # the final state goes back in as an initial state; unbatched input works too
    out2, _ = net(x, h, lengths=LENGTHS)
    assert out2.shape == out.shape
    out1, h1 = net(x[0])
    assert out1.shape == (T, 2 * cell.output_size)
    assert all(leaf.dim() == 2 for leaf in leaves(h1))


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_state_dict_uses_flat_torch_style_names(cls):
    net = build(cls)
    keys = list(net.state_dict())
    assert all("." not in k for k in keys)
    assert any(k.endswith("_l0") for k in keys) and any(k.endswith("_l1_reverse") for k in keys)
    twin = build(cls)
    for p in twin.parameters():
        torch.nn.init.zeros_(p)
    twin.load_state_dict(net.state_dict())
    x = torch.randn(N, T, I, dtype=torch.float64)
    torch.testing.assert_close(twin(x)[0], net(x)[0], atol=0, rtol=0)


def test_named_parameters_of_new_cells_by_torch_name():
    jordan = build(rnnkit.Jordan, output_size=2)
    assert jordan.weight_yh_l1_reverse.shape == (H, 2)
    assert "weight_my_l0" in rnnkit.FullyRecurrent(I, H).state_dict()
    assert "log_tau_l0" in rnnkit.CTRNN(I, H).state_dict()


def test_unknown_cell_option_is_a_clear_error():
    with pytest.raises(TypeError, match="bogus"):
        rnnkit.Jordan(I, H, bogus=1)


def test_native_kernel_only_where_torch_computes_exactly_this():
    def native(net):
        return net._cells()[0][2].native_mode() is not None

    assert native(rnnkit.IRNN(I, H)) and native(rnnkit.LSTM(I, H, forget_bias=1.0))
    assert not native(rnnkit.LSTM(I, H, peephole="diagonal"))
    assert not any(native(cls(I, H)) for cls in FAMILY[4:])


# ---- CTRNN: Δt per step ------------------------------------------------------------------------

def test_ctrnn_per_step_dt_constant_equals_constant_dt():
    """Δt given per step, all equal to c, == a CTRNN built with dt=c (same weights)."""
    per_step = build(rnnkit.CTRNN, dt=None)
    constant = build(rnnkit.CTRNN, dt=0.3)
    constant.load_state_dict(per_step.state_dict())
    x = torch.randn(N, T, I, dtype=torch.float64)
    dt = torch.full((N, T), 0.3, dtype=torch.float64)
    out_a, h_a = per_step(x, dt=dt, lengths=LENGTHS)
    out_b, h_b = constant(x, lengths=LENGTHS)
    torch.testing.assert_close(out_a, out_b, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h_a, h_b, atol=1e-12, rtol=1e-12)


def test_ctrnn_irregular_dt_reaches_every_layer():
    """Two stacked layers with per-step Δt == the two cells run by hand on [x; Δt]."""
    torch.manual_seed(0)
    net = rnnkit.CTRNN(I, H, num_layers=2, dt=None, dtype=torch.float64)
    x = torch.randn(T, N, I, dtype=torch.float64)
    dt = torch.rand(T, N, dtype=torch.float64) + 0.05
    out, h = net(x, dt=dt)
    cells = [c for _, _, c in net._cells()]
    y0, h0 = rnnkit.scan(cells[0], torch.cat([x, dt[..., None]], -1))
    y1, h1 = rnnkit.scan(cells[1], torch.cat([y0, dt[..., None]], -1))
    torch.testing.assert_close(out, y1, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, torch.stack([h0, h1]), atol=1e-12, rtol=1e-12)


def test_ctrnn_packed_dt():
    net = build(rnnkit.CTRNN, dt=None)
    x = torch.randn(N, T, I, dtype=torch.float64)
    dt = torch.rand(N, T, dtype=torch.float64) + 0.05
    out, _ = net(x, dt=dt, lengths=LENGTHS)
    pack = lambda t: pack_padded_sequence(t, LENGTHS, batch_first=True, enforce_sorted=False)  # noqa: E731
    out_p, _ = net(pack(x), dt=pack(dt))
    out_p = pad_packed_sequence(out_p, batch_first=True, total_length=T)[0]
    torch.testing.assert_close(out_p, out, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dt_at_build, dt_at_call, error, message", [
    (1.0, torch.ones(N, T), ValueError, "dt: expected None, since this CTRNN has a constant"),
    (None, None, TypeError, "dt: expected Δt per step as a tensor"),
    (None, torch.ones(N, T + 1), ValueError,
     f"dt: expected shape ({N}, {T}) (the input's without its feature dimension), got "
     f"({N}, {T + 1})"),
    (None, torch.ones(N, T, dtype=torch.float64), ValueError, "dt: expected dtype torch.float32"),
])
def test_ctrnn_dt_errors(dt_at_build, dt_at_call, error, message):
    net = rnnkit.CTRNN(I, H, batch_first=True, dt=dt_at_build)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        net(torch.randn(N, T, I), dt=dt_at_call)


def test_fused_kernel_is_the_default_where_torch_has_none_and_can_be_switched_off():
    net = rnnkit.LSTM(I, H, num_layers=2, bidirectional=True, peephole="diagonal")
    layers = [m for m in net.modules() if isinstance(m, rnnkit.Recurrent)]
    assert net.fused and all(layer.fused for layer in layers)
    net.fused = False
    assert not net.fused and not any(layer.fused for layer in layers)
    assert not rnnkit.SCRN(I, H, fused=False).fused


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_ctrnn_per_step_dt_must_be_positive_and_finite(bad):
    """The per-step Δt is checked as the constant dt is; padding past a length is not."""
    net = rnnkit.CTRNN(2, 4, dt=None, batch_first=True)
    x, dt = torch.randn(3, 5, 2), torch.full((3, 5), 0.1)
    dt[2, 3] = bad
    with pytest.raises(ValueError, match=r"dt: expected positive, finite time steps .* at "
                       r"index \(2, 3\)"):
        net(x, dt=dt)
    padded = torch.full((3, 5), 0.1)
    padded[1, 4] = bad  # past the second sequence's length: never used
    out, _ = net(x, dt=padded, lengths=[5, 4, 5])
    assert torch.isfinite(out).all()
    with pytest.raises(TypeError, match="dt: expected a floating-point tensor"):
        net(x, dt=torch.ones(3, 5, dtype=torch.long))
