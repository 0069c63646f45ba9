r"""Fused GRU sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`gru_sequence` computes exactly what ``rnnkit.scan(cell, xs, h0, reverse=...,
lengths=...)`` computes for a :class:`~rnnkit.cells.GRUCell` (so ``torch.nn.GRUCell``, gate
order r, z, n, the reset gate applied after :math:`W_{hn} h + b_{hn}`; with or without biases),
as one registered op, ``torch.ops.rnnkit.gru_sequence`` (:mod:`rnnkit.ops.gru`, whose pure-torch
implementation is this module's loops; the compiled C++ one is ``rnnkit/csrc/gru.cpp``). The
input projection :math:`u_t = [u^r_t ; u^z_t ; u^n_t] = W_{ih} x_t + b_{ih}` is one matmul over
all steps inside it, and its gradients three outside the loop (below).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``)

.. math::
    [g^r_t ; g^z_t ; g^n_t] &= W_{hh} h_{t-1} + b_{hh}                    \qquad (3H)       \\
    r_t &= \sigma(u^r_t + g^r_t), \quad z_t = \sigma(u^z_t + g^z_t), \quad
    n_t = \tanh(\underbrace{u^n_t + r_t \odot g^n_t}_{a^n_t})                                \\
    \tilde h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
               = n_t + z_t \odot (h_{t-1} - n_t), \qquad
    h_t = m_t \tilde h_t + (1 - m_t) h_{t-1}, \qquad y_t = m_t \tilde h_t

A step is five ops: an ``addmm_`` into a ``(N, 3H)`` buffer that already holds
:math:`[u^r_t + b_{hr} ; u^z_t + b_{hz} ; b_{hn}]` (set for all steps at once), one ``sigmoid_``
over its r and z columns, an ``addcmul`` and a ``tanh_`` for :math:`n_t`, and a ``lerp`` for
:math:`\tilde h_t`. The buffer ends up holding :math:`r_t, z_t, g^n_t`, which backward needs.

Backward. :math:`\delta h_t` is the gradient of the carried state after step :math:`t`
(starting from that of :math:`h_T`), :math:`\bar y_t` the output's. Going back over the steps,
with :math:`e_t = m_t (\bar y_t + \delta h_t)`:

.. math::
    \delta a^n_t &= e_t \odot (1 - z_t)(1 - n_t^2), \qquad
    \delta a^z_t = e_t \odot (h_{t-1} - n_t)\, z_t (1 - z_t), \qquad
    c_t = e_t \odot z_t                                                                     \\
    \delta a^r_t &= \delta a^n_t \odot g^n_t\, r_t (1 - r_t), \qquad
    \delta g^n_t = \delta a^n_t \odot r_t                                                   \\
    \delta h_{t-1} &= (1 - m_t)\, \delta h_t + c_t
                      + W_{hh}^\top [\delta a^r_t ; \delta a^z_t ; \delta g^n_t]

The coefficients of :math:`e_t` (mask included) and of :math:`\delta a^n_t` are formed for all
steps at once before the loop, and so is :math:`\bar y_t` times them, so a step is three ops:
an ``addcmul`` giving :math:`[\delta a^z_t, \delta a^n_t, c_t]`, a ``mul`` giving
:math:`[\delta g^n_t, \delta a^r_t]`, and an ``addmm`` giving :math:`\delta h_{t-1}` (plus the
carry at a padded step). They write into one ``(T, N, 5H)`` buffer laid out
:math:`[\delta g^n, \delta a^r, \delta a^z, \delta a^n, c]`, so that each group, the matmul's
operand :math:`[\delta g^n ; \delta a^r ; \delta a^z]` (against :math:`W_{hh}`'s rows taken
n, r, z) and :math:`\bar u = [\delta a^r ; \delta a^z ; \delta a^n]` (read in place by the
input projection's gradients) are contiguous windows of a row. Then, over all :math:`T N` rows
at once,

.. math::
    \bar u_t = [\delta a^r_t ; \delta a^z_t ; \delta a^n_t], \quad
    \bar W_{hh} = \textstyle\sum_t [\delta a^r_t ; \delta a^z_t ; \delta g^n_t] h_{t-1}^\top,
    \quad \bar b_{hh} = \textstyle\sum_{t,n} [\delta a^r_t ; \delta a^z_t ; \delta g^n_t],

and :math:`\bar h_0` is the :math:`\delta h` left after the loop; the input projection's are
:math:`\bar X = \bar U W_{ih}`, :math:`\bar W_{ih} = \bar U^\top X`,
:math:`\bar b_{ih} = \sum_{t,n} \bar u_t`. Forward saves the buffer of :math:`r, z, g^n`
``(T, N, 3H)``, :math:`n` ``(T, N, H)`` and the carried states ``(T + 1, N, H)``, and its inputs
(:math:`x`, which the projection's gradient needs anyway; not :math:`u`). A backward that
autograd records (``create_graph=True``) differentiates the op's reference (the cell's step in
plain torch ops) instead (:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.gru import GRUCell
from ._common import (
    Product,
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)

__all__ = ["gru_sequence"]


def _forward(xs, h0, w_ih, w_hh, b_ih, b_hh, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, saved)``."""
    us = torch.nn.functional.linear(xs, w_ih, b_ih)  # (T, N, 3H): every step's u_t at once
    T, N, H3 = us.shape
    H = H3 // 3
    st = steps(T, reverse)
    off_in, off_out = st.off_in, st.off_out
    # gs[t] = [u^r + b_hr, u^z + b_hz, b_hn]; the step's addmm_ adds W_hh h_{t-1}.
    gs = us.new_empty(T, N, H3)
    if b_hh is not None:
        torch.add(us[:, :, : 2 * H], b_hh[: 2 * H], out=gs[:, :, : 2 * H])
        gs[:, :, 2 * H :].copy_(b_hh[2 * H :])
    else:
        gs[:, :, : 2 * H].copy_(us[:, :, : 2 * H])
        gs[:, :, 2 * H :].zero_()
    ns = us.new_empty(T, N, H)
    hs = us.new_empty(T + 1, N, H)
    hs[st.first].copy_(h0)
    u_n = us[:, :, 2 * H :]
    rec = Product(w_hh, N)  # h_{t-1} W_hh^T, packed where that is faster
    partial = partial_steps(valid, T)
    masks = valid.unsqueeze(2) if valid is not None else None  # (T, N, 1) bool
    # (Per-step views come from unbind: cheaper than indexing in Python at every step.)
    h_sl, g_sl, u_sl, n_sl = hs.unbind(0), gs.unbind(0), u_n.unbind(0), ns.unbind(0)
    for t in st.order:
        h_in, h_out = h_sl[t + off_in], h_sl[t + off_out]
        g = g_sl[t]
        rec.add_(g, h_in)
        g[:, : 2 * H].sigmoid_()  # r, z
        n = torch.addcmul(u_sl[t], g[:, :H], g[:, 2 * H :], out=n_sl[t]).tanh_()
        torch.lerp(n, h_in, g[:, H : 2 * H], out=h_out)  # n + z (h_{t-1} - n)
        if partial[t]:
            torch.where(masks[t], h_out, h_in, out=h_out)
    ys = outputs(hs, reverse)
    ys = ys * masks if valid is not None else ys.clone()
    return ys, hs[st.last].clone(), (gs, ns, hs)


