r"""Fused continuous-time RNN sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`ctrnn_sequence` computes exactly what ``rnnkit.scan(cell, xs, h0, reverse=...,
lengths=...)`` computes for a :class:`~rnnkit.cells.CTRNNCell` (constant ``dt`` or ``dt_input``,
tanh / sigmoid / ReLU / identity, ``bias=False``), as one registered op,
``torch.ops.rnnkit.ctrnn_sequence`` (:mod:`rnnkit.ops.ctrnn`, whose pure-torch implementation is
this module's loops), over the precomputed input projection :math:`u_t = W_{ih} x_t + b`
(``cell.precompute``, left to autograd; with ``dt_input`` its last column is :math:`\Delta t_t`
and the gradient flows back into it too).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``; :math:`p = \phi(h)` is carried beside
:math:`h`, computed once a step: it is both the output and the next step's recurrent input)

.. math::
    a &= \Delta t / \exp(\text{log\_tau}) \quad (H, \text{ or } (N, H) \text{ per step with
    dt\_input}) \\
    z_t &= W_{hh} p_{t-1} + u_t, \qquad
    \tilde h_t = (1 - a) \odot h_{t-1} + a \odot z_t \\
    h_t &= m_t \tilde h_t + (1 - m_t) h_{t-1}, \qquad
    p_t = m_t \phi(\tilde h_t) + (1 - m_t) p_{t-1}, \qquad y_t = m_t \phi(\tilde h_t)

With a constant :math:`a`, it is folded in before the loop, :math:`\tilde h_t = (a \odot u_t) +
(a W_{hh}) p_{t-1} + (1 - a) \odot h_{t-1}` (one ``addmm``, one ``addcmul``, the activation);
with the identity, :math:`\tilde h_t = a \odot u_t + M h_{t-1}`, :math:`M = \mathrm{diag}(1 - a)
+ \mathrm{diag}(a) W_{hh}`, one ``addmm``. With ``dt_input``, :math:`z_t` is formed, then
:math:`\tilde h_t = h_{t-1} + a_t \odot (z_t - h_{t-1})`.

tanh. Torch's CPU tanh costs several times its sigmoid, so with tanh the loop carries
:math:`k = 2h` and :math:`s = \mathrm{sigmoid}(k)` (:math:`p = 2 s - 1`): :math:`W p = 2 W s -
W 1`, so :math:`k_t = (1 - a) k_{t-1} + 2 a (u_t - W 1) + 4 (a W) s_{t-1}` (the same ops, with
sigmoid), and :math:`h = k / 2`, :math:`p = 2 s - 1` for all steps after the loop.

Backward. Let :math:`D_t = \partial L / \partial \tilde h_t` (zero at padded steps) and
:math:`E_t = m_t (\delta h_t + \bar y_t \phi'(\tilde h_t))` its value before masking, with
:math:`\delta h_t` the gradient of the carried :math:`h_t` (starting at :math:`\bar h_T`; the
carried :math:`p` is :math:`\phi(h)`, so its gradient is folded into :math:`\delta h` by
:math:`\phi'`). With :math:`B_t = m_t \bar y_t \phi'(h_t)` formed for all steps before the loop,
going back over the steps

.. math::
    D_t &= m_t E_t, \qquad
    E_{t-1} = B_{t-1} + (1 - m_t) E_t + (1 - a) \odot D_t
              + \phi'(h_{t-1}) \odot W_{hh}^\top (a \odot D_t)

(at a step where every sequence runs: one matmul with :math:`\mathrm{diag}(a) W_{hh}` and two
``addcmul``; one ``addmm`` with :math:`M` for the identity). :math:`\bar h_0` is the last
:math:`E` without its :math:`B`. Then, over all :math:`T N` rows,

.. math::
    \bar u_t &= a \odot D_t, \qquad
    \bar W_{hh} = \textstyle\sum_t (a \odot D_t)\, p_{t-1}^\top, \qquad
    \bar a = D \odot (z - h_{t-1}), \\
    \overline{\text{log\_tau}} &= -\textstyle\sum_{t,n} a \odot \bar a, \qquad
    \overline{\Delta t}_{t,n} = \textstyle\sum_i \bar a_{t,n,i} / \tau_i
    \ (\text{dt\_input: the last column of } \bar u_t)

With a constant :math:`a`, :math:`\sum_{t,n} D \odot (W p_{t-1})` is read off :math:`G =
\sum_t D_t p_{t-1}^\top` (:math:`\sum_j W_{ij} G_{ij}`, and :math:`\bar W_{hh} = \mathrm{diag}(a)
G`), so :math:`z` is not needed; with ``dt_input`` the loop keeps :math:`z_t - h_{t-1}`.
Forward saves the slot buffers of :math:`h` and :math:`\phi(h)` (``(T + 1, N, H)`` each, one for
the identity), with ``dt_input`` :math:`z - h_{t-1}`, and its inputs. A backward that autograd
records (``create_graph=True``) differentiates the op's reference (the cell's step in plain torch
ops) instead (:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.ctrnn import CTRNNCell
from ._common import (
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)

__all__ = ["ctrnn_sequence"]


def _act(activation: str):
    """``f(x, out)``: the activation of the carried x-space state (sigmoid of k = 2h for tanh)."""
    if activation in ("tanh", "sigmoid"):
        return lambda x, out: torch.sigmoid(x, out=out)
    if activation == "relu":
        return lambda x, out: torch.clamp(x, min=0, out=out)
    return None


def _forward(us, h0, w_hh, log_tau, dt, dt_input, activation, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, saved)``, ``saved`` the slot
    buffers ``X`` (``c h``) and ``Y`` (its activation, ``X`` itself for the identity) and, with
    ``dt_input``, ``c (z - h_{t-1})``, with c = 2 for tanh, else 1."""
    T, N, _ = us.shape
    H = w_hh.shape[0]
    st = steps(T, reverse)
    off_in, off_out = st.off_in, st.off_out
    partial = partial_steps(valid, T)
    masks = valid.unsqueeze(2) if valid is not None else None  # (T, N, 1) bool
    tanh, identity = activation == "tanh", activation == "identity"
    act = _act(activation)
    xs_ = us.new_empty(T + 1, N, H)
    ys_ = xs_ if identity else us.new_empty(T + 1, N, H)
    if tanh:
        torch.add(h0, h0, out=xs_[st.first])
    else:
        xs_[st.first].copy_(h0)
    if not identity:
        act(xs_[st.first], ys_[st.first])
    X, Y = xs_.unbind(0), ys_.unbind(0)
    zs = None
    if not dt_input:
        a = dt / torch.exp(log_tau)  # (H,), exactly as the cell
        if identity:
            u = us * a
            m = w_hh * a.unsqueeze(1)
            m.diagonal().add_(1 - a)
            m_t = m.t()
            U = u.unbind(0)
            for t in st.order:
                torch.addmm(U[t], X[t + off_in], m_t, out=X[t + off_out])
                if partial[t]:
                    torch.where(masks[t], X[t + off_out], X[t + off_in], out=X[t + off_out])
        else:
            oma = 1 - a
            if tanh:  # k_t = (1 - a) k + 2 a (u - W 1) + 4 a W s
                u = (us - w_hh.sum(1)).mul_(a + a)
                w_t = (w_hh * (4 * a).unsqueeze(1)).t()
            else:
                u = us * a
                w_t = (w_hh * a.unsqueeze(1)).t()
            U = u.unbind(0)
            for t in st.order:
                x_in, x_out, y_out = X[t + off_in], X[t + off_out], Y[t + off_out]
                torch.addmm(U[t], Y[t + off_in], w_t, out=x_out)
                x_out.addcmul_(x_in, oma)
                act(x_out, y_out)
                if partial[t]:
                    m = masks[t]
                    torch.where(m, x_out, x_in, out=x_out)
                    torch.where(m, y_out, Y[t + off_in], out=y_out)
    else:
        a = us[:, :, H:] / torch.exp(log_tau)  # exactly as the cell
        if tanh:  # 2 z = 2 (u - W 1) + 4 W s
            zs = us[:, :, :H] - w_hh.sum(1)
            zs.add_(zs)
            w_t = (w_hh * 4).t()
        else:
            zs = us[:, :, :H].clone()
            w_t = w_hh.t()
        Z, A = zs.unbind(0), a.unbind(0)
        for t in st.order:
            x_in, x_out = X[t + off_in], X[t + off_out]
            z = Z[t]
            z.addmm_(Y[t + off_in], w_t).sub_(x_in)  # c (z - h_{t-1})
            torch.addcmul(x_in, z, A[t], out=x_out)
            if not identity:
                act(x_out, Y[t + off_out])
            if partial[t]:
                m = masks[t]
                torch.where(m, x_out, x_in, out=x_out)
                if not identity:
                    torch.where(m, Y[t + off_out], Y[t + off_in], out=Y[t + off_out])
    ys = outputs(ys_, reverse)
    if tanh:  # p = 2 s - 1, one op
        ys = torch.add(us.new_full((), -1.0), ys, alpha=2)
        h_t = xs_[st.last] * 0.5
    else:
        ys = ys.clone() if valid is None else ys
        h_t = xs_[st.last].clone()
    if valid is not None:
        ys = ys * masks
    return ys, h_t, (xs_, ys_, zs)


