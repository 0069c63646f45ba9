r"""The persistent LSTM forward: one launch for the whole sequence, ``W_hh`` kept on chip.

For small hidden sizes a step's work is tiny and the per-step loop of :mod:`rnnkit.gpu.lstm`
pays a GEMM launch and a kernel launch for it, T times. Here (as in FlashRNN) one program per
tile of ``BN`` sequences loads the recurrent weights once, per gate :math:`W_q^\top`
``(R, H)`` (and :math:`W_{hr}^\top`, a full peephole's :math:`P_q^\top`), keeps :math:`h, c` of
its rows in registers, and loops over all T steps inside the kernel:

.. math::
    z^q = \text{gates}[t] + h W_q^\top \ (\texttt{tl.dot}), \quad
    i, f, g, \tilde c, o, k, r, \tilde h, c_t, h_t, y_t \ \text{as in}\ \texttt{rnnkit.gpu.lstm}

writing the same buffers as the per-step forward (``gates = [i, f, g, o]``, the slots ``hs``,
``cs``, ``ks``, ``rs``, ``ys``), so the backward is the per-step one. The sequences of a batch
are independent, so the programs never synchronise.

On chip: compiled for sm_80/sm_90, the weights are staged into shared memory once, before the
step loop (68 KiB for H = R = 64), and each step's ``tl.dot`` reads them from there; in float32
at ``ieee`` precision the products are FMA, not tensor-core, instructions. A card with less
shared memory refuses the launch (``OutOfResources``); the forward then runs the step loop.

Shapes: ``tl.dot`` wants every side at least 16, so the tiles are ``BN = 16`` rows and
``BH, BR`` = H, R rounded up to a power of two (at least 16); the padding is zeros (masked
loads), which the recurrence keeps at zero (padded units: i = f = o = 1/2, g = 0, so c = 0 and
r = 0). Products are ``input_precision="ieee"``: float32 as cuBLAS computes it (no TF32).

Used (see :func:`fits`) where the padded weights fit :data:`BUDGET` float32 elements (64 KiB:
``4 H R`` for ``W_hh``, ``H R`` more with a projection, ``3 H^2`` with a full peephole), i.e.
H = R <= 64 for the plain LSTM, on CUDA, for float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import sigmoid, tanh

ENABLED = True  # False: the LSTM forward always runs the per-step loop (benchmarks compare)
BUDGET = 16384  # recurrent weight elements kept on chip (64 KiB of float32)
BN = 16  # sequences per program (tl.dot's smallest side)
REFUSED: set = set()  # key()s whose launch a card refused (OutOfResources): the step loop runs


@triton.jit
def _lstm(z, w_hh, w_hr, p, hs, cs, ks, rs, ys, valid, T, N, H, R, REVERSE: tl.constexpr,
          PEEP: tl.constexpr, TANH_G: tl.constexpr, TANH_PHI: tl.constexpr, PROJ: tl.constexpr,
          MASKED: tl.constexpr, BN: tl.constexpr, BH: tl.constexpr, BR: tl.constexpr):
    """All T steps for rows ``[BN * pid, BN * (pid + 1))``. ``z`` ``(T, N, 4H)``: the input
    projections (bias included), overwritten with ``[i, f, g, o]``; ``w_hh`` ``(4H, R)``,
    ``w_hr`` ``(R, H)``, ``p`` ``(3H,)`` or ``(3H, H)``; ``hs``/``cs`` ``(T + 1, N, R|H)`` hold
    the initial state in their first slot; ``valid`` ``(T, N)`` bytes."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    ch = tl.arange(0, BH)
    cr = tl.arange(0, BR)
    row_in = rows < N
    in_h = row_in[:, None] & (ch[None, :] < H)  # (BN, BH)
    in_r = row_in[:, None] & (cr[None, :] < R)  # (BN, BR)
    # W_q^T (BR, BH): element [k, j] is w_hh[q H + j, k]; loaded once, zeros outside (R, H)
    w_at = ch[None, :] * R + cr[:, None]
    w_in = (cr[:, None] < R) & (ch[None, :] < H)
    w_i = tl.load(w_hh + w_at, mask=w_in, other=0.0)
    w_f = tl.load(w_hh + H * R + w_at, mask=w_in, other=0.0)
    w_g = tl.load(w_hh + 2 * H * R + w_at, mask=w_in, other=0.0)
    w_o = tl.load(w_hh + 3 * H * R + w_at, mask=w_in, other=0.0)
    if PROJ:  # W_hr^T (BH, BR): [j, k] is w_hr[k, j]
        w_r = tl.load(w_hr + cr[None, :] * H + ch[:, None],
                      mask=(ch[:, None] < H) & (cr[None, :] < R), other=0.0)
    if PEEP == 1:  # diagonal: (1, BH) rows
        p_i = tl.load(p + ch, mask=ch < H, other=0.0)[None, :]
        p_f = tl.load(p + H + ch, mask=ch < H, other=0.0)[None, :]
        p_o = tl.load(p + 2 * H + ch, mask=ch < H, other=0.0)[None, :]
    if PEEP == 2:  # full: P_q^T (BH, BH), [a, j] is p[q H + j, a]
        p_at = ch[None, :] * H + ch[:, None]
        p_in = (ch[:, None] < H) & (ch[None, :] < H)
        p_i = tl.load(p + p_at, mask=p_in, other=0.0)
        p_f = tl.load(p + H * H + p_at, mask=p_in, other=0.0)
        p_o = tl.load(p + 2 * H * H + p_at, mask=p_in, other=0.0)
    if REVERSE:
        first = T
    else:
        first = 0
    h = tl.load(hs + first * N * R + rows[:, None] * R + cr[None, :], mask=in_r, other=0.0)
    c = tl.load(cs + first * N * H + rows[:, None] * H + ch[None, :], mask=in_h, other=0.0)
    for s in range(T):
        if REVERSE:
            t = T - 1 - s
            s_out = t
        else:
            t = s
            s_out = s + 1
        zt = z + t * N * 4 * H + rows[:, None] * (4 * H) + ch[None, :]
        z_i = tl.load(zt, mask=in_h, other=0.0) + tl.dot(h, w_i, input_precision="ieee")
        z_f = tl.load(zt + H, mask=in_h, other=0.0) + tl.dot(h, w_f, input_precision="ieee")
        g = tl.load(zt + 2 * H, mask=in_h, other=0.0) + tl.dot(h, w_g, input_precision="ieee")
        z_o = tl.load(zt + 3 * H, mask=in_h, other=0.0) + tl.dot(h, w_o, input_precision="ieee")
        if PEEP == 1:
            z_i += p_i * c
            z_f += p_f * c
        if PEEP == 2:
            z_i += tl.dot(c, p_i, input_precision="ieee")
            z_f += tl.dot(c, p_f, input_precision="ieee")
        i = sigmoid(z_i)
        f = sigmoid(z_f)
        if TANH_G:
            g = tanh(g)
        c_new = f * c + i * g
        if PEEP == 1:
            z_o += p_o * c_new
        if PEEP == 2:
            z_o += tl.dot(c_new, p_o, input_precision="ieee")
        o = sigmoid(z_o)
        if TANH_PHI:
            k = tanh(c_new)
        else:
            k = c_new
        tl.store(zt, i, mask=in_h)
        tl.store(zt + H, f, mask=in_h)
        tl.store(zt + 2 * H, g, mask=in_h)
        tl.store(zt + 3 * H, o, mask=in_h)
        at_h = t * N * H + rows[:, None] * H + ch[None, :]
        if TANH_PHI:
            tl.store(ks + at_h, k, mask=in_h)
        if PROJ:
            tl.store(rs + at_h, o * k, mask=in_h)
            h_new = tl.dot(o * k, w_r, input_precision="ieee")  # (BN, BR)
        else:
            h_new = o * k  # R == H, BR == BH
        if MASKED:
            m = (tl.load(valid + t * N + rows, mask=row_in, other=0) != 0)[:, None]
            c = tl.where(m, c_new, c)
            h = tl.where(m, h_new, h)
            y = tl.where(m, h_new, 0.0)
        else:
            c = c_new
            h = h_new
            y = h_new
        tl.store(ys + t * N * R + rows[:, None] * R + cr[None, :], y, mask=in_r)
        tl.store(hs + s_out * N * R + rows[:, None] * R + cr[None, :], h, mask=in_r)
        tl.store(cs + s_out * N * H + rows[:, None] * H + ch[None, :], c, mask=in_h)


