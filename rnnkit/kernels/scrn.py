r"""Fused SCRN sequence kernel: the context recurrence, then the sigmoid Elman recurrence.

:func:`scrn_sequence` computes exactly what ``rnnkit.scan(cell, xs, state, reverse=...,
lengths=...)`` computes for an :class:`~rnnkit.cells.SCRNCell` (any ``context_size``, fixed
:math:`\alpha` including 0 and 1, ``learn_alpha``, ``bias=False``), as one registered op,
``torch.ops.rnnkit.scrn_sequence`` (:mod:`rnnkit.ops.scrn`, whose pure-torch implementation is
this module's loops), over the precomputed input projection
:math:`u_t = [u^s_t ; u^h_t] = [(1 - \alpha) B x_t ; A x_t + b]` (``cell.precompute``, left to
autograd, which so also differentiates a learned :math:`\alpha = \sigma(a)` there).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``). The context does not depend on
:math:`h`, so it runs first, as its own cheap elementwise loop:

.. math::
    \tilde s_t &= u^s_t + \alpha \odot s_{t-1}, \qquad
    s_t = m_t \tilde s_t + (1 - m_t) s_{t-1}                                                \\
    a_t &= \underbrace{u^h_t + P s_t}_{\text{one matmul for all } t} + R h_{t-1}, \qquad
    \tilde h_t = \sigma(a_t), \qquad h_t = m_t \tilde h_t + (1 - m_t) h_{t-1}               \\
    y_t &= m_t [\tilde h_t ; \tilde s_t]

(at a valid step :math:`s_t = \tilde s_t`; at a padded one :math:`a_t` is computed from the
carried :math:`s_t` and thrown away). The carried states live in one ``(T + 1, N, H + S)`` slot
buffer laid out ``[h ; s]``, so the outputs are its after-step slots.

Backward. :math:`\delta h_t, \delta s_t` are the gradients of the carried states after step
:math:`t` (starting from those of :math:`h_T, s_T`), :math:`\bar y_t = [\bar y^h_t ; \bar y^s_t]`
the output's. First the :math:`h` loop, backwards over the steps:

.. math::
    \delta a_t &= (\bar y^h_t + \delta h_t) \odot m_t \tilde h_t (1 - \tilde h_t), \qquad
    \delta h_{t-1} = (1 - m_t)\, \delta h_t + R^\top \delta a_t

(:math:`\bar y^h_t \odot m_t \tilde h_t (1 - \tilde h_t)` is formed for all steps at once, so
a step is one ``addcmul`` and one matmul). Then, for all steps in one matmul, the gradient
reaching :math:`\tilde s_t` from its own output and from :math:`a_t`,
:math:`g_t = m_t \bar y^s_t + P^\top \delta a_t` (zero at padded steps), and the reverse context
loop

.. math::
    \delta\tilde s_t = m_t (\delta s_t + g_t), \qquad
    \delta s_{t-1} = (1 - m_t)\, \delta s_t + \alpha \odot \delta\tilde s_t,

which at a step where every sequence runs is the single op
:math:`\delta\tilde s_t = g_t + \alpha \odot \delta\tilde s_{t+1}`. Then

.. math::
    \bar u_t = [\delta\tilde s_t ; \delta a_t], \quad
    \bar P = \textstyle\sum_t \delta a_t s_t^\top, \quad
    \bar R = \textstyle\sum_t \delta a_t h_{t-1}^\top, \quad
    \bar\alpha = \textstyle\sum_{t,n} \delta\tilde s_t \odot s_{t-1}
    \ (\text{a learned } \alpha),

the sums as single matmuls / reductions over all :math:`T N` rows; :math:`\bar h_0, \bar s_0` are
the :math:`\delta h, \delta s` left after the loops. Forward saves the slot buffer and its
inputs. A backward that autograd records (``create_graph=True``) differentiates the op's
reference (the cell's step in plain torch ops) instead (:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.scrn import SCRNCell, SCRNState
from ._common import (
    Product,
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)

__all__ = ["scrn_sequence"]


def _forward(us, h0, s0, alpha, w_P, w_R, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, s_T, ss)``, ``ss`` the slot
    buffer ``(T + 1, N, H + S)`` of the carried states ``[h ; s]``."""
    T, N, _ = us.shape
    H, S = w_P.shape
    st = steps(T, reverse)
    off_in, off_out = st.off_in, st.off_out
    ss = us.new_empty(T + 1, N, H + S)
    hs, cs = ss[:, :, :H], ss[:, :, H:]
    hs[st.first].copy_(h0)
    cs[st.first].copy_(s0)
    partial = partial_steps(valid, T)
    masks = valid.unsqueeze(2) if valid is not None else None  # (T, N, 1) bool
    # The context: s~_t = u^s_t + alpha s_{t-1}, one op a step.
    # (Per-step views come from unbind: cheaper than indexing in Python at every step.)
    u_s, c_sl = us[:, :, :S].unbind(0), cs.unbind(0)
    learned = isinstance(alpha, Tensor)
    for t in st.order:
        s_in, s_out = c_sl[t + off_in], c_sl[t + off_out]
        if learned:
            torch.addcmul(u_s[t], s_in, alpha, out=s_out)
        else:
            torch.add(u_s[t], s_in, alpha=alpha, out=s_out)
        if partial[t]:
            torch.where(masks[t], s_out, s_in, out=s_out)
    # a_t = u^h_t + P s_t for all steps at once: one (T N, S) @ (S, H).
    z = torch.addmm(us[:, :, S:].reshape(T * N, H), outputs(cs, reverse).reshape(T * N, S),
                    w_P.t()).view(T, N, H)
    # The sigmoid Elman loop: a_t += R h_{t-1}; h_t = sigmoid(a_t), straight into its slot.
    rec = Product(w_R, N)  # h_{t-1} R^T, packed where that is faster
    h_sl, z_sl = hs.unbind(0), z.unbind(0)
    for t in st.order:
        h_in, h_out = h_sl[t + off_in], h_sl[t + off_out]
        zt = z_sl[t]
        rec.add_(zt, h_in)
        torch.sigmoid(zt, out=h_out)
        if partial[t]:
            torch.where(masks[t], h_out, h_in, out=h_out)
    ys = outputs(ss, reverse)
    ys = ys * masks if valid is not None else ys.clone()
    return ys, hs[st.last].clone(), cs[st.last].clone(), ss


