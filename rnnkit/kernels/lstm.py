r"""Fused LSTM-family sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`lstm_sequence` computes exactly what ``rnnkit.scan(cell, xs, LSTMState(h0, c0),
reverse=..., lengths=...)`` computes for an :class:`~rnnkit.cells.LSTMCell` with any of its
options (peephole ``None``/``"diagonal"``/``"full"``, ``proj_size``, ``bias=False``, tanh or
identity activations), as one call of the registered op ``torch.ops.rnnkit.lstm_sequence``
(:mod:`rnnkit.ops.lstm`) whose backward is the back-propagation through time written out by
hand: compiled C++ (``rnnkit/csrc/lstm.cpp``) where it built, else the pure-torch loops below
(:func:`_forward`, :func:`_backward`), which compute the same.

Forward (step :math:`t`, in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks
the sequences still running, all ones without ``lengths``)

.. math::
    z_t &= \underbrace{W_{ih} x_t + b_{ih} + b_{hh}}_{u_t,\ \text{one matmul for all } t}
           + W_{hh} h_{t-1}                                   \qquad (4H:\ i, f, g, o)    \\
    i_t &= \sigma(z^i_t + P_i c_{t-1}), \quad f_t = \sigma(z^f_t + P_f c_{t-1}), \quad
    g_t = \gamma(z^g_t)                                                                    \\
    \tilde c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad
    o_t = \sigma(z^o_t + P_o \tilde c_t), \qquad k_t = \phi(\tilde c_t)                     \\
    \tilde r_t &= o_t \odot k_t, \qquad
    \tilde h_t = W_{hr} \tilde r_t \ (\text{or } \tilde r_t \text{ without projection})      \\
    c_t &= m_t \tilde c_t + (1 - m_t) c_{t-1}, \quad
    h_t = m_t \tilde h_t + (1 - m_t) h_{t-1}, \quad y_t = m_t \tilde h_t

(:math:`P c` is :math:`p \odot c` for a diagonal peephole and absent without one.)

Backward. Write :math:`\delta h_t, \delta c_t` for :math:`\partial L / \partial h_t,
\partial L / \partial c_t` of the *carried* state after step :math:`t`, starting from the
gradients of :math:`h_T, c_T`, and :math:`\bar y_t = \partial L / \partial y_t`. Going back
over the steps:

.. math::
    \delta\tilde h_t &= m_t (\bar y_t + \delta h_t), \qquad
    \delta\tilde r_t = W_{hr}^\top \delta\tilde h_t \ (\text{or } \delta\tilde h_t)          \\
    \delta z^o_t &= \delta\tilde r_t \odot k_t \odot o_t (1 - o_t)                           \\
    \delta\tilde c_t &= m_t\, \delta c_t + \delta\tilde r_t \odot o_t \odot \phi'(\tilde c_t)
                       + P_o^\top \delta z^o_t                                              \\
    \delta z^i_t &= \delta\tilde c_t \odot g_t \odot i_t (1 - i_t), \quad
    \delta z^f_t = \delta\tilde c_t \odot c_{t-1} \odot f_t (1 - f_t), \quad
    \delta z^g_t = \delta\tilde c_t \odot i_t \odot \gamma'(z^g_t)                          \\
    \delta c_{t-1} &= (1 - m_t)\, \delta c_t + \delta\tilde c_t \odot f_t
                      + P_i^\top \delta z^i_t + P_f^\top \delta z^f_t                        \\
    \delta h_{t-1} &= (1 - m_t)\, \delta h_t + W_{hh}^\top \delta z_t

with :math:`\sigma' = \sigma(1 - \sigma)`, :math:`\tanh' = 1 - \tanh^2`, identity' = 1. At a
padded step (:math:`m = 0`) the state's gradient passes straight to the previous state and the
(zero) output gets none; every :math:`\delta z` there is zero. The products of forward
quantities in these lines (:math:`g\,i(1-i)`, :math:`c_{t-1} f(1-f)`, :math:`i\gamma'`,
:math:`k\,o(1-o)`, :math:`o\phi'`) are formed for all steps at once before the loop, so a step
costs a handful of ops. The parameter gradients are then single matmuls / reductions over all
:math:`T N` rows of :math:`\delta Z = [\delta z_t]`:

.. math::
    \bar W_{ih} = \delta Z^\top X, \quad \bar W_{hh} = \delta Z^\top H_{prev}, \quad
    \bar b_{ih} = \bar b_{hh} = \textstyle\sum_{t,n} \delta z_t, \quad
    \bar X = \delta Z\, W_{ih}, \quad \bar W_{hr} = \delta\tilde H^\top \tilde R            \\
    \bar p_{i|f} = \textstyle\sum_{t,n} \delta z^{i|f}_t \odot c_{t-1}, \quad
    \bar p_o = \textstyle\sum_{t,n} \delta z^o_t \odot \tilde c_t, \quad
    \bar P_{i|f} = \delta Z^{i|f\top} C_{prev}, \quad \bar P_o = \delta Z^{o\top} \tilde C

(at padded steps :math:`\delta z = 0`, so the carried :math:`c_t` may stand in for
:math:`\tilde c_t`). Forward saves the gate activations ``(T, N, 4H)``, the carried states
``(T+1, N, H)`` and ``(T+1, N, R)`` (their slices are :math:`c_{t-1}, c_t, h_{t-1}`),
:math:`\tanh \tilde c_t` ``(T, N, H)`` if :math:`\phi` is tanh and :math:`\tilde r_t` if there is a
projection, and its inputs. A backward that autograd records (``create_graph=True``)
differentiates the op's differentiable reference instead (:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.lstm import LSTMCell, LSTMState
from ._common import Product, checked, norms

__all__ = ["lstm_sequence"]


def _forward(xs, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, peephole, tanh_g, tanh_phi,
             reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, c_T, saved)``."""
    T, N, _ = xs.shape
    H4 = w_hh.shape[0]
    H = H4 // 4
    R = w_hh.shape[1]
    # u_t = W_ih x_t + b_ih + b_hh for all t: one (T N, I) @ (I, 4H). It becomes the gate buffer.
    x2 = xs.reshape(T * N, xs.shape[2])
    if tanh_g:
        # tanh(z) = 2 sigmoid(2 z) - 1, and torch's CPU tanh costs ~4x its sigmoid: scale the
        # candidate's rows by 2 so one sigmoid_ covers the gates, then g = 2 s - 1 in place.
        scale = xs.new_ones(H4, 1)
        scale[2 * H : 3 * H] = 2
        w_ih, w_hh = w_ih * scale, w_hh * scale
    if b_ih is not None:
        b = b_ih + b_hh
        gates = torch.addmm(b * scale.view(H4) if tanh_g else b, x2, w_ih.t())
    else:
        gates = torch.mm(x2, w_ih.t())
    gates = gates.view(T, N, H4)
    hs = xs.new_empty(T + 1, N, R)  # carried h: hs[t_in] -> step -> hs[t_out]
    cs = xs.new_empty(T + 1, N, H)
    ks = xs.new_empty(T, N, H) if tanh_phi else None  # tanh(c~_t)
    rs = xs.new_empty(T, N, H) if w_hr is not None else None  # o_t * phi(c~_t) before W_hr
    if reverse:
        steps, first = range(T - 1, -1, -1), T  # step t reads slot t+1, writes slot t
    else:
        steps, first = range(T), 0  # step t reads slot t, writes slot t+1
    hs[first].copy_(h0)
    cs[first].copy_(c0)
    off_in, off_out = (1, 0) if reverse else (0, 1)
    rec = Product(w_hh, N)  # h_{t-1} W_hh^T, packed where that is faster
    w_hr_t = w_hr.t() if w_hr is not None else None
    if peephole == "diagonal":
        p_if, p_o = w_peep[: 2 * H].view(2, H), w_peep[2 * H :]
    elif peephole == "full":
        p_if_t, p_o_t = w_peep[: 2 * H].t(), w_peep[2 * H :].t()
    if valid is not None:
        all_valid = valid.all(dim=1).tolist()
        masks = valid.unsqueeze(2)  # (T, N, 1) bool
    one_sigmoid = peephole is None and tanh_g
    # A 0-dim tensor, not the Python number 1: torch wraps a number into a new tensor at every
    # op (~1.5 us each, measured), and x + x is likewise cheaper than 2 * x.
    one = torch.ones((), dtype=xs.dtype, device=xs.device)
    # Per-step views made once (unbind is one C++ call; indexing in the loop costs ~1 us a view).
    Z = gates.unbind(0)
    Zif = gates[:, :, : 2 * H].unbind(0)
    I_, F_, G_, O_ = (v.unbind(0) for v in gates.view(T, N, 4, H).unbind(2))
    Hs, Cs = hs.unbind(0), cs.unbind(0)
    Ks = ks.unbind(0) if tanh_phi else None
    Rs = rs.unbind(0) if w_hr is not None else None
    for t in steps:
        z, zif = Z[t], Zif[t]
        h_in, c_in = Hs[t + off_in], Cs[t + off_in]
        h_out, c_out = Hs[t + off_out], Cs[t + off_out]
        rec.add_(z, h_in)
        if peephole == "diagonal":
            zif.view(N, 2, H).addcmul_(c_in.unsqueeze(1), p_if)
        elif peephole == "full":
            zif.addmm_(c_in, p_if_t)
        i, f, g, o = I_[t], F_[t], G_[t], O_[t]
        if one_sigmoid:
            z.sigmoid_()  # i, f, o and the scaled candidate
        else:
            z[:, : 3 * H if tanh_g else 2 * H].sigmoid_()
        if tanh_g:
            g.add_(g).sub_(one)  # 2 s - 1
        torch.mul(f, c_in, out=c_out)
        c_out.addcmul_(i, g)  # c~_t
        if peephole == "diagonal":
            o.addcmul_(c_out, p_o)
        elif peephole == "full":
            o.addmm_(c_out, p_o_t)
        if not one_sigmoid:
            o.sigmoid_()
        if tanh_phi:  # k = tanh(c~) = 2 sigmoid(2 c~) - 1
            k = torch.add(c_out, c_out, out=Ks[t]).sigmoid_()
            k.add_(k).sub_(one)
        else:
            k = c_out
        if w_hr is None:
            torch.mul(o, k, out=h_out)
        else:
            torch.mul(o, k, out=Rs[t])
            torch.mm(Rs[t], w_hr_t, out=h_out)
        if valid is not None and not all_valid[t]:
            m = masks[t]
            torch.where(m, c_out, c_in, out=c_out)
            torch.where(m, h_out, h_in, out=h_out)
    last = 0 if reverse else T
    ys = hs[:T] if reverse else hs[1:]
    ys = ys * masks if valid is not None else ys.clone()
    saved = (gates, hs, cs, ks, rs)
    return ys, hs[last].clone(), cs[last].clone(), saved


