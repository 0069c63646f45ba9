r"""``gru_sequence`` and its backward on the GPU: a cuBLAS GEMM and one Triton kernel a step.

torch.nn.GRU's cell (gate order r, z, n; the reset gate applied after :math:`W_{hn} h + b_{hn}`),
the equations of ``rnnkit/csrc/gru.cpp``. Forward: :math:`u_t = W_{ih} x_t + b_{ih}` for every
step is one GEMM; a step writes :math:`g_t = W_{hh} h_{t-1} + b_{hh}` into ``gs[t]``
(``addmm``) and :func:`_step` computes

.. math::
    r = \sigma(u^r + g^r), \quad z = \sigma(u^z + g^z), \quad n = \tanh(u^n + r g^n), \quad
    \tilde h = n + z (h_{t-1} - n), \quad h_t = m_t \tilde h + (1 - m_t) h_{t-1}, \quad
    y_t = m_t \tilde h

leaving ``gs[t] = [r, z, g^n]`` and ``ns[t] = n``: the buffers the CPU op saves, with the same
meaning (with the slots ``hs``).

Backward, from :math:`\delta h = \partial L / \partial h_T`, with :math:`e = m_t (\bar y_t +
\delta h)`: :func:`_step_back` forms :math:`\delta a^n = e (1 - z)(1 - n^2)`,
:math:`\delta a^z = e (h_{t-1} - n) z (1 - z)`, :math:`\delta a^r = \delta a^n g^n r (1 - r)`,
:math:`\delta g^n = \delta a^n r` and :math:`(1 - m_t) \delta h + e z`; an ``addmm_`` adds
:math:`[\delta a^r; \delta a^z; \delta g^n] W_{hh}` to give :math:`\delta h_{t-1}`. Then over
all rows: :math:`\bar U = [\delta a^r, \delta a^z, \delta a^n]`, :math:`\bar X = \bar U W_{ih}`,
:math:`\bar W_{ih} = \bar U^\top X`, :math:`\bar b_{ih} = \sum \bar u`,
:math:`\bar W_{hh} = \bar G^\top H_{prev}`, :math:`\bar b_{hh} = \sum \bar g`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels._common import befores, steps
from . import common
from .common import absent, counts, sigmoid, tanh, tile


@triton.jit
def _step(u, g, h_in, h_out, n_out, y, valid, N, H, MASKED: tl.constexpr, BN: tl.constexpr,
          BH: tl.constexpr):
    """``u``, ``g`` ``(N, 3H)``: the step's input and recurrent pre-activations (``g`` is left
    holding ``[r, z, g^n]``); writes ``n`` ``(N, H)``, the carried ``h_t`` and ``y_t``."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    at3 = rows[:, None] * (3 * H) + cols[None, :]
    g_r = tl.load(g + at3, mask=inside, other=0.0)
    g_z = tl.load(g + at3 + H, mask=inside, other=0.0)
    g_n = tl.load(g + at3 + 2 * H, mask=inside, other=0.0)
    r = sigmoid(tl.load(u + at3, mask=inside, other=0.0) + g_r)
    z = sigmoid(tl.load(u + at3 + H, mask=inside, other=0.0) + g_z)
    n = tanh(tl.load(u + at3 + 2 * H, mask=inside, other=0.0) + r * g_n)
    hp = tl.load(h_in + at, mask=inside, other=0.0)
    h = n + z * (hp - n)
    m = counts(valid, rows, N, MASKED)
    tl.store(g + at3, r, mask=inside)
    tl.store(g + at3 + H, z, mask=inside)
    tl.store(n_out + at, n, mask=inside)
    tl.store(h_out + at, tl.where(m, h, hp), mask=inside)
    tl.store(y + at, tl.where(m, h, 0.0), mask=inside)


