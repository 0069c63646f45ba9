"""Word-level input noise for text models."""

from __future__ import annotations

import torch
from torch import Tensor


def drop_words(tokens: Tensor, p: float, unk: int = 1) -> Tensor:
    """Word dropout (Iyyer et al. 2015): each real token (id > 0, 0 being padding) becomes
    ``unk`` with probability ``p``, so the ``<unk>`` embedding is trained on real contexts."""
    if p <= 0:
        return tokens
    hit = (torch.rand(tokens.shape, device=tokens.device) < p) & (tokens > 0)
    return tokens.masked_fill(hit, unk)
