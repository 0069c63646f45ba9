r"""Fused fully recurrent sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`fully_sequence` computes exactly what ``rnnkit.scan(cell, xs, state, reverse=...,
lengths=...)`` computes for a :class:`~rnnkit.cells.FullyRecurrentCell` with any of its options
(:math:`\phi_h` tanh/ReLU/sigmoid, :math:`\phi_y` tanh/sigmoid/identity/softmax, ``output_size``
:math:`O \ne H`, ``bias=False``), as one registered op, ``torch.ops.rnnkit.fully_sequence``
(:mod:`rnnkit.ops.fully`, whose pure-torch implementation is this module's loops), over the
precomputed input projection :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, left to
autograd).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``)

.. math::
    m_{t-1} &= [h_{t-1} ; y_{t-1}], \qquad
    [p_t ; q_t] = \underbrace{[W_{mh} ; W_{my}]}_{W_m \ (H+O,\ H+O)} m_{t-1}                 \\
    \tilde h_t &= \phi_h(u_t + p_t), \qquad
    \tilde y_t = \phi_y(\underbrace{q_t + W_{hy} \tilde h_t + b_{hy}}_{z_t})                 \\
    m_t &= m_t [\tilde h_t ; \tilde y_t] + (1 - m_t)\, m_{t-1}, \qquad
    \text{output}_t = m_t \tilde y_t

The carried :math:`m` lives in one ``(T + 1, N, H + O)`` slot buffer, so :math:`m_{t-1}` needs no
``cat``, and the step's slot is its own work space: pre-filled (for all steps at once) with
:math:`[u_t ; b_{hy}]`, a step is an ``addmm_`` of :math:`m_{t-1} W_m^\top` into the whole
slot, :math:`\phi_h` in place on its first H columns, an ``addmm_`` of
:math:`\tilde h_t W_{hy}^\top` into its last O columns and :math:`\phi_y` in place on them (plus
a ``where`` at a step where some sequence is padded).

tanh is computed as :math:`2 \sigma(2x) - 1` with the affine map folded into the weights that
read the layer, as in :mod:`rnnkit.kernels.jordan`: the buffer holds :math:`s` with value
:math:`v = \alpha s + \beta`, :math:`W_m` becomes :math:`\mathrm{diag}(c)\, W_m\,
\mathrm{diag}(\alpha)` and :math:`W_{hy}` becomes :math:`c_y \alpha_h W_{hy}`, and the
constants :math:`c\,(W_m \beta)` and :math:`c_y \beta_h W_{hy} 1` join the pre-filled slot.

Backward. :math:`\delta m_t = [\delta h_t ; \delta y_t]` is the gradient of the carried state
after step :math:`t` (starting from those of :math:`h_T, y_T`), :math:`\bar y_t` the output's.
Going back over the steps,

.. math::
    e_t &= m_t (\bar y_t + \delta y_t), \qquad
    \delta z_t = \phi_y'(z_t) \odot e_t
    \quad \big(\text{softmax: } \tilde y_t \odot (e_t - \langle \tilde y_t, e_t \rangle)\big) \\
    \delta a_t &= m_t \phi_h'(a_t) \odot (\delta h_t + W_{hy}^\top \delta z_t)               \\
    \delta m_{t-1} &= (1 - m_t)\, \delta m_t + W_m^\top [\delta a_t ; \delta z_t]

(:math:`\delta z_t` is zero at a padded row, so the mask may multiply the whole bracket). The
coefficients :math:`m_t \phi_y'` (softmax: :math:`m_t \tilde y_t`), :math:`m_t \phi_h'` and
:math:`\bar y_t` times the former are formed for all steps at once before the loop, and
:math:`[\delta a_t ; \delta z_t]` is one row of a ``(T, N, H + O)`` buffer, so a step is an
``addcmul_`` (three ops for softmax), an ``addmm``, a ``mul`` and ONE matmul with
:math:`W_m` (plus the carry at a padded step). Then, over all :math:`T N` rows at once,

.. math::
    \bar u_t = \delta a_t, \quad
    [\bar W_{mh} ; \bar W_{my}] = \textstyle\sum_t [\delta a_t ; \delta z_t]\, m_{t-1}^\top,
    \quad \bar W_{hy} = \textstyle\sum_t \delta z_t \tilde h_t^\top, \quad
    \bar b_{hy} = \textstyle\sum_{t,n} \delta z_t,

and :math:`\bar h_0, \bar y_0` are the :math:`\delta m` left after the loop. Forward saves the
slot buffer and its inputs. A backward that autograd records (``create_graph=True``)
differentiates the op's reference (the cell's step in plain torch ops) instead
(:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.fully import FullyRecurrentCell, FullyState
from ._common import (
    Product,
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)
from .jordan import activate_, affine, derivative, output_coefficients, softmax_step, value

__all__ = ["fully_sequence"]


def _values(ss: Tensor, H: int, act_h: str, act_y: str) -> Tensor:
    """The slot buffer ``[s_h ; s_y]`` mapped to the values ``[h ; y]`` (``ss`` if no tanh)."""
    if act_h != "tanh" and act_y != "tanh":
        return ss
    m = ss.clone()
    if act_h == "tanh":
        m[..., :H] = value(ss[..., :H], "tanh")
    if act_y == "tanh":
        m[..., H:] = value(ss[..., H:], "tanh")
    return m


def _forward(us, h0, y0, w_mh, w_hy, w_my, b_hy, act_h, act_y, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, y_T, saved)``."""
    T, N, H = us.shape
    O = w_hy.shape[0]
    st = steps(T, reverse)
    c_h, a_h, be_h = affine(act_h)
    c_y, a_y, be_y = affine(act_y)
    dt = {"dtype": us.dtype, "device": us.device}
    # m = alpha * s + beta column by column; the rows of the hidden / output layer scale by c.
    alpha = torch.tensor([a_h] * H + [a_y] * O, **dt)
    beta = torch.tensor([be_h] * H + [be_y] * O, **dt)
    c = torch.tensor([c_h] * H + [c_y] * O, **dt)
    w_m = torch.cat([w_mh, w_my])  # (H + O, H + O)
    w1 = (w_m * alpha * c.unsqueeze(1)).t()
    w2 = (w_hy * (c_y * a_h)).t()
    # The slots' constants: c_h W_mh beta for the hidden layer, c_y (W_my beta + b_hy +
    # beta_h W_hy 1) for the output layer (all zero without tanh and biases).
    k = w_m @ beta * c if be_h or be_y else None  # (H + O)
    k_y = b_hy
    if be_h:
        k_y = -w_hy.sum(1) if k_y is None else k_y - w_hy.sum(1)
    if k_y is not None:
        k_y = k_y * c_y
        k_y = k_y if k is None else k_y + k[H:]
    elif k is not None:
        k_y = k[H:]
    ss = us.new_empty(T + 1, N, H + O)
    outs = outputs(ss, reverse)
    # Pre-fill the slots with [c_h u_t ; 0] + the constants: every step's slot is then one
    # addmm_ away from its pre-activations, and the fresh buffer is touched in two ops.
    if k is not None:
        torch.add(k[:H], us, alpha=c_h, out=outs[..., :H])
    elif c_h != 1:
        torch.mul(us, c_h, out=outs[..., :H])
    else:
        outs[..., :H].copy_(us)
    if k_y is None:
        outs[..., H:].zero_()
    else:
        outs[..., H:].copy_(k_y.expand(T, N, O))
    first = ss[st.first]
    for part, s0, be in ((first[:, :H], h0, be_h), (first[:, H:], y0, be_y)):
        if be:  # s_0 = (v_0 - beta) / alpha
            torch.add(s0, 1, out=part).mul_(0.5)
        else:
            part.copy_(s0)
    partial = partial_steps(valid, T)
    masks = valid.unsqueeze(2) if valid is not None else None  # (T, N, 1) bool
    s_sl, h_sl, y_sl = ss.unbind(0), ss[..., :H].unbind(0), ss[..., H:].unbind(0)
    off_in, off_out = st.off_in, st.off_out
    rec_m, rec_y = Product(w1.t(), N), Product(w2.t(), N)  # packed where that is faster
    for t in st.order:
        m_in, m_out = s_sl[t + off_in], s_sl[t + off_out]
        rec_m.add_(m_out, m_in)
        h = activate_(h_sl[t + off_out], act_h)
        activate_(rec_y.add_(y_sl[t + off_out], h), act_y)
        if partial[t]:
            torch.where(masks[t], m_out, m_in, out=m_out)
    ys = value(outs[..., H:], act_y)
    ys = ys.masked_fill(~masks, 0) if valid is not None else ys if act_y == "tanh" \
        else ys.clone()
    last = ss[st.last]
    h_t, y_t = (value(last[:, :H], act_h), value(last[:, H:], act_y))
    h_t = h_t.clone() if act_h != "tanh" else h_t
    y_t = y_t.clone() if act_y != "tanh" else y_t
    return ys, h_t, y_t, ss


