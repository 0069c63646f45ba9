"""Elman sequences through the registered op ``torch.ops.rnnkit.elman_sequence``
(:mod:`rnnkit.ops.elman`: the compiled C++ loop where it built, a pure-torch one with the same
schema elsewhere; equations and backward in ``rnnkit/csrc/elman.cpp``)."""

from __future__ import annotations

from torch import Tensor

from ..cells.elman import ElmanCell
from ._common import checked, norms

__all__ = ["elman_sequence"]


def elman_sequence(
    cell: ElmanCell,
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
    from ..ops import elman as op  # (loads the compiled ops on first use)
    h0, valid = checked(cell, ElmanCell, xs, state, lengths)
    drop, zone = (None, None) if masks is None else masks[:2]
    return op.elman_sequence(xs, h0, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                             valid, cell.nonlinearity == "relu", bool(reverse), drop, zone,
                             *norms(cell, "ih", "hh"))
