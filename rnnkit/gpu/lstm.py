r"""``lstm_sequence`` and its backward on the GPU: cuBLAS GEMMs and one Triton kernel a step
(two for a full peephole), or for small hidden sizes the persistent kernel of
:mod:`rnnkit.gpu.persistent` (forward only; the backward is always the per-step loop below).

The equations are the op's (``rnnkit/csrc/lstm.cpp``; gate order i, f, g, o; :math:`P c` is
:math:`p \odot c` for a diagonal peephole, a matrix product for a full one):

.. math::
    z_t &= W_{ih} x_t + b_{ih} + b_{hh} + W_{hh} h_{t-1}, \quad
    i = \sigma(z^i + P_i c_{t-1}), \quad f = \sigma(z^f + P_f c_{t-1}), \quad g = \gamma(z^g) \\
    \tilde c &= f c_{t-1} + i g, \quad o = \sigma(z^o + P_o \tilde c), \quad k = \phi(\tilde c),
    \quad r = o k, \quad \tilde h = W_{hr} r \ (\text{or } r)                              \\
    c_t &= m_t \tilde c + (1 - m_t) c_{t-1}, \quad h_t = m_t \tilde h + (1 - m_t) h_{t-1},
    \quad y_t = m_t \tilde h

Forward, a step: ``addmm_`` of :math:`h_{t-1} W_{hh}^\top` into ``gates[t]`` (which holds the
input projection of every step, one GEMM before the loop), then :func:`_step`. A full peephole
adds :math:`c_{t-1} P_{if}^\top` by ``addmm_`` before it and splits it in two around
:math:`\tilde c P_o^\top`; a projection writes :math:`r` and ends with the GEMM
:math:`r W_{hr}^\top` (plus :func:`~rnnkit.gpu.common.masked_outputs` for a padded batch).
Saved, as on the CPU: ``gates = [i, f, g, o]`` ``(T, N, 4H)``, the slots ``hs`` ``(T + 1, N, R)``
and ``cs`` ``(T + 1, N, H)``, ``ks = k`` ``(T, N, H)`` when :math:`\phi` is tanh and ``rs = r``
``(T, N, H)`` with a projection (``(0,)`` tensors otherwise).

Backward, going back from :math:`\delta h, \delta c` (the final states' gradients), with
:math:`e = m_t (\bar y_t + \delta h)` and :math:`\delta r = W_{hr}^\top e` (or :math:`e`):

.. math::
    \delta z^o &= \delta r\, k\, o (1 - o), \quad
    \delta \tilde c = m_t \delta c + \delta r\, o\, \phi'(\tilde c) + P_o^\top \delta z^o   \\
    \delta z^i &= \delta \tilde c\, g\, i (1 - i), \quad
    \delta z^f = \delta \tilde c\, c_{t-1} f (1 - f), \quad
    \delta z^g = \delta \tilde c\, i\, \gamma'(z^g)                                        \\
    \delta c_{t-1} &= (1 - m_t) \delta c + \delta \tilde c f + P_i^\top \delta z^i
    + P_f^\top \delta z^f, \quad \delta h_{t-1} = (1 - m_t) \delta h + W_{hh}^\top \delta z

A step is :func:`_step_back` and the ``addmm_`` of :math:`\delta z W_{hh}`; a projection first
forms :math:`e` (:func:`~rnnkit.gpu.common.split_gradient`) and :math:`e W_{hr}`; a full
peephole splits the kernel around :math:`\delta z^o P_o` and adds :math:`\delta z^{if} P_{if}`
after it. Then over all :math:`T N` rows: :math:`\bar X = \delta Z W_{ih}`, :math:`\bar W_{ih} =
\delta Z^\top X`, :math:`\bar W_{hh} = \delta Z^\top H_{prev}`, :math:`\bar b = \sum \delta z`,
:math:`\bar W_{hr} = E^\top R`, and the peephole's from :math:`\delta z^{i,f}` with
:math:`c_{t-1}` and :math:`\delta z^o` with :math:`\tilde c`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kernels._common import outputs, steps
from . import common, persistent
from .common import absent, counts, sigmoid, tanh, tile

_PEEP = {"none": 0, "diagonal": 1, "full": 2}
BOTH, GATES, OUT = 0, 1, 2  # which part of a step a kernel computes (a full peephole splits it)
# the same, for the kernels (a global that a kernel reads must be a constexpr)
_GATES: tl.constexpr = tl.constexpr(GATES)
_OUT: tl.constexpr = tl.constexpr(OUT)


@triton.jit
def _step(z, c_in, c_out, h_in, h_out, k_out, r_out, y, valid, p, N, H,
          PEEP: tl.constexpr, PART: tl.constexpr, TANH_G: tl.constexpr, TANH_PHI: tl.constexpr,
          PROJ: tl.constexpr, MASKED: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr):
    """A forward step over ``(N, H)``. ``z`` ``(N, 4H)`` holds the step's pre-activations (plus
    :math:`c_{t-1} P_{if}^\\top` with a full peephole) and is left holding ``[i, f, g, o]``.
    ``PART``: BOTH; GATES (i, f, g and c~ into ``c_out``, for a full peephole, whose caller then
    adds c~ P_o^T to z^o); OUT (o, k, r, c_t, h_t, y_t from the c~ in ``c_out``). ``p``: the
    diagonal peephole ``(3H,)``. With ``PROJ``, r goes to ``r_out`` (the caller projects it);
    without, h_t and y_t are written here. ``PEEP``: 0 none, 1 diagonal, 2 full (``_PEEP``)."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    zt = z + rows[:, None] * (4 * H) + cols[None, :]
    c_prev = tl.load(c_in + at, mask=inside, other=0.0)
    if PART != _OUT:
        z_i = tl.load(zt, mask=inside, other=0.0)
        z_f = tl.load(zt + H, mask=inside, other=0.0)
        g = tl.load(zt + 2 * H, mask=inside, other=0.0)
        if PEEP == 1:
            z_i += tl.load(p + cols, mask=cols < H, other=0.0)[None, :] * c_prev
            z_f += tl.load(p + H + cols, mask=cols < H, other=0.0)[None, :] * c_prev
        i = sigmoid(z_i)
        f = sigmoid(z_f)
        if TANH_G:
            g = tanh(g)
        c = f * c_prev + i * g
        tl.store(zt, i, mask=inside)
        tl.store(zt + H, f, mask=inside)
        tl.store(zt + 2 * H, g, mask=inside)
    else:
        c = tl.load(c_out + at, mask=inside, other=0.0)
    if PART == _GATES:
        tl.store(c_out + at, c, mask=inside)
    else:
        z_o = tl.load(zt + 3 * H, mask=inside, other=0.0)
        if PEEP == 1:
            z_o += tl.load(p + 2 * H + cols, mask=cols < H, other=0.0)[None, :] * c
        o = sigmoid(z_o)
        k = tanh(c) if TANH_PHI else c
        tl.store(zt + 3 * H, o, mask=inside)
        if TANH_PHI:
            tl.store(k_out + at, k, mask=inside)
        m = counts(valid, rows, N, MASKED)
        tl.store(c_out + at, tl.where(m, c, c_prev), mask=inside)
        if PROJ:
            tl.store(r_out + at, o * k, mask=inside)
        else:
            h_prev = tl.load(h_in + at, mask=inside, other=0.0)
            tl.store(h_out + at, tl.where(m, o * k, h_prev), mask=inside)
            tl.store(y + at, tl.where(m, o * k, 0.0), mask=inside)


