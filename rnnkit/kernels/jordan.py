r"""Fused Jordan sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`jordan_sequence` computes exactly what ``rnnkit.scan(cell, xs, state, reverse=...,
lengths=...)`` computes for a :class:`~rnnkit.cells.JordanCell` with any of its options
(:math:`\phi_h` tanh/ReLU/sigmoid, :math:`\phi_y` tanh/sigmoid/identity/softmax, ``output_size``
:math:`O \ne H`, ``bias=False``), as one registered op, ``torch.ops.rnnkit.jordan_sequence``
(:mod:`rnnkit.ops.jordan`, whose pure-torch implementation is this module's loops), over the
precomputed input projection :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, left to
autograd).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``; the state is the previous output)

.. math::
    a_t &= u_t + b_{yh} + W_{yh} y_{t-1}, \qquad h_t = \phi_h(a_t)              \qquad (H)  \\
    z_t &= W_{hy} h_t + b_{hy}, \qquad \tilde y_t = \phi_y(z_t)                 \qquad (O)  \\
    y_t &= m_t \tilde y_t + (1 - m_t)\, y_{t-1} \ (\text{the carried state}), \qquad
    \text{output}_t = m_t \tilde y_t

A step is four ops: an ``addmm_`` into a ``(T, N, H)`` buffer that already holds
:math:`u_t + b_{yh}` (set for all steps at once), the activation in place, an ``addmm_`` into
the step's slot of the ``(T + 1, N, O)`` state buffer (pre-filled with :math:`b_{hy}`) and the
activation in place (plus a ``where`` at a step where some sequence is padded).

tanh. Torch's CPU ``tanh`` costs ~4x its ``sigmoid`` (measured), and
:math:`\tanh(x) = 2 \sigma(2x) - 1`. So a tanh layer stores :math:`s = \sigma(2x)` instead of
its value :math:`v = 2 s - 1`, and the affine map is folded into the weights that read it: a
layer :math:`c\,(W v + b)` (:math:`c = 2` if it is itself a tanh layer, else 1) reading
:math:`v = \alpha s + \beta` becomes :math:`(c \alpha W) s + c (b + \beta W 1)`. The step
costs no extra op; the outputs and the final state are mapped back once, after the loop.

Backward. :math:`\delta y_t` is the gradient of the carried state after step :math:`t`
(starting from that of :math:`y_T`), :math:`\bar y_t` the output's. Going back over the steps,

.. math::
    e_t &= m_t (\bar y_t + \delta y_t), \qquad
    \delta z_t = \phi_y'(z_t) \odot e_t
    \quad \big(\text{softmax: } \delta z_t = \tilde y_t \odot (e_t - \langle \tilde y_t, e_t
    \rangle)\big)                                                                           \\
    \delta a_t &= \phi_h'(a_t) \odot W_{hy}^\top \delta z_t, \qquad
    \delta y_{t-1} = (1 - m_t)\, \delta y_t + W_{yh}^\top \delta a_t

with :math:`\tanh' = 1 - v^2`, :math:`\sigma' = v (1 - v)`, ReLU' :math:`= [v > 0]`,
identity' = 1, all in terms of the layer's value :math:`v`. The coefficients
:math:`m_t \phi_y'` (softmax: :math:`m_t \tilde y_t`) and :math:`\phi_h'` and
:math:`\bar y_t` times the former are formed for all steps at once before the loop, so a step is
an ``addcmul_`` (three ops for softmax), a matmul, a ``mul`` and a matmul (plus the carry at a
padded step). Then, over all :math:`T N` rows at once,

.. math::
    \bar u_t = \delta a_t, \quad
    \bar W_{yh} = \textstyle\sum_t \delta a_t y_{t-1}^\top, \quad
    \bar b_{yh} = \textstyle\sum_{t,n} \delta a_t, \quad
    \bar W_{hy} = \textstyle\sum_t \delta z_t h_t^\top, \quad
    \bar b_{hy} = \textstyle\sum_{t,n} \delta z_t,

and :math:`\bar y_0` is the :math:`\delta y` left after the loop (at padded steps every
:math:`\delta z, \delta a` is zero). Forward saves the hidden buffer ``(T, N, H)`` and the state
buffer ``(T + 1, N, O)``, and its inputs. A backward that autograd records (``create_graph=True``)
differentiates the op's reference (the cell's step in plain torch ops) instead
(:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.jordan import JordanCell
from ._common import (
    Product,
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)

__all__ = ["jordan_sequence"]


# --- activations, shared with the fully recurrent kernel ------------------------------------
# A layer's buffer holds its value v, or s = sigmoid(2 x) with v = 2 s - 1 for tanh.


def affine(act: str) -> tuple[int, int, int]:
    """``(c, alpha, beta)``: a layer with activation ``act`` computes its activation of
    ``c`` times its pre-activation and stores ``s`` with value ``alpha * s + beta``."""
    return (2, 2, -1) if act == "tanh" else (1, 1, 0)


def activate_(v: Tensor, act: str) -> Tensor:
    """The activation in place on ``v`` (the scaled pre-activation, see :func:`affine`)."""
    if act in ("tanh", "sigmoid"):
        v.sigmoid_()
    elif act == "relu":
        v.relu_()
    elif act == "softmax":
        v.copy_(torch.softmax(v, dim=-1))
    return v


def value(s: Tensor, act: str) -> Tensor:
    """A layer's value from its stored buffer (a new tensor for tanh, else ``s`` itself)."""
    return torch.add(s, s).sub_(1) if act == "tanh" else s


