"""What every fused kernel shares: argument checks (``scan``'s own), the padding mask, the
order in which a direction visits the steps, whether to record for backward, and the
differentiable vector-Jacobian product a recorded backward runs (:func:`differentiate`).

Slots. A kernel keeps its carried state in one ``(T + 1, N, S)`` buffer ``ss``. A forward pass
reads slot t and writes slot t + 1 at step t; a reverse pass reads slot t + 1 and writes slot t.
So for either direction ``ss[t + off_in]`` is the state before step t and ``ss[t + off_out]`` the
state after it, and the outputs are the after-slots in time order (``ss[1:]`` or ``ss[:T]``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..functional import check_sequence

__all__ = [
    "PACK_MIN_NUMEL", "Product", "Steps", "befores", "check_sequence", "checked",
    "differentiate", "outputs", "partial_steps", "recording", "steps", "valid_mask",
]


def _article(name: str) -> str:
    """"an" before a vowel sound: an ElmanCell, an LSTMCell, an SCRNCell; a GRUCell."""
    initialism = len(name) > 1 and name[1].isupper()
    return "an" if name[0] in "AEIOU" or (initialism and name[0] in "FHLMNRSX") else "a"


def checked(cell, kind: type, xs: Tensor, state, lengths: Tensor | None):
    """What every kernel's entry checks: ``cell`` is a ``kind``, and ``xs``, ``state`` and
    ``lengths`` are what :func:`rnnkit.scan` takes (its own checks). Returns ``(state, valid)``:
    the state (zeros if None) and the ``(T, N)`` padding mask (see :func:`valid_mask`)."""
    if not isinstance(cell, kind):
        raise TypeError(f"cell: expected {_article(kind.__name__)} {kind.__name__}, got "
                        f"{type(cell).__name__}")
    state, lengths = check_sequence(cell, xs, state, lengths)
    return state, valid_mask(lengths, xs.shape[0], xs.device)


def norms(cell, *sites: str) -> tuple:
    """The ops' layer normalization arguments for ``cell``: per site (``"ih"``, ``"hh"``, ...)
    its gain and bias stacked ``(2, width)``, or None each where the cell has none."""
    if not cell.layer_norm:
        return (None,) * len(sites)
    return tuple(torch.stack([getattr(cell, f"weight_ln_{s}"), getattr(cell, f"bias_ln_{s}")])
                 for s in sites)


def valid_mask(lengths: Tensor | None, T: int, device) -> Tensor | None:
    """``(T, N)`` bool, True at the steps inside each sequence; None if every sequence is full
    (always a mask under torch.compile/export, where the lengths are data, not constants)."""
    if lengths is None:
        return None
    if not torch.compiler.is_compiling() and int(lengths.min()) == T:
        return None
    return (torch.arange(T).unsqueeze(1) < lengths).to(device)


class Steps(NamedTuple):
    order: range  # the steps in the order the forward pass visits them
    back: range  # ... and the backward pass
    off_in: int  # ss[t + off_in] is the state before step t
    off_out: int  # ss[t + off_out] the state after it
    first: int  # the slot holding the initial state
    last: int  # the slot holding the final state


def steps(T: int, reverse: bool) -> Steps:
    fwd, bwd = range(T), range(T - 1, -1, -1)
    if reverse:
        return Steps(bwd, fwd, 1, 0, T, 0)
    return Steps(fwd, bwd, 0, 1, 0, T)


def outputs(ss: Tensor, reverse: bool) -> Tensor:
    """The after-step slots of ``ss`` ``(T + 1, N, S)`` in time order, ``(T, N, S)`` (a view)."""
    return ss[:-1] if reverse else ss[1:]


def befores(ss: Tensor, reverse: bool) -> Tensor:
    """The before-step slots of ``ss`` in time order, ``(T, N, S)`` (a view)."""
    return ss[1:] if reverse else ss[:-1]


def partial_steps(valid: Tensor | None, T: int) -> list[bool]:
    """For each step, whether some sequence is padded there (and so needs the mask)."""
    if valid is None:
        return [False] * T
    return (~valid.all(dim=1)).tolist()


def recording(*tensors) -> bool:
    """Whether autograd must record: grad mode on and some tensor requires a gradient."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors
    )


def differentiate(reference, args: tuple, wrt: list[int], grads: tuple) -> list:
    """The vector-Jacobian product of ``reference(*args)`` with ``grads`` (one per output),
    with respect to ``args[i]`` for ``i`` in ``wrt``, recorded (``create_graph=True``) so it can
    be differentiated again. Returns a list as long as ``args``: None where not asked or
    unused. (The backward of a fused kernel or a registered op when autograd records it.)"""
    with torch.enable_grad():
        outs = reference(*args)
    pairs = [(o, g) for o, g in zip(outs, grads, strict=True)
             if o.requires_grad and g is not None]
    got = torch.autograd.grad([o for o, _ in pairs], [args[i] for i in wrt],
                              [g for _, g in pairs], create_graph=True, allow_unused=True)
    result = [None] * len(args)
    for i, g in zip(wrt, got, strict=True):
        result[i] = g
    return result


# Packed oneDNN matmuls for the per-step recurrent products. Measured on the 2-core AVX-512 CPU
# (float32, N=32, (N, H) @ (H, 4H)): torch's addmm 35 / 146 / 480 us at H = 128 / 256 / 512,
# oneDNN with the weight reordered once per call 40 / 102 / 328 us. The reorder costs about one
# product, repaid after a few steps; below ~2^17 weights the packed product is the slower one.
PACK_MIN_NUMEL = 2**17


def _packable(w: Tensor) -> bool:
    return (w.device.type == "cpu" and w.dtype == torch.float32 and w.dim() == 2
            and w.numel() >= PACK_MIN_NUMEL and torch.backends.mkldnn.is_available())


class Product:
    """``x @ w.T`` for a fixed ``w`` ``(out, in)`` applied at every step to ``(N, in)`` rows:
    through a packed oneDNN weight where that measured faster (large float32 on the CPU), else
    torch's ``addmm``. Same numbers to float rounding."""

    def __init__(self, w: Tensor, rows: int):
        self.w_t = w.t()  # (in, out)
        self.packed = None
        if _packable(w):
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), rows)

    def __call__(self, x: Tensor) -> Tensor:
        """``x @ w.T``, a new ``(N, out)`` tensor."""
        if self.packed is None:
            return torch.mm(x, self.w_t)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")

    def add_(self, z: Tensor, x: Tensor) -> Tensor:
        """``z += x @ w.T`` in place."""
        if self.packed is None:
            return z.addmm_(x, self.w_t)
        return z.add_(self(x))

    def add(self, base: Tensor, x: Tensor) -> Tensor:
        """``base + x @ w.T``, a new tensor."""
        if self.packed is None:
            return torch.addmm(base, x, self.w_t)
        return self(x).add_(base)
