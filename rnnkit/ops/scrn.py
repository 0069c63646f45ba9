r"""``torch.ops.rnnkit.scrn_sequence``: the SCRN recurrence over a whole sequence as one op.

.. math::
    s_t = u^s_t + \alpha \odot s_{t-1}, \qquad
    h_t = \sigma(u^h_t + P s_t + R h_{t-1}), \qquad y_t = [h_t ; s_t]

(each state carried unchanged and the output zero at a padded step) with
:math:`[u^s_t ; u^h_t] = [(1 - \alpha) B x_t ; A x_t + b]` (``cell.precompute``, outside the op,
which so also differentiates a learned :math:`\alpha = \sigma(a)` there).
``scrn_sequence(us (T, N, S + H), h0 (N, H), s0 (N, S), alpha? (S), w_P (H, S), w_R (H, H),
valid?, fixed_alpha, reverse, drop?, zone?, ln_hh?) -> (ys (T, N, H + S), h_T, s_T, ss (T + 1,
N, H + S), xn, rn, cn, rstd)``: a learned :math:`\alpha` is the tensor ``alpha``, a fixed one
the float ``fixed_alpha`` with ``alpha`` None; ``ss`` is the slot buffer of the carried
``[h ; s]`` for ``scrn_sequence_backward`` (the same content in both implementations).
``drop`` ``(N, H)`` and ``zone`` ``(T, N, H + S)``: the regularizer masks (:func:`reference`;
the compiled loop applies them, the pure-torch one computes such calls from the reference).

``ln_hh`` ``(2, H)``: layer normalization's gain :math:`\gamma` and bias :math:`\beta` of the
recurrent product, :math:`h_t = \sigma(u^h_t + P s_t + \mathrm{LN}_{hh}(R h_{t-1}))` (the
input product's ``LN_ih(A x) + b`` is in ``us``, from ``cell.precompute``, which autograd
differentiates; the context is not normalized). Its saved buffers ``xn, rn, cn, rstd``: ``rn``
``(T, N, H)`` the normalized :math:`\hat r_t` of :math:`r_t = R h_{t-1}`, row 1 of ``rstd``
``(3, T, N)`` its :math:`1/\sigma`; ``xn``, ``cn`` (``(0,)``) and ``rstd``'s rows 0 and 2
unused. Backward with it: :math:`\delta a_t` (the gradient of the sigmoid's input) as without;
:math:`\delta r_t = \mathrm{rstd}_t\,(e - \overline{e} - \hat r_t\, \overline{e \hat r_t})`,
:math:`e = \gamma \odot \delta a_t` (means over the H units), takes :math:`\delta a_t`'s place
in :math:`h_{t-1}`'s gradient (:math:`R^\top \delta r_t`) and in
:math:`\bar R = \sum_t \delta r_t h_{t-1}^\top`; :math:`\bar\gamma = \sum \delta a_t \odot
\hat r_t`, :math:`\bar\beta = \sum \delta a_t`. On the CPU the op is the compiled C++ loop
(``rnnkit/csrc/scrn.cpp``) where it built; elsewhere the pure-torch one.
Derivation and loops (the pure-torch implementation): :mod:`rnnkit.kernels.scrn`; frame,
autograd and fallback: :mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import scrn as kernel
from . import _cells, _wiring

INPUTS = "Tensor us, Tensor h0, Tensor s0, Tensor? alpha, Tensor w_P, Tensor w_R"
FLAGS = "float fixed_alpha, bool reverse"
_wiring.define("scrn_sequence", INPUTS, 2, FLAGS, ["ss"], masks=True, norms=("hh",))


def reference(us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha: float, reverse: bool, drop=None,
              zone=None, ln_hh=None):
    """``(ys, h_T, s_T)`` in differentiable torch ops (``SCRNCell.step``'s); with the
    regularizer masks, ``R (drop h_{t-1})``, and ``h_t, s_t`` zoned out by ``zone_t``'s
    ``[h | s]`` columns after the whole step (``h~`` from the unzoned ``s~``), the output
    ``[h_t ; s_t]`` of the zoned state; with layer normalization, ``LN_hh(R h_{t-1})``."""
    a = alpha if alpha is not None else fixed_alpha
    H, S = h0.shape[1], s0.shape[1]

    def step(u, h, s, d=None):
        s_new = u[:, :S] + a * s
        h_new = torch.sigmoid(u[:, S:] + F.linear(s_new, w_P)
                              + _wiring.layer_norm(F.linear(h if drop is None else h * drop, w_R),
                                                   ln_hh))
        if d is not None:
            h_new, s_new = torch.lerp(h_new, h, d[:, :H]), torch.lerp(s_new, s, d[:, H:])
        return torch.cat([h_new, s_new], dim=1), h_new, s_new

    return _cells.run(step, us, (h0, s0), valid, reverse, zone)


def _python_forward(us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha, reverse):
    a = alpha if alpha is not None else fixed_alpha
    with torch.no_grad():
        outs = kernel._forward(us, h0, s0, a, w_P, w_R, reverse, valid)
    return _cells.contiguous(outs)


def _python_backward(grad_ys, grad_h_t, grad_s_t, us, h0, s0, alpha, w_P, w_R, ss, valid,
                     fixed_alpha, reverse):
    a = alpha if alpha is not None else fixed_alpha
    with torch.no_grad():
        need = (True, True, True, alpha is not None, True, True)
        grads = kernel._backward(grad_ys, grad_h_t, grad_s_t, a, w_P, w_R, ss, reverse, valid,
                                 need)
    return _cells.gradients(grads, (us, h0, s0, alpha, w_P, w_R), us)


def _fake(us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha, reverse, drop=None, zone=None,
          ln_hh=None):
    (T, N, _), (H, S) = us.shape, w_P.shape
    return (us.new_empty(T, N, H + S), us.new_empty(N, H), us.new_empty(N, S),
            us.new_empty(T + 1, N, H + S), *_wiring.norm_fakes(us, H, 0, None, ln_hh))


def register() -> None:
    """Fakes and autograd; the pure-torch implementation on CUDA, and on the CPU where the C++
    loop (``csrc/scrn.cpp``) did not build."""
    _wiring.register("scrn_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def scrn_sequence(us: Tensor, h0: Tensor, s0: Tensor, alpha, w_P: Tensor, w_R: Tensor, valid,
                  fixed_alpha: float, reverse: bool, drop=None, zone=None,
                  ln_hh=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(ys, h_T, s_T)`` of the op (its ``ss`` is for backward only; not kept where autograd does
    not record)."""
    return _wiring.call("scrn_sequence", us, h0, s0, alpha, w_P, w_R, valid, fixed_alpha, reverse,
                        drop, zone, ln_hh)
