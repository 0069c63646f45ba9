"""Streaming: a network advanced one time step at a time, its state carried by the caller.

``net.initial_state(N)`` and ``net.step(x_t, state) -> (y_t, state)`` on every unidirectional
:class:`~rnnkit.RecurrentNetwork` (the façades too). The state is laid out as ``forward``'s
``hx`` / ``h_n``, so the two mix freely: read a prompt with ``forward``, continue with ``step``,
or the other way round. Per cell it is

- a tensor ``(num_layers, N, size)`` for a cell with one state tensor (Elman, IRNN, GRU, CTRNN,
  Jordan: its output), as torch.nn.RNN/GRU's ``h``;
- the cell's NamedTuple of such tensors for more: ``LSTMState(h, c)`` (``h`` is
  ``(num_layers, N, proj_size)`` with a projection), ``FullyState(h, y)``,
  ``ClockworkState(h, t)`` (``t`` ``(num_layers, N, 1)``: the steps each sequence has taken),
  ``SCRNState(h, s)``.

A step is the cell's own equations (``cell.step``) layer after layer, with the network's
current weights (for a plain LSTM, GRU or Elman cell torch's fused cell kernel, as
``torch.nn.LSTMCell`` runs); feeding a sequence step by step gives ``forward``'s outputs and
final state (float64: to rounding; ``valid`` plays the part of ``lengths``). A bidirectional
network cannot stream: its reverse direction starts from the end of the sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import _VF, Tensor

from .cells.base import map_state, state_from_leaves, state_leaves
from .functional import masked_step
from .regularize import zone_merge, zoned_sizes


def _fused_step(cell, x: Tensor, state):
    """``(y, state)`` of one step through torch's fused cell kernel (``torch.nn.LSTMCell``'s,
    ``GRUCell``'s, ``RNNCell``'s) where the cell is exactly what it computes, else None."""
    mode = cell.native_mode()
    if mode is None or getattr(cell, "weight_hr", None) is not None:  # (no projection there)
        return None
    weights = cell.native_weights()
    if mode == "lstm":
        h, c = _VF.lstm_cell(x, (state.h, state.c), *weights)
        return h, type(state)(h, c)
    h = getattr(_VF, f"{mode}_cell")(x, state, *weights)
    return h, h


def _cells(net) -> list:
    if net.bidirectional:
        raise ValueError(
            f"{type(net).__name__}: a bidirectional network cannot stream one step at a time: "
            "its reverse direction reads the sequence from its last step, which a stream has "
            "not seen yet. Build it with bidirectional=False to use initial_state/step.")
    return [c for _, _, c in net._cells()]


def _pack(size, leaves: list[Tensor]):
    """Leaves ``(L, N, k)`` -> a tensor (one-leaf state) or the cell's NamedTuple."""
    if len(leaves) == 1:
        return leaves[0]
    return type(size)._make(leaves) if hasattr(size, "_fields") else tuple(leaves)


def initial_state(net, batch_size: int, *, device=None, dtype=None):
    """The state before the first step: each layer's cell's initial (zero) state, stacked as
    ``forward``'s ``hx`` (see the module's docstring); device and dtype default to the
    network's parameters'."""
    cells = _cells(net)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    weight = next(net.parameters())
    device = weight.device if device is None else device
    dtype = weight.dtype if dtype is None else dtype
    with net._bound():
        per_layer = [state_leaves(c.init_state(batch_size, device=device, dtype=dtype))
                     for c in cells]
    stacked = [torch.stack(group) for group in zip(*per_layer, strict=True)]
    return _pack(cells[0].state_size, stacked)


def step(net, input: Tensor, state=None, *, valid: Tensor | None = None,
         side: Tensor | None = None):
    """One time step: ``input`` ``(N, input_size)`` (or ``(input_size,)`` unbatched) and the
    state after the previous step (None: :func:`initial_state`) -> ``(output (N, H_out), state)``.
    ``valid`` ``(N,)`` bool marks the sequences this step belongs to: elsewhere the state is
    carried unchanged and the output is zero (as past a length in ``forward``). ``side``
    ``(N, side_size)``: the per-step side input of a network built with one (a CTRNN's Δt)."""
    cells = _cells(net)
    name = type(net).__name__
    reg = net.regularizers
    if net.training and (reg.per_step or reg.weight_drop
                         or reg.dropout_mode == "variational" and net.dropout):
        raise RuntimeError(
            f"{name}.step: the network is in training mode with regularizers whose masks hold "
            f"for a whole sequence (recurrent_dropout, zoneout, weight_drop, variational "
            f"dropout), which one step at a time cannot draw; call .eval() first")
    if not isinstance(input, Tensor) or input.dim() not in (1, 2) \
            or input.shape[-1] != net.input_size:
        got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"{name}.step: expected input of shape (N, input_size="
                         f"{net.input_size}) or ({net.input_size},) unbatched, got {got}")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    N = x.shape[0]
    weight = next(net.parameters())
    if x.dtype != weight.dtype:
        raise ValueError(f"{name}.step: input dtype {x.dtype} does not match the parameters' "
                         f"dtype {weight.dtype}; convert one with .to()")
    size = cells[0].state_size
    leaves = net._check_hx(state, N, unbatched, x, size, name="state")
    if leaves is None:
        leaves = state_leaves(initial_state(net, N, device=x.device, dtype=x.dtype))
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool \
                or tuple(valid.shape) != (N,):
            got = (f"{valid.dtype} {tuple(valid.shape)}" if isinstance(valid, Tensor)
                   else type(valid).__name__)
            raise ValueError(f"valid: expected a bool tensor of shape ({N},), got {got}")
        valid = valid.to(x.device).unsqueeze(1)  # (N, 1)
    if net.side_size:
        expected = (N, net.side_size) if not unbatched else (net.side_size,)
        if not isinstance(side, Tensor) or tuple(side.shape) != expected:
            got = tuple(side.shape) if isinstance(side, Tensor) else type(side).__name__
            raise ValueError(f"side: expected shape {expected} ({net._side_name}), got {got}")
        side = side.unsqueeze(0) if unbatched else side
    elif side is not None:
        raise ValueError(f"side: this {name} was built without a side input (side_size=0)")

    new_leaves: list[list[Tensor]] = []
    with net._bound():
        for l, cell in enumerate(cells):
            skip = x if net.residual and l > 0 else None
            if l > 0 and net.dropout > 0 and net.training:
                x = F.dropout(x, net.dropout, training=True)
            inp = x if side is None else torch.cat([x, side], dim=-1)
            s = state_from_leaves(cell.state_size, [leaf[l] for leaf in leaves])
            if reg.zoneout:  # evaluation: the expectation, s = p s_{t-1} + (1 - p) s~
                _, s_new = cell.step(cell.precompute(inp), s)
                d = torch.cat([inp.new_full((k,), p) for k, p in
                               zip(zoned_sizes(cell), reg.zoneout, strict=True)])
                s_new = zone_merge(cell, s_new, s, d.expand(N, d.shape[0]))
                y = cell.state_output(s_new)
            else:
                y, s_new = _fused_step(cell, inp, s) or cell.step(cell.precompute(inp), s)
            if valid is not None:
                y, s_new = masked_step(y, s_new, s, valid)
            new_leaves.append(state_leaves(s_new))
            x = y if skip is None else y + skip
    out = _pack(size, [torch.stack(group) for group in zip(*new_leaves, strict=True)])
    if unbatched:
        x = x.squeeze(0)
        out = map_state(lambda t: t.squeeze(1), out)
    return x, out