@triton.jit
def _step_back(gz, c_in, c_new, k_in, gy, dh, dc, dr, dz, dct, dc_next, dh_next, valid, p,
               N, H, PEEP: tl.constexpr, PART: tl.constexpr, TANH_G: tl.constexpr,
               TANH_PHI: tl.constexpr, PROJ: tl.constexpr, MASKED: tl.constexpr,
               BN: tl.constexpr, BH: tl.constexpr):
    """A backward step over ``(N, H)``: ``dz`` ``(N, 4H)``, ``dc_next`` and (without a
    projection) the carried part of ``dh_next``, from the saved ``gz = [i, f, g, o]``, ``c_in``
    (c_{t-1}), ``c_new`` (c~, read for k when phi is the identity), ``k_in`` and the incoming
    ``dh``, ``dc`` (and ``dr = e W_hr`` with a projection). ``PART``: BOTH; OUT (dz^o and dc~
    into ``dct``, for a full peephole, whose caller adds dz^o P_o); GATES (the rest, from the
    dc~ in ``dct``). A padded row: dz = 0, dc and dh carried."""
    rows, cols, inside = tile(N, H, BN, BH)
    at = rows[:, None] * H + cols[None, :]
    zt = gz + rows[:, None] * (4 * H) + cols[None, :]
    dzt = dz + rows[:, None] * (4 * H) + cols[None, :]
    m = counts(valid, rows, N, MASKED)
    dc_in = tl.load(dc + at, mask=inside, other=0.0)
    if PART != _GATES:
        if PROJ:
            d_r = tl.load(dr + at, mask=inside, other=0.0)  # e W_hr, e already masked
        else:
            d_r = tl.where(m, tl.load(gy + at, mask=inside, other=0.0)
                           + tl.load(dh + at, mask=inside, other=0.0), 0.0)
        o = tl.load(zt + 3 * H, mask=inside, other=0.0)
        if TANH_PHI:
            k = tl.load(k_in + at, mask=inside, other=0.0)
            d_c = dc_in + d_r * o * (1.0 - k * k)
        else:
            k = tl.load(c_new + at, mask=inside, other=0.0)
            d_c = dc_in + d_r * o
        dz_o = d_r * k * o * (1.0 - o)
        if PEEP == 1:
            d_c += tl.load(p + 2 * H + cols, mask=cols < H, other=0.0)[None, :] * dz_o
        tl.store(dzt + 3 * H, tl.where(m, dz_o, 0.0), mask=inside)
    else:
        d_c = tl.load(dct + at, mask=inside, other=0.0)
    if PART == _OUT:
        tl.store(dct + at, tl.where(m, d_c, 0.0), mask=inside)
    else:
        i = tl.load(zt, mask=inside, other=0.0)
        f = tl.load(zt + H, mask=inside, other=0.0)
        g = tl.load(zt + 2 * H, mask=inside, other=0.0)
        dz_i = d_c * g * i * (1.0 - i)
        dz_f = d_c * tl.load(c_in + at, mask=inside, other=0.0) * f * (1.0 - f)
        dz_g = d_c * i * (1.0 - g * g) if TANH_G else d_c * i
        d_prev = d_c * f
        if PEEP == 1:
            d_prev += tl.load(p + cols, mask=cols < H, other=0.0)[None, :] * dz_i
            d_prev += tl.load(p + H + cols, mask=cols < H, other=0.0)[None, :] * dz_f
        tl.store(dzt, tl.where(m, dz_i, 0.0), mask=inside)
        tl.store(dzt + H, tl.where(m, dz_f, 0.0), mask=inside)
        tl.store(dzt + 2 * H, tl.where(m, dz_g, 0.0), mask=inside)
        tl.store(dc_next + at, tl.where(m, d_prev, dc_in), mask=inside)
        if not PROJ:
            tl.store(dh_next + at, tl.where(m, 0.0, tl.load(dh + at, mask=inside, other=0.0)),
                     mask=inside)


