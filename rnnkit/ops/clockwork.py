r"""``torch.ops.rnnkit.clockwork_sequence``: the Clockwork RNN over a whole sequence as one op.

.. math::
    A_t = m_t \wedge \big(\mathrm{round}(c_{t-1}) \bmod T_{\mathrm{unit}} = 0\big), \qquad
    h_t = A_t\, \phi(u_t + b_{hh} + (W_{hh} \odot M) h_{t-1}) + (1 - A_t)\, h_{t-1},       \\
    c_t = c_{t-1} + m_t, \qquad y_t = m_t h_t

with :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, outside the op), :math:`c` the step
counter (part of the state), :math:`\phi` tanh/sigmoid/relu/identity, :math:`m_t` the padding
mask, and the unit periods :math:`T_{\mathrm{unit}}` and block upper-triangular mask :math:`M`
made from ``periods`` (``H / len(periods)`` units a module), as the cell makes its buffers.
``clockwork_sequence(us (T, N, H), h0 (N, H), t0 (N, 1), w_hh (H, H), b_hh? (H), valid?,
periods, activation, reverse, drop?, zone?, ln_hh? (2, H)) -> (ys (T, N, H), h_T, t_T (N, 1),
xs (T + 1, N, H), active (T, N, H) bool, xn, rn, cn, rstd)``: the carried-state slot buffer
and the activity mask :math:`A` (all False, unused, where every step is fast) for
``clockwork_sequence_backward``, which makes the fast steps' runs again from ``t0`` and
``valid``. ``drop`` ``(N, H)`` and ``zone`` ``(T, N, H)``: the regularizer masks
(:func:`reference`; the compiled loop applies them, the pure-torch one computes such calls from
the reference).

Two implementations. On the CPU a compiled C++ loop (``rnnkit/csrc/clockwork.cpp``: at each step
one GEMM per run of modules active in some sequence, over those rows of :math:`W_{hh} \odot M`
only, and one vectorised pass); elsewhere (CUDA, or where the C++ did not build) the pure-torch
loops of :mod:`rnnkit.kernels.clockwork` (derivation there). Same outputs and gradients; their
saved buffers differ in one point: with tanh the pure-torch ``xs`` holds :math:`\sigma = (h + 1)
/ 2` (its sigmoid trick, torch's CPU tanh being slow), the C++ ``xs`` holds :math:`h` itself
(``at::vec``'s tanh), so each backward reads only its own forward's buffers. ``active`` has the
same content in both; the C++ backward does not read it (it makes :math:`A` again from ``t0``
and ``valid``). Frame, autograd and fallback: :mod:`rnnkit.ops._wiring`.

``ln_hh``: layer normalization's gain :math:`\gamma` and bias :math:`\beta` of the recurrent
product, normalized over all H units as the cell normalizes its whole candidate,
:math:`z_t = u_t + b_{hh} + \mathrm{LN}_{hh}(r_t)`, :math:`r_t = (W_{hh} \odot M) h_{t-1}` (the
dropped :math:`h_{t-1}` with recurrent dropout; the input product's ``LN_ih(W_ih x) + b_ih`` is
in ``us``, from ``cell.precompute``, which autograd differentiates). An active module's
:math:`z` then needs the statistics of the whole row, so the compiled loop computes the whole
product at every step where some module is active in some sequence (the saving left: the steps
where none is). Its saved buffers ``xn, rn, cn, rstd``: ``rn`` ``(T, N, H)`` the normalized
:math:`\hat r_t` (zeros at the steps where no module is active), row 1 of ``rstd`` ``(3, T,
N)`` its :math:`1/\sigma`; ``xn``, ``cn`` (``(0,)``) and ``rstd``'s rows 0 and 2 unused.
Backward with it: :math:`\delta z_t` as without (so :math:`\bar u_t = \delta z_t`,
:math:`\bar b_{hh} = \sum \delta z_t`); :math:`\delta r_t = \mathrm{rstd}_t\,(e -
\overline{e} - \hat r_t\, \overline{e \hat r_t})`, :math:`e = \gamma \odot \delta z_t`
(means over the H units; zero at a row with no active module), takes :math:`\delta z_t`'s
place in :math:`h_{t-1}`'s gradient (:math:`\tilde W^\top \delta r_t`, over all the modules'
rows) and in :math:`\bar W_{hh} = M \odot \sum_t \delta r_t h_{t-1}^\top`;
:math:`\bar\gamma = \sum \delta z_t \odot \hat r_t`, :math:`\bar\beta = \sum \delta z_t`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cells.clockwork import _ACTIVATIONS
from ..kernels import clockwork as kernel
from . import _cells, _wiring

INPUTS = "Tensor us, Tensor h0, Tensor t0, Tensor w_hh, Tensor? b_hh"
FLAGS = "int[] periods, str activation, bool reverse"
_wiring.define("clockwork_sequence", INPUTS, 2, FLAGS, ["xs", "active"], masks=True,
               norms=("hh",))


def reference(us, h0, t0, w_hh, b_hh, valid, periods, activation: str, reverse: bool,
              drop=None, zone=None, ln_hh=None):
    """``(ys, h_T, t_T)`` in differentiable torch ops (``ClockworkCell.step``'s); with the
    regularizer masks, ``W~ (drop h_{t-1})`` (the resting modules keep their whole
    ``h_{t-1}``) and ``h_t = lerp(h_t, h_{t-1}, zone_t)`` (the counter is not zoned); with
    layer normalization, ``LN_hh(W~ h_{t-1}) + b_hh`` over all H units."""
    mask, unit_periods = kernel.unit_buffers(periods, h0.shape[1], us)
    phi = _ACTIVATIONS[activation]

    def step(u, h, t, d=None):
        h_in = h if drop is None else h * drop
        if ln_hh is None:
            candidate = phi(u + F.linear(h_in, w_hh * mask, b_hh))
        else:
            r = _wiring.layer_norm(F.linear(h_in, w_hh * mask), ln_hh)
            candidate = phi(u + (r if b_hh is None else r + b_hh))
        new = torch.where(torch.remainder(torch.round(t), unit_periods) == 0, candidate, h)
        if d is not None:
            new = torch.lerp(new, h, d)
        return new, new, t + 1

    return _cells.run(step, us, (h0, t0), valid, reverse, zone)


def _python_forward(us, h0, t0, w_hh, b_hh, valid, periods, activation, reverse):
    mask, unit_periods = kernel.unit_buffers(periods, h0.shape[1], us)
    with torch.no_grad():
        ys, h_t, t_t, xs_, plan = kernel._forward(us, h0, t0, w_hh, b_hh, mask, unit_periods,
                                                  periods, activation, reverse, valid)
    # (a fixed shape, as the fake's: all False where no step needs it)
    active = plan.active if plan.active is not None else xs_.new_zeros(
        xs_.shape[0] - 1, *xs_.shape[1:], dtype=torch.bool)
    return _cells.contiguous((ys, h_t, t_t, xs_, active))


def _python_backward(grad_ys, grad_h_t, grad_t_t, us, h0, t0, w_hh, b_hh, xs_, active, valid,
                     periods, activation, reverse):
    mask, unit_periods = kernel.unit_buffers(periods, h0.shape[1], us)
    with torch.no_grad():
        plan = kernel._plan(t0, unit_periods, periods, us.shape[0], reverse, valid, active)
        need = (True,) * 4 + (b_hh is not None,)
        grads = kernel._backward(grad_ys, grad_h_t, grad_t_t, w_hh, mask, xs_, plan,
                                 activation, reverse, valid, need)
    return _cells.gradients(grads, (us, h0, t0, w_hh, b_hh), us)


def _fake(us, h0, t0, w_hh, b_hh, valid, periods, activation, reverse, drop=None, zone=None,
          ln_hh=None):
    T, N, H = us.shape
    return (us.new_empty(T, N, H), us.new_empty(N, H), torch.empty_like(t0),
            us.new_empty(T + 1, N, H), us.new_empty(T, N, H, dtype=torch.bool),
            *_wiring.norm_fakes(us, H, 0, None, ln_hh))


def register() -> None:
    """Fakes, autograd, and the pure-torch implementation where no compiled one registered
    first (CUDA; the CPU when the C++ loop of ``csrc/clockwork.cpp`` did not build or
    ``RNNKIT_KERNELS=python``)."""
    _wiring.register("clockwork_sequence", reference=reference, fake=_fake,
                     python_forward=_python_forward, python_backward=_python_backward)


def clockwork_sequence(us: Tensor, h0: Tensor, t0: Tensor, w_hh: Tensor, b_hh, valid,
                       periods: list[int], activation: str, reverse: bool, drop=None,
                       zone=None, ln_hh=None) -> tuple[Tensor, Tensor, Tensor]:
    """``(ys, h_T, t_T)`` of the op (its other outputs are for backward only; not kept where
    autograd does not record)."""
    return _wiring.call("clockwork_sequence", us, h0, t0, w_hh, b_hh, valid, periods, activation,
                        reverse, drop, zone, ln_hh)
