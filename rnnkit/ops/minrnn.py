r"""``torch.ops.rnnkit.minrnn_sequence``: minGRU and minLSTM over a whole sequence as one op,
through a parallel scan over time.

The gates read only the input, so the recurrence is linear in the state (per unit, with
:math:`u_t = W_{ih} x_t + b_{ih}` and :math:`m_t` the padding mask):

.. math::
    z_t = \sigma(k_t), \quad a_t = m_t (1 - z_t) + (1 - m_t), \quad
    b_t = m_t\, z_t\, g(v_t), \qquad h_t = a_t h_{t-1} + b_t, \qquad y_t = m_t h_t

(:math:`k_t` minGRU's :math:`k_z` or minLSTM's :math:`\mathrm{softplus}(-k_f) -
\mathrm{softplus}(-k_i)`, :math:`v_t` the candidate's block, :mod:`rnnkit.cells.minrnn`). All
:math:`a_t, b_t` are computed at once, and :func:`linear_scan` composes the affine maps
:math:`h \mapsto a_t h + b_t` pairwise (:math:`(a_1, b_1)` then :math:`(a_2, b_2)` is
:math:`(a_2 a_1, a_2 b_1 + b_2)`, associative): :math:`O(\log T)` depth and :math:`O(T)` work.

The paper computes the scan in log space (:math:`\log h_t = A_t + \mathrm{logcumsumexp}(\log
b_t - A_t)`, :math:`A = \mathrm{cumsum} \log a`). That loses precision as :math:`|A_t|` grows
with :math:`t`: measured in float32 against a float64 loop (N = 8, H = 256, gate logits
:math:`3\,\mathcal N(0, 1)`), its relative error is 2e-4 at T = 1000 and 4e-3 at T = 16384,
where the pairwise scan in linear space stays within 8e-7 absolute at every length (it only
reassociates the products a loop takes). So rnnkit scans in linear space; the products of
gates in :math:`(0, 1)` cannot overflow, and :math:`h_0` may have any sign.

``minrnn_sequence(x, h0, w_ih, b_ih?, valid?, lstm, reverse) -> (ys (T, N, H), h_T, hs
(T + 1, N, H), u (T, N, G))``: ``hs`` the carried states (slots as in
``rnnkit/csrc/recurrence.h``), ``u`` the input product, for ``minrnn_sequence_backward``. The
backward is the same scan run backwards in time,

.. math::
    \gamma_t = m_t \partial y_t + a_{t+1} \gamma_{t+1}
    \quad (\gamma_{T-1} = m_{T-1} \partial y_{T-1} + \partial h_T), \qquad
    \partial h_0 = a_0 \gamma_0,

then pointwise :math:`\partial z_t = m_t \gamma_t (g(v_t) - h_{t-1})`, :math:`\partial k_t =
\partial z_t\, z_t (1 - z_t)`, :math:`\partial v_t = m_t \gamma_t z_t g'(v_t)` (and for
minLSTM :math:`\partial k_f = -\sigma(-k_f) \partial k`, :math:`\partial k_i = \sigma(-k_i)
\partial k`), and over all steps at once :math:`\partial X = \partial U\, W_{ih}`,
:math:`\partial W_{ih} = \partial U^T X`, :math:`\partial b_{ih} = \sum_t \partial u_t`.

Two implementations. This module's, pure torch, is the parallel scan (one GEMM each way,
pointwise passes, and the scan's :math:`\log_2 T` levels of strided products, with nothing
that loops over time): what runs on CUDA, where the time axis is what is wide, and wherever
the C++ ops did not build. On the CPU ``rnnkit/csrc/minrnn.cpp`` runs: there the units (batch
rows times blocks of 64) already outnumber the cores' lanes, so it splits the units across the
threads and sweeps each block's steps in one fused pass, half the scan's work and none of its
passes over memory (``benchmarks/scan_length.py``: 3.5x faster at T = 16384). The frame every
op shares and its autograd: :mod:`rnnkit.ops._wiring`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells.minrnn import candidate, update_preactivation
from ..kernels._common import outputs, steps
from . import _wiring

INPUTS = "Tensor x, Tensor h0, Tensor w_ih, Tensor? b_ih"
_wiring.define("minrnn_sequence", INPUTS, 1, "bool lstm, bool reverse", ["hs", "u"],
               masks=True, norms=("ih",))


def linear_scan(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`h_t = a_t h_{t-1} + b_t` for every t along dim 0, from :math:`h_{-1} = 0` (fold
    an initial state into :math:`b_0`), as a parallel scan: pair the steps, compose each pair's
    maps (:math:`(a_{2i+1} a_{2i},\ a_{2i+1} b_{2i} + b_{2i+1})`), scan the T/2 pairs (which
    gives the odd steps), then the even steps from them. :math:`\log_2 T` levels, each a few
    pointwise ops over half as many steps as the last; differentiable."""
    T = a.shape[0]
    if T == 1:
        return b
    if T % 2:  # the last step from the scan of the others
        h = linear_scan(a[:-1], b[:-1])
        return torch.cat([h, torch.addcmul(b[-1:], a[-1:], h[-1:])])
    a_even, a_odd, b_even, b_odd = a[0::2], a[1::2], b[0::2], b[1::2]
    h_odd = linear_scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even))
    h_even = torch.cat([b_even[:1], torch.addcmul(b_even[1:], a_even[1:], h_odd[:-1])])
    return torch.stack([h_even, h_odd], 1).reshape(b.shape)


