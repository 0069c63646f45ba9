"""Gated recurrent unit."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, check_chrono, chrono


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
        forget_bias: None (torch's init), a number b, or ``"chrono"`` (with ``max_lag``): the
            initial bias of the update gate z, which keeps the old state (the GRU's forget gate
            read the other way round): :math:`b_{iz} = b, b_{hz} = 0`; chrono (Tallec & Ollivier
            2018): :math:`b_{iz} \sim \log U(1, T_{max} - 1)` per unit. Only an
            initialisation: torch's kernel still runs.
        max_lag: :math:`T_{max}` for ``forget_bias="chrono"``.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016): the input and recurrent
    products are each normalized as one 3H row, :math:`u_t = \mathrm{LN}_{ih}(W_{ih} x_t) +
    b_{ih}`, :math:`g_t = \mathrm{LN}_{hh}(W_{hh} h_{t-1}) + b_{hh}`, then the equations above
    with :math:`u, g` in place of the products (``weight_ln_ih, bias_ln_ih, weight_ln_hh,
    bias_ln_hh``, 3H each).

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters (torch's names and gate order r, z, n): ``weight_ih`` (3H, I),
    ``weight_hh`` (3H, H), ``bias_ih`` (3H), ``bias_hh`` (3H); all U(-1/sqrt(H), 1/sqrt(H)).

    >>> cell = GRUCell(3, 5)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape
    torch.Size([2, 5])
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
        *, forget_bias: float | str | None = None, max_lag: int | None = None,
        layer_norm: bool = False,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        forget_bias, max_lag = check_chrono("forget_bias", forget_bias, max_lag)
        if forget_bias is not None and not bias:
            raise ValueError(f"forget_bias: expected None with bias=False (there is no update-"
                             f"gate bias to initialise), got {forget_bias!r}")
        self.forget_bias, self.max_lag = forget_bias, max_lag
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.input_size, self.bias = input_size, bias
        self.hidden_size = self.output_size = self.state_size = H
        self.weight_ih = nn.Parameter(torch.empty(3 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(3 * H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * H, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": 3 * H, "hh": 3 * H}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation, then ``forget_bias`` (the update gate's) if given."""
        super().reset_parameters()
        if self.forget_bias is not None:
            H = self.hidden_size
            with torch.no_grad():
                if self.forget_bias == "chrono":
                    self.bias_ih[H : 2 * H].copy_(chrono(H, self.max_lag, self.bias_ih))
                else:
                    self.bias_ih[H : 2 * H].fill_(self.forget_bias)
                self.bias_hh[H : 2 * H].zero_()

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., 3H)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        u_r, u_z, u_n = u.chunk(3, dim=1)  # input parts, (N, H) each
        w_r, w_z, w_n = self.project(self.recurrent_input(h), self.weight_hh, self.bias_hh,
                                     "hh").chunk(3, dim=1)
        r = torch.sigmoid(u_r + w_r)
        z = torch.sigmoid(u_z + w_z)
        n = torch.tanh(u_n + r * w_n)
        h = (1 - z) * n + z * h
        return h, h

    def native_mode(self) -> str | None:
        return None if self.layer_norm else "gru"

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += "" if self.bias else ", bias=False"
        s += ", layer_norm=True" if self.layer_norm else ""
        for name in ("forget_bias", "max_lag"):
            if getattr(self, name) is not None:
                s += f", {name}={getattr(self, name)!r}"
        return s
