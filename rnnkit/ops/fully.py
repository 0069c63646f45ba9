r"""``torch.ops.rnnkit.fully_sequence``: the fully recurrent network over a whole sequence as one
op.

.. math::
    m_{t-1} = [h_{t-1} ; y_{t-1}], \qquad \tilde h_t = \phi_h(u_t + W_{mh} m_{t-1}), \qquad
    \tilde y_t = \phi_y(W_{hy} \tilde h_t + W_{my} m_{t-1} + b_{hy}),                          \\
    [h_t ; y_t] = m_t [\tilde h_t ; \tilde y_t] + (1 - m_t) [h_{t-1} ; y_{t-1}], \qquad
    \text{output}_t = m_t \tilde y_t

with :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, outside the op), :math:`\phi_h`
tanh/relu/sigmoid, :math:`\phi_y` tanh/sigmoid/identity/softmax and :math:`m_t` the padding
mask. ``fully_sequence(us (T, N, H), h0 (N, H), y0 (N, O), w_mh (H, H + O), w_hy (O, H),
w_my (O, H + O), b_hy? (O), valid?, activation, output_activation, reverse, drop? (N, H + O),
zone? (T, N, H + O), ln_hh? (2, H)) -> (ys (T, N, O), h_T, y_T, ss (T + 1, N, H + O), pre, xn,
rn, cn, rstd)``: ``pre`` (T, N, H + O) holds each step's :math:`[\tilde h ; \tilde y]` before
zoneout's merge (``(0,)`` without zoneout); ``ss`` is the
carried-state slot buffer for ``fully_sequence_backward``, which reads that of its own
implementation's forward: the compiled CPU loop (``rnnkit/csrc/fully.cpp``) keeps the values
:math:`[h ; y]`; the pure-torch loop keeps a tanh layer as :math:`s = \sigma(2x)` (its value
:math:`2 s - 1`), since torch's CPU tanh is slow. ``drop`` and ``zone`` are the regularizer
masks (:mod:`rnnkit.regularize`): both products read :math:`\text{drop} \odot [h ; y]_{t-1}`,
and after the step (:math:`\tilde y_t` from the unzoned :math:`\tilde h_t`) :math:`h_t, y_t`
are zoned out by ``zone``'s :math:`[h | y]` columns. Derivation and loops (the pure-torch
implementation): :mod:`rnnkit.kernels.fully` (the masks: ``rnnkit/csrc/fully.cpp``); frame,
autograd and fallback: :mod:`rnnkit.ops._wiring`.

``ln_hh``: layer normalization's gain :math:`\gamma` and bias :math:`\beta` of the hidden
layer's recurrent product, :math:`\tilde h_t = \phi_h(u_t + \mathrm{LN}_{hh}(p_t))` with
:math:`p_t = W_{mh} m_{t-1}` (the dropped :math:`m_{t-1}` with recurrent dropout), normalized
over its H units (the input product's ``LN_ih(W_ih x) + b_ih`` is in ``us``, from
``cell.precompute``, which autograd differentiates; the output layer's :math:`W_{my} m_{t-1}`
and :math:`W_{hy} \tilde h_t` are not normalized). Its saved buffers ``xn, rn, cn, rstd``:
``rn`` ``(T, N, H)`` the normalized :math:`\hat p_t`, row 1 of ``rstd`` ``(3, T, N)`` its
:math:`1/\sigma`; ``xn``, ``cn`` (``(0,)``) and ``rstd``'s rows 0 and 2 unused. Backward with
it: :math:`\delta a_t` (the gradient of :math:`\phi_h`'s input, so also :math:`\bar u_t`) as
without; :math:`\delta p_t = \mathrm{rstd}_t\,(e - \overline{e} - \hat p_t\,
\overline{e \hat p_t})`, :math:`e = \gamma \odot \delta a_t` (means over the H units),
takes :math:`\delta a_t`'s place in :math:`W_m^\top [\delta p_t ; \delta z_t]` (the gradient
of :math:`m_{t-1}`) and in :math:`\bar W_{mh} = \sum_t \delta p_t m_{t-1}^\top`;
:math:`\bar\gamma = \sum \delta a_t \odot \hat p_t`, :math:`\bar\beta = \sum \delta a_t`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.jordan import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from ..kernels import fully as kernel
from . import _cells, _wiring

INPUTS = ("Tensor us, Tensor h0, Tensor y0, Tensor w_mh, Tensor w_hy, Tensor w_my, "
          "Tensor? b_hy")
FLAGS = "str activation, str output_activation, bool reverse"
# saved: the slots, and [h~ ; y~] before zoneout's merge ((0,) without zoneout)
_wiring.define("fully_sequence", INPUTS, 2, FLAGS, ["ss", "pre"], masks=True, norms=("hh",))


def reference(us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation: str,
              output_activation: str, reverse: bool, drop=None, zone=None, ln_hh=None):
    """``(ys, h_T, y_T)`` in differentiable torch ops (``FullyRecurrentCell.step``'s); with the
    regularizer masks, both products read ``drop [h; y]_{t-1}``, and after the step (``y~`` from
    the unzoned ``h~``) ``h_t, y_t`` are zoned out by ``zone_t``'s ``[h | y]`` columns; with
    layer normalization, ``h~ = phi_h(u + LN_hh(W_mh m))``."""
    phi_h, phi_y = HIDDEN_ACTIVATIONS[activation], OUTPUT_ACTIVATIONS[output_activation]
    H = us.shape[2]

    def step(u, h, y, d=None):
        m = torch.cat([h, y], dim=1)
        if drop is not None:
            m = m * drop
        h_new = phi_h(u + _wiring.layer_norm(F.linear(m, w_mh), ln_hh))
        y_new = phi_y(F.linear(h_new, w_hy, b_hy) + F.linear(m, w_my))
        if d is not None:
            h_new, y_new = torch.lerp(h_new, h, d[:, :H]), torch.lerp(y_new, y, d[:, H:])
        return y_new, h_new, y_new

    return _cells.run(step, us, (h0, y0), valid, reverse, zone)


def _python_forward(us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation, output_activation,
                    reverse):
    with torch.no_grad():
        outs = kernel._forward(us, h0, y0, w_mh, w_hy, w_my, b_hy, activation,
                               output_activation, reverse, valid)
    return (*_cells.contiguous(outs), us.new_empty(0))  # (no zoneout here: no pre)


def _python_backward(grad_ys, grad_h_t, grad_y_t, us, h0, y0, w_mh, w_hy, w_my, b_hy, ss, _pre,
                     valid, activation, output_activation, reverse):
    with torch.no_grad():
        need = (True,) * 6 + (b_hy is not None,)
        grads = kernel._backward(grad_ys, grad_h_t, grad_y_t, w_mh, w_hy, w_my, ss, activation,
                                 output_activation, reverse, valid, need)
    return _cells.gradients(grads, (us, h0, y0, w_mh, w_hy, w_my, b_hy), us)


def _fake(us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation, output_activation, reverse,
          drop=None, zone=None, ln_hh=None):
    (T, N, H), O = us.shape, w_hy.shape[0]
    return (us.new_empty(T, N, O), us.new_empty(N, H), us.new_empty(N, O),
            us.new_empty(T + 1, N, H + O),
            us.new_empty(T, N, H + O) if zone is not None else us.new_empty(0),
            *_wiring.norm_fakes(us, H, 0, None, ln_hh))


def register() -> None:
    """The pure-torch implementation, on CUDA, and on the CPU where the compiled loop
    (``rnnkit/csrc/fully.cpp``) did not load."""
    _wiring.register("fully_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def fully_sequence(us: Tensor, h0: Tensor, y0: Tensor, w_mh: Tensor, w_hy: Tensor,
                   w_my: Tensor, b_hy, valid, activation: str, output_activation: str,
                   reverse: bool, drop=None, zone=None,
                   ln_hh=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(ys, h_T, y_T)`` of the op (its ``ss`` is for backward only; not kept where autograd does
    not record)."""
    return _wiring.call("fully_sequence", us, h0, y0, w_mh, w_hy, w_my, b_hy, valid, activation,
                        output_activation, reverse, drop, zone, ln_hh)
