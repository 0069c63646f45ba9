r"""``torch.ops.rnnkit.elman_sequence``: the Elman recurrence over a whole sequence as one op.

.. math::
    h_t = m_t\, \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}) + (1 - m_t) h_{t-1},
    \qquad y_t = m_t\, \tilde h_t

(:math:`\phi` tanh or relu, :math:`m_t` the padding mask). ``elman_sequence(x (T, N, I), h0
(N, H), w_ih, w_hh, b_ih?, b_hh?, valid? (T, N) bool, relu, reverse) -> (ys (T, N, H), h_T,
hs (T + 1, N, H))``; ``hs`` holds the carried states (slots as in ``rnnkit/csrc/recurrence.h``)
for the backward op, ``elman_sequence_backward``, whose derivation is in ``csrc/elman.cpp``.

The CPU implementation is the compiled one where it built (``rnnkit.ops.build``); elsewhere the
pure-torch loop below implements the same op (same schema, same outputs), so the op exists
everywhere. A backward that autograd records (``create_graph=True``) differentiates
:func:`reference` instead of calling the backward op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import LIB

LIB.define("elman_sequence(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
           "Tensor? b_hh, Tensor? valid, bool relu, bool reverse) -> (Tensor, Tensor, Tensor)")
LIB.define("elman_sequence_backward(Tensor grad_ys, Tensor grad_h_T, Tensor x, Tensor w_ih, "
           "Tensor w_hh, Tensor hs, Tensor? valid, bool relu, bool reverse) "
           "-> (Tensor, Tensor, Tensor, Tensor, Tensor)")


def reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu: bool, reverse: bool):
    """The op's forward in differentiable torch ops, returning ``(ys, h_T, hs)``."""
    T = x.shape[0]
    u = torch.nn.functional.linear(x, w_ih, b_ih)
    if b_hh is not None:
        u = u + b_hh
    phi = torch.relu if relu else torch.tanh
    slots: list = [None] * (T + 1)
    first, off_in, off_out = (T, 1, 0) if reverse else (0, 0, 1)
    slots[first] = h0
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_in = slots[t + off_in]
        h = phi(torch.addmm(u[t], h_in, w_hh.t()))
        if valid is not None:
            h = torch.where(valid[t].unsqueeze(1), h, h_in)
        slots[t + off_out] = h
    hs = torch.stack(slots)
    ys = hs[:-1] if reverse else hs[1:]
    if valid is not None:
        ys = ys * valid.unsqueeze(2)
    return ys, hs[0 if reverse else T], hs


def _python_forward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse):
    with torch.no_grad():
        ys, h_t, hs = reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse)
    return ys.clone(), h_t.clone(), hs  # (new tensors: an op's outputs may not alias)


def _python_backward(grad_ys, grad_h_t, x, w_ih, w_hh, hs, valid, relu, reverse):
    T, N, _ = x.shape
    st_in = 1 if reverse else 0
    steps = range(T) if reverse else range(T - 1, -1, -1)
    h_new_all = hs[:-1] if reverse else hs[1:]
    da = x.new_zeros(T, N, w_hh.shape[0])
    dh = grad_h_t.clone()
    for t in steps:
        h = h_new_all[t]
        d = (1 - h * h) if not relu else (h > 0).to(h.dtype)
        a = (grad_ys[t] + dh) * d
        if valid is not None:
            a = a * valid[t].unsqueeze(1)
        da[t] = a
        dh_next = a @ w_hh
        if valid is not None:
            dh_next = dh_next + dh * (~valid[t]).unsqueeze(1)
        dh = dh_next
    da2 = da.reshape(T * N, -1)
    before = hs[st_in:st_in + T].reshape(T * N, -1)
    return (da2 @ w_ih).view_as(x), dh, da2.t() @ x.reshape(T * N, -1), da2.t() @ before, \
        da2.sum(0)


def _fake(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse):
    T, N, H = x.shape[0], x.shape[1], w_hh.shape[0]
    return x.new_empty(T, N, H), x.new_empty(N, H), x.new_empty(T + 1, N, H)


def _fake_backward(grad_ys, grad_h_t, x, w_ih, w_hh, hs, valid, relu, reverse):
    H = w_hh.shape[0]
    return (torch.empty_like(x), x.new_empty(x.shape[1], H), torch.empty_like(w_ih),
            torch.empty_like(w_hh), x.new_empty(H))


def _setup_context(ctx, inputs, output):
    x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu, reverse = inputs
    ctx.relu, ctx.reverse = relu, reverse
    ctx.has_b = (b_ih is not None, b_hh is not None)
    ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, output[2])


def _backward(ctx, grad_ys, grad_h_t, _grad_hs):
    x, h0, w_ih, w_hh, b_ih, b_hh, valid, hs = ctx.saved_tensors
    grad_ys = torch.zeros_like(hs[1:]) if grad_ys is None else grad_ys
    grad_h_t = torch.zeros_like(h0) if grad_h_t is None else grad_h_t
    if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
        inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
        wrt = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
        with torch.enable_grad():
            ys, h_t, _ = reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, ctx.relu, ctx.reverse)
        got = torch.autograd.grad((ys, h_t), [inputs[i] for i in wrt], (grad_ys, grad_h_t),
                                  create_graph=True, allow_unused=True)
        grads = [None] * 6
        for i, g in zip(wrt, got, strict=True):
            grads[i] = g
        return (*grads, None, None, None)
    dx, dh0, dw_ih, dw_hh, db = torch.ops.rnnkit.elman_sequence_backward(
        grad_ys, grad_h_t, x, w_ih, w_hh, hs, valid, ctx.relu, ctx.reverse)
    return (dx, dh0, dw_ih, dw_hh, db if ctx.has_b[0] else None, db if ctx.has_b[1] else None,
            None, None, None)


def register(compiled: bool) -> None:
    """The fake (shapes), the autograd wiring, and the pure-torch CPU implementation where the
    compiled one did not load."""
    torch.library.register_fake("rnnkit::elman_sequence", _fake, lib=LIB)
    torch.library.register_fake("rnnkit::elman_sequence_backward", _fake_backward, lib=LIB)
    torch.library.register_autograd("rnnkit::elman_sequence", _backward,
                                    setup_context=_setup_context, lib=LIB)
    if not compiled:
        LIB.impl("elman_sequence", _python_forward, "CPU")
        LIB.impl("elman_sequence_backward", _python_backward, "CPU")


def elman_sequence(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh, valid,
                   relu: bool, reverse: bool) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its ``hs`` is for backward only)."""
    ys, h_t, _ = torch.ops.rnnkit.elman_sequence(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu,
                                                 reverse)
    return ys, h_t