def linear_scan_(a: Tensor, b: Tensor) -> Tensor:
    """:func:`linear_scan` in place, for calls autograd does not record: ``b`` becomes the
    states and ``a`` is overwritten. The same pairwise composition as a Brent-Kung scan over
    strided views, without the copies: an up-sweep (level d composes each block of 2d steps
    from its two halves, at steps 2d-1, 4d-1, ...) and a down-sweep (level d completes steps
    3d-1, 5d-1, ... from the prefix d steps before), :math:`2 \\log_2 T` levels. Returns
    ``b``."""
    T, d = a.shape[0], 1
    while 2 * d <= T:
        hi, lo = slice(2 * d - 1, T, 2 * d), slice(d - 1, T - d, 2 * d)
        b[hi].addcmul_(a[hi], b[lo])
        a[hi].mul_(a[lo])
        d *= 2
    d //= 2
    while d >= 1:
        hi, lo = slice(3 * d - 1, T, 2 * d), slice(2 * d - 1, T - d, 2 * d)
        b[hi].addcmul_(a[hi], b[lo])
        d //= 2
    return b


def _coefficients(u: Tensor, H: int, lstm: bool, valid, drop=None, zone=None):
    """``(z, cand, a, b)`` of every step in time order, ``(T, N, H)`` each: the update gate,
    the candidate and the scan's coefficients (the masks and padding applied)."""
    blocks = u.split(H, dim=-1)
    z = torch.sigmoid(update_preactivation(blocks, lstm))
    cand = candidate(blocks[-1])
    a, b = 1 - z, z * (cand if drop is None else cand * drop)
    if zone is not None:  # h_t = d h_{t-1} + (1 - d) (a h_{t-1} + b)
        a, b = torch.lerp(a, torch.ones_like(a), zone), (1 - zone) * b
    if valid is not None:  # a padded step carries the state: a = 1, b = 0
        m = valid.unsqueeze(2)
        a, b = torch.where(m, a, 1.0), torch.where(m, b, 0.0)
    return z, cand, a, b


def _visit(t: Tensor, reverse: bool) -> Tensor:
    """``t`` ``(T, ...)`` in the order the direction visits the steps (and back again)."""
    return t.flip(0) if reverse else t


def _scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """The slots ``hs`` ``(T + 1, N, H)`` of the recurrence ``h = a h + b`` from ``h0``
    (differentiable where autograd records, else in place over ``a`` and a copy of ``b``)."""
    a, b = _visit(a, reverse), _visit(b, reverse)
    if not torch.is_grad_enabled():
        hs = torch.empty((a.shape[0] + 1, *a.shape[1:]), dtype=a.dtype, device=a.device)
        hs[0] = h0
        hs[1:] = b
        hs[1].addcmul_(a[0], h0)
        linear_scan_(a, hs[1:])  # (a: a temporary of this call, or a flipped copy)
        return _visit(hs, reverse)
    b = torch.cat([torch.addcmul(b[:1], a[:1], h0.unsqueeze(0)), b[1:]])
    hs = torch.cat([h0.unsqueeze(0), linear_scan(a, b)])
    return _visit(hs, reverse)


