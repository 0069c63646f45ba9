r"""``torch.ops.rnnkit.indrnn_sequence``: the IndRNN recurrence over a whole sequence as one op.

.. math::
    h_t = m_t\, \phi(W_{ih} x_t + b_{ih} + u \odot h_{t-1}) + (1 - m_t) h_{t-1},
    \qquad y_t = m_t\, \tilde h_t

(:math:`\phi` relu or tanh, :math:`u` a vector, :math:`m_t` the padding mask).
``indrnn_sequence(x, h0, w_ih, u, b_ih?, valid?, relu, reverse) -> (ys (T, N, H), h_T, hs
(T + 1, N, H))``: ``hs`` holds the carried states (slots as in ``rnnkit/csrc/recurrence.h``) for
``indrnn_sequence_backward``:

.. math::
    \delta_t = m_t (\partial y_t + \partial h_t)\, \phi'(\tilde h_t), \qquad
    \partial h_{t-1} = u \odot \delta_t + (1 - m_t)\, \partial h_t,

then over all steps at once :math:`\partial X = \Delta W_{ih}`, :math:`\partial W_{ih} =
\Delta^T X`, :math:`\partial u = \sum_t \delta_t \odot h_{t-1}` (summed over the batch),
:math:`\partial b_{ih} = \sum_t \delta_t`. No product runs inside the loop: a step is one
pointwise pass. The frame every op shares, its autograd and this pure-torch implementation:
:mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels._common import befores, steps
from . import _wiring
from .elman import deltas, forward_slots

INPUTS = "Tensor x, Tensor h0, Tensor w_ih, Tensor u, Tensor? b_ih"
_wiring.define("indrnn_sequence", INPUTS, 1, "bool relu, bool reverse", ["hs"], masks=True,
               norms=("ih",))


def _slots(x, h0, w_ih, u, b_ih, valid, relu: bool, reverse: bool, drop=None, zone=None,
           ln_ih=None):
    """The forward in differentiable torch ops: ``(ys, hs)`` (with the regularizer masks:
    ``h_{t-1} -> drop h_{t-1}`` in the recurrent term, ``h_t = lerp(h~_t, h_{t-1}, zone_t)``;
    with layer normalization ``LN_ih(W_ih x_t) + b_ih``)."""
    a = _wiring.project(x, w_ih, b_ih, ln_ih)  # (T, N, H)
    return forward_slots(a, h0, lambda a_t, h_m: a_t + h_m * u,
                         torch.relu if relu else torch.tanh, valid, reverse, drop, zone)


def reference(x, h0, w_ih, u, b_ih, valid, relu: bool, reverse: bool, drop=None, zone=None,
              ln_ih=None):
    """``(ys, h_T)`` in differentiable torch ops (what a recorded backward differentiates)."""
    ys, hs = _slots(x, h0, w_ih, u, b_ih, valid, relu, reverse, drop, zone, ln_ih)
    return ys, hs[steps(x.shape[0], reverse).last]


def _python_forward(x, h0, w_ih, u, b_ih, valid, relu, reverse):
    with torch.no_grad():
        ys, hs = _slots(x, h0, w_ih, u, b_ih, valid, relu, reverse)
    # new tensors: an op's outputs may not alias one another
    return ys.clone(), hs[steps(x.shape[0], reverse).last].clone(), hs


def _python_backward(grad_ys, grad_h_t, x, h0, w_ih, u, b_ih, hs, valid, relu, reverse):
    T, N, _ = x.shape
    delta, dh = deltas(grad_ys, grad_h_t, hs, valid, relu, reverse, lambda a: a * u)
    d2 = delta.reshape(T * N, -1)
    before = befores(hs, reverse).reshape(T * N, -1)
    db = d2.sum(0) if b_ih is not None else _wiring.absent(x)
    return ((d2 @ w_ih).view_as(x), dh, d2.t() @ x.reshape(T * N, -1), (d2 * before).sum(0),
            db)


def _fake(x, h0, w_ih, u, b_ih, valid, relu, reverse, drop=None, zone=None, ln_ih=None):
    T, N, H = x.shape[0], x.shape[1], h0.shape[1]
    return (x.new_empty(T, N, H), x.new_empty(N, H), x.new_empty(T + 1, N, H),
            *_wiring.norm_fakes(x, H, 0, ln_ih, None))


def register() -> None:
    _wiring.register(
        "indrnn_sequence", reference=reference,
        fake=_fake,
        python_forward=_python_forward, python_backward=_python_backward)


def indrnn_sequence(x: Tensor, h0: Tensor, w_ih: Tensor, u: Tensor, b_ih, valid, relu: bool,
                    reverse: bool, drop=None, zone=None, ln_ih=None) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its ``hs`` is for backward only; not kept where autograd does
    not record)."""
    return _wiring.call("indrnn_sequence", x, h0, w_ih, u, b_ih, valid, relu, reverse, drop,
                        zone, ln_ih)