def _backward(gy, gh_t, us, w_hh, log_tau, xs_, ys_, zs, dt, dt_input, activation, reverse,
              valid, need=(True,) * 4):
    """The backward pass (module docstring) without autograd: the gradients of ``us, h0, w_hh,
    log_tau`` (None where ``need`` says no), from the forward's buffers ``xs_, ys_, zs``
    (:func:`_forward`'s; ``ys_`` is ``xs_`` itself for the identity)."""
    gy = gy.contiguous()  # (batch_first hands in a transposed gradient; views below)
    T, N, H = gy.shape
    st = steps(T, reverse)
    partial = partial_steps(valid, T)
    tanh, identity = activation == "tanh", activation == "identity"
    # phi(h) (ps; s = sigmoid(2 h) with tanh, p = 2 s - 1) and phi'(h) for every slot
    if identity:
        ps, pd = xs_, None
    elif tanh:
        ps = ys_
        pd = torch.addcmul(ps, ps, ps, value=-1).mul_(4)  # 1 - p^2 = 4 s (1 - s)
    elif activation == "sigmoid":
        ps = ys_
        pd = torch.addcmul(ps, ps, ps, value=-1)
    else:
        ps = ys_
        pd = (ps > 0).to(ps.dtype)
    b = gy * outputs(pd, reverse) if pd is not None else gy.clone()
    if valid is not None:
        mf = valid.unsqueeze(2).to(gy.dtype)  # (T, N, 1)
        b.mul_(mf)
        MF, NMF = mf.unbind(0), (1 - mf).unbind(0)
    PD = befores(pd, reverse).unbind(0) if pd is not None else None
    if dt_input:
        a = us[:, :, H:] / torch.exp(log_tau)  # (T, N, H)
        A, OMA = a.unbind(0), (1 - a).unbind(0)
        g_us = us.new_empty(T, N, H + 1)
        dz = g_us[:, :, :H]
        DZ = dz.unbind(0)
    else:
        a = dt / torch.exp(log_tau)  # (H,)
        oma = 1 - a
        w_a = w_hh * a.unsqueeze(1)  # diag(a) W
        if identity:
            w_a.diagonal().add_(oma)  # M
    dh = torch.empty_like(gy)  # E_t, then D_t
    DH, Bs = dh.unbind(0), b.unbind(0)
    back = list(st.back)
    torch.add(gh_t, Bs[back[0]], out=DH[back[0]])
    out = None
    for i, t in enumerate(back):
        e = DH[t]
        if partial[t]:
            pas = e * NMF[t]
            e.mul_(MF[t])
        nxt = back[i + 1] if i + 1 < T else None
        if not dt_input:
            if identity:
                out = torch.addmm(Bs[nxt], e, w_a, out=DH[nxt]) if nxt is not None \
                    else e @ w_a
            else:
                q = e @ w_a
                out = torch.addcmul(Bs[nxt], e, oma, out=DH[nxt]) if nxt is not None \
                    else e * oma
                out.addcmul_(q, PD[t])
        else:
            d = torch.mul(e, A[t], out=DZ[t])
            if identity:
                out = torch.addmm(Bs[nxt], d, w_hh, out=DH[nxt]) if nxt is not None \
                    else d @ w_hh
                out.addcmul_(e, OMA[t])
            else:
                q = d @ w_hh
                out = torch.addcmul(Bs[nxt], e, OMA[t], out=DH[nxt]) if nxt is not None \
                    else e * OMA[t]
                out.addcmul_(q, PD[t])
        if partial[t]:
            out.add_(pas)
    g_h0 = out
    d2 = dh.view(T * N, H)
    p_prev = befores(ps, reverse).reshape(T * N, H)

    def gram(d: Tensor) -> Tensor:  # sum_{t,n} d_t p_{t-1}^T (p = 2 s - 1 with tanh)
        g = d.t() @ p_prev
        return g.add_(g).sub_(d.sum(0).unsqueeze(1)) if tanh else g
    g_w = g_tau = None
    if not dt_input:
        g_us = dh * a if need[0] else None
        if need[2] or need[3]:
            g = gram(d2)  # sum_t D_t p_{t-1}^T
            g_w = g * a.unsqueeze(1) if need[2] else None
        if need[3]:  # sum_{t,n} D (z - h_prev), z = W p + u
            h_prev = befores(xs_, reverse)
            r = torch.add(us, h_prev, alpha=-0.5 if tanh else -1)
            g_tau = (w_hh * g).sum(1).add_((r.mul_(dh)).sum((0, 1))).mul_(a).neg_()
    else:
        if need[2]:
            g_w = gram(dz.reshape(T * N, H))
        if need[0] or need[3]:
            r = dh * zs  # c * dL/da
            if tanh:
                r.mul_(0.5)
            if need[3]:
                g_tau = (r * a).sum((0, 1)).neg_()
            if need[0]:
                torch.matmul(r, torch.exp(log_tau).reciprocal_().unsqueeze(1),
                             out=g_us[:, :, H:])
        if not need[0]:
            g_us = None
    return g_us, g_h0 if need[1] else None, g_w, g_tau


def ctrnn_sequence(
    cell: CTRNNCell,
    xs: Tensor,
    state: Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` ``h0 (N, H)`` (zeros if None),
    fused.

    Returns ``(ys (T, N, H), h_T)``, exactly ``rnnkit.scan(cell, xs, state, reverse=reverse,
    lengths=lengths, masks=masks)``, with a hand-written BPTT backward (module docstring; the
    regularizer masks, :class:`rnnkit.regularize.Masks`, as ``csrc/ctrnn.cpp`` writes them
    out), through the op ``torch.ops.rnnkit.ctrnn_sequence`` (so torch.compile and torch.export
    trace it).
    """
    from ..ops import ctrnn as op  # (loads the ops on first use)
    h0, valid = checked(cell, CTRNNCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    # (layer normalization: the input site in cell.precompute, the recurrent one in the op)
    return op.ctrnn_sequence(cell.precompute(xs), h0, cell.weight_hh, cell.log_tau, valid,
                             cell.dt, cell.dt_input, cell.activation, bool(reverse), drop, zone,
                             *norms(cell, "hh"))
