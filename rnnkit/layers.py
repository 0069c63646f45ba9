"""Layers built from cells: one direction, two directions, a stack of layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional
from .cells.base import Cell, State
from .functional import scan
from .kernels import fused_scan, takes_masks
from .regularize import locked_dropout


class Recurrent(nn.Module):
    """One direction of one layer: ``cell`` run over time by its fused kernel where one exists
    (``rnnkit.kernels``; same numbers, hand-derived backward) and by :func:`~rnnkit.scan`
    otherwise or with ``fused=False``.

    Shapes: xs ``(T, N, I)`` time-major, ``lengths`` ``(N,)``; returns ``(T, N, O)`` and the
    final state.

    >>> from rnnkit.cells import GRUCell
    >>> ys, h = Recurrent(GRUCell(3, 5))(torch.randn(7, 2, 3))
    >>> ys.shape
    torch.Size([7, 2, 5])
    """

    def __init__(self, cell: Cell, reverse: bool = False, fused: bool = True):
        super().__init__()
        self.cell, self.reverse, self.fused = cell, reverse, fused
        self.input_size, self.output_size = cell.input_size, cell.output_size
        # rnnkit.regularize.Regularizers of the network (recurrent dropout, zoneout), or None
        self.regularizers = None

    def forward(
        self, xs: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        kernel = fused_scan(self.cell) if self.fused else None
        run = kernel or scan
        masks = None
        if self.regularizers is not None:
            masks = self.regularizers.masks(self.cell, xs.shape[0], xs.shape[1], xs,
                                            self.training)
        if functional._TRACING and (type(self.cell) in functional._TRACED or run is scan
                                    or masks is not None or self.cell.layer_norm):
            run = functional.scan_traced  # (inside functional.traced_loops: an export)
        elif masks is None:
            return run(self.cell, xs, state, reverse=self.reverse, lengths=lengths)
        if run is kernel and not takes_masks(run, masks, xs, self.cell):
            run = scan  # (a kernel without these masks: the reference loop computes them)
        return run(self.cell, xs, state, reverse=self.reverse, lengths=lengths, masks=masks)


class Bidirectional(nn.Module):
    """Two cells over the same sequence, the second one reversed; outputs concatenated.

    .. math:: y_t = [\\overrightarrow{y}_t ; \\overleftarrow{y}_t]

    The state is the pair ``(forward_state, backward_state)``; on padded batches the backward
    direction starts at each sequence's own last valid step.
    """

    def __init__(self, forward_cell: Cell, backward_cell: Cell):
        super().__init__()
        self.fwd = Recurrent(forward_cell)
        self.bwd = Recurrent(backward_cell, reverse=True)
        self.input_size = forward_cell.input_size
        self.output_size = forward_cell.output_size + backward_cell.output_size

    def forward(
        self, xs: Tensor, state: tuple | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, tuple]:
        s_f, s_b = (None, None) if state is None else state
        y_f, s_f = self.fwd(xs, s_f, lengths)
        y_b, s_b = self.bwd(xs, s_b, lengths)
        return torch.cat([y_f, y_b], dim=-1), (s_f, s_b)  # (T, N, O_f + O_b)


class Stacked(nn.Module):
    r"""Layers applied one after another, with dropout between layers (not after the last).

    The state is a list with one entry per layer. An optional ``side`` input ``(T, N, k)`` is
    appended to every layer's input (e.g. a CTRNN's per-step Δt, which every layer needs).
    ``residual``: every layer after the first adds its input to its output,
    :math:`x^{l+1}_t = x^l_t + \mathrm{layer}_l(\mathrm{dropout}(x^l))_t` (He et al. 2016; the
    residual IndRNN of Li et al. 2018).
    """

    def __init__(self, layers: list[nn.Module], dropout: float = 0.0, mode: str = "standard",
                 residual: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dropout = dropout
        self.mode = mode  # "variational": one dropout mask per sequence (rnnkit.regularize)
        self.residual = residual

    def forward(
        self,
        xs: Tensor,
        states: list | None = None,
        lengths: Tensor | None = None,
        side: Tensor | None = None,
    ) -> tuple[Tensor, list]:
        if states is None:
            states = [None] * len(self.layers)
        finals = []
        for l, layer in enumerate(self.layers):
            skip = xs if self.residual and l > 0 else None
            if l > 0 and self.dropout > 0 and self.training:
                if self.mode == "variational":
                    xs = locked_dropout(xs, self.dropout)
                else:
                    xs = F.dropout(xs, self.dropout, training=True)
            inputs = xs if side is None else torch.cat([xs, side], dim=-1)  # (T, N, I + k)
            xs, s = layer(inputs, states[l], lengths)
            if skip is not None:  # (past a length both are zero: so is their sum)
                xs = xs + skip
            finals.append(s)
        return xs, finals
