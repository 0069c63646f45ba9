"""Long short-term memory."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell


class LSTMState(NamedTuple):
    h: Tensor  # (N, H), or (N, P) with a projection
    c: Tensor  # (N, H)


class LSTMCell(Cell):
    r"""LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi})   \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf})   \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg})    \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho})   \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t                      \\
        h_t &= o_t \odot \tanh(c_t)  \qquad (h_t = W_{hr}(o_t \odot \tanh(c_t)) \text{ if } P > 0)

    i input gate, f forget gate, g candidate, o output gate, c memory cell, y_t = h_t.
    This is exactly ``torch.nn.LSTMCell`` (and one direction of one layer of ``torch.nn.LSTM``,
    including its ``proj_size`` projection, Sak et al. 2014).

    Args:
        input_size: I.  hidden_size: H.  bias: if False, no biases.
        proj_size: P > 0 projects h to P units (``weight_hr``); 0 means none.

    Shapes: x ``(N, I)``, state ``LSTMState(h (N, H or P), c (N, H))``, y ``(N, H or P)``.

    Parameters (torch's names and gate order i, f, g, o): ``weight_ih`` (4H, I),
    ``weight_hh`` (4H, H or P), ``bias_ih`` (4H), ``bias_hh`` (4H), ``weight_hr`` (P, H);
    all U(-1/sqrt(H), 1/sqrt(H)) as in torch.

    >>> cell = LSTMCell(3, 5)
    >>> y, (h, c) = cell(torch.randn(2, 3))
    >>> y.shape, c.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int):
            raise TypeError(
                f"proj_size: expected an int, got {type(proj_size).__name__} ({proj_size!r})"
            )
        if proj_size < 0 or proj_size >= hidden_size:
            raise ValueError(
                f"proj_size: expected 0 <= proj_size < hidden_size={hidden_size}, got {proj_size}"
            )
        kw = {"device": device, "dtype": dtype}
        H, R = hidden_size, proj_size or hidden_size  # R: size of the recurrent h
        self.input_size, self.hidden_size = input_size, H
        self.proj_size, self.bias = proj_size, bias
        self.output_size = R
        self.state_size = LSTMState(h=R, c=H)
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, R, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(R, H, **kw)) if proj_size else None
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        return F.linear(xs, self.weight_ih, self.bias_ih)  # (..., 4H)

    def step(self, u: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        h, c = state
        z = u + F.linear(h, self.weight_hh, self.bias_hh)  # (N, 4H)
        i, f, g, o = z.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        if self.weight_hr is not None:
            h = F.linear(h, self.weight_hr)  # (N, P)
        return h, LSTMState(h, c)

    def native_mode(self) -> str | None:
        return "lstm"

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += f", proj_size={self.proj_size}" if self.proj_size else ""
        return s if self.bias else s + ", bias=False"
