r"""Fused Clockwork RNN sequence kernel: one forward loop, hand-derived BPTT backward.

:func:`clockwork_sequence` computes exactly what ``rnnkit.scan(cell, xs, state, reverse=...,
lengths=...)`` computes for a :class:`~rnnkit.cells.ClockworkCell` (any periods, tanh / sigmoid /
ReLU / identity, ``bias=False``), as one registered op, ``torch.ops.rnnkit.clockwork_sequence``
(:mod:`rnnkit.ops.clockwork`, whose pure-torch implementation is this module's loops), over the
precomputed input projection :math:`u_t = W_{ih} x_t + b_{ih}` (``cell.precompute``, left to
autograd).

Forward (step :math:`t` in the order the scan visits them; :math:`m_t \in \{0, 1\}^N` marks the
sequences still running, all ones without ``lengths``). The counter advances only at valid steps,
so the counter before step :math:`t` is :math:`c_t = t_0 + k_t`, :math:`k_t` the number of valid
steps visited before it, and the whole activity mask is known before the loop:

.. math::
    A_t &= m_t \wedge \big(\mathrm{round}(c_t) \bmod T_{\mathrm{unit}} = 0\big)
           \qquad (N, H) \\
    z_t &= u_t + b_{hh} + \tilde W h_{t-1}, \qquad \tilde W = W_{hh} \odot M
           \quad (M \text{ the block upper-triangular mask}) \\
    h_t &= A_t\, \phi(z_t) + (1 - A_t)\, h_{t-1}, \qquad y_t = m_t h_t, \qquad
    t_T = t_0 + \textstyle\sum_t m_t

(:math:`k_t` is an exact integer count, added to :math:`t_0` once, where ``scan`` adds 1 at each
step: the same numbers for any integer or half-integer :math:`t_0`, and in general up to rounding
in :math:`t_0`'s last bit.)

Fast steps (the paper's saving). Where every sequence runs at step :math:`t` and all have the same
counter (a batch-uniform :math:`t_0`, checked once on the host, and no padding at that step: the
usual training case) the active modules are known on the host. Module :math:`k` reads only the
modules :math:`j \ge k` (:math:`T_j \ge T_k`), so a run of consecutive active modules occupying
units :math:`[l, r)` needs just :math:`z[:, l{:}r] = u[:, l{:}r] + b + h_{t-1}[:, l{:}]
\tilde W[l{:}r, l{:}]^\top`, and an inactive run is copied. With periods
:math:`1, 2, 4, \dots` the active modules are a prefix, so a step is one smaller ``addmm``, the
activation in place and one copy; on average under half of :math:`W` is used. Other steps use the
full computation with ``torch.where`` on :math:`A_t`.

tanh. Torch's CPU tanh costs several times its sigmoid, so with tanh the carried state is
:math:`\sigma = (h + 1) / 2`: :math:`\tanh z = 2 \mathrm{sigmoid}(2 z) - 1` gives
:math:`\sigma_t = A_t\, \mathrm{sigmoid}\big(2 (u_t + b - \tilde W 1) + 4 \tilde W \sigma_{t-1}\big)
+ (1 - A_t)\, \sigma_{t-1}` (the same ops a step), and :math:`h = 2\sigma - 1` for all steps
after the loop.

Backward. :math:`e_t` is the gradient of the carried :math:`h_t` including its output,
:math:`e_t = \delta h_t + m_t \bar y_t` (starting with :math:`\delta h_T = \bar h_T`); going back
over the steps

.. math::
    \delta z_t = e_t \odot A_t\, \phi'(h_t), \qquad
    e_{t-1} = m_{t-1} \bar y_{t-1} + (1 - A_t)\, e_t + \tilde W^\top \delta z_t

(:math:`\phi'` from the output: :math:`1 - h^2`, :math:`h (1 - h)`, :math:`[h > 0]`, 1 — at an
active unit :math:`h_t = \phi(z_t)`), the fast steps again only over the active runs (the
inactive units' :math:`e` passes straight through). :math:`A_t \phi'(h_t)` and
:math:`m_t \bar y_t` are formed for all steps before the loop. Then, over all :math:`T N` rows,

.. math::
    \bar u_t = \delta z_t, \quad \bar W_{hh} = M \odot \textstyle\sum_t \delta z_t h_{t-1}^\top,
    \quad \bar b_{hh} = \textstyle\sum_{t,n} \delta z_t, \quad \bar h_0 = e_0 - m_0 \bar y_0
    \ (\text{the } e \text{ left after the loop}), \quad \bar t_0 = \bar t_T

(round has zero derivative and :math:`t \to t + 1` is the identity, so the counter's gradient
passes straight through). Forward saves the carried-state slot buffer ``(T + 1, N, H)``, the
activity mask (where a step is not fast) and its inputs; backward makes the fast steps' runs
again from them (on the host, cheap). A
backward that autograd records (``create_graph=True``) differentiates the op's reference (the
cell's step in plain torch ops) instead (:mod:`rnnkit.ops._wiring`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ..cells.clockwork import ClockworkCell, ClockworkState
from ._common import (
    befores,
    checked,
    norms,
    outputs,
    partial_steps,
    steps,
)

__all__ = ["clockwork_sequence", "unit_buffers"]

_INPLACE = {"tanh": torch.sigmoid_, "sigmoid": torch.sigmoid_, "relu": torch.relu_,
            "identity": None}


class _Plan(NamedTuple):
    """What the host knows before the loop (see :func:`_plan`)."""

    runs: list  # per step: None (a full step) or its runs (lo, hi, active) of units
    active: Tensor | None  # (T, N, H) bool A_t, where some step is not fast
    n_valid: Tensor | None  # (N,) valid steps of each sequence (None: all T)


def _plan(t0, unit_periods, periods, T, reverse, valid, active=None) -> _Plan:
    """What the host knows before the loop. ``active``: the ``(T, N, H)`` activity mask made
    for these arguments before (the forward's, passed to backward), not made again."""
    N, H = t0.shape[0], unit_periods.shape[0]
    B = H // len(periods)
    dtype, device = t0.dtype, t0.device
    vcpu = valid.cpu() if valid is not None else None  # one sync, like partial_steps
    partial = partial_steps(vcpu, T)
    # k[t, n]: the valid steps visited before step t (exact integers, on the host)
    if vcpu is None:
        k = torch.arange(T).unsqueeze(1)
        k = k.flip(0) if reverse else k
        n_valid = None
    else:
        v = vcpu.to(torch.int64)
        k = v.flip(0).cumsum(0).flip(0) - v if reverse else v.cumsum(0) - v
        n_valid = v.sum(0)
    t0c = t0.detach().cpu().view(N)  # one sync
    uniform = N > 0 and bool((t0c == t0c[0]).all())
    same = (k == k[:, :1]).all(1).tolist()
    fast = [uniform and s and not p for s, p in zip(same, partial, strict=True)]
    runs: list = [None] * T
    if any(fast):
        c = t0c[0] + k[:, 0].to(dtype)  # (T,) the batch's counter, as the device computes it
        act = torch.remainder(torch.round(c).unsqueeze(1),
                              torch.tensor(periods, dtype=dtype)) == 0  # (T, g)
        for t, row in enumerate(act.tolist()):
            if fast[t]:
                rs, lo = [], 0
                for j in range(1, len(row) + 1):
                    if j == len(row) or row[j] != row[lo]:
                        rs.append((lo * B, j * B, row[lo]))
                        lo = j
                runs[t] = rs
    if all(fast):
        active = None
    elif active is None:
        cnt = t0.detach().unsqueeze(0) + k.to(device=device, dtype=dtype).unsqueeze(2)
        active = torch.remainder(torch.round(cnt), unit_periods) == 0  # (T, N, H)
        if valid is not None:
            active &= valid.unsqueeze(2)
    return _Plan(runs, active, n_valid)


def _views(cache: dict, key, make):
    v = cache.get(key)
    if v is None:
        v = cache[key] = make()
    return v


def _forward(us, h0, t0, w_hh, b_hh, mask, unit_periods, periods, activation, reverse, valid):
    """The forward pass without autograd. Returns ``(ys, h_T, t_T, xs_, plan)``, ``xs_`` the
    slot buffer ``(T + 1, N, H)`` of the carried state (``(h + 1) / 2`` with tanh)."""
    T, N, H = us.shape
    st = steps(T, reverse)
    plan = _plan(t0, unit_periods, periods, T, reverse, valid)
    tanh = activation == "tanh"
    act_ = _INPLACE[activation]
    w = w_hh * mask
    if tanh:
        # sigma-space: 2 z = 2 (u + b - W~ 1) + 4 W~ sigma
        ub = us - w.sum(1) if b_hh is None else us + (b_hh - w.sum(1))
        ub = ub.add_(ub)
        w = w * 4
    else:
        ub = us if b_hh is None else us + b_hh
    wt = w.t()
    xs_ = us.new_empty(T + 1, N, H)
    if tanh:
        torch.add(h0, 1, out=xs_[st.first]).mul_(0.5)
    else:
        xs_[st.first].copy_(h0)
    X, U = xs_.unbind(0), ub.unbind(0)
    off_in, off_out = st.off_in, st.off_out
    cache: dict = {}
    A = plan.active.unbind(0) if plan.active is not None else None
    for t in st.order:
        x_in, x_out = X[t + off_in], X[t + off_out]
        rs = plan.runs[t]
        if rs is None:  # the full step
            torch.addmm(U[t], x_in, wt, out=x_out)
            if act_ is not None:
                act_(x_out)
            torch.where(A[t], x_out, x_in, out=x_out)
            continue
        for lo, hi, on in rs:
            if on:
                xin = _views(cache, ("in", lo), lambda lo=lo: xs_[:, :, lo:].unbind(0))
                u_v, o_v = _views(cache, ("uo", lo, hi), lambda lo=lo, hi=hi: (
                    ub[:, :, lo:hi].unbind(0), xs_[:, :, lo:hi].unbind(0)))
                w_v = _views(cache, ("w", lo, hi), lambda lo=lo, hi=hi: wt[lo:, lo:hi])
                z = torch.addmm(u_v[t], xin[t + off_in], w_v, out=o_v[t + off_out])
                if act_ is not None:
                    act_(z)
            else:
                o_v = _views(cache, ("o", lo, hi), lambda lo=lo, hi=hi: xs_[:, :, lo:hi].unbind(0))
                o_v[t + off_out].copy_(o_v[t + off_in])
    ys = outputs(xs_, reverse)
    if tanh:  # h = 2 sigma - 1, one op
        minus_one = us.new_full((), -1.0)
        ys = torch.add(minus_one, ys, alpha=2)
        h_t = torch.add(minus_one, xs_[st.last], alpha=2)
    else:
        ys = ys.clone() if valid is None else ys
        h_t = xs_[st.last].clone()
    if valid is not None:
        ys = ys * valid.unsqueeze(2)
    if plan.n_valid is None:
        t_t = t0 + T
    else:
        t_t = t0 + plan.n_valid.to(device=t0.device, dtype=t0.dtype).unsqueeze(1)
    return ys, h_t, t_t, xs_, plan


def _phi_prime(h: Tensor, activation: str) -> Tensor:
    """phi'(z) from h = phi(z), for sigmoid, relu and identity."""
    if activation == "sigmoid":
        return torch.addcmul(h, h, h, value=-1)
    if activation == "relu":
        return (h > 0).to(h.dtype)
    return torch.ones_like(h)


def _backward(gy, gh_t, gt_t, w_hh, mask, xs_, plan, activation, reverse, valid,
              need=(True,) * 5):
    """The backward pass (module docstring) without autograd: the gradients of ``us, h0, t0,
    w_hh, b_hh`` (None where ``need`` says no), from the forward's slot buffer ``xs_`` and its
    ``plan`` (:func:`_plan` of the same arguments gives it again)."""
    T, N, H = gy.shape
    st = steps(T, reverse)
    tanh = activation == "tanh"
    w = w_hh * mask
    if tanh:  # 1 - h^2 = 4 sigma (1 - sigma)
        sig = outputs(xs_, reverse)
        q = torch.addcmul(sig, sig, sig, value=-1).mul_(4)
    else:
        q = _phi_prime(outputs(xs_, reverse), activation)  # (T, N, H)
    active = plan.active
    if active is not None:
        q.mul_(active)
        na = (~active).to(q.dtype)
        NA = na.unbind(0)
    gy = gy * valid.unsqueeze(2) if valid is not None else gy
    dz = torch.zeros_like(q)
    DZ, Q, GY = dz.unbind(0), q.unbind(0), gy.unbind(0)
    zero = gy.new_zeros(N, H)
    back = list(st.back)
    e = gh_t + GY[back[0]]
    cache: dict = {}
    for i, t in enumerate(back):
        base = GY[back[i + 1]] if i + 1 < T else zero
        rs = plan.runs[t]
        if rs is None:  # the full step
            d = torch.mul(e, Q[t], out=DZ[t])
            out = torch.addmm(base, d, w)
            out.addcmul_(e, NA[t])
            e = out
            continue
        out = None
        for lo, hi, on in rs:
            if on:
                d_v, q_v = _views(cache, ("dq", lo, hi), lambda lo=lo, hi=hi: (
                    dz[:, :, lo:hi].unbind(0), q[:, :, lo:hi].unbind(0)))
                w_v = _views(cache, ("w", lo, hi), lambda lo=lo, hi=hi: w[lo:hi, lo:])
                d = torch.mul(e[:, lo:hi], q_v[t], out=d_v[t])
                if lo == 0:
                    out = torch.addmm(base, d, w_v)
                else:
                    out[:, lo:].addmm_(d, w_v)
            elif lo == 0 and hi == H:  # nothing active
                out = base + e
            elif lo == 0:
                out = base.clone()
                out[:, :hi].add_(e[:, :hi])
            else:
                out[:, lo:hi].add_(e[:, lo:hi])
        e = out
    dz2 = dz.view(T * N, H)
    g_w = None
    if need[3]:
        g_w = dz2.t() @ befores(xs_, reverse).reshape(T * N, H)
        if tanh:  # h = 2 sigma - 1
            g_w.add_(g_w).sub_(dz2.sum(0).unsqueeze(1))
        g_w.mul_(mask)
    g_b = dz2.sum(0) if need[4] else None
    return (dz if need[0] else None, e if need[1] else None,
            gt_t.clone() if need[2] else None, g_w, g_b)


def unit_buffers(periods, H: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(mask (H, H), unit_periods (H,))`` of a :class:`~rnnkit.cells.ClockworkCell` with
    these ``periods`` and ``H`` units (its buffers, which the op builds from ``periods``), in
    ``like``'s dtype and device. Made once per configuration (~30 us each time otherwise, twice
    a training step); read only."""
    return _unit_buffers(tuple(periods), H, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _unit_buffers(periods: tuple, H: int, dtype, device) -> tuple[Tensor, Tensor]:
    if H % len(periods):
        raise ValueError(f"periods: expected as many modules as divide H = {H} into equal "
                         f"ones, got {len(periods)} ({list(periods)!r})")
    unit_periods = torch.tensor(periods, dtype=dtype).repeat_interleave(
        H // len(periods)).to(device)
    mask = (unit_periods.unsqueeze(0) >= unit_periods.unsqueeze(1)).to(dtype)
    return mask, unit_periods


def clockwork_sequence(
    cell: ClockworkCell,
    xs: Tensor,
    state: ClockworkState | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, ClockworkState]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` (zeros if None), fused.

    Returns ``(ys (T, N, H), ClockworkState(h_T, t_T))``, exactly ``rnnkit.scan(cell, xs,
    state, reverse=reverse, lengths=lengths, masks=masks)``, with a hand-written BPTT backward
    (module docstring; the regularizer masks, :class:`rnnkit.regularize.Masks`, and a
    layer-normalized cell's ``LN_hh(W~ h_{t-1})``, as ``csrc/clockwork.cpp`` writes them out;
    its ``LN_ih(W_ih x) + b_ih`` is in ``cell.precompute``), through the op
    ``torch.ops.rnnkit.clockwork_sequence`` (so torch.compile and torch.export trace it).
    """
    from ..ops import clockwork as op  # (loads the ops on first use)
    state, valid = checked(cell, ClockworkCell, xs, state, lengths)
    h0, t0 = state
    drop, zone = (None, None) if masks is None else masks[:2]
    ys, h_t, t_t = op.clockwork_sequence(cell.precompute(xs), h0, t0, cell.weight_hh,
                                         cell.bias_hh, valid, list(cell.periods),
                                         cell.activation, bool(reverse), drop, zone,
                                         *norms(cell, "hh"))
    return ys, ClockworkState(h_t, t_t)
