"""Truncated backpropagation through time: chunks, carried state, resets.

A batch of long sequences is cut along time into chunks of ``k`` steps. The recurrent state
flows forward across the cut (the forward pass is exactly the full-sequence one), but the graph
is cut there (``detach_state``): gradients flow back at most to the start of the chunk they are
in. With

    L = (1 / N) * sum_t l_t          (N = the loss items of the whole batch)

each chunk back-propagates its share ``(1 / N) * sum_{t in chunk} l_t`` and the gradients
accumulate, so for ``k = T`` (one chunk) this *is* full BPTT, and for ``k < T`` it is
full BPTT with every path ∂h_t/∂h_{t-1} that crosses a chunk boundary set to zero
(pytorch/examples ``word_language_model``'s ``repackage_hidden``).

A *reset* mask ``(N, T)`` marks where a new document or episode starts in a sample: before
step t, the carried state of every sample with ``reset[:, t]`` is set to zero (the initial
state), so nothing flows between documents, in the forward pass or the backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def map_state(fn, state):
    """Apply ``fn`` to every tensor of a (nested tuple of) state tensors; ``None`` stays None."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple):  # torch.nn.LSTM's (h, c)
        return tuple(map_state(fn, s) for s in state)
    raise TypeError(f"state: expected a tensor or a tuple of tensors, got {type(state).__name__}")


def detach_state(state):
    """Cut the graph at a chunk boundary: same values, no gradient path into the past."""
    return map_state(Tensor.detach, state)


def reset_state(state, reset: Tensor):
    """Zero the state of the samples where ``reset`` (N,) is True.

    State tensors are laid out as torch.nn.LSTM's ``(layers * directions, N, size)``; the
    product with the keep mask keeps the gradient path of the samples that go on.
    """
    if state is None:
        return None
    keep = (~reset).view(1, -1, 1)  # (1, N, 1)

    def zero(leaf: Tensor) -> Tensor:
        if leaf.dim() != 3 or leaf.shape[1] != reset.shape[0]:
            raise ValueError(f"reset: expected state leaves of shape (layers * directions, "
                             f"N={reset.shape[0]}, size), got {tuple(leaf.shape)}")
        return leaf * keep.to(leaf.dtype)

    return map_state(zero, state)


def spans(T: int, k: int, reset: Tensor | None = None) -> Iterator[tuple[int, int, bool]]:
    """The time spans ``(start, stop, detach_after)`` a batch of length ``T`` is run in.

    Spans end at every multiple of ``k`` (``k <= 0`` means one chunk: full BPTT), where the
    graph is cut (``detach_after``), and also before every step where any sample resets
    (``reset`` (N, T) bool), where the state is zeroed but the graph of the others goes on.
    """
    k = T if k <= 0 else k
    cuts = set(range(k, T, k)) | {T}
    breaks = set()
    if reset is not None:
        breaks = set(torch.nonzero(reset[:, 1:].any(0)).flatten().add(1).tolist())
    start = 0
    for stop in sorted(cuts | breaks):
        yield start, stop, stop in cuts
        start = stop
