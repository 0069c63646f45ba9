"""IndRNN sequences through the registered op ``torch.ops.rnnkit.indrnn_sequence``
(:mod:`rnnkit.ops.indrnn`: equations and backward in its docstring)."""

from __future__ import annotations

from torch import Tensor

from ..cells.indrnn import IndRNNCell
from ._common import checked, norms

__all__ = ["indrnn_sequence"]


def indrnn_sequence(
    cell: IndRNNCell,
    xs: Tensor,
    state: Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` over ``xs`` ``(T, N, I)`` from ``state`` ``(N, H)`` (zeros if None) as one
    op. Returns ``(ys (T, N, H), h_T)``, exactly ``rnnkit.scan(cell, xs, state, ...)``
    (``masks``: :class:`rnnkit.regularize.Masks`, as ``scan`` takes them)."""
    from ..ops import indrnn as op  # (loads the compiled ops on first use)
    h0, valid = checked(cell, IndRNNCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    return op.indrnn_sequence(xs, h0, cell.weight_ih, cell.weight_hh, cell.bias_ih, valid,
                              cell.nonlinearity == "relu", bool(reverse), drop, zone,
                              *norms(cell, "ih"))
