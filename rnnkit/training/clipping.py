"""Gradient clipping, by global norm and by value, with a record of what it did.

By norm (Pascanu et al. 2013): with g the concatenation of every parameter's gradient,

    g <- g * min(1, max_norm / ||g||_2),

which keeps the direction and bounds the step: the remedy for the exploding face of the
product of Jacobians. By value: g_i <- clamp(g_i, -v, v), entry by entry. Either may be off
(0). The norm is always measured, before any clipping, so a run's log shows the gradient it
really had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ClipResult:
    norm: float  # global L2 norm of the gradient before clipping
    by_norm: bool  # norm clipping fired (norm > max_norm)
    by_value: bool  # value clipping fired (some |g_i| > v)


def clip_gradients(parameters, max_norm: float = 0.0, max_value: float = 0.0) -> ClipResult:
    """Measure the global gradient norm, then clip by value and/or by norm (0 = off)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return ClipResult(0.0, False, False)
    norm = nn.utils.get_total_norm(grads, norm_type=2.0).item()
    by_value = False
    if max_value > 0:
        largest = max(g.abs().max().item() for g in grads)
        by_value = largest > max_value
        if by_value:
            for g in grads:
                g.clamp_(-max_value, max_value)
    by_norm = False
    if max_norm > 0:
        # measured again if value clipping changed the gradient
        current = nn.utils.get_total_norm(grads).item() if by_value else norm
        by_norm = math.isfinite(current) and current > max_norm
        if by_norm:
            torch._foreach_mul_(grads, max_norm / (current + 1e-6))
    return ClipResult(norm, by_norm, by_value)
