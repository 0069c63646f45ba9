"""``scan``: the one time loop every rnnkit network runs through."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

from ._checks import check_dtype, check_lengths
from .cells.base import Cell, State, check_state, map_state, state_from_leaves, state_leaves


def scan(
    cell: Cell,
    xs: Tensor,
    state: State | None = None,
    *,
    reverse: bool = False,
    lengths: Tensor | None = None,
    masks=None,
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
        masks: this forward's regularizer masks (:class:`rnnkit.regularize.Masks`: recurrent
            dropout, zoneout), as a network draws them; None: none.

    Returns:
        ``ys`` ``(T, N, output_size)`` and the final state.

    The input projection of all steps is one matmul (``cell.precompute``) before the loop.
    Padding is handled by masking: at an invalid step the state is carried unchanged, so the
    same loop serves both directions.
    """
    state, lengths = check_sequence(cell, xs, state, lengths)
    valid = steps_mask(lengths, xs.shape[0], xs.device)
    us = cell.precompute(xs)
    if masks is None:
        return scan_steps(cell, us, state, reverse=reverse, valid=valid)
    from .regularize import dropping

    with dropping(cell, masks.drop):
        return scan_steps(cell, us, state, reverse=reverse, valid=valid, zone=masks.zone)


def steps_mask(lengths: Tensor | None, T: int, device) -> Tensor | None:
    """``(T, N)`` bool, True at the steps inside each sequence (``t < lengths[n]``); None
    without lengths."""
    if lengths is None:
        return None
    return torch.arange(T, device=device).unsqueeze(1) < lengths.to(device)


def masked_step(y: Tensor, new: State, old: State, m: Tensor) -> tuple[Tensor, State]:
    """A step's output and state where ``m`` ``(N, 1)`` marks the sequences it belongs to:
    elsewhere the output is zero and the state ``old`` is carried."""
    return (torch.where(m, y, y.new_zeros(())),
            map_state(lambda a, b: torch.where(m, a, b), new, old))


def scan_steps(
    cell: Cell,
    us: Tensor,
    state: State,
    *,
    reverse: bool = False,
    valid: Tensor | None = None,
    zone: Tensor | None = None,
) -> tuple[Tensor, State]:
    """:func:`scan`'s time loop over precomputed inputs ``us = cell.precompute(xs)``
    ``(T, N, G)``, from ``state``, with ``valid`` a ``(T, N)`` bool mask of the steps inside each
    sequence (None: all). Differentiable to any order: the fused kernels' double backward
    differentiates it (:func:`rnnkit.kernels._common.differentiable_backward`). ``zone``
    ``(T, N, S)``: zoneout weights (:mod:`rnnkit.regularize`): each step's new state is
    ``d * old + (1 - d) * new`` and its output the cell's output of that state."""
    T = us.shape[0]
    # T views (N, G) of one (T, N, G) projection. unbind, not us[t]: each us[t]'s backward would
    # write its slice into a zero-filled (T, N, G) gradient, O(T^2) memory traffic over the loop.
    us = us.unbind(0)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    ys: list[Tensor | None] = [None] * T
    if zone is not None:
        from .regularize import zone_merge

        for t in steps:
            y, new = cell.step(us[t], state)
            new = zone_merge(cell, new, state, zone[t])
            y = cell.state_output(new)
            if valid is not None:
                y, new = masked_step(y, new, state, valid[t].unsqueeze(1))
            ys[t], state = y, new
        return torch.stack(ys), state
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
        ys[t], state = masked_step(y, new, state, valid[t].unsqueeze(1))
    return torch.stack(ys), state


# Cell types whose layers run :func:`scan_traced` instead of their fused op, inside
# :func:`traced_loops` (the ONNX export of cells whose ops have no ONNX translation)
_TRACED: frozenset = frozenset()
_TRACING = False  # inside traced_loops: layers without a fused kernel run scan_traced too


@contextmanager
def traced_loops(cell_types=()):
    """Inside the block, layers of these cell types, and every layer that would run the
    reference loop (:func:`scan`: layer normalization, zoneout), run :func:`scan_traced`
    (torch's ``scan`` higher-order op, which torch.export keeps as one node with a dynamic
    length and torch's ONNX exporter writes as an ONNX ``Scan``)."""
    global _TRACED, _TRACING
    before = _TRACED, _TRACING
    _TRACED, _TRACING = frozenset(cell_types), True
    try:
        yield
    finally:
        _TRACED, _TRACING = before


def scan_traced(cell: Cell, xs: Tensor, state: State | None = None, *, reverse: bool = False,
                lengths: Tensor | None = None, masks=None) -> tuple[Tensor, State]:
    """:func:`scan`'s numbers through torch's ``scan`` higher-order op over the cell's ``step``
    (the loop a graph keeps whole, for any length, instead of unrolling it). Inference only: a
    reverse pass runs the flipped sequence, whose padded steps then come first and carry the
    initial state, as :func:`scan`'s reverse pass starts at each sequence's last step.
    ``masks``: zoneout's evaluation weights (an inference program draws no dropout)."""
    from torch._higher_order_ops.scan import scan as scan_op

    state, lengths = check_sequence(cell, xs, state, lengths)
    us = cell.precompute(xs)  # (T, N, G)
    valid = steps_mask(lengths, xs.shape[0], xs.device)
    zone = None if masks is None else masks.zone
    if masks is not None and masks.drop is not None:
        raise ValueError("recurrent_dropout: a traced (exported) network runs in eval mode, "
                         "without dropout masks")
    if reverse:
        us = us.flip(0)
        valid = None if valid is None else valid.flip(0)
        zone = None if zone is None else zone.flip(0)

    def step(carry, inputs):  # the carry is the state's leaves (the op takes no NamedTuple)
        it = iter(inputs)
        u = next(it)
        m = next(it) if valid is not None else None
        d = next(it) if zone is not None else None
        before = state_from_leaves(state, list(carry))
        y, new = cell.step(u, before)
        if d is not None:
            from .regularize import zone_merge

            new = zone_merge(cell, new, before, d)
            y = cell.state_output(new)
        if m is not None:
            y, new = masked_step(y, new, before, m.unsqueeze(1))
        return tuple(state_leaves(new)), y.clone()

    scanned = tuple(t for t in (us, valid, zone) if t is not None)  # (the op takes no None)
    final, ys = scan_op(step, tuple(state_leaves(state)), scanned)
    return (ys.flip(0) if reverse else ys), state_from_leaves(state, list(final))


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