def _backward(gy, gh_t, gy_t, w_mh, w_hy, w_my, ss, act_h, act_y, reverse, valid,
              need=(True,) * 7):
    """The backward pass (module docstring) without autograd: the gradients of ``us, h0, y0,
    w_mh, w_hy, w_my, b_hy`` (None where ``need`` says no), from the forward's slot buffer
    ``ss``. Every one is a tensor of its own (no two share memory)."""
    T1, N, S = ss.shape
    T, H = T1 - 1, w_mh.shape[0]
    O = S - H
    st = steps(T, reverse)
    partial = partial_steps(valid, T)
    m_all = _values(ss, H, act_h, act_y)  # [h ; y], (T + 1, N, H + O)
    m_out = outputs(m_all, reverse)
    hs, ys = m_out[..., :H], m_out[..., H:]
    mf = nmf = None
    if valid is not None:
        mf = valid.unsqueeze(2).to(ss.dtype)  # (T, N, 1)
        nmf = 1 - mf
    ch = derivative(hs, act_h)
    if mf is not None:
        ch.mul_(mf)
    c, d = output_coefficients(ys, gy, act_y, mf)
    dd = ss.new_empty(T, N, H + O)  # [da ; dz]
    da, dz = dd[..., :H], dd[..., H:]
    dz.copy_(d)  # the loop adds dy * c
    del d
    w_m = torch.cat([w_mh, w_my])
    dd_sl, da_sl, dz_sl = dd.unbind(0), da.unbind(0), dz.unbind(0)
    ch_sl, ys_sl = ch.unbind(0), ys.unbind(0)
    c_sl = c.unbind(0) if c is not None else None
    softmax = act_y == "softmax"
    dm = torch.cat([gh_t, gy_t], 1)
    rec_hy, rec_m = Product(w_hy.t(), N), Product(w_m.t(), N)
    for t in st.back:
        dh, dy = dm[:, :H], dm[:, H:]
        if c is None:
            dzt = dz_sl[t].add_(dy)
        else:
            dzt = dz_sl[t].addcmul_(dy, c_sl[t])
        if softmax:
            softmax_step(dzt, ys_sl[t])
        torch.mul(rec_hy.add(dh, dzt), ch_sl[t], out=da_sl[t])
        dm_next = rec_m(dd_sl[t])
        if partial[t]:
            dm_next.addcmul_(dm, nmf[t])
        dm = dm_next
    dd2 = dd.view(T * N, S)
    g_w_mh = g_w_my = None
    if need[3] or need[5]:  # [W_mh ; W_my]'s gradient: one matmul over all T N rows
        m_prev = befores(m_all, reverse).reshape(T * N, S)
        if need[3] and need[5]:
            g_w_mh, g_w_my = dd2.t().mm(m_prev).split([H, O])  # (views of one result)
            g_w_my = g_w_my.clone()
        elif need[3]:
            g_w_mh = dd2[:, :H].t() @ m_prev
        else:
            g_w_my = dd2[:, H:].t() @ m_prev
    g_w_hy = dd2[:, H:].t() @ hs.reshape(T * N, H) if need[4] else None
    g_b_hy = dz.sum((0, 1)) if need[6] else None
    g_h0, g_y0 = dm.split([H, O], 1)
    return (da if need[0] else None, g_h0 if need[1] else None,
            g_y0.clone() if need[2] else None, g_w_mh, g_w_hy, g_w_my, g_b_hy)