def blocks(H: int, R: int) -> tuple[int, int]:
    """``(BH, BR)``: H and R rounded up to a power of two, at least 16 (``tl.dot``)."""
    return max(16, triton.next_power_of_2(H)), max(16, triton.next_power_of_2(R))


def on_chip(H: int, R: int, proj: bool, peephole: str) -> int:
    """How many weight elements a program holds: the padded ``W_hh`` (and ``W_hr``, ``P``)."""
    BH, BR = blocks(H, R)
    return 4 * BR * BH + (BH * BR if proj else 0) + (3 * BH * BH if peephole == "full" else 0)


def fits(T: int, N: int, w_hh, w_hr, peephole: str, dtype) -> bool:
    """Whether the weights fit :data:`BUDGET` (counted in bytes of float32 elements) and the
    buffers the kernel's 32-bit offsets (:func:`small_enough`)."""
    H, R = w_hh.shape[0] // 4, w_hh.shape[1]
    size = torch.empty(0, dtype=dtype).element_size()
    return (on_chip(H, R, w_hr is not None, peephole) * size <= BUDGET * 4
            and small_enough(T, N, H, R))


def small_enough(T: int, N: int, H: int, R: int) -> bool:
    """Whether every offset into the ``(T + 1, N, .)`` buffers fits 32 bits."""
    return (T + 1) * N * max(4 * H, R) < 2**31


