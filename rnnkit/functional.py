"""``scan``: the one time loop every rnnkit network runs through."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_dtype, check_lengths
from .cells.base import Cell, State, check_state, map_state


def scan(
    cell: Cell,
    xs: Tensor,
    state: State | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over a time-major sequence.

    .. math::
        (y_t, s_t) = \\text{cell}(x_t, s_{t-1}),  \\quad t = 1..T  \\quad (T..1 \\text{ if reverse})

    Args:
        cell: any :class:`~rnnkit.cells.Cell`.
        xs: inputs ``(T, N, I)``, time-major.
        state: initial state (the cell's structure, leaves ``(N, size)``); zeros if None.
        reverse: run from the last step to the first.
        lengths: ``(N,)`` integer lengths in ``[1, T]`` of right-padded sequences. Outputs past a
            sequence's length are zero; the final state is the state after its last valid step;
            a reverse pass starts at its own last valid step, from ``state``.

    Returns:
        ``ys`` ``(T, N, output_size)`` and the final state.

    The input projection of all steps is one matmul (``cell.precompute``) before the loop.
    Padding is handled by masking: at an invalid step the state is carried unchanged, so the
    same loop serves both directions.
    """
    state, lengths = check_sequence(cell, xs, state, lengths)
    T = xs.shape[0]
    valid = None
    if lengths is not None:
        valid = torch.arange(T, device=xs.device).unsqueeze(1) < lengths.to(xs.device)  # (T, N)
    return scan_steps(cell, cell.precompute(xs), state, reverse=reverse, valid=valid)


def scan_steps(
    cell: Cell,
    us: Tensor,
    state: State,
    *,
    reverse: bool = False,
    valid: Tensor | None = None,
) -> tuple[Tensor, State]:
    """:func:`scan`'s time loop over precomputed inputs ``us = cell.precompute(xs)``
    ``(T, N, G)``, from ``state``, with ``valid`` a ``(T, N)`` bool mask of the steps inside each
    sequence (None: all). Differentiable to any order: the fused kernels' double backward
    differentiates it (:func:`rnnkit.kernels._common.differentiable_backward`)."""
    T = us.shape[0]
    # T views (N, G) of one (T, N, G) projection. unbind, not us[t]: each us[t]'s backward would
    # write its slice into a zero-filled (T, N, G) gradient, O(T^2) memory traffic over the loop.
    us = us.unbind(0)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    ys: list[Tensor | None] = [None] * T
    if valid is None:
        for t in steps:
            ys[t], state = cell.step(us[t], state)
        return torch.stack(ys), state

    all_valid = valid.all(dim=1).tolist()  # steps where no sequence has ended need no mask
    for t in steps:
        y, new = cell.step(us[t], state)
        if all_valid[t]:
            ys[t], state = y, new
            continue
        m = valid[t].unsqueeze(1)  # (N, 1)
        ys[t] = torch.where(m, y, y.new_zeros(()))
        state = map_state(lambda a, b, m=m: torch.where(m, a, b), new, state)
    return torch.stack(ys), state


def check_sequence(cell: Cell, xs, state: State | None, lengths):
    """``scan``'s argument checks, shared with the fused kernels. Returns ``(state, lengths)``:
    the state (zeros if None) and ``lengths`` as a CPU int64 tensor (or None)."""
    if not isinstance(xs, Tensor) or xs.dim() != 3 or xs.shape[2] != cell.input_size:
        got = tuple(xs.shape) if isinstance(xs, Tensor) else type(xs).__name__
        raise ValueError(f"xs: expected shape (T, N, input_size={cell.input_size}), got {got}")
    T, N = xs.shape[0], xs.shape[1]
    if T == 0:
        raise ValueError(
            f"xs: expected at least one time step (T >= 1), got shape {tuple(xs.shape)}"
        )
    check_dtype("xs", xs, cell)
    if lengths is not None:
        lengths = check_lengths(lengths, T, N)
    if state is None:
        state = cell.init_state(N, device=xs.device, dtype=xs.dtype)
    else:
        check_state(state, cell.state_size, N, xs)
    return state, lengths