def _backward(gy, gh_t, gc_t, xs, w_ih, w_hh, w_hr, w_peep, saved, peephole, tanh_g, tanh_phi,
              reverse, valid, need):
    """The backward pass (module docstring) without autograd: the gradients of ``xs, h0, c0,
    w_ih, w_hh, b_ih, b_hh, w_hr, w_peep`` (None where ``need`` says no); ``saved`` is what
    :func:`_forward` returned."""
    gates, hs, cs, ks, rs = saved
    T, N, H4 = gates.shape
    H = H4 // 4
    R = hs.shape[2]
    if reverse:  # step t read slot t+1 and wrote slot t; backward visits 0..T-1
        h_prev, c_prev, c_new, steps = hs[1:], cs[1:], cs[:T], range(T)
    else:
        h_prev, c_prev, c_new, steps = hs[:T], cs[:T], cs[1:], range(T - 1, -1, -1)
    g4 = gates.view(T, N, 4, H)
    i, f, g, o = g4.unbind(2)
    # Products of forward quantities, for all steps at once (see the module docstring).
    sd = torch.addcmul(gates, gates, gates, value=-1).view(T, N, 4, H)  # s (1 - s)
    a = torch.empty(T, N, 3, H, dtype=gates.dtype, device=gates.device)
    torch.mul(sd[:, :, 0], g, out=a[:, :, 0])  # g sigma'(i)
    torch.mul(sd[:, :, 1], c_prev, out=a[:, :, 1])  # c_{t-1} sigma'(f)
    if tanh_g:  # i (1 - g^2)
        torch.addcmul(i, i * g, g, value=-1, out=a[:, :, 2])
    else:
        a[:, :, 2].copy_(i)
    k = ks if tanh_phi else c_new
    b_o = k * sd[:, :, 3]  # d z^o / d r~ = k sigma'(o)
    b_c = torch.addcmul(o, o * k, k, value=-1) if tanh_phi else o  # d c~ / d r~ = o phi'
    if valid is not None:
        all_valid = valid.all(dim=1).tolist()
        mf = valid.unsqueeze(2).to(gates.dtype)  # (T, N, 1)
        nmf = 1 - mf
    w_hr_ = w_hr
    if peephole == "diagonal":
        p_i, p_f, p_o = w_peep[:H], w_peep[H : 2 * H], w_peep[2 * H :]
    elif peephole == "full":
        p_if, p_o = w_peep[: 2 * H], w_peep[2 * H :]
    # dz reuses sd's memory: a fresh buffer written step by step pays a page fault per page
    # inside the loop (measured ~2x the cost of the step's ops); sd's pages are touched.
    dz = sd.view(T, N, H4)  # (T, N, 4H)
    dys = torch.empty(T, N, R, dtype=gates.dtype, device=gates.device) if w_hr is not None \
        else None
    # per-step views, made once (see _forward)
    DZ, DZO, DZIF = dz.unbind(0), dz[:, :, 3 * H :].unbind(0), dz[:, :, : 2 * H].unbind(0)
    DZ3 = dz[:, :, : 3 * H].view(T, N, 3, H).unbind(0)
    DZI, DZF = dz[:, :, :H].unbind(0), dz[:, :, H : 2 * H].unbind(0)
    GY, BO, BC, A, Fs = gy.unbind(0), b_o.unbind(0), b_c.unbind(0), a.unbind(0), f.unbind(0)
    DYS = dys.unbind(0) if dys is not None else None
    if valid is not None:
        MF, NMF = mf.unbind(0), nmf.unbind(0)
    rec = Product(w_hh.t(), N)  # dz_t W_hh, packed where that is faster
    dh, dc = gh_t, gc_t
    for t in steps:
        padded = valid is not None and not all_valid[t]
        dzo = DZO[t]
        if w_hr_ is None:
            dr = GY[t] + dh
            if padded:
                dr.mul_(MF[t])
        else:
            dy = torch.add(GY[t], dh, out=DYS[t])
            if padded:
                dy.mul_(MF[t])
            dr = dy @ w_hr_
        torch.mul(dr, BO[t], out=dzo)
        dct = torch.addcmul(dc * MF[t] if padded else dc, dr, BC[t])
        if peephole == "diagonal":
            dct.addcmul_(dzo, p_o)
        elif peephole == "full":
            dct.addmm_(dzo, p_o)
        torch.mul(dct.unsqueeze(1), A[t], out=DZ3[t])
        dc_next = dct * Fs[t]
        if peephole == "diagonal":
            dc_next.addcmul_(DZI[t], p_i).addcmul_(DZF[t], p_f)
        elif peephole == "full":
            dc_next.addmm_(DZIF[t], p_if)
        dh_next = rec(DZ[t])
        if padded:
            dc_next.addcmul_(dc, NMF[t])
            dh_next.addcmul_(dh, NMF[t])
        dh, dc = dh_next, dc_next
    dz2 = dz.view(T * N, H4)
    g_xs = (dz2 @ w_ih).view(xs.shape) if need[0] else None
    g_w_ih = dz2.t() @ xs.reshape(T * N, xs.shape[2]) if need[3] else None
    g_w_hh = dz2.t() @ h_prev.reshape(T * N, R) if need[4] else None
    g_b = dz2.sum(0) if need[5] or need[6] else None
    g_b_ih = g_b if need[5] else None
    g_b_hh = (g_b.clone() if need[5] else g_b) if need[6] else None
    g_w_hr = None
    if w_hr is not None and need[7]:
        g_w_hr = dys.view(T * N, R).t() @ rs.view(T * N, H)
    g_peep = None
    if peephole is not None and need[8]:
        dz4 = dz.view(T, N, 4, H)
        if peephole == "diagonal":
            g_peep = torch.cat([
                (dz4[:, :, :2] * c_prev.unsqueeze(2)).sum((0, 1)).view(2 * H),
                (dz4[:, :, 3] * c_new).sum((0, 1)),
            ])
        else:
            g_peep = torch.cat([
                dz2[:, : 2 * H].t() @ c_prev.reshape(T * N, H),
                dz2[:, 3 * H :].t() @ c_new.reshape(T * N, H),
            ])
    return (g_xs, dh if need[1] else None, dc if need[2] else None, g_w_ih, g_w_hh,
            g_b_ih, g_b_hh, g_w_hr, g_peep)


