"""Elman network (simple recurrent network)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(Cell):
    r"""Elman cell (Elman 1990): the hidden layer is remembered and fed back.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),  \qquad y_t = h_t

    with :math:`\phi` = tanh (default) or ReLU. This is exactly ``torch.nn.RNNCell``.

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b_{ih}, b_{hh}`.
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters (torch's names): ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih`` (H),
    ``bias_hh`` (H), all initialised U(-1/sqrt(H), 1/sqrt(H)) as in torch.

    >>> cell = ElmanCell(3, 5)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape, h.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if not isinstance(nonlinearity, str) or nonlinearity not in _ACTIVATIONS:
            raise ValueError(
                f"nonlinearity: expected one of {sorted(_ACTIVATIONS)}, got {nonlinearity!r}"
            )
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = self.output_size = self.state_size = hidden_size
        self.bias = bias
        self.nonlinearity = nonlinearity
        self.phi = _ACTIVATIONS[nonlinearity]
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        return F.linear(xs, self.weight_ih, self.bias_ih)  # (..., H)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = self.phi(u + F.linear(h, self.weight_hh, self.bias_hh))
        return h, h

    def native_mode(self) -> str | None:
        return "rnn_" + self.nonlinearity

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
        return s if self.bias else s + ", bias=False"
