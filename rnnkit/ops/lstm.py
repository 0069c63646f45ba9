r"""``torch.ops.rnnkit.lstm_sequence``: the LSTM family's recurrence over a sequence as one op.

.. math::
    z_t &= W_{ih} x_t + b_{ih} + b_{hh} + W_{hh} h_{t-1}  \qquad (4H:\ i, f, g, o)         \\
    i_t &= \sigma(z^i_t + P_i c_{t-1}), \quad f_t = \sigma(z^f_t + P_f c_{t-1}), \quad
    g_t = \gamma(z^g_t), \quad \tilde c_t = f_t c_{t-1} + i_t g_t                           \\
    o_t &= \sigma(z^o_t + P_o \tilde c_t), \quad
    \tilde h_t = W_{hr} (o_t \odot \phi(\tilde c_t)) \ (\text{or without } W_{hr})          \\
    c_t &= m_t \tilde c_t + (1 - m_t) c_{t-1}, \quad h_t = m_t \tilde h_t + (1 - m_t) h_{t-1},
    \quad y_t = m_t \tilde h_t

(:math:`P c` is :math:`p \odot c` for a diagonal peephole, a matrix product for a full one,
absent without; :math:`\gamma, \phi` tanh or identity; :math:`m_t` the padding mask). With
layer normalization (``ln_ih, ln_hh, ln_c``, :mod:`rnnkit.ops._wiring`),
:math:`z_t = LN_{ih}(W_{ih} x_t) + LN_{hh}(W_{hh} h_{t-1}) + b` and
:math:`\tilde h_t = o_t \odot \phi(LN_c(\tilde c_t))` (the backward in ``csrc/lstm.cpp``).

``lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih?, b_hh?, w_hr?, w_peep?, valid?, peephole,
tanh_candidate, tanh_cell, reverse) -> (ys (T, N, R), h_T, c_T, gates, hs, cs, ks, rs)``;
``peephole`` is ``"none"``, ``"diagonal"`` (``w_peep`` ``(3H,)``) or ``"full"`` (``(3H, H)``).
The last five outputs are for the backward, whose derivation is in ``rnnkit/kernels/lstm.py``
(whose loops are the pure-torch implementation) and ``csrc/lstm.cpp``. Frame, autograd and
fallback: :mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import lstm as kernel
from ..kernels._common import steps
from . import _wiring

INPUTS = ("Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
          "Tensor? w_hr, Tensor? w_peep")
FLAGS = "str peephole, bool tanh_candidate, bool tanh_cell, bool reverse"
_wiring.define("lstm_sequence", INPUTS, 2, FLAGS, ["gates", "hs", "cs", "ks", "rs"], masks=True,
               norms=("ih", "hh", "c"))


def _peep(c: Tensor, p: Tensor, peephole: str) -> Tensor:
    return p * c if peephole == "diagonal" else c @ p.t()


def reference(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole: str,
              tanh_g: bool, tanh_phi: bool, reverse: bool, drop=None, zone=None, ln_ih=None,
              ln_hh=None, ln_c=None):
    """``(ys, h_T, c_T)`` in differentiable torch ops (what a recorded backward differentiates);
    with the regularizer masks, ``W_hh (drop h_{t-1})``, and ``h_t, c_t`` zoned out by
    ``zone_t``'s ``[h | c]`` columns (``h~`` from the unzoned ``c~``); with layer
    normalization, ``LN_ih(W_ih x_t) + LN_hh(W_hh h_{t-1}) + b`` and ``phi(LN_c(c~))``."""
    T = x.shape[0]
    if ln_ih is None:
        u = torch.nn.functional.linear(x, w_ih, b_ih)
    else:
        u = _wiring.layer_norm(x @ w_ih.t(), ln_ih) + (0 if b_ih is None else b_ih)
    if b_hh is not None:
        u = u + b_hh
    if peephole != "none":
        p_i, p_f, p_o = w_peep.chunk(3)
    h, c, ys = h0, c0, [None] * T
    for t in steps(T, reverse).order:
        h_in = h if drop is None else h * drop
        z = torch.addmm(u[t], h_in, w_hh.t()) if ln_hh is None else \
            u[t] + _wiring.layer_norm(h_in @ w_hh.t(), ln_hh)
        z_i, z_f, z_g, z_o = z.chunk(4, dim=1)
        if peephole != "none":
            z_i, z_f = z_i + _peep(c, p_i, peephole), z_f + _peep(c, p_f, peephole)
        g = torch.tanh(z_g) if tanh_g else z_g
        c_new = torch.sigmoid(z_f) * c + torch.sigmoid(z_i) * g
        if peephole != "none":
            z_o = z_o + _peep(c_new, p_o, peephole)
        k = _wiring.layer_norm(c_new, ln_c)
        h_new = torch.sigmoid(z_o) * (torch.tanh(k) if tanh_phi else k)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if zone is not None:
            R = h.shape[1]
            h_new = torch.lerp(h_new, h, zone[t][:, :R])
            c_new = torch.lerp(c_new, c, zone[t][:, R:])
        if valid is not None:
            m = valid[t].unsqueeze(1)
            ys[t], h, c = h_new * m, torch.where(m, h_new, h), torch.where(m, c_new, c)
        else:
            ys[t], h, c = h_new, h_new, c_new
    return torch.stack(ys), h, c


def _python_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole, tanh_g,
                    tanh_phi, reverse):
    with torch.no_grad():
        ys, h_t, c_t, saved = kernel._forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep,
            None if peephole == "none" else peephole, tanh_g, tanh_phi, reverse, valid)
    return ys, h_t, c_t, *(s if s is not None else _wiring.absent(x) for s in saved)


def _python_backward(grad_ys, grad_h_t, grad_c_t, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                     w_peep, gates, hs, cs, ks, rs, valid, peephole, tanh_g, tanh_phi, reverse):
    need = (True, True, True, True, True, b_ih is not None, b_hh is not None,
            w_hr is not None, w_peep is not None)
    saved = (gates, hs, cs, ks if tanh_phi else None, rs if w_hr is not None else None)
    with torch.no_grad():
        grads = kernel._backward(
            grad_ys.contiguous(), grad_h_t, grad_c_t, x, w_ih, w_hh, w_hr, w_peep, saved,
            None if peephole == "none" else peephole, tanh_g, tanh_phi, reverse, valid, need)
    return tuple(g if g is not None else _wiring.absent(x) for g in grads)


def _fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole, tanh_g, tanh_phi,
          reverse, drop=None, zone=None, ln_ih=None, ln_hh=None, ln_c=None):
    T, N, R, H = x.shape[0], x.shape[1], h0.shape[1], c0.shape[1]
    return (x.new_empty(T, N, R), x.new_empty(N, R), x.new_empty(N, H),
            x.new_empty(T, N, 4 * H), x.new_empty(T + 1, N, R), x.new_empty(T + 1, N, H),
            x.new_empty(T, N, H) if tanh_phi else _wiring.absent(x),
            x.new_empty(T, N, H) if w_hr is not None else _wiring.absent(x),
            *_wiring.norm_fakes(x, 4 * H, H, ln_ih, ln_hh, ln_c))


def register() -> None:
    _wiring.register("lstm_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh,
                  w_hr, w_peep, valid, peephole: str, tanh_g: bool, tanh_phi: bool,
                  reverse: bool, drop=None, zone=None, ln_ih=None, ln_hh=None,
                  ln_c=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(ys, h_T, c_T)`` of the op (its other outputs are for backward only; not kept where
    autograd does not record)."""
    return _wiring.call("lstm_sequence", x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid,
                        peephole, tanh_g, tanh_phi, reverse, drop, zone, ln_ih, ln_hh, ln_c)
