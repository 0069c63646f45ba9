r"""``torch.ops.rnnkit.ctrnn_sequence``: the continuous-time RNN's Euler steps over a whole
sequence as one op.

.. math::
    a = \Delta t / \exp(\text{log\_tau}), \qquad
    \tilde h_t = (1 - a) \odot h_{t-1} + a \odot (W_{hh} \phi(h_{t-1}) + u_t), \qquad
    h_t = m_t \tilde h_t + (1 - m_t) h_{t-1}, \qquad y_t = m_t \phi(\tilde h_t)

with :math:`u_t = W_{ih} x_t + b` (``cell.precompute``, outside the op), :math:`\phi`
tanh/sigmoid/relu/identity and :math:`m_t` the padding mask; :math:`\Delta t` is the constant
``dt``, or with ``dt_input`` the last column of ``us`` (per step and sequence, so ``us`` is
``(T, N, H + 1)`` and its gradient reaches :math:`\Delta t` too).
``ctrnn_sequence(us (T, N, H[+1]), h0 (N, H), w_hh (H, H), log_tau (H), valid?, dt, dt_input,
activation, reverse, drop?, zone?) -> (ys (T, N, H), h_T, hs (T + 1, N, H), ps (T + 1, N, H),
zs (T, N, H))``: ``hs`` and ``ps`` are the slot buffers of the carried state and its activation
(``ps`` absent, ``(0,)``, for the identity), ``zs`` the ``dt_input`` loop's
:math:`z_t - h_{t-1}` (absent without it), for ``ctrnn_sequence_backward``, which reads only its
own forward's buffers. ``drop`` ``(N, H)`` and ``zone`` ``(T, N, H)``: the regularizer masks
(:func:`reference`; the compiled loop applies them, the pure-torch one computes such calls from
the reference). On the CPU the op is the compiled C++ loop (``rnnkit/csrc/ctrnn.cpp``) where it
built; its buffers hold :math:`h`, :math:`\phi(h)` and :math:`z_t - h_{t-1}` themselves. The
pure-torch loop's (CUDA, and the CPU without the build) hold the same with sigmoid, relu and
identity, but with tanh :math:`2h`, :math:`\mathrm{sigmoid}(2h)` and :math:`2 (z_t - h_{t-1})`
(its trick against torch's slow CPU tanh). Derivation and loops (the pure-torch implementation):
:mod:`rnnkit.kernels.ctrnn`; frame, autograd and fallback: :mod:`rnnkit.ops._wiring`.

Layer normalization (``layer_norm=True``): the cell's input site
:math:`\mathrm{LN}_{ih}(W_{ih} x_t) + b` is in :math:`u_t` already (``cell.precompute``); the op
normalizes the recurrent product, ``ln_hh`` ``(2, H)`` (gain :math:`g`; bias :math:`\beta`,
after the masks), and returns the saved buffers ``xn`` (``(0,)``), ``rn`` ``(T, N, H)``, ``cn``
(``(0,)``), ``rstd`` ``(3, T, N)`` (row 1 used; all four ``(0,)`` without it):

.. math::
    r_t = W_{hh} (\text{drop} \odot p_{t-1}), \qquad
    \hat r_t = (r_t - \mu(r_t)) / \sigma(r_t), \qquad
    z_t = g \odot \hat r_t + \beta + u_t, \qquad
    \tilde h_t = (1 - a) \odot h_{t-1} + a \odot z_t

Backward (``csrc/ctrnn.cpp``): with :math:`D_t = \partial L / \partial \tilde h_t` as without
it, :math:`\bar u_t = a \odot D_t` (:math:`= \partial L / \partial z_t`), and the recurrent
product takes LN's backward, :math:`\delta r_t = (e - \bar e - \hat r_t\, \overline{e \hat
r_t}) / \sigma(r_t)`, :math:`e = g \odot a \odot D_t` (bars: means over the row), in place of
:math:`a \odot D_t`: :math:`\delta h_{t-1} \mathrel{+}= \phi'(h_{t-1}) \odot \text{drop}
\odot W_{hh}^\top \delta r_t`, :math:`\bar W_{hh} = \sum_t \delta r_t (\text{drop} \odot
p_{t-1})^\top`; :math:`\bar g = \sum a D \odot \hat r`, :math:`\bar\beta = \sum a D`, and
:math:`\overline{\text{log\_tau}} = -\sum a \odot D \odot (z_t - h_{t-1})` with this
:math:`z_t` (constant :math:`a`: :math:`-\sum a D (u_t - h_{t-1}) - g \bar g - \beta \bar\beta`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.ctrnn import _ACTIVATIONS
from ..kernels import ctrnn as kernel
from . import _cells, _wiring

INPUTS = "Tensor us, Tensor h0, Tensor w_hh, Tensor log_tau"
FLAGS = "float dt, bool dt_input, str activation, bool reverse"
_wiring.define("ctrnn_sequence", INPUTS, 1, FLAGS, ["hs", "ps", "zs"], masks=True,
               norms=("hh",))


def reference(us, h0, w_hh, log_tau, valid, dt: float, dt_input: bool, activation: str,
              reverse: bool, drop=None, zone=None, ln_hh=None):
    """``(ys, h_T)`` in differentiable torch ops (``CTRNNCell.step``'s); with the regularizer
    masks, ``W_hh (drop phi(h_{t-1}))`` (the leak keeps the whole ``h_{t-1}``) and
    ``h_t = lerp(h~_t, h_{t-1}, zone_t)``, the output ``phi(h_t)`` of the zoned state; with
    layer normalization ``LN_hh(W_hh (drop phi(h_{t-1})))``."""
    phi = _ACTIVATIONS[activation]

    def step(u, h, d=None):
        drive, step_dt = (u[:, :-1], u[:, -1:]) if dt_input else (u, dt)
        alpha = step_dt / torch.exp(log_tau)
        p = phi(h) if drop is None else phi(h) * drop
        fed_back = _wiring.layer_norm(F.linear(p, w_hh), ln_hh)
        new = (1 - alpha) * h + alpha * (fed_back + drive)
        if d is not None:
            new = torch.lerp(new, h, d)
        return phi(new), new

    return _cells.run(step, us, (h0,), valid, reverse, zone)


def _python_forward(us, h0, w_hh, log_tau, valid, dt, dt_input, activation, reverse):
    with torch.no_grad():
        ys, h_t, (xs_, ys_, zs) = kernel._forward(us, h0, w_hh, log_tau, dt, dt_input,
                                                  activation, reverse, valid)
    ps = _wiring.absent(us) if ys_ is xs_ else ys_  # (two absent ones: two tensors, no alias)
    return _cells.contiguous((ys, h_t, xs_, ps, _wiring.absent(us) if zs is None else zs))


def _python_backward(grad_ys, grad_h_t, us, h0, w_hh, log_tau, hs, ps, zs, valid, dt, dt_input,
                     activation, reverse):
    ps = hs if activation == "identity" else ps
    with torch.no_grad():
        grads = kernel._backward(grad_ys, grad_h_t, us, w_hh, log_tau, hs, ps,
                                 zs if dt_input else None, dt, dt_input, activation, reverse,
                                 valid)
    return _cells.gradients(grads, (us, h0, w_hh, log_tau), us)


def _fake(us, h0, w_hh, log_tau, valid, dt, dt_input, activation, reverse, drop=None,
          zone=None, ln_hh=None):
    T, N, H = us.shape[0], us.shape[1], h0.shape[1]
    ps = us.new_empty(0) if activation == "identity" else us.new_empty(T + 1, N, H)
    zs = us.new_empty(T, N, H) if dt_input else us.new_empty(0)
    return (us.new_empty(T, N, H), us.new_empty(N, H), us.new_empty(T + 1, N, H), ps, zs,
            *_wiring.norm_fakes(us, H, 0, None, ln_hh))


def register() -> None:
    """Fakes and autograd; the pure-torch implementation on CUDA, and on the CPU where the C++
    loop (``csrc/ctrnn.cpp``) did not build."""
    _wiring.register("ctrnn_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def ctrnn_sequence(us: Tensor, h0: Tensor, w_hh: Tensor, log_tau: Tensor, valid, dt: float,
                   dt_input: bool, activation: str, reverse: bool, drop=None,
                   zone=None, ln_hh=None) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its other outputs are for backward only; not kept where autograd
    does not record)."""
    return _wiring.call("ctrnn_sequence", us, h0, w_hh, log_tau, valid, dt, dt_input, activation,
                        reverse, drop, zone, ln_hh)
