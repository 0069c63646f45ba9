"""Gated recurrent unit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell


class GRUCell(Cell):
    r"""GRU cell (Cho et al. 2014), in torch's form (the reset gate acts after ``W_hn``).

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})          \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})          \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    r reset gate, z update gate, n candidate; y_t = h_t. This is exactly ``torch.nn.GRUCell``.

    Args:
        input_size: I.  hidden_size: H.  bias: if False, no biases.

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters (torch's names and gate order r, z, n): ``weight_ih`` (3H, I),
    ``weight_hh`` (3H, H), ``bias_ih`` (3H), ``bias_hh`` (3H); all U(-1/sqrt(H), 1/sqrt(H)).

    >>> cell = GRUCell(3, 5)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape
    torch.Size([2, 5])
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.input_size, self.bias = input_size, bias
        self.hidden_size = self.output_size = self.state_size = H
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        return F.linear(xs, self.weight_ih, self.bias_ih)  # (..., 3H)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        u_r, u_z, u_n = u.chunk(3, dim=1)  # input parts, (N, H) each
        w_r, w_z, w_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(u_r + w_r)
        z = torch.sigmoid(u_z + w_z)
        n = torch.tanh(u_n + r * w_n)
        h = (1 - z) * n + z * h
        return h, h

    def native_mode(self) -> str | None:
        return "gru"

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.bias else s + ", bias=False"
