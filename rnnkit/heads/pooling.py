"""Many-to-one: one vector for a whole (padded, variable-length) sequence of recurrent outputs.

With outputs h_t (N, T, F) and the valid steps t < L_n of each sequence:

- ``final``: the state after reading the whole sequence: h_{L-1} for a forward network; for a
  bidirectional one [h^fwd_{L-1} ; h^bwd_0] (each direction's state after its last step).
- ``mean``:  u = (1/L) sum_{t<L} h_t
- ``max``:   u_f = max_{t<L} h_{t,f}
- ``attention``: e_t = v^T tanh(W h_t + b), a = softmax over the valid steps of e,
  u = sum_{t<L} a_t h_t (Bahdanau-style attention with one learned query, as in
  Yang et al. 2016's word attention).

Padded steps never contribute, whatever the padding holds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POOLINGS = ("final", "mean", "max", "attention")


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """(N, T) bool, True at the real steps t < lengths[n]."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


class Pooling(nn.Module):
    """``Pooling(how, features, directions)(out, mask) -> (N, features)``, plus the attention
    weights (N, T) of the last call in ``self.weights`` for ``how="attention"``."""

    def __init__(self, how: str, features: int, directions: int = 1) -> None:
        super().__init__()
        if how not in POOLINGS:
            raise ValueError(f"pooling: expected one of {', '.join(POOLINGS)}, got {how!r}")
        if directions not in (1, 2) or features % directions:
            raise ValueError(f"directions: expected 1 or 2 dividing features={features}, "
                             f"got {directions}")
        self.how, self.directions = how, directions
        self.weights: Tensor | None = None
        if how == "attention":
            self.project = nn.Linear(features, features)
            self.query = nn.Linear(features, 1, bias=False)

    def forward(self, out: Tensor, mask: Tensor) -> Tensor:
        """out (N, T, F), mask (N, T) bool with at least one True per row -> (N, F)."""
        if self.how == "max":
            return out.masked_fill(~mask[..., None], float("-inf")).amax(1)
        if self.how == "mean":
            kept = out.masked_fill(~mask[..., None], 0.0)
            return kept.sum(1) / mask.sum(1, keepdim=True).to(out.dtype)
        if self.how == "attention":
            scores = self.query(torch.tanh(self.project(out))).squeeze(-1)  # (N, T)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            self.weights = weights.detach()
            return (weights[..., None] * out).sum(1)
        last = mask.sum(1) - 1  # (N,) index of each sequence's last real step
        rows = torch.arange(out.shape[0], device=out.device)
        forward = out[rows, last]  # (N, F): every direction's output at step L-1
        if self.directions == 1:
            return forward
        H = out.shape[-1] // 2
        return torch.cat([forward[:, :H], out[:, 0, H:]], dim=1)  # backward: its step 0