def final_value(s: Tensor, act: str) -> Tensor:
    """A layer's value from one slot of its buffer, always as a new tensor."""
    return value(s, act) if act == "tanh" else s.clone()


def derivative(v: Tensor, act: str) -> Tensor | None:
    """:math:`\\phi'` in terms of the value ``v`` (None for identity; not for softmax)."""
    if act == "tanh":
        return torch.addcmul(torch.ones((), dtype=v.dtype, device=v.device), v, v, value=-1)
    if act == "sigmoid":
        return torch.addcmul(v, v, v, value=-1)
    if act == "relu":
        return (v > 0).to(v.dtype)
    return None


def output_coefficients(ys: Tensor, gy: Tensor, act: str, mf: Tensor | None):
    """``(c, d)``, formed for all steps before the backward loop, so that a step's
    :math:`\\delta z = d + \\delta y \\odot c` (softmax: :math:`\\tilde y \\odot e` is that,
    :math:`e` the masked incoming gradient). ``c`` is None for identity without a mask
    (:math:`\\delta z = \\bar y + \\delta y`); ``d`` is always a fresh buffer."""
    c = ys if act == "softmax" else derivative(ys, act)
    if mf is not None:
        c = mf if c is None else c * mf
    d = gy * c if c is not None else gy.clone()
    return c, d


def softmax_step(ye: Tensor, y: Tensor) -> Tensor:
    """:math:`\\delta z = \\tilde y \\odot e - \\tilde y \\langle \\tilde y, e \\rangle`
    in place on ``ye`` :math:`= \\tilde y \\odot e`."""
    return ye.addcmul_(y, ye.sum(1, keepdim=True), value=-1)


# --- the kernel --------------------------------------------------------------------------


