"""Fully recurrent network: every neuron's output, hidden and output alike, is fed back."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Cell
from .jordan import init_output_cell, output_cell_repr


class FullyState(NamedTuple):
    h: Tensor  # (N, H), the hidden neurons' outputs
    y: Tensor  # (N, O), the output neurons' outputs


class FullyRecurrentCell(Cell):
    r"""Fully recurrent cell (Williams & Zipser 1989): every neuron's output is fed back to all.

    The outputs of all neurons, hidden and output alike, are remembered and fed back to every
    neuron.

    .. math::
        m_{t-1} &= [h_{t-1}; y_{t-1}]                                      \\
        h_t &= \phi_h(W_{ih} x_t + b_{ih} + W_{mh} m_{t-1})                 \\
        y_t &= \phi_y(W_{hy} h_t + W_{my} m_{t-1} + b_{hy})

    The hidden neurons see the input and every neuron's previous output; the output neurons see
    the new hidden layer and every neuron's previous output (Elman and Jordan feedback at once).
    :math:`\phi_h` = tanh (default), ReLU or sigmoid; :math:`\phi_y` = tanh (default), sigmoid,
    identity or softmax over the O units.

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b_{ih}, b_{hy}`.
        output_size: O, units of :math:`y_t` (default H).
        activation: :math:`\phi_h`, ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        output_activation: :math:`\phi_y`, ``"tanh"``, ``"sigmoid"``, ``"identity"`` or
            ``"softmax"``.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016):
    :math:`h_t = \phi_h(\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}(W_{mh} m_{t-1}))`;
    the output layer is not normalized (``weight_ln_ih, bias_ln_ih, weight_ln_hh, bias_ln_hh``,
    H each).

    Shapes: x ``(N, I)``, state ``FullyState(h (N, H), y (N, O))``, y ``(N, O)``.

    Parameters (in this order): ``weight_ih`` (H, I), ``bias_ih`` (H), ``weight_mh`` (H, H+O),
    ``weight_hy`` (O, H), ``weight_my`` (O, H+O), ``bias_hy`` (O), all initialised
    U(-1/sqrt(H), 1/sqrt(H)) as torch initialises its RNNs.

    >>> cell = FullyRecurrentCell(3, 5, output_size=2)
    >>> y, (h, y_state) = cell(torch.randn(4, 3))
    >>> y.shape, h.shape, cell.state_size
    (torch.Size([4, 2]), torch.Size([4, 5]), FullyState(h=5, y=2))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        output_size: int | None = None,
        activation: str = "tanh",
        output_activation: str = "tanh",
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        H, O = init_output_cell(self, input_size, hidden_size, bias, output_size, activation,
                                output_activation)
        self.state_size = FullyState(h=H, y=O)
        kw = {"device": device, "dtype": dtype}
        # registration order = reset_parameters' order = state_dict order
        self.weight_ih = nn.Parameter(torch.empty(H, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.weight_mh = nn.Parameter(torch.empty(H, H + O, **kw))
        self.weight_hy = nn.Parameter(torch.empty(O, H, **kw))
        self.weight_my = nn.Parameter(torch.empty(O, H + O, **kw))
        self.bias_hy = nn.Parameter(torch.empty(O, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": H, "hh": H}, **kw)
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., H)

    @property
    def recurrent_input_size(self) -> int:
        return self.hidden_size + self.output_size  # [h; y]_{t-1}

    def recurrent_weight_names(self) -> tuple[str, ...]:
        return ("weight_mh", "weight_my")

    def state_output(self, state: FullyState) -> Tensor:
        return state.y

    def step(self, u: Tensor, state: FullyState) -> tuple[Tensor, FullyState]:
        m = self.recurrent_input(torch.cat(state, dim=1))  # (N, H+O): every previous output
        h = self.phi_h(u + self.project(m, self.weight_mh, None, "hh"))  # (N, H)
        y = self.phi_y(F.linear(h, self.weight_hy, self.bias_hy) + F.linear(m, self.weight_my))
        return y, FullyState(h, y)  # y (N, O)

    def extra_repr(self) -> str:
        return output_cell_repr(self)
