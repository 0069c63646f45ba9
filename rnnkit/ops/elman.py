r"""``torch.ops.rnnkit.elman_sequence``: the Elman recurrence over a whole sequence as one op.

.. math::
    h_t = m_t\, \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) + (1 - m_t) h_{t-1},
    \qquad y_t = m_t\, \tilde h_t

(:math:`\phi` tanh or relu, :math:`m_t` the padding mask). ``elman_sequence(x, h0, w_ih, w_hh,
b_ih?, b_hh?, valid?, relu, reverse) -> (ys (T, N, H), h_T, hs (T + 1, N, H))``: ``hs`` holds
the carried states (slots as in ``rnnkit/csrc/recurrence.h``) for ``elman_sequence_backward``,
whose derivation is in ``csrc/elman.cpp``. The frame every op shares, its autograd and its
pure-torch fallback: :mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels._common import befores, outputs, steps
from . import _wiring

INPUTS = "Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh"
_wiring.define("elman_sequence", INPUTS, 1, "bool relu, bool reverse", ["hs"], masks=True,
               norms=("ih", "hh"))


def _slots(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu: bool, reverse: bool, drop=None,
           zone=None, ln_ih=None, ln_hh=None):
    """The forward in differentiable torch ops: ``(ys, hs)`` (with the regularizer masks:
    ``h_{t-1} -> drop h_{t-1}`` in the product, ``h_t = lerp(h~_t, h_{t-1}, zone_t)``; with
    layer normalization ``LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1}) + b``)."""
    u = _wiring.project(x, w_ih, b_ih, ln_ih)
    if b_hh is not None:
        u = u + b_hh
    phi = torch.relu if relu else torch.tanh

    def recurrent(u_t, h_m):  # u_t + W_hh h_m, or + LN_hh(W_hh h_m)
        return (torch.addmm(u_t, h_m, w_hh.t()) if ln_hh is None else
                u_t + _wiring.project(h_m, w_hh, None, ln_hh))

    return forward_slots(u, h0, recurrent, phi, valid, reverse, drop, zone)


def forward_slots(u, h0, recurrent, phi, valid, reverse: bool, drop=None, zone=None):
    """The forward loop of ``h_t = phi(recurrent(u_t, m h_{t-1}))``: ``(ys, hs)``, with the
    recurrent dropout mask ``m`` (``drop``) on the state entering the recurrent term, zoneout
    ``h_t = lerp(h~_t, h_{t-1}, zone_t)`` and the state carried past a length (Elman:
    ``u_t + W_hh h``; IndRNN: ``u_t + u * h``; :func:`deltas` is its backward)."""
    st = steps(u.shape[0], reverse)
    slots: list = [None] * (u.shape[0] + 1)
    slots[st.first] = h0
    for t in st.order:
        h_in = slots[t + st.off_in]
        h = phi(recurrent(u[t], h_in if drop is None else h_in * drop))
        if zone is not None:
            h = torch.lerp(h, h_in, zone[t])
        if valid is not None:
            h = torch.where(valid[t].unsqueeze(1), h, h_in)
        slots[t + st.off_out] = h
    hs = torch.stack(slots)
    ys = outputs(hs, reverse)
    if valid is not None:
        ys = ys * valid.unsqueeze(2)
    return ys, hs


def reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu: bool, reverse: bool, drop=None,
              zone=None, ln_ih=None, ln_hh=None):
    """``(ys, h_T)`` in differentiable torch ops (what a recorded backward differentiates)."""
    ys, hs = _slots(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse, drop, zone, ln_ih,
                    ln_hh)
    return ys, hs[steps(x.shape[0], reverse).last]


def _python_forward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse):
    with torch.no_grad():
        ys, hs = _slots(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse)
    # new tensors: an op's outputs may not alias one another
    return ys.clone(), hs[steps(x.shape[0], reverse).last].clone(), hs


def deltas(grad_ys, grad_h_t, hs, valid, relu: bool, reverse: bool, back) -> tuple:
    """The BPTT loop of ``h_t = phi(a_t)`` with ``a_t`` taking ``h_{t-1}`` through a linear map:
    ``(da (T, N, H), dh_0)``, where ``back(da_t)`` is that map's transpose applied to ``da_t``
    (Elman: ``da_t W_hh``; IndRNN: ``da_t * u``); past a length ``dh`` passes unchanged."""
    T = hs.shape[0] - 1
    h_new_all = outputs(hs, reverse)
    da = hs.new_zeros(T, *hs.shape[1:])
    dh = grad_h_t.clone()
    for t in steps(T, reverse).back:
        h = h_new_all[t]
        d = (1 - h * h) if not relu else (h > 0).to(h.dtype)
        a = (grad_ys[t] + dh) * d
        if valid is not None:
            a = a * valid[t].unsqueeze(1)
        da[t] = a
        dh_next = back(a)
        if valid is not None:
            dh_next = dh_next + dh * (~valid[t]).unsqueeze(1)
        dh = dh_next
    return da, dh


def _python_backward(grad_ys, grad_h_t, x, h0, w_ih, w_hh, b_ih, b_hh, hs, valid, relu, reverse):
    T, N, _ = x.shape
    da, dh = deltas(grad_ys, grad_h_t, hs, valid, relu, reverse, lambda a: a @ w_hh)
    da2 = da.reshape(T * N, -1)
    before = befores(hs, reverse).reshape(T * N, -1)
    db = da2.sum(0)
    db_ih = db if b_ih is not None else _wiring.absent(x)
    db_hh = db.clone() if b_hh is not None else _wiring.absent(x)
    return (da2 @ w_ih).view_as(x), dh, da2.t() @ x.reshape(T * N, -1), da2.t() @ before, \
        db_ih, db_hh


def _fake(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse, drop=None, zone=None, ln_ih=None,
          ln_hh=None):
    T, N, H = x.shape[0], x.shape[1], h0.shape[1]
    return (x.new_empty(T, N, H), x.new_empty(N, H), x.new_empty(T + 1, N, H),
            *_wiring.norm_fakes(x, H, 0, ln_ih, ln_hh))


def register() -> None:
    _wiring.register(
        "elman_sequence", reference=reference,
        fake=_fake,
        python_forward=_python_forward, python_backward=_python_backward)


def elman_sequence(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh, valid,
                   relu: bool, reverse: bool, drop=None, zone=None, ln_ih=None,
                   ln_hh=None) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its ``hs`` is for backward only; not kept where autograd does
    not record)."""
    return _wiring.call("elman_sequence", x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse,
                        drop, zone, ln_ih, ln_hh)
