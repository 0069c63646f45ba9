r"""``elman_sequence`` and its backward on the GPU: a cuBLAS GEMM and one Triton kernel a step.

Forward (the op's equations, ``rnnkit/csrc/elman.cpp``): the input projection of every step,
:math:`W_{ih} x_t + b_{ih} + b_{hh}`, is one GEMM written straight into the after-step slots of
``hs`` ``(T + 1, N, H)``; a step adds :math:`h_{t-1} W_{hh}^\top` into its slot (``addmm_``) and
:func:`_step` turns that pre-activation :math:`a_t` into

.. math::
    \tilde h_t = \phi(a_t), \quad h_t = m_t \tilde h_t + (1 - m_t) h_{t-1}, \quad
    y_t = m_t \tilde h_t

(the slot and ``ys[t]`` written in the same pass). Saved: ``hs``, as on the CPU.

Backward, going back from :math:`\delta h = \partial L / \partial h_T`: :func:`_step_back`
forms :math:`\delta a_t = m_t (\bar y_t + \delta h)\, \phi'(\tilde h_t)` and the carried part
:math:`(1 - m_t) \delta h`, and an ``addmm_`` adds :math:`\delta a_t W_{hh}` to give
:math:`\delta h_{t-1}`. Then over all :math:`T N` rows: :math:`\bar X = \delta A W_{ih}`,
:math:`\bar W_{ih} = \delta A^\top X`, :math:`\bar W_{hh} = \delta A^\top H_{prev}`,
:math:`\bar b_{ih} = \bar b_{hh} = \sum \delta a`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels._common import befores, outputs, steps
from . import common
from .common import absent, counts, tanh, tile


@triton.jit
def _step(a, h_in, y, valid, N, H, RELU: tl.constexpr, MASKED: tl.constexpr,
          BN: tl.constexpr, BH: tl.constexpr):
    """``a`` ``(N, H)``: the step's pre-activation, replaced by the carried state ``h_t``;
    ``y`` ``(N, H)``: the step's output ``m phi(a)``."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    v = tl.load(a + at, mask=inside, other=0.0)
    h = tl.maximum(v, 0.0) if RELU else tanh(v)
    m = counts(valid, rows, N, MASKED)
    tl.store(y + at, tl.where(m, h, 0.0), mask=inside)
    tl.store(a + at, tl.where(m, h, tl.load(h_in + at, mask=inside, other=0.0)), mask=inside)


@triton.jit
def _step_back(h_new, gy, dh, da, dh_next, valid, N, H, RELU: tl.constexpr,
               MASKED: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr):
    """``da = m (gy + dh) phi'(h~)`` (phi' from the output ``h~ = phi(a)``, read from the step's
    slot: where a row is padded the slot holds the carried state, but ``da`` is 0 there) and
    ``dh_next = (1 - m) dh``, to which the caller adds ``da W_hh``."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    h = tl.load(h_new + at, mask=inside, other=0.0)
    d = tl.load(dh + at, mask=inside, other=0.0)
    slope = tl.where(h > 0, 1.0, 0.0) if RELU else 1.0 - h * h
    m = counts(valid, rows, N, MASKED)
    e = tl.load(gy + at, mask=inside, other=0.0) + d
    tl.store(da + at, tl.where(m, e * slope, 0.0), mask=inside)
    tl.store(dh_next + at, tl.where(m, 0.0, d), mask=inside)


@common.on_their_device
def forward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu: bool, reverse: bool):
    """The op: ``(ys (T, N, H), h_T (N, H), hs (T + 1, N, H))``."""
    common.check("elman_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    T, N, I = x.shape
    H = w_hh.shape[0]
    st = steps(T, reverse)
    masks = common.step_masks(valid, T, N)
    hs = x.new_empty(T + 1, N, H)
    after = outputs(hs, reverse).view(T * N, H)  # a contiguous block of T slots
    bias = b_ih + b_hh if b_ih is not None and b_hh is not None else \
        b_ih if b_ih is not None else b_hh
    x2 = x.reshape(T * N, I)
    if bias is not None:
        torch.addmm(bias, x2, w_ih.t(), out=after)
    else:
        torch.mm(x2, w_ih.t(), out=after)
    hs[st.first].copy_(h0)
    ys = x.new_empty(T, N, H)
    w_t = w_hh.t()
    grid, BN, BH = common.geometry(N, H)
    h_sl, y_sl = hs.unbind(0), ys.unbind(0)
    for t in st.order:
        h_in, h_out = h_sl[t + st.off_in], h_sl[t + st.off_out]
        h_out.addmm_(h_in, w_t)  # a_t = (u_t + b) + h_{t-1} W_hh^T
        _step[grid](h_out, h_in, y_sl[t], masks[t] if masks else h_out, N, H, RELU=relu,
                    MASKED=masks is not None, BN=BN, BH=BH)
    return ys, hs[st.last].clone(), hs


@common.on_their_device
def backward(grad_ys, grad_h_t, x, h0, w_ih, w_hh, b_ih, b_hh, hs, valid, relu: bool,
             reverse: bool):
    """The backward op: ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)`` (``(0,)`` for absent biases)."""
    common.check("elman_sequence_backward", x, grad_ys, grad_h_t, w_ih, w_hh, hs)
    T, N, I = x.shape
    H = w_hh.shape[0]
    st = steps(T, reverse)
    masks = common.step_masks(valid, T, N)
    gy, hs = grad_ys.contiguous(), hs.contiguous()
    da = x.new_empty(T, N, H)
    dh, dh_next = x.new_empty(N, H), x.new_empty(N, H)
    dh.copy_(grad_h_t)
    grid, BN, BH = common.geometry(N, H)
    h_sl, g_sl, a_sl = hs.unbind(0), gy.unbind(0), da.unbind(0)
    for t in st.back:
        _step_back[grid](h_sl[t + st.off_out], g_sl[t], dh, a_sl[t], dh_next,
                         masks[t] if masks else dh, N, H, RELU=relu, MASKED=masks is not None,
                         BN=BN, BH=BH)
        dh_next.addmm_(a_sl[t], w_hh)  # dh_{t-1} = (1 - m) dh + da_t W_hh
        dh, dh_next = dh_next, dh
    da2 = da.view(T * N, H)
    before = befores(hs, reverse).reshape(T * N, H)
    db = da2.sum(0) if b_ih is not None or b_hh is not None else None
    return (torch.mm(da2, w_ih).view(T, N, I), dh, torch.mm(da2.t(), x.reshape(T * N, I)),
            torch.mm(da2.t(), before),
            db if b_ih is not None else absent(x),
            (db.clone() if b_ih is not None else db) if b_hh is not None else absent(x))