def use_persistent(x, w_hh, w_hr, peephole: str) -> bool:
    """Whether :func:`forward` runs the persistent kernel: on CUDA, float32, its weights on chip
    (:func:`rnnkit.gpu.persistent.fits`), unless ``rnnkit.gpu.persistent.ENABLED`` is False or
    the card refused it before (too little shared memory)."""
    return (persistent.ENABLED and x.is_cuda and x.dtype == torch.float32
            and persistent.fits(x.shape[0], x.shape[1], w_hh, w_hr, peephole, x.dtype)
            and persistent.key(x, w_hh, w_hr, peephole) not in persistent.REFUSED)


@common.on_their_device
def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole: str,
            tanh_g: bool, tanh_phi: bool, reverse: bool, *, persistent_kernel: bool | None = None):
    """The op: ``(ys (T, N, R), h_T, c_T, gates, hs, cs, ks, rs)``. ``persistent_kernel``: None
    picks (:func:`use_persistent`), True/False forces the persistent kernel or the step loop."""
    common.check("lstm_sequence", x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep)
    if peephole not in _PEEP:
        raise ValueError(f"peephole: expected none, diagonal or full, got {peephole!r}")
    if peephole != "none" and w_peep is None:
        raise ValueError(f"w_peep: required by peephole {peephole}")
    T, N, I = x.shape
    H, R = w_hh.shape[0] // 4, w_hh.shape[1]
    proj = w_hr is not None
    st = steps(T, reverse)
    x2 = x.reshape(T * N, I)
    bias = b_ih + b_hh if b_ih is not None and b_hh is not None else \
        b_ih if b_ih is not None else b_hh
    # (T, N, 4H): every step's input projection now, each step's activated gates after it
    gates = (torch.addmm(bias, x2, w_ih.t()) if bias is not None
             else torch.mm(x2, w_ih.t())).view(T, N, 4 * H)
    hs = x.new_empty(T + 1, N, R)
    cs = x.new_empty(T + 1, N, H)
    ks = x.new_empty(T, N, H) if tanh_phi else absent(x)
    rs = x.new_empty(T, N, H) if proj else absent(x)
    hs[st.first].copy_(h0)
    cs[st.first].copy_(c0)
    ys = x.new_empty(T, N, R)
    wp = w_peep.contiguous() if w_peep is not None else None
    chosen = persistent_kernel is None
    if chosen:
        persistent_kernel = use_persistent(x, w_hh, w_hr, peephole)
    if persistent_kernel:
        try:
            persistent.lstm_forward(gates, w_hh, w_hr, wp, hs, cs, ks, rs, ys, valid,
                                    _PEEP[peephole], tanh_g, tanh_phi, reverse)
            return ys, hs[st.last].clone(), cs[st.last].clone(), gates, hs, cs, ks, rs
        except triton.runtime.errors.OutOfResources:
            # a card with less shared memory than the kernel asks for (it fails when loaded,
            # before it runs, so the buffers are untouched): the step loop, from now on
            if not chosen:
                raise
            persistent.REFUSED.add(persistent.key(x, w_hh, w_hr, peephole))
    masks = common.step_masks(valid, T, N)
    w_t = w_hh.t()
    p_if_t = wp[: 2 * H].t() if peephole == "full" else None  # c_{t-1} P_if^T
    p_o_t = wp[2 * H :].t() if peephole == "full" else None  # c~ P_o^T
    w_hr_t = w_hr.t() if proj else None
    grid, BN, BH = common.geometry(N, H)
    z_sl, h_sl, c_sl, y_sl = gates.unbind(0), hs.unbind(0), cs.unbind(0), ys.unbind(0)
    k_sl = ks.unbind(0) if tanh_phi else None
    r_sl = rs.unbind(0) if proj else None
    flags = dict(PEEP=_PEEP[peephole], TANH_G=tanh_g, TANH_PHI=tanh_phi, PROJ=proj,
                 MASKED=masks is not None, BN=BN, BH=BH)
    for t in st.order:
        s_in, s_out = t + st.off_in, t + st.off_out
        z_t = z_sl[t]
        z_t.addmm_(h_sl[s_in], w_t)
        args = (z_t, c_sl[s_in], c_sl[s_out], h_sl[s_in], h_sl[s_out],
                k_sl[t] if tanh_phi else z_t, r_sl[t] if proj else z_t, y_sl[t],
                masks[t] if masks else z_t, wp if peephole == "diagonal" else z_t, N, H)
        if peephole == "full":
            z_t[:, : 2 * H].addmm_(c_sl[s_in], p_if_t)
            _step[grid](*args, PART=GATES, **flags)
            z_t[:, 3 * H :].addmm_(c_sl[s_out], p_o_t)  # c_sl[s_out] holds c~ here
            _step[grid](*args, PART=OUT, **flags)
        else:
            _step[grid](*args, PART=BOTH, **flags)
        if proj:
            torch.mm(r_sl[t], w_hr_t, out=h_sl[s_out])  # h~ = W_hr r
            if masks is not None:
                common.masked_outputs(h_sl[s_out], h_sl[s_in], y_sl[t], masks[t])
    if proj and masks is None:
        ys.copy_(outputs(hs, reverse))
    return ys, hs[st.last].clone(), cs[st.last].clone(), gates, hs, cs, ks, rs