def _backward(gy, gh_t, gs_t, alpha, w_P, w_R, ss, reverse, valid, need=(True,) * 6):
    """The backward pass (module docstring) without autograd: the gradients of ``us, h0, s0,
    alpha, w_P, w_R`` (None where ``need`` says no, and for a fixed float ``alpha``), from the
    forward's slot buffer ``ss``."""
    learned = isinstance(alpha, Tensor)
    T, N, _ = ss.shape
    T -= 1
    H, S = w_P.shape
    st = steps(T, reverse)
    partial = partial_steps(valid, T)
    h_new = outputs(ss, reverse)[:, :, :H]  # sigmoid(a_t) at the valid steps
    sd = torch.addcmul(h_new, h_new, h_new, value=-1)  # h~ (1 - h~)
    gy_h, gy_s = gy[:, :, :H], gy[:, :, H:]
    if valid is not None:
        mf = valid.unsqueeze(2).to(ss.dtype)  # (T, N, 1)
        nmf = 1 - mf
        sd.mul_(mf)
        gy_s = gy_s * mf
    gsd = gy_h * sd
    du = ss.new_empty(T, N, S + H)  # [d s~_t ; d a_t], the gradient of us
    da, ds = du[:, :, S:], du[:, :, :S]
    # The h loop.
    gsd_sl, sd_sl, da_sl = gsd.unbind(0), sd.unbind(0), da.unbind(0)
    rec = Product(w_R.t(), N)  # da_t R, packed where that is faster
    dh = gh_t
    for t in st.back:
        dat = torch.addcmul(gsd_sl[t], dh, sd_sl[t], out=da_sl[t])
        dh_next = rec(dat)
        if partial[t]:
            dh_next.addcmul_(dh, nmf[t])
        dh = dh_next
    # g_t = m y^s_t + P^T d a_t, all steps at once.
    da2 = da.reshape(T * N, H)
    g = torch.addmm(gy_s.reshape(T * N, S), da2, w_P).view(T, N, S)
    # The context loop. `carry` is d s_t itself (is_d) or d s~_{t+1}, with d s_t = alpha of it.
    g_sl, ds_sl = g.unbind(0), ds.unbind(0)
    carry, is_d = gs_t, True
    for t in st.back:
        dst = ds_sl[t]
        if partial[t]:
            d = carry if is_d else carry * alpha
            e = g_sl[t] + d
            torch.mul(e, mf[t], out=dst)
            carry, is_d = torch.where(valid[t].unsqueeze(1), e * alpha, d), True
            continue
        if is_d:
            torch.add(g_sl[t], carry, out=dst)
        elif learned:
            torch.addcmul(g_sl[t], carry, alpha, out=dst)
        else:
            torch.add(g_sl[t], carry, alpha=alpha, out=dst)
        carry, is_d = dst, False
    g_s0 = None
    if need[2]:
        g_s0 = carry.clone() if is_d else carry * alpha
    g_alpha = None
    if learned and need[3]:
        g_alpha = (ds * befores(ss, reverse)[:, :, H:]).sum((0, 1))
    g_P = da2.t() @ outputs(ss, reverse)[:, :, H:].reshape(T * N, S) if need[4] else None
    g_R = da2.t() @ befores(ss, reverse)[:, :, :H].reshape(T * N, H) if need[5] else None
    return du if need[0] else None, dh if need[1] else None, g_s0, g_alpha, g_P, g_R


def scrn_sequence(
    cell: SCRNCell,
    xs: Tensor,
    state: SCRNState | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, SCRNState]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` (zeros if None), fused.

    Returns ``(ys (T, N, H + S), SCRNState(h_T, s_T))``, exactly ``rnnkit.scan(cell, xs, state,
    reverse=reverse, lengths=lengths, masks=masks)``, with a hand-written backward (module
    docstring; the regularizer masks, :class:`rnnkit.regularize.Masks`, and a
    layer-normalized cell's ``LN_hh(R h_{t-1})``, as ``csrc/scrn.cpp`` writes them out; its
    ``LN_ih(A x) + b`` is in ``cell.precompute``), through the op
    ``torch.ops.rnnkit.scrn_sequence`` (so torch.compile and torch.export trace it).
    """
    from ..ops import scrn as op  # (loads the ops on first use)
    (h0, s0), valid = checked(cell, SCRNCell, xs, state, lengths)
    alpha = cell.alpha  # the fixed float, or the learned (S,) tensor
    learned, fixed = (alpha, 0.0) if isinstance(alpha, Tensor) else (None, float(alpha))
    drop, zone = (None, None) if masks is None else masks[:2]
    ys, h, s = op.scrn_sequence(cell.precompute(xs), h0, s0, learned, cell.weight_P,
                                cell.weight_R, valid, fixed, bool(reverse), drop, zone,
                                *norms(cell, "hh"))
    return ys, SCRNState(h, s)