def key(x, w_hh, w_hr, peephole: str) -> tuple:
    """What decides the kernel's resources: its sizes, variant and card."""
    return (x.device, x.dtype, tuple(w_hh.shape), w_hr is not None, peephole)


def warps(H: int, R: int, proj: bool, peep: int) -> int:
    """Warps per program: 8 for the largest weights (fewer registers per thread), else 4."""
    return 4 if on_chip(H, R, proj, "full" if peep == 2 else "none") <= 8192 else 8


def lstm_forward(gates, w_hh, w_hr, wp, hs, cs, ks, rs, ys, valid, peep: int, tanh_g: bool,
                 tanh_phi: bool, reverse: bool) -> None:
    """Run :func:`_lstm` over every step, writing ``gates, hs, cs, ks, rs, ys`` in place (the
    buffers :func:`rnnkit.gpu.lstm.forward` made; the first slots hold h0, c0)."""
    T, N, H4 = gates.shape
    H, R = H4 // 4, w_hh.shape[1]
    if N == 0:
        return
    if not small_enough(T, N, H, R):
        raise ValueError("rnnkit.gpu: the sequence is too large for the persistent kernel's "
                         "32-bit offsets")
    BH, BR = blocks(H, R)
    proj = w_hr is not None
    mask = valid.contiguous().view(torch.uint8) if valid is not None else gates
    _lstm[(triton.cdiv(N, BN),)](
        gates, w_hh.contiguous(), w_hr.contiguous() if proj else gates,
        wp if wp is not None else gates, hs, cs, ks if tanh_phi else gates,
        rs if proj else gates, ys, mask, T, N, H, R, REVERSE=reverse, PEEP=peep, TANH_G=tanh_g,
        TANH_PHI=tanh_phi, PROJ=proj, MASKED=valid is not None, BN=BN, BH=BH, BR=BR,
        num_warps=warps(H, R, proj, peep))