@common.on_their_device
def backward(grad_ys, grad_h_t, grad_c_t, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep,
             gates, hs, cs, ks, rs, valid, peephole: str, tanh_g: bool, tanh_phi: bool,
             reverse: bool):
    """The backward op: the gradients of ``x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep``
    (``(0,)`` for the absent ones)."""
    common.check("lstm_sequence_backward", x, grad_ys, grad_h_t, grad_c_t, w_ih, w_hh, w_hr,
                 w_peep, gates, hs, cs)
    T, N, I = x.shape
    H, R = w_hh.shape[0] // 4, w_hh.shape[1]
    proj = w_hr is not None
    st = steps(T, reverse)
    masks = common.step_masks(valid, T, N)
    gy, gz, hs, cs = (a.contiguous() for a in (grad_ys, gates, hs, cs))
    ks = ks.contiguous() if tanh_phi else None
    rs = rs.contiguous() if proj else None
    wp = w_peep.contiguous() if w_peep is not None else None
    dz = x.new_empty(T, N, 4 * H)
    es = x.new_empty(T, N, R) if proj else None  # e_t = m (dy + dh): against W_hr
    dr = x.new_empty(N, H) if proj else None
    dct = x.new_empty(N, H) if peephole == "full" else None
    dh, dh_next = x.new_empty(N, R), x.new_empty(N, R)
    dc, dc_next = x.new_empty(N, H), x.new_empty(N, H)
    dh.copy_(grad_h_t)
    dc.copy_(grad_c_t)
    p_o = wp[2 * H :] if peephole == "full" else None
    p_if = wp[: 2 * H] if peephole == "full" else None
    grid, BN, BH = common.geometry(N, H)
    z_sl, c_sl, y_sl, dz_sl = gz.unbind(0), cs.unbind(0), gy.unbind(0), dz.unbind(0)
    k_sl = ks.unbind(0) if tanh_phi else None
    e_sl = es.unbind(0) if proj else None
    flags = dict(PEEP=_PEEP[peephole], TANH_G=tanh_g, TANH_PHI=tanh_phi, PROJ=proj,
                 MASKED=masks is not None, BN=BN, BH=BH)
    for t in st.back:
        s_in, s_out = t + st.off_in, t + st.off_out
        if proj:  # e = m (dy + dh), dh_next = (1 - m) dh; then dr = e W_hr
            common.split_gradient(y_sl[t], dh, e_sl[t], dh_next, masks[t] if masks else None)
            torch.mm(e_sl[t], w_hr, out=dr)
        dz_t = dz_sl[t]
        args = (z_sl[t], c_sl[s_in], c_sl[s_out], k_sl[t] if tanh_phi else dz_t, y_sl[t], dh,
                dc, dr if proj else dz_t, dz_t, dct if dct is not None else dz_t, dc_next,
                dh_next, masks[t] if masks else dz_t, wp if peephole == "diagonal" else dz_t,
                N, H)
        if peephole == "full":
            _step_back[grid](*args, PART=OUT, **flags)
            dct.addmm_(dz_t[:, 3 * H :], p_o)  # dc~ += dz^o P_o
            _step_back[grid](*args, PART=GATES, **flags)
            dc_next.addmm_(dz_t[:, : 2 * H], p_if)  # dc_{t-1} += dz^{if} P_if
        else:
            _step_back[grid](*args, PART=BOTH, **flags)
        dh_next.addmm_(dz_t, w_hh)  # dh_{t-1} = (1 - m) dh + dz W_hh
        dh, dh_next = dh_next, dh
        dc, dc_next = dc_next, dc
    dz2 = dz.view(T * N, 4 * H)
    h_prev = hs[st.off_in : st.off_in + T].reshape(T * N, R)
    c_prev = cs[st.off_in : st.off_in + T]
    c_new = cs[st.off_out : st.off_out + T]  # c~ where dz counts (a padded row's dz is 0)
    db = dz2.sum(0) if b_ih is not None or b_hh is not None else None
    if peephole == "diagonal":
        dz4 = dz.view(T, N, 4, H)
        d_peep = torch.cat([(dz4[:, :, :2] * c_prev.unsqueeze(2)).sum((0, 1)).view(2 * H),
                            (dz4[:, :, 3] * c_new).sum((0, 1))])
    elif peephole == "full":
        d_peep = torch.cat([torch.mm(dz2[:, : 2 * H].t(), c_prev.reshape(T * N, H)),
                            torch.mm(dz2[:, 3 * H :].t(), c_new.reshape(T * N, H))])
    else:
        d_peep = absent(x)
    return (torch.mm(dz2, w_ih).view(T, N, I), dh, dc, torch.mm(dz2.t(), x.reshape(T * N, I)),
            torch.mm(dz2.t(), h_prev),
            db if b_ih is not None else absent(x),
            (db.clone() if b_ih is not None else db) if b_hh is not None else absent(x),
            torch.mm(es.view(T * N, R).t(), rs.view(T * N, H)) if proj else absent(x),
            d_peep)