def _forward(us, y0, w_yh, b_yh, w_hy, b_hy, act_h, act_y, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, y_T, saved)``."""
    T, N, H = us.shape
    O = w_hy.shape[0]
    st = steps(T, reverse)
    c_h, a_h, be_h = affine(act_h)
    c_y, a_y, be_y = affine(act_y)
    # hidden pre-activation c_h (u + b_yh + beta_y W_yh 1) + (c_h alpha_y W_yh) s_y
    k_h = b_yh
    if be_y:
        k_h = -w_yh.sum(1) if k_h is None else k_h - w_yh.sum(1)
    hs = us * c_h if c_h != 1 else us.clone()
    if k_h is not None:
        hs.add_(k_h, alpha=c_h)
    w1 = (w_yh * (c_h * a_y)).t()
    # output pre-activation c_y (b_hy + beta_h W_hy 1) + (c_y alpha_h W_hy) s_h
    k_y = b_hy
    if be_h:
        k_y = -w_hy.sum(1) if k_y is None else k_y - w_hy.sum(1)
    w2 = (w_hy * (c_y * a_h)).t()
    ss = us.new_empty(T + 1, N, O)
    # Pre-fill the output slots (the step's addmm_ adds to them): touching the fresh buffer in
    # one op is cheaper than page by page inside the loop.
    outs = outputs(ss, reverse)
    if k_y is None:
        outs.zero_()
    else:
        outs.copy_((k_y * c_y).expand(T, N, O))
    if be_y:  # s_0 = (y_0 - beta) / alpha
        torch.add(y0, 1, out=ss[st.first]).mul_(0.5)
    else:
        ss[st.first].copy_(y0)
    partial = partial_steps(valid, T)
    masks = valid.unsqueeze(2) if valid is not None else None  # (T, N, 1) bool
    s_sl, h_sl = ss.unbind(0), hs.unbind(0)
    off_in, off_out = st.off_in, st.off_out
    rec_y, rec_h = Product(w1.t(), N), Product(w2.t(), N)  # packed where that is faster
    for t in st.order:
        y_in, y_out, h = s_sl[t + off_in], s_sl[t + off_out], h_sl[t]
        activate_(rec_y.add_(h, y_in), act_h)
        activate_(rec_h.add_(y_out, h), act_y)
        if partial[t]:
            torch.where(masks[t], y_out, y_in, out=y_out)
    ys = value(outs, act_y)
    ys = ys.masked_fill(~masks, 0) if valid is not None else ys.clone() if ys is outs else ys
    return ys, final_value(ss[st.last], act_y), (hs, ss)


def _backward(gy, gy_t, w_yh, w_hy, hs, ss, act_h, act_y, reverse, valid, need=(True,) * 6):
    """The backward pass (module docstring) without autograd: the gradients of ``us, y0, w_yh,
    b_yh, w_hy, b_hy`` (None where ``need`` says no), from the forward's buffers ``hs, ss``."""
    gy = gy.contiguous()  # (batch_first hands in a transposed gradient; views below)
    T, N, H = hs.shape
    O = ss.shape[2]
    st = steps(T, reverse)
    partial = partial_steps(valid, T)
    h = value(hs, act_h)  # h_t (T, N, H)
    y_all = value(ss, act_y)  # (T + 1, N, O): y~_t (or the carried y) and y_{t-1}
    ys = outputs(y_all, reverse)
    mf = nmf = None
    if valid is not None:
        mf = valid.unsqueeze(2).to(hs.dtype)  # (T, N, 1)
        nmf = 1 - mf
    ch = derivative(h, act_h)  # (T, N, H)
    c, dz = output_coefficients(ys, gy, act_y, mf)  # dz holds d; the loop adds dy * c
    da = hs.new_empty(T, N, H)
    dz_sl, da_sl, ch_sl = dz.unbind(0), da.unbind(0), ch.unbind(0)
    c_sl = c.unbind(0) if c is not None else None
    ys_sl = ys.unbind(0)
    softmax = act_y == "softmax"
    rec_hy, rec_yh = Product(w_hy.t(), N), Product(w_yh.t(), N)
    dy = gy_t
    for t in st.back:
        if c is None:
            dzt = dz_sl[t].add_(dy)
        else:
            dzt = dz_sl[t].addcmul_(dy, c_sl[t])
        if softmax:
            softmax_step(dzt, ys_sl[t])
        dat = torch.mul(rec_hy(dzt), ch_sl[t], out=da_sl[t])
        dy_next = rec_yh(dat)
        if partial[t]:
            dy_next.addcmul_(dy, nmf[t])
        dy = dy_next
    da2, dz2 = da.view(T * N, H), dz.view(T * N, O)
    g_w_yh = da2.t() @ befores(y_all, reverse).reshape(T * N, O) if need[2] else None
    g_b_yh = da2.sum(0) if need[3] else None
    g_w_hy = dz2.t() @ h.reshape(T * N, H) if need[4] else None
    g_b_hy = dz2.sum(0) if need[5] else None
    return (da if need[0] else None, dy if need[1] else None, g_w_yh, g_b_yh, g_w_hy, g_b_hy)


def jordan_sequence(
    cell: JordanCell,
    xs: Tensor,
    state: Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` :math:`y_0` ``(N, O)`` (zeros if
    None), fused.

    Returns ``(ys (T, N, O), y_T)``, exactly ``rnnkit.scan(cell, xs, state, reverse=reverse,
    lengths=lengths, masks=masks)``, with a hand-written BPTT backward (module docstring; the
    regularizer masks, :class:`rnnkit.regularize.Masks`, as ``csrc/jordan.cpp`` writes them
    out), through the op ``torch.ops.rnnkit.jordan_sequence`` (so torch.compile and
    torch.export trace it).
    """
    from ..ops import jordan as op  # (loads the ops on first use)
    y0, valid = checked(cell, JordanCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    # (layer normalization: the input site in cell.precompute, the recurrent one in the op)
    return op.jordan_sequence(cell.precompute(xs), y0, cell.weight_yh, cell.bias_yh,
                              cell.weight_hy, cell.bias_hy, valid, cell.activation,
                              cell.output_activation, bool(reverse), drop, zone,
                              *norms(cell, "hh"))