def _backward(gy, gh_t, xs, w_ih, w_hh, gs, ns, hs, valid, reverse, need=(True,) * 6):
    """The backward pass (module docstring) without autograd: the gradients of ``xs, h0, w_ih,
    w_hh, b_ih, b_hh`` (None where ``need`` says no)."""
    T, N, H3 = gs.shape
    H = H3 // 3
    st = steps(T, reverse)
    partial = partial_steps(valid, T)
    r, z, gn = gs[:, :, :H], gs[:, :, H : 2 * H], gs[:, :, 2 * H :]
    h_prev = befores(hs, reverse)
    # Coefficients, for all steps at once: [da^z, da^n, c] = e * ce, [dg^n, da^r] = da^n * cn.
    ce = torch.empty(T, N, 3, H, dtype=gs.dtype, device=gs.device)
    one_z = 1 - z
    torch.mul(h_prev - ns, torch.addcmul(z, z, z, value=-1), out=ce[:, :, 0])
    torch.addcmul(one_z, one_z, ns * ns, value=-1, out=ce[:, :, 1])  # (1 - z)(1 - n^2)
    ce[:, :, 2].copy_(z)
    if valid is not None:
        mf = valid.unsqueeze(2).to(gs.dtype)  # (T, N, 1)
        nmf = 1 - mf
        ce.mul_(mf.unsqueeze(3))
    cn = torch.empty(T, N, 2, H, dtype=gs.dtype, device=gs.device)
    cn[:, :, 0].copy_(r)
    torch.mul(gn, torch.addcmul(r, r, r, value=-1), out=cn[:, :, 1])
    # d = [dg^n, da^r, da^z, da^n, c]: so [dg^n, da^r] (0:2), [da^z, da^n, c] (2:5),
    # [dg^n, da^r, da^z] (0:3, the matmul with W_hh's rows taken n, r, z) and the gradient
    # of us, [da^r, da^z, da^n] (1:4), are all contiguous windows. Writing y's part first
    # touches the whole fresh buffer in one op (cheaper than page by page in the loop).
    d = gs.new_empty(T, N, 5, H)
    de, dn = d[:, :, 2:], d[:, :, :2]
    torch.mul(gy.unsqueeze(2), ce, out=de)
    d2 = d.view(T, N, 5 * H)
    dg, c = d2[:, :, : 3 * H], d2[:, :, 4 * H :]
    w_nrz = torch.cat([w_hh[2 * H :], w_hh[: 2 * H]])
    de_sl, ce_sl, dn_sl, cn_sl = de.unbind(0), ce.unbind(0), dn.unbind(0), cn.unbind(0)
    c_sl, dg_sl = c.unbind(0), dg.unbind(0)
    rec = Product(w_nrz.t(), N)
    dh = gh_t
    for t in st.back:
        det = torch.addcmul(de_sl[t], dh.unsqueeze(1), ce_sl[t], out=de_sl[t])
        torch.mul(det[:, 1:2], cn_sl[t], out=dn_sl[t])
        dh_next = rec.add(c_sl[t], dg_sl[t])
        if partial[t]:
            dh_next.addcmul_(dh, nmf[t])
        dh = dh_next
    g_us = d2.view(T * N, 5 * H)[:, H : 4 * H]  # (T N, 3H), a strided window of d
    g_xs = (g_us @ w_ih).view(xs.shape) if need[0] else None
    g_w_ih = g_us.t() @ xs.reshape(T * N, xs.shape[2]) if need[2] else None
    g_b_ih = g_us.sum(0) if need[4] else None
    g_w_hh = g_b_hh = None
    if need[3]:
        hp = h_prev.reshape(T * N, H)
        g_w_hh = gs.new_empty(H3, H)
        torch.mm(dg[:, :, H:].reshape(T * N, 2 * H).t(), hp, out=g_w_hh[: 2 * H])
        torch.mm(dg[:, :, :H].reshape(T * N, H).t(), hp, out=g_w_hh[2 * H :])
    if need[5]:
        g_b = dg.sum((0, 1))
        g_b_hh = torch.cat([g_b[H:], g_b[:H]])
    return g_xs, dh if need[1] else None, g_w_ih, g_w_hh, g_b_ih, g_b_hh


def gru_sequence(
    cell: GRUCell,
    xs: Tensor,
    state: Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` ``(N, H)`` (zeros if None), fused.

    Returns ``(ys (T, N, H), h_T)``, exactly ``rnnkit.scan(cell, xs, state, reverse=reverse,
    lengths=lengths, masks=masks)``, with a hand-written BPTT backward (module docstring).
    """
    h0, valid = checked(cell, GRUCell, xs, state, lengths)
    args = (xs, h0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, bool(reverse),
            valid)
    from ..ops import gru as op  # (loads the ops on first use)

    drop, zone = (None, None) if masks is None else masks[:2]
    return op.gru_sequence(*args[:6], valid, bool(reverse), drop, zone, *norms(cell, "ih", "hh"))
