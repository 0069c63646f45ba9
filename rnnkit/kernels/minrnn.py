"""minGRU and minLSTM sequences through the registered op ``torch.ops.rnnkit.minrnn_sequence``
(:mod:`rnnkit.ops.minrnn`: the parallel scan, equations and backward in its docstring)."""

from __future__ import annotations

from torch import Tensor

from ..cells.minrnn import _MinCell
from ._common import checked, norms

__all__ = ["minrnn_sequence"]


def minrnn_sequence(
    cell: _MinCell,
    xs: Tensor,
    state: Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` (a minGRU or minLSTM) over ``xs`` ``(T, N, I)`` from ``state`` ``(N, H)``
    (zeros if None) as one op, a scan over time. Returns ``(ys (T, N, H), h_T)``, equal to
    ``rnnkit.scan(cell, xs, state, ...)`` (the sequential steps) up to rounding."""
    from ..ops import minrnn as op  # (loads the ops on first use)
    h0, valid = checked(cell, _MinCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    return op.minrnn_sequence(xs, h0, cell.weight_ih, cell.bias_ih, valid, cell.lstm,
                              bool(reverse), drop, zone, *norms(cell, "ih"))
