"""Layer normalization inside the compiled Jordan and CTRNN ops (their ``ln_hh`` input; the
input site stays in ``cell.precompute``), over the options the generic
``test_layer_norm_kernels`` does not reach: every activation (the CTRNN's identity, whose
compiled loop otherwise folds the leak into its GEMM), ``bias=False``, ``output_size``, the
inference op, and an empty sequence."""

import pytest
import torch
from test_layer_norm import inputs, randomize_ln
from test_layer_norm_kernels import LENGTHS, masks_for, outputs_and_grads

from rnnkit import scan
from rnnkit.cells import CTRNNCell, JordanCell
from rnnkit.kernels import fused_scan

F64 = torch.float64
I, H = 3, 4

CONFIGS = {
    "jordan-relu-identity": (JordanCell, {"activation": "relu", "output_activation": "identity"}),
    "jordan-sigmoid-softmax": (JordanCell, {"activation": "sigmoid",
                                            "output_activation": "softmax", "output_size": 3}),
    "jordan-nobias": (JordanCell, {"bias": False, "output_size": 5,
                                   "output_activation": "sigmoid"}),
    "ctrnn-identity": (CTRNNCell, {"activation": "identity", "dt": 0.3}),
    "ctrnn-sigmoid": (CTRNNCell, {"activation": "sigmoid", "dt": 0.7}),
    "ctrnn-relu-dt-input": (CTRNNCell, {"activation": "relu", "dt_input": True}),
    "ctrnn-identity-dt-input-nobias": (CTRNNCell, {"activation": "identity", "dt_input": True,
                                                   "bias": False}),
}


def make(name):
    factory, options = CONFIGS[name]
    torch.manual_seed(0)
    cell = factory(I, H, layer_norm=True, dtype=F64, **options)
    randomize_ln(cell)
    if isinstance(cell, CTRNNCell):
        with torch.no_grad():
            cell.log_tau.uniform_(-0.5, 0.5)
    return cell


@pytest.mark.parametrize("which", ["none", "drop", "zone", "both"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernel_equals_reference_loop(name, reverse, which):
    cell = make(name)
    masks = masks_for(cell, which)
    got, got_grads = outputs_and_grads(fused_scan(cell), cell, reverse, LENGTHS, masks)
    want, want_grads = outputs_and_grads(scan, cell, reverse, LENGTHS, masks)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    names = ["xs", "state", *(n for n, _ in cell.named_parameters())]
    for n, a, b in zip(names, got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_op_equals_reference_loop(name, lengths):
    cell = make(name)
    xs, (state,) = inputs(cell)
    with torch.no_grad():
        got = fused_scan(cell)(cell, xs, state, lengths=lengths)
        want = scan(cell, xs, state, lengths=lengths)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["jordan-relu-identity", "ctrnn-identity",
                                  "ctrnn-relu-dt-input"])
def test_empty_sequence(name):
    """The op at T = 0 (which scan refuses): the state passes through, the layer
    normalization's gradient is zero."""
    from rnnkit import ops
    from rnnkit.kernels._common import norms

    cell = make(name)
    xs, (state,) = inputs(cell, t=0)
    state.requires_grad_()
    (ln,) = norms(cell, "hh")
    us = cell.precompute(xs)
    if isinstance(cell, JordanCell):
        ys, final = ops.jordan.jordan_sequence(
            us, state, cell.weight_yh, cell.bias_yh, cell.weight_hy, cell.bias_hy, None,
            cell.activation, cell.output_activation, False, None, None, ln)
    else:
        ys, final = ops.ctrnn.ctrnn_sequence(
            us, state, cell.weight_hh, cell.log_tau, None, cell.dt, cell.dt_input,
            cell.activation, False, None, None, ln)
    assert ys.shape[0] == 0
    torch.testing.assert_close(final, state)
    g_state, g_ln = torch.autograd.grad(final.sum(), [state, ln])
    torch.testing.assert_close(g_state, torch.ones_like(state))
    assert g_ln.shape == (2, H) and not g_ln.any()
