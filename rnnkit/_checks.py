"""Argument checks with messages that name the argument, what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import ShapeError


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_lengths(lengths, T: int, N: int) -> Tensor:
    """Validate sequence lengths for a padded batch of ``N`` sequences of at most ``T`` steps.

    Accepts a 1-D integer tensor or a list of ints; returns an int64 CPU tensor ``(N,)``.
    """
    if isinstance(lengths, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in lengths):
            raise TypeError(f"lengths: expected integers, got {lengths!r}")
        lengths = torch.tensor(lengths, dtype=torch.int64)
    if not isinstance(lengths, Tensor):
        raise TypeError(
            "lengths: expected a 1-D integer tensor or a list of ints, "
            f"got {type(lengths).__name__}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if lengths.shape != (N,):
        raise ValueError(
            f"lengths: expected shape ({N},), one length per sequence in the batch, "
            f"got {tuple(lengths.shape)}"
        )
    if N == 0:
        raise ValueError("lengths: expected a non-empty batch, got 0 sequences")
    lengths = lengths.detach().to("cpu", torch.int64)
    if torch.compiler.is_compiling():  # the values are data: checked in eager runs only
        return lengths
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > T:
        bad = lo if lo < 1 else hi
        raise ValueError(
            f"lengths: expected every length in [1, {T}] (the padded sequence length), got {bad}"
        )
    return lengths


def check_dtype(name: str, value: Tensor, module: torch.nn.Module) -> None:
    """``value`` must have the dtype of ``module``'s parameters (if it has any; a cell's
    weights, borrowed from its network or its own)."""
    weights = getattr(module, "named_weights", None)
    p = next((w for _, w in weights()), None) if weights else next(module.parameters(), None)
    if p is not None and value.dtype != p.dtype:
        raise ValueError(
            f"{name}: expected dtype {p.dtype} (the parameters'), got {value.dtype}; "
            f"convert one with .to()"
        )


def check_state_leaf(name: str, leaf, expected: tuple, ref: Tensor) -> None:
    """A state tensor must have exactly the expected shape, and ``ref``'s dtype and device."""
    if not isinstance(leaf, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(leaf).__name__}")
    if tuple(leaf.shape) != tuple(expected):  # a RuntimeError too, as torch raises for hx
        raise ShapeError(f"{name}: expected shape {tuple(expected)}, got {tuple(leaf.shape)}")
    if leaf.dtype != ref.dtype:
        raise ValueError(f"{name}: expected dtype {ref.dtype} (the input's), got {leaf.dtype}")
    if leaf.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} (the input's), got {leaf.device}")


def device_problem(text: str) -> str | None:
    """Why ``text`` names no device to run on here, or None: ``cpu``, or ``cuda`` /
    ``cuda:N`` on a machine whose torch sees CUDA with more than N devices."""
    from .config import DEVICE

    match = DEVICE.fullmatch(text)
    if match is None:
        return f"expected cpu, cuda or cuda:N (N a GPU index), got {text!r}"
    if text == "cpu":
        return None
    if not torch.cuda.is_available():
        return f"got {text!r}, but this machine has no CUDA device (torch.cuda.is_available() " \
               f"is False); use cpu"
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        return f"got {text!r}, but this machine has {count} CUDA device" \
               f"{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1})"
    return None
