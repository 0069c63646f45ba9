"""The references of the cell ops (jordan, fully, clockwork, scrn, ctrnn): a cell's step written
in plain torch ops, run over the steps as :func:`rnnkit.scan` runs it (padding masked the same
way). Differentiable to any order: it is what a recorded backward (``create_graph=True``)
differentiates (:mod:`rnnkit.ops._wiring`). Ops take tensors and scalars only, so the step is a
function of tensors, not a cell."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..kernels._common import steps


def run(step: Callable, us: Tensor, state: tuple, valid: Tensor | None, reverse: bool) -> tuple:
    """``(ys, *final state)`` of ``step(u_t, *state) -> (y_t, *new state)`` over ``us``
    ``(T, N, G)`` from ``state`` (a tuple of ``(N, S)`` tensors); ``valid`` a ``(T, N)`` bool
    mask (None: every step counts): at a padded step the output is zero and the state carried,
    as in ``scan``."""
    T = us.shape[0]
    u = us.unbind(0)  # (not us[t]: see rnnkit.functional.scan_steps)
    ys: list = [None] * T
    for t in steps(T, reverse).order:
        y, *new = step(u[t], *state)
        if valid is not None:
            m = valid[t].unsqueeze(1)  # (N, 1)
            y = torch.where(m, y, y.new_zeros(()))
            new = [torch.where(m, a, b) for a, b in zip(new, state, strict=True)]
        ys[t], state = y, tuple(new)
    return (torch.stack(ys), *state)
