"""What the GPU kernels share: the pointwise functions in Triton, a tile of a ``(N, W)`` step,
the padding mask of a step's rows, two small kernels (masked outputs and the carried gradient),
and the Python side's launch geometry and argument checks.

Every per-step kernel works on one step's ``(N, W)`` rows (N sequences, W units): a 2-D grid of
``(BN, BW)`` tiles, one program per tile, rows over the batch and columns over the units (so a
row's loads are contiguous). The padding mask of the step, ``valid[t]``, is read as bytes, one
per row; without a mask (``MASKED`` false) it is not read at all.

Importing this module imports triton: only :func:`rnnkit.gpu.register` (where CUDA is present)
and the tests (under ``TRITON_INTERPRET=1``) do.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

DTYPES = (torch.float32, torch.float64)  # what the kernels compute in (the input's dtype)
TILE = 1024  # elements per program of a pointwise kernel (BN * BW)
MAX_BW = 128  # the widest tile, in units


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """tanh from one exp, stable for any |x| (libdevice's tanh is not in the interpreter):
    tanh|x| = (1 - e) / (1 + e) with e = exp(-2|x|) <= 1, then the sign."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def tile(N, W, BN: tl.constexpr, BW: tl.constexpr):
    """This program's rows ``(BN,)``, columns ``(BW,)`` and which of the ``(BN, BW)`` cells lie
    inside the ``(N, W)`` step."""
    rows = tl.program_id(0) * BN + tl.arange(0, BN)
    cols = tl.program_id(1) * BW + tl.arange(0, BW)
    return rows, cols, (rows[:, None] < N) & (cols[None, :] < W)


@triton.jit
def counts(valid, rows, N, MASKED: tl.constexpr):
    """``(BN, 1)`` bool: whether each row's sequence runs at this step (all, unmasked)."""
    if MASKED:
        m = tl.load(valid + rows, mask=rows < N, other=0) != 0
    else:
        m = rows >= 0
    return m[:, None]


@triton.jit
def _masked_outputs(new, old, y, valid, N, W, BN: tl.constexpr, BW: tl.constexpr):
    """``y = m new``, ``new = m new + (1 - m) old`` (in place) over a step's ``(N, W)`` rows:
    the output and the carried state after a step whose new state came from a GEMM (the LSTM's
    projection ``h~ = W_hr r``)."""
    rows, cols, inside = tile(N, W, BN, BW)
    at = rows[:, None] * W + cols[None, :]
    m = counts(valid, rows, N, True)
    h = tl.load(new + at, mask=inside, other=0.0)
    tl.store(y + at, tl.where(m, h, 0.0), mask=inside)
    tl.store(new + at, tl.where(m, h, tl.load(old + at, mask=inside, other=0.0)), mask=inside)


@triton.jit
def _split_gradient(gy, dh, e, dh_next, valid, N, W, MASKED: tl.constexpr, BN: tl.constexpr,
                    BW: tl.constexpr):
    """``e = m (gy + dh)`` (what reaches the step's output) and ``dh_next = (1 - m) dh`` (what
    passes a padded step untouched; the step's GEMM adds the rest)."""
    rows, cols, inside = tile(N, W, BN, BW)
    at = rows[:, None] * W + cols[None, :]
    m = counts(valid, rows, N, MASKED)
    d = tl.load(dh + at, mask=inside, other=0.0)
    tl.store(e + at, tl.where(m, tl.load(gy + at, mask=inside, other=0.0) + d, 0.0), mask=inside)
    tl.store(dh_next + at, tl.where(m, 0.0, d), mask=inside)


def geometry(N: int, W: int) -> tuple[tuple[int, int], int, int]:
    """``(grid, BN, BW)`` for a pointwise kernel over ``(N, W)``: tiles of up to TILE elements,
    at most MAX_BW units wide (powers of two, as ``tl.arange`` needs)."""
    BW = min(triton.next_power_of_2(max(W, 1)), MAX_BW)
    BN = min(triton.next_power_of_2(max(N, 1)), max(1, TILE // BW))
    return (triton.cdiv(N, BN), triton.cdiv(W, BW)), BN, BW


def masked_outputs(new: Tensor, old: Tensor, y: Tensor, valid: Tensor) -> None:
    """Launch :func:`_masked_outputs` on one step's ``(N, W)`` tensors (``valid`` its bytes)."""
    N, W = new.shape
    grid, BN, BW = geometry(N, W)
    _masked_outputs[grid](new, old, y, valid, N, W, BN=BN, BW=BW)


def split_gradient(gy: Tensor, dh: Tensor, e: Tensor, dh_next: Tensor, valid) -> None:
    """Launch :func:`_split_gradient` on one step's ``(N, W)`` tensors."""
    N, W = dh.shape
    grid, BN, BW = geometry(N, W)
    _split_gradient[grid](gy, dh, e, dh_next, valid if valid is not None else dh, N, W,
                          MASKED=valid is not None, BN=BN, BW=BW)


def step_masks(valid: Tensor | None, T: int, N: int) -> list | None:
    """Each step's ``(N,)`` row of the padding mask as bytes (what the kernels read), or None."""
    if valid is None:
        return None
    if valid.dtype != torch.bool or valid.shape != (T, N):
        raise ValueError(f"valid: expected a ({T}, {N}) bool tensor, got {valid.dtype} "
                         f"{tuple(valid.shape)}")
    return list(valid.contiguous().view(torch.uint8).unbind(0))


def check(name: str, x: Tensor, *tensors) -> None:
    """The kernels compute in the inputs' dtype: float32 or float64, all alike, one device."""
    if x.dtype not in DTYPES:
        raise TypeError(f"rnnkit.gpu {name}: float32 or float64 tensors expected, got {x.dtype}")
    for t in tensors:
        if t is not None and t.numel() and (t.dtype != x.dtype or t.device != x.device):
            raise TypeError(f"rnnkit.gpu {name}: every tensor must be {x.dtype} on {x.device}, "
                            f"got {t.dtype} on {t.device}")


def on_their_device(driver):
    """Run ``driver`` with its first tensor argument's GPU as the current device: triton launches
    on the current device, which for a tensor on another GPU is the wrong one."""
    @functools.wraps(driver)
    def run(*args, **kwargs):
        first = next(a for a in args if isinstance(a, Tensor))
        if not first.is_cuda:  # (CPU tensors: the interpreter)
            return driver(*args, **kwargs)
        with torch.cuda.device(first.device):
            return driver(*args, **kwargs)
    return run


def absent(like: Tensor) -> Tensor:
    """The ``(0,)`` tensor an op returns for an unused buffer or an absent input's gradient."""
    return like.new_empty(0)
