"""Attention: a decoder state looks at every encoder position and takes a weighted average.

For a query s (the decoder's state, (N, Q)) and a memory h_1..h_S (the encoder's outputs, or a
CNN's feature-map cells, (N, S, K)):

    additive (Bahdanau et al. 2015):        e_j = v . tanh(W_q s + W_k h_j)
    multiplicative (Luong et al. 2015, "general"):  e_j = s . (W_k h_j)
    alpha = softmax_j(e_j) over the real positions (padding gets weight 0)
    c     = sum_j alpha_j h_j                                                      (N, K)

``W_k h_j`` does not depend on the step, so :meth:`Attention.keys` computes it once per
sequence and every decoder step reuses it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ATTENTIONS = ("none", "additive", "multiplicative")


class Attention(nn.Module):
    """``kind`` ``"additive"`` or ``"multiplicative"``; ``query_size`` Q, ``memory_size`` K;
    ``attention_size`` A: the hidden size of the additive score (default Q)."""

    def __init__(self, kind: str, query_size: int, memory_size: int,
                 attention_size: int | None = None) -> None:
        super().__init__()
        if kind not in ATTENTIONS[1:]:
            raise ValueError(f"kind: expected 'additive' or 'multiplicative', got {kind!r}")
        self.kind = kind
        A = attention_size or query_size
        if kind == "additive":
            self.W_k = nn.Linear(memory_size, A, bias=False)
            self.W_q = nn.Linear(query_size, A)
            self.v = nn.Linear(A, 1, bias=False)
        else:
            self.W_k = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """memory (N, S, K) -> W_k h_j for every position: (N, S, A) or (N, S, Q)."""
        return self.W_k(memory)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor,
                mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (N, Q), memory (N, S, K), keys = :meth:`keys` of it, mask (N, S) bool (True at
        real positions) -> context (N, K), weights alpha (N, S)."""
        if self.kind == "additive":
            e = self.v(torch.tanh(self.W_q(query).unsqueeze(1) + keys)).squeeze(-1)  # (N, S)
        else:
            e = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (N, S)
        alpha = e.masked_fill(~mask, float("-inf")).softmax(-1)  # (N, S)
        return torch.bmm(alpha.unsqueeze(1), memory).squeeze(1), alpha
