r"""``torch.ops.rnnkit.jordan_sequence``: the Jordan recurrence over a whole sequence as one op.

.. math::
    h_t = \phi_h(u_t + W_{yh} y_{t-1} + b_{yh}), \qquad
    \tilde y_t = \phi_y(W_{hy} h_t + b_{hy}), \qquad
    y_t = m_t \tilde y_t + (1 - m_t) y_{t-1}, \qquad \text{output}_t = m_t \tilde y_t

with :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, outside the op), :math:`\phi_h`
tanh/relu/sigmoid, :math:`\phi_y` tanh/sigmoid/identity/softmax and :math:`m_t` the padding
mask. ``jordan_sequence(us (T, N, H), y0 (N, O), w_yh (H, O), b_yh? (H), w_hy (O, H),
b_hy? (O), valid?, activation, output_activation, reverse, drop? (N, O), zone? (T, N, O)) ->
(ys (T, N, O), y_T, hs (T, N, H), ss (T + 1, N, O))``: ``hs`` and ``ss`` are the hidden and
carried-state buffers for ``jordan_sequence_backward``, which reads those of its own
implementation's forward: the compiled CPU loop (``rnnkit/csrc/jordan.cpp``) keeps the layers'
values :math:`h_t` and the slots of :math:`y`; the pure-torch loop keeps a tanh layer as
:math:`s = \sigma(2x)` (its value :math:`2 s - 1`), since torch's CPU tanh is slow. ``drop`` and
``zone`` are the regularizer masks (:mod:`rnnkit.regularize`): :math:`W_{yh} (\text{drop} \odot
y_{t-1})` in the product and :math:`y_t = \text{lerp}(\tilde y_t, y_{t-1}, \text{zone}_t)`,
carried and output. Derivation and loops (the pure-torch implementation):
:mod:`rnnkit.kernels.jordan` (the masks: ``rnnkit/csrc/jordan.cpp``); frame, autograd and
fallback: :mod:`rnnkit.ops._wiring`.

Layer normalization (``layer_norm=True``): the cell's input site
:math:`\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih}` is in :math:`u_t` already (``cell.precompute``);
the op normalizes the recurrent product, ``ln_hh`` ``(2, H)`` (gain :math:`g`; bias
:math:`\beta`, after the masks), and returns the saved buffers ``xn`` (``(0,)``), ``rn``
``(T, N, H)``, ``cn`` (``(0,)``), ``rstd`` ``(3, T, N)`` (row 1 used; all four ``(0,)``
without it):

.. math::
    r_t = W_{yh} (\text{drop} \odot y_{t-1}), \qquad
    h_t = \phi_h(u_t + b_{yh} + g \odot \hat r_t + \beta), \qquad
    \hat r_t = (r_t - \mu(r_t)) / \sigma(r_t)

Backward (``csrc/jordan.cpp``): with :math:`\delta a_t = \partial L / \partial a_t` as without
it, :math:`\bar u_t = \delta a_t`, :math:`\bar b_{yh} = \sum \delta a`, and the recurrent
product takes LN's backward, :math:`\delta r_t = (e - \bar e - \hat r_t\, \overline{e \hat
r_t}) / \sigma(r_t)`, :math:`e = g \odot \delta a_t` (bars: means over the row), in place of
:math:`\delta a_t`: :math:`\delta y_{t-1} \mathrel{+}= \text{drop} \odot W_{yh}^\top \delta
r_t`, :math:`\bar W_{yh} = \sum_t \delta r_t (\text{drop} \odot y_{t-1})^\top`;
:math:`\bar g = \sum \delta a \odot \hat r`, :math:`\bar \beta = \sum \delta a`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.jordan import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from ..kernels import jordan as kernel
from . import _cells, _wiring

INPUTS = "Tensor us, Tensor y0, Tensor w_yh, Tensor? b_yh, Tensor w_hy, Tensor? b_hy"
FLAGS = "str activation, str output_activation, bool reverse"
_wiring.define("jordan_sequence", INPUTS, 1, FLAGS, ["hs", "ss"], masks=True, norms=("hh",))


def reference(us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation: str, output_activation: str,
              reverse: bool, drop=None, zone=None, ln_hh=None):
    """``(ys, y_T)`` in differentiable torch ops (``JordanCell.step``'s); with the regularizer
    masks, ``W_yh (drop y_{t-1})`` and ``y_t = lerp(y~_t, y_{t-1}, zone_t)``, carried and
    output; with layer normalization ``LN_hh(W_yh (drop y_{t-1})) + b_yh``."""
    phi_h, phi_y = HIDDEN_ACTIVATIONS[activation], OUTPUT_ACTIVATIONS[output_activation]

    def step(u, y, d=None):
        y_in = y if drop is None else y * drop
        if ln_hh is None:
            h = phi_h(u + F.linear(y_in, w_yh, b_yh))
        else:
            r = _wiring.layer_norm(F.linear(y_in, w_yh), ln_hh)
            h = phi_h(u + (r if b_yh is None else r + b_yh))
        new = phi_y(F.linear(h, w_hy, b_hy))
        if d is not None:
            new = torch.lerp(new, y, d)
        return new, new

    return _cells.run(step, us, (y0,), valid, reverse, zone)


def _python_forward(us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation, output_activation,
                    reverse):
    with torch.no_grad():
        ys, y_t, (hs, ss) = kernel._forward(us, y0, w_yh, b_yh, w_hy, b_hy, activation,
                                            output_activation, reverse, valid)
    return _cells.contiguous((ys, y_t, hs, ss))


def _python_backward(grad_ys, grad_y_t, us, y0, w_yh, b_yh, w_hy, b_hy, hs, ss, valid,
                     activation, output_activation, reverse):
    with torch.no_grad():
        need = (True, True, True, b_yh is not None, True, b_hy is not None)
        grads = kernel._backward(grad_ys, grad_y_t, w_yh, w_hy, hs, ss, activation,
                                 output_activation, reverse, valid, need)
    return _cells.gradients(grads, (us, y0, w_yh, b_yh, w_hy, b_hy), us)


def _fake(us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation, output_activation, reverse,
          drop=None, zone=None, ln_hh=None):
    (T, N, H), O = us.shape, w_hy.shape[0]
    return (us.new_empty(T, N, O), us.new_empty(N, O), us.new_empty(T, N, H),
            us.new_empty(T + 1, N, O), *_wiring.norm_fakes(us, H, 0, None, ln_hh))


def register() -> None:
    """The pure-torch implementation, on CUDA, and on the CPU where the compiled loop
    (``rnnkit/csrc/jordan.cpp``) did not load."""
    _wiring.register("jordan_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def jordan_sequence(us: Tensor, y0: Tensor, w_yh: Tensor, b_yh, w_hy: Tensor, b_hy, valid,
                    activation: str, output_activation: str, reverse: bool, drop=None,
                    zone=None, ln_hh=None) -> tuple[Tensor, Tensor]:
    """``(ys, y_T)`` of the op (its other outputs are for backward only; not kept where autograd
    does not record)."""
    return _wiring.call("jordan_sequence", us, y0, w_yh, b_yh, w_hy, b_hy, valid, activation,
                        output_activation, reverse, drop, zone, ln_hh)
