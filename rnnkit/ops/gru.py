r"""``torch.ops.rnnkit.gru_sequence``: torch.nn.GRU's recurrence over a whole sequence as one op.

.. math::
    r_t = \sigma(u^r_t + g^r_t), \quad z_t = \sigma(u^z_t + g^z_t), \quad
    n_t = \tanh(u^n_t + r_t \odot g^n_t), \quad
    h_t = m_t (n_t + z_t \odot (h_{t-1} - n_t)) + (1 - m_t) h_{t-1}

with :math:`u_t = W_{ih} x_t + b_{ih}`, :math:`g_t = W_{hh} h_{t-1} + b_{hh}` (gate order r, z,
n) and :math:`m_t` the padding mask. ``gru_sequence(x, h0, w_ih, w_hh, b_ih?, b_hh?, valid?,
reverse) -> (ys, h_T, hs (T + 1, N, H), gs = [r, z, g^n] (T, N, 3H), ns = n (T, N, H))``; the
backward's derivation is in ``csrc/gru.cpp`` (and ``rnnkit/kernels/gru.py``, whose loops are
the pure-torch implementation). Frame, autograd and fallback: :mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import gru as kernel
from ..kernels._common import steps
from . import _wiring

INPUTS = "Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh"
_wiring.define("gru_sequence", INPUTS, 1, "bool reverse", ["hs", "gs", "ns"], masks=True,
               norms=("ih", "hh"))


def reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse: bool, drop=None, zone=None,
              ln_ih=None, ln_hh=None):
    """``(ys, h_T)`` in differentiable torch ops (what a recorded backward differentiates);
    with the regularizer masks, ``g_t = W_hh (drop h_{t-1}) + b_hh`` and
    ``h_t = lerp(h~_t, h_{t-1}, zone_t)``; with layer normalization, ``u_t = LN_ih(W_ih x_t) +
    b_ih`` and ``g_t = LN_hh(W_hh h_{t-1}) + b_hh`` (over all 3H)."""
    T = x.shape[0]
    u_r, u_z, u_n = _wiring.project(x, w_ih, b_ih, ln_ih).chunk(3, dim=2)
    h, ys = h0, [None] * T
    for t in steps(T, reverse).order:
        g_r, g_z, g_n = _wiring.project(h if drop is None else h * drop, w_hh, b_hh,
                                        ln_hh).chunk(3, dim=1)
        r, z = torch.sigmoid(u_r[t] + g_r), torch.sigmoid(u_z[t] + g_z)
        n = torch.tanh(u_n[t] + r * g_n)
        new = n + z * (h - n)
        if zone is not None:
            new = torch.lerp(new, h, zone[t])
        if valid is not None:
            m = valid[t].unsqueeze(1)
            ys[t], h = new * m, torch.where(m, new, h)
        else:
            ys[t], h = new, new
    return torch.stack(ys), h


def _python_forward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse):
    with torch.no_grad():
        ys, h_t, (gs, ns, hs) = kernel._forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, valid)
    return ys, h_t, hs, gs, ns


def _python_backward(grad_ys, grad_h_t, x, h0, w_ih, w_hh, b_ih, b_hh, hs, gs, ns, valid,
                     reverse):
    with torch.no_grad():
        need = (True, True, True, True, b_ih is not None, b_hh is not None)
        grads = kernel._backward(grad_ys, grad_h_t, x, w_ih, w_hh, gs, ns, hs, valid, reverse,
                                 need)
    return tuple(g if g is not None else _wiring.absent(x) for g in grads)


def _fake(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse, drop=None, zone=None, ln_ih=None,
          ln_hh=None):
    T, N, H = x.shape[0], x.shape[1], h0.shape[1]
    return (x.new_empty(T, N, H), x.new_empty(N, H), x.new_empty(T + 1, N, H),
            x.new_empty(T, N, 3 * H), x.new_empty(T, N, H),
            *_wiring.norm_fakes(x, 3 * H, 0, ln_ih, ln_hh))


def register() -> None:
    _wiring.register("gru_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def gru_sequence(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih, b_hh, valid,
                 reverse: bool, drop=None, zone=None, ln_ih=None,
                 ln_hh=None) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its other outputs are for backward only; not kept where
    autograd does not record)."""
    return _wiring.call("gru_sequence", x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse, drop,
                        zone, ln_ih, ln_hh)