@triton.jit
def _step_back(g, n_in, h_prev, gy, dh, dg, du, dh_next, valid, N, H, MASKED: tl.constexpr,
               BN: tl.constexpr, BH: tl.constexpr):
    """From the saved ``[r, z, g^n]`` and ``n``: ``dg = [da^r, da^z, dg^n]`` and
    ``du = [da^r, da^z, da^n]`` ``(N, 3H)``, and ``dh_next = (1 - m) dh + e z`` (the caller adds
    ``dg W_hh``). A padded row has no gradient through the cell: zeros, and ``dh`` carried."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    at3 = rows[:, None] * (3 * H) + cols[None, :]
    r = tl.load(g + at3, mask=inside, other=0.0)
    z = tl.load(g + at3 + H, mask=inside, other=0.0)
    g_n = tl.load(g + at3 + 2 * H, mask=inside, other=0.0)
    n = tl.load(n_in + at, mask=inside, other=0.0)
    d = tl.load(dh + at, mask=inside, other=0.0)
    m = counts(valid, rows, N, MASKED)
    e = tl.where(m, tl.load(gy + at, mask=inside, other=0.0) + d, 0.0)
    da_n = e * (1.0 - z) * (1.0 - n * n)
    da_z = e * (tl.load(h_prev + at, mask=inside, other=0.0) - n) * z * (1.0 - z)
    da_r = da_n * g_n * r * (1.0 - r)
    tl.store(dg + at3, da_r, mask=inside)
    tl.store(dg + at3 + H, da_z, mask=inside)
    tl.store(dg + at3 + 2 * H, da_n * r, mask=inside)
    tl.store(du + at3, da_r, mask=inside)
    tl.store(du + at3 + H, da_z, mask=inside)
    tl.store(du + at3 + 2 * H, da_n, mask=inside)
    tl.store(dh_next + at, tl.where(m, e * z, d), mask=inside)


@common.on_their_device
def forward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse: bool):
    """The op: ``(ys, h_T, hs (T + 1, N, H), gs = [r, z, g^n] (T, N, 3H), ns = n (T, N, H))``."""
    common.check("gru_sequence", x, h0, w_ih, w_hh, b_ih, b_hh)
    T, N, I = x.shape
    H = w_hh.shape[1]
    st = steps(T, reverse)
    masks = common.step_masks(valid, T, N)
    us = torch.nn.functional.linear(x, w_ih, b_ih)  # (T, N, 3H): one GEMM for every step
    gs = x.new_empty(T, N, 3 * H)
    ns = x.new_empty(T, N, H)
    hs = x.new_empty(T + 1, N, H)
    hs[st.first].copy_(h0)
    ys = x.new_empty(T, N, H)
    w_t = w_hh.t()
    grid, BN, BH = common.geometry(N, H)
    h_sl, g_sl, u_sl, n_sl, y_sl = (a.unbind(0) for a in (hs, gs, us, ns, ys))
    for t in st.order:
        h_in = h_sl[t + st.off_in]
        if b_hh is not None:
            torch.addmm(b_hh, h_in, w_t, out=g_sl[t])  # g_t = W_hh h_{t-1} + b_hh
        else:
            torch.mm(h_in, w_t, out=g_sl[t])
        _step[grid](u_sl[t], g_sl[t], h_in, h_sl[t + st.off_out], n_sl[t], y_sl[t],
                    masks[t] if masks else h_in, N, H, MASKED=masks is not None, BN=BN, BH=BH)
    return ys, hs[st.last].clone(), hs, gs, ns


@common.on_their_device
def backward(grad_ys, grad_h_t, x, h0, w_ih, w_hh, b_ih, b_hh, hs, gs, ns, valid,
             reverse: bool):
    """The backward op: ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)`` (``(0,)`` for absent biases)."""
    common.check("gru_sequence_backward", x, grad_ys, grad_h_t, w_ih, w_hh, hs, gs, ns)
    T, N, I = x.shape
    H = w_hh.shape[1]
    st = steps(T, reverse)
    masks = common.step_masks(valid, T, N)
    gy, hs, gs, ns = (a.contiguous() for a in (grad_ys, hs, gs, ns))
    dG = x.new_empty(T, N, 3 * H)  # [da^r, da^z, dg^n]: against W_hh
    dU = x.new_empty(T, N, 3 * H)  # [da^r, da^z, da^n]: against W_ih
    dh, dh_next = x.new_empty(N, H), x.new_empty(N, H)
    dh.copy_(grad_h_t)
    grid, BN, BH = common.geometry(N, H)
    h_sl, g_sl, n_sl, y_sl, dg_sl, du_sl = (a.unbind(0) for a in (hs, gs, ns, gy, dG, dU))
    for t in st.back:
        _step_back[grid](g_sl[t], n_sl[t], h_sl[t + st.off_in], y_sl[t], dh, dg_sl[t],
                         du_sl[t], dh_next, masks[t] if masks else dh, N, H,
                         MASKED=masks is not None, BN=BN, BH=BH)
        dh_next.addmm_(dg_sl[t], w_hh)  # + [da^r; da^z; dg^n] W_hh
        dh, dh_next = dh_next, dh
    dU2, dG2 = dU.view(T * N, 3 * H), dG.view(T * N, 3 * H)
    before = befores(hs, reverse).reshape(T * N, H)
    return (torch.mm(dU2, w_ih).view(T, N, I), dh, torch.mm(dU2.t(), x.reshape(T * N, I)),
            torch.mm(dG2.t(), before),
            dU2.sum(0) if b_ih is not None else absent(x),
            dG2.sum(0) if b_hh is not None else absent(x))
