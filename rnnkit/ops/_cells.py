"""What the cell ops (clockwork, ctrnn, fully, jordan, scrn) share in their pure-torch
implementations (the fallback of their C++ loops, and what runs on CUDA).

Their references: a cell's step written in plain torch ops, run over the steps as
:func:`rnnkit.scan` runs it (padding masked the same way), differentiable to any order: what a
recorded backward (``create_graph=True``) differentiates (:mod:`rnnkit.ops._wiring`). Ops take
tensors and scalars only, so the step is a function of tensors, not a cell.

Their outputs' layout: the kernels' loops return some results as windows of wider buffers,
where the fakes (what torch.compile plans with, and checks at run time) say new tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..kernels._common import steps


def run(step: Callable, us: Tensor, state: tuple, valid: Tensor | None, reverse: bool,
        zone: Tensor | None = None) -> tuple:
    """``(ys, *final state)`` of ``step(u_t, *state) -> (y_t, *new state)`` over ``us``
    ``(T, N, G)`` from ``state`` (a tuple of ``(N, S)`` tensors); ``valid`` a ``(T, N)`` bool
    mask (None: every step counts): at a padded step the output is zero and the state carried,
    as in ``scan``. With ``zone`` ``(T, N, S)`` (zoneout weights) each step is called as
    ``step(u_t, *state, d=zone_t)``."""
    T = us.shape[0]
    u = us.unbind(0)  # (not us[t]: see rnnkit.functional.scan_steps)
    d = None if zone is None else zone.unbind(0)
    ys: list = [None] * T
    for t in steps(T, reverse).order:
        y, *new = step(u[t], *state) if d is None else step(u[t], *state, d=d[t])
        if valid is not None:
            m = valid[t].unsqueeze(1)  # (N, 1)
            y = torch.where(m, y, y.new_zeros(()))
            new = [torch.where(m, a, b) for a, b in zip(new, state, strict=True)]
        ys[t], state = y, tuple(new)
    return (torch.stack(ys), *state)


def contiguous(outputs) -> tuple:
    """A forward's outputs as the fakes make them (``new_empty``: contiguous)."""
    return tuple(o.contiguous() for o in outputs)


def gradients(grads, inputs, like: Tensor) -> tuple:
    """A backward's gradients as the frame's fake makes them: laid out as
    ``torch.empty_like(input)``, and ``(0,)`` (:func:`~rnnkit.ops._wiring.absent`) for an absent
    input or a None gradient."""
    out = []
    for g, t in zip(grads, inputs, strict=True):
        if g is None or t is None:
            out.append(like.new_empty(0))
        elif g.stride() == t.stride():
            out.append(g)
        else:
            want = torch.empty_like(t)
            out.append(g if g.stride() == want.stride() else want.copy_(g))
    return tuple(out)
