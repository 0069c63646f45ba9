"""Synthetic sequence tasks that probe long-range memory.

The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le, Jaitly & Hinton 2015)
--------------------------------------------------------------------------------------------
Each sequence has T steps with two input channels:

    x[t, 0] = v_t ~ U(0, 1)              (values, i.i.d.)
    x[t, 1] = m_t in {0, 1}              (markers)

with exactly two markers set: one at a position i drawn uniformly from the first half
[0, T//2), one at a position j drawn uniformly from the second half [T//2, T). The target is
the sum of the two marked values:

    y = v_i + v_j = sum_t v_t * m_t.

A network must remember v_i across up to T - 1 steps, which is what makes the task hard for
plain (Elman) RNNs whose gradients vanish with the distance.

Baseline: y is a sum of two independent U(0, 1), so E[y] = 1 and
Var(y) = Var(U1 + U2) = 2 * 1/12 = 1/6. Always predicting the mean 1.0 therefore gives

    MSE = E[(y - 1)^2] = 1/6 ≈ 0.167,

the number a model has to beat to show it learned anything.
"""

from __future__ import annotations

import torch
from torch import Tensor


def adding_problem(
    n: int,
    T: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` sequences of the adding problem of length ``T``.

    Args:
        n: number of sequences (batch size), n >= 1.
        T: sequence length, T >= 2 (one marker in each half).
        generator: CPU random generator; pass a seeded one for repeatable data.
        dtype: floating dtype of ``x`` and ``y``.

    Returns:
        ``(x, y)`` with ``x`` of shape (n, T, 2), batch first (channel 0 = values v_t ~ U(0, 1),
        channel 1 = markers, exactly two 1s per row: one in [0, T//2), one in [T//2, T)), and
        ``y`` of shape (n,), ``y = v_i + v_j`` the sum of the two marked values.
        Predicting the mean 1.0 gives MSE = Var(U1 + U2) = 1/6 ≈ 0.167.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int, got {type(T).__name__}")
    if n < 1:
        raise ValueError(f"n (number of sequences) must be >= 1, got {n}")
    if T < 2:
        raise ValueError(f"T (sequence length) must be >= 2 (one marker per half), got {T}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dtype}")

    half = T // 2
    values = torch.rand(n, T, generator=generator, dtype=dtype)  # (n, T)
    first = torch.randint(0, half, (n,), generator=generator)  # (n,) in [0, T//2)
    second = torch.randint(half, T, (n,), generator=generator)  # (n,) in [T//2, T)

    markers = torch.zeros(n, T, dtype=dtype)  # (n, T)
    rows = torch.arange(n)
    markers[rows, first] = 1
    markers[rows, second] = 1

    x = torch.stack((values, markers), dim=-1)  # (n, T, 2)
    y = values[rows, first] + values[rows, second]  # (n,)
    return x, y


def copy_memory(
    n: int,
    T: int,
    *,
    symbols: int = 8,
    length: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``n`` sequences of the copy-memory task (Arjovsky, Shah & Bengio 2016).

    Tokens: 0 is a blank, 1..``symbols`` are data, ``symbols + 1`` the delimiter. A sequence
    has ``T + 2 * length`` steps: ``length`` data tokens a_1..a_length, ``T - 1`` blanks, the
    delimiter, ``length`` blanks. The target is blank everywhere except the last ``length``
    steps, which must repeat a_1..a_length: the network has to hold them for T steps.

    A network that outputs blanks and then guesses uniformly among the data tokens scores the
    memoryless baseline cross-entropy ``length * ln(symbols) / (T + 2 * length)`` per step.

    Returns ``(x, y)``, both int64 of shape (n, T + 2 * length).
    """
    if n < 1 or T < 1:
        raise ValueError(f"n and T must be >= 1, got n={n}, T={T}")
    data = torch.randint(1, symbols + 1, (n, length), generator=generator)
    x = torch.zeros(n, T + 2 * length, dtype=torch.long)
    y = torch.zeros_like(x)
    x[:, :length] = data
    x[:, length + T - 1] = symbols + 1
    y[:, -length:] = data
    return x, y
