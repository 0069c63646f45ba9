"""Fused sequence kernels: whole-sequence forward and hand-derived BPTT backward.

Each kernel computes exactly what :func:`rnnkit.scan` computes for one cell type, as one
autograd node (no autograd graph per step): a registered op (:mod:`rnnkit.ops`; the LSTM's and,
where the C++ ops did not load, the GRU's: a ``torch.autograd.Function``); its module docstring
writes out the forward and backward equations. :func:`fused_scan` finds the kernel of a cell:
every one has ``scan``'s signature and return,
``f(cell, xs, state, *, reverse, lengths) -> (ys, state)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..cells.clockwork import ClockworkCell
from ..cells.ctrnn import CTRNNCell
from ..cells.elman import ElmanCell
from ..cells.fully import FullyRecurrentCell
from ..cells.gru import GRUCell
from ..cells.indrnn import IndRNNCell
from ..cells.jordan import JordanCell
from ..cells.lstm import LSTMCell, LSTMState
from ..cells.minrnn import MinGRUCell, MinLSTMCell
from ..cells.scrn import SCRNCell
from ._common import recording
from .clockwork import clockwork_sequence
from .ctrnn import ctrnn_sequence
from .elman import elman_sequence
from .fully import fully_sequence
from .gru import gru_sequence
from .indrnn import indrnn_sequence
from .jordan import jordan_sequence
from .lstm import lstm_sequence
from .minrnn import minrnn_sequence
from .scrn import scrn_sequence


def _lstm(cell: LSTMCell, xs: Tensor, state=None, *, reverse: bool = False, lengths=None,
          masks=None):
    if state is None:
        state = cell.init_state(xs.shape[1], device=xs.device, dtype=xs.dtype)
    ys, h, c = lstm_sequence(cell, xs, *state, reverse=reverse, lengths=lengths, masks=masks)
    return ys, LSTMState(h, c)


_KERNELS: dict[type, Callable] = {
    ClockworkCell: clockwork_sequence,
    CTRNNCell: ctrnn_sequence,
    ElmanCell: elman_sequence,
    FullyRecurrentCell: fully_sequence,
    JordanCell: jordan_sequence,
    GRUCell: gru_sequence,
    IndRNNCell: indrnn_sequence,
    LSTMCell: _lstm,
    MinGRUCell: minrnn_sequence,
    MinLSTMCell: minrnn_sequence,
    SCRNCell: scrn_sequence,
}


# Kernels that take a forward's regularizer masks (rnnkit.regularize.Masks) as ``masks=``;
# a layer of another cell runs the reference loop (rnnkit.scan) while masks apply.
# (every kernel: recurrent dropout and zoneout act inside each compiled loop)
_TAKES_MASKS: frozenset = frozenset({elman_sequence, gru_sequence, _lstm, jordan_sequence,
                                     fully_sequence, clockwork_sequence, scrn_sequence,
                                     ctrnn_sequence, indrnn_sequence,
                                     minrnn_sequence})


def takes_masks(kernel: Callable, masks, xs: Tensor, cell) -> bool:
    """Whether ``kernel`` computes this call with ``masks``: it takes them, and its backward
    holds for them (zoneout's expectation at evaluation mixes old and new states, which a
    kernel's backward does not undo: a recorded evaluation-mode call runs the reference)."""
    if kernel not in _TAKES_MASKS:
        return False
    if masks.zone is not None and not masks.training:
        return not recording(xs, *(w for _, w in cell.named_weights()))
    return True


def fused_scan(cell) -> Callable | None:
    """``f(cell, xs, state, *, reverse, lengths) -> (ys, final_state)``, equal to
    :func:`rnnkit.scan` for ``cell``, or None where no fused kernel covers its type. (Every
    kernel computes the cell's layer normalization too, inside its op.)"""
    return _KERNELS.get(type(cell))


__all__ = [
    "clockwork_sequence", "ctrnn_sequence", "elman_sequence",
    "fully_sequence", "fused_scan", "gru_sequence", "indrnn_sequence", "jordan_sequence",
    "lstm_sequence", "minrnn_sequence", "scrn_sequence", "takes_masks",
]