def _slots(x, h0, w_ih, b_ih, valid, lstm: bool, reverse: bool, drop=None, zone=None,
           ln_ih=None):
    """``(ys, hs, u)`` in differentiable torch ops."""
    u = _wiring.project(x, w_ih, b_ih, ln_ih)  # (T, N, G)
    _, _, a, b = _coefficients(u, h0.shape[1], lstm, valid, drop, zone)
    hs = _scan(a, b, h0, reverse)
    ys = outputs(hs, reverse)
    if valid is not None:
        ys = ys * valid.unsqueeze(2)
    return ys, hs, u


def reference(x, h0, w_ih, b_ih, valid, lstm: bool, reverse: bool, drop=None, zone=None,
              ln_ih=None):
    """``(ys, h_T)`` in differentiable torch ops (what a recorded backward differentiates)."""
    ys, hs, _ = _slots(x, h0, w_ih, b_ih, valid, lstm, reverse, drop, zone, ln_ih)
    return ys, hs[steps(x.shape[0], reverse).last]


def _python_forward(x, h0, w_ih, b_ih, valid, lstm, reverse):
    with torch.no_grad():
        ys, hs, u = _slots(x, h0, w_ih, b_ih, valid, lstm, reverse)
    # new tensors: an op's outputs may not alias one another
    return ys.clone(), hs[steps(x.shape[0], reverse).last].clone(), hs, u


def _python_backward(grad_ys, grad_h_t, x, h0, w_ih, b_ih, hs, u, valid, lstm, reverse):
    T, N, _ = x.shape
    H = h0.shape[1]
    z, cand, a, _ = _coefficients(u, H, lstm, valid)
    gy = grad_ys if valid is None else grad_ys * valid.unsqueeze(2)
    # gamma (the gradient reaching h_t) in visiting order, from the last visited step back:
    # gamma_s = gy_s + a_{s+1} gamma_{s+1}, a scan over the flipped visiting order
    a_v, gy_v = _visit(a, reverse), _visit(gy, reverse)
    c = torch.cat([gy_v[:-1], (gy_v[-1] + grad_h_t).unsqueeze(0)]).flip(0)
    alpha = torch.cat([a_v[:1], a_v[1:].flip(0)])  # (alpha_0 multiplies nothing)
    gamma = _visit(linear_scan_(alpha, c).flip(0), reverse)  # back in time order
    dh0 = _visit(a, reverse)[0] * _visit(gamma, reverse)[0]
    before = hs[1:] if reverse else hs[:-1]
    g = gamma if valid is None else gamma * valid.unsqueeze(2)
    dk = g * (cand - before) * z * (1 - z)
    v = u[..., -H:]
    sv = torch.sigmoid(v)
    dv = g * z * torch.where(v >= 0, 1.0, sv * (1 - sv))
    if lstm:
        k_f, k_i = u[..., :H], u[..., H : 2 * H]
        du = torch.cat([-torch.sigmoid(-k_f) * dk, torch.sigmoid(-k_i) * dk, dv], 2)
    else:
        du = torch.cat([dk, dv], 2)
    d2 = du.reshape(T * N, -1)
    db = d2.sum(0) if b_ih is not None else _wiring.absent(x)
    return (d2 @ w_ih).view_as(x), dh0, d2.t() @ x.reshape(T * N, -1), db


def _fake(x, h0, w_ih, b_ih, valid, lstm, reverse, drop=None, zone=None, ln_ih=None):
    T, N, H, G = x.shape[0], x.shape[1], h0.shape[1], w_ih.shape[0]
    return (x.new_empty(T, N, H), x.new_empty(N, H), x.new_empty(T + 1, N, H),
            x.new_empty(T, N, G), *_wiring.norm_fakes(x, G, 0, ln_ih, None))


def register() -> None:
    _wiring.register(
        "minrnn_sequence", reference=reference, fake=_fake,
        python_forward=_python_forward, python_backward=_python_backward)


def minrnn_sequence(x: Tensor, h0: Tensor, w_ih: Tensor, b_ih, valid, lstm: bool,
                    reverse: bool, drop=None, zone=None, ln_ih=None) -> tuple[Tensor, Tensor]:
    """``(ys, h_T)`` of the op (its ``hs`` and ``u`` are for backward only; not kept where
    autograd does not record)."""
    return _wiring.call("minrnn_sequence", x, h0, w_ih, b_ih, valid, lstm, reverse, drop, zone,
                        ln_ih)