def fully_sequence(
    cell: FullyRecurrentCell,
    xs: Tensor,
    state: FullyState | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, FullyState]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` ``FullyState(h (N, H), y (N, O))``
    (zeros if None), fused.

    Returns ``(ys (T, N, O), FullyState(h_T, y_T))``, exactly ``rnnkit.scan(cell, xs, state,
    reverse=reverse, lengths=lengths, masks=masks)``, with a hand-written BPTT backward (module
    docstring; the regularizer masks, :class:`rnnkit.regularize.Masks`, and a
    layer-normalized cell's ``LN_hh(W_mh m_{t-1})``, as ``csrc/fully.cpp`` writes them out; its
    ``LN_ih(W_ih x) + b_ih`` is in ``cell.precompute``), through the op
    ``torch.ops.rnnkit.fully_sequence`` (so torch.compile and torch.export trace it).
    """
    from ..ops import fully as op  # (loads the ops on first use)
    (h0, y0), valid = checked(cell, FullyRecurrentCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    ys, h_t, y_t = op.fully_sequence(cell.precompute(xs), h0, y0, cell.weight_mh,
                                     cell.weight_hy, cell.weight_my, cell.bias_hy, valid,
                                     cell.activation, cell.output_activation, bool(reverse),
                                     drop, zone, *norms(cell, "hh"))
    return ys, FullyState(h_t, y_t)
