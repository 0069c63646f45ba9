"""Fused sequence kernels: whole-sequence forward and hand-derived BPTT backward.

Each kernel computes exactly what :func:`rnnkit.scan` computes for one cell type, as one
``torch.autograd.Function`` (no autograd graph per step). See ``rnnkit/kernels/lstm.py``.
:func:`fused_scan` is ``scan``'s signature over them: layers call it where a kernel exists.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..cells.lstm import LSTMCell, LSTMState
from .lstm import LSTMSequence, lstm_sequence


def _lstm(cell: LSTMCell, xs: Tensor, state, *, reverse: bool, lengths) -> tuple:
    if state is None:
        state = cell.init_state(xs.shape[1], device=xs.device, dtype=xs.dtype)
    ys, h, c = lstm_sequence(cell, xs, *state, reverse=reverse, lengths=lengths)
    return ys, LSTMState(h, c)


_KERNELS: dict[type, Callable] = {LSTMCell: _lstm}


def fused_scan(cell) -> Callable | None:
    """``f(cell, xs, state, *, reverse, lengths) -> (ys, final_state)``, equal to
    :func:`rnnkit.scan` for ``cell``, or None where no fused kernel covers its type."""
    return _KERNELS.get(type(cell))


__all__ = ["LSTMSequence", "fused_scan", "lstm_sequence"]