def lstm_sequence(
    cell: LSTMCell,
    xs: Tensor,
    h0: Tensor,
    c0: Tensor,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``(h0 (N, R), c0 (N, H))``, fused.

    Returns ``(ys (T, N, R), h_T, c_T)``, exactly ``rnnkit.scan(cell, xs, LSTMState(h0, c0),
    reverse=reverse, lengths=lengths, masks=masks)``, with a hand-written BPTT backward (module
    docstring; the regularizer masks as ``csrc/lstm.cpp`` writes them out).
    """
    for name, s in (("h0", h0), ("c0", c0)):
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(s).__name__}")
    (h0, c0), valid = checked(cell, LSTMCell, xs, LSTMState(h0, c0), lengths)
    peephole = cell.peephole
    w_peep = cell.weight_peephole if peephole == "diagonal" else \
        cell.weight_ch if peephole == "full" else None
    args = (xs, h0, c0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
            cell.weight_hr, w_peep, peephole, cell.candidate_activation == "tanh",
            cell.cell_activation == "tanh", bool(reverse), valid)
    from .. import ops  # (loaded on first use)

    drop, zone = (None, None) if masks is None else masks[:2]
    return ops.lstm.lstm_sequence(*args[:9], valid, peephole or "none", *args[10:13], drop, zone,
                                  *norms(cell, "ih", "hh", "c"))
