"""Jordan network: the output layer is remembered and fed back."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell


def _identity(z: Tensor) -> Tensor:
    return z


def _softmax(z: Tensor) -> Tensor:
    return torch.softmax(z, dim=-1)  # over the O output units


# Module-level functions (no lambdas), so a whole cell pickles with torch.save.
HIDDEN_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid,
}
OUTPUT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": _identity, "softmax": _softmax,
}


def pick_activation(arg: str, value, table: dict) -> Callable[[Tensor], Tensor]:
    """``table[value]``, or a ValueError naming ``arg``, the allowed names and what came."""
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"{arg}: expected one of {sorted(table)}, got {value!r}")
    return table[value]


def init_output_cell(cell: Cell, input_size, hidden_size, bias, output_size, activation,
                     output_activation) -> tuple[int, int]:
    """The options shared by cells with an output layer (Jordan, fully recurrent): check them,
    set the sizes, flags and activations on ``cell``; return ``(H, O)``, O defaulting to H."""
    check_positive_int("input_size", input_size)
    check_positive_int("hidden_size", hidden_size)
    O = hidden_size if output_size is None else check_positive_int("output_size", output_size)
    cell.phi_h = pick_activation("activation", activation, HIDDEN_ACTIVATIONS)
    cell.phi_y = pick_activation("output_activation", output_activation, OUTPUT_ACTIVATIONS)
    cell.input_size, cell.hidden_size, cell.output_size = input_size, hidden_size, O
    cell.bias, cell.activation, cell.output_activation = bias, activation, output_activation
    return hidden_size, O


def output_cell_repr(cell: Cell) -> str:
    """``extra_repr`` of a cell set up by :func:`init_output_cell`: the options not at default."""
    s = f"{cell.input_size}, {cell.hidden_size}"
    if cell.output_size != cell.hidden_size:
        s += f", output_size={cell.output_size}"
    if cell.activation != "tanh":
        s += f", activation={cell.activation!r}"
    if cell.output_activation != "tanh":
        s += f", output_activation={cell.output_activation!r}"
    s += ", layer_norm=True" if cell.layer_norm else ""
    return s if cell.bias else s + ", bias=False"


class JordanCell(Cell):
    r"""Jordan cell (Jordan 1986): the output layer is remembered and fed back to the hidden one.

    .. math::
        h_t = \phi_h(W_{ih} x_t + b_{ih} + W_{yh} y_{t-1} + b_{yh}),  \qquad
        y_t = \phi_y(W_{hy} h_t + b_{hy})

    The state is the previous output :math:`y_{t-1}` (Jordan's "state units"), not the hidden
    layer, which is recomputed from scratch at every step. :math:`\phi_h` = tanh (default), ReLU
    or sigmoid; :math:`\phi_y` = tanh (default), sigmoid, identity or softmax over the O units.

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b_{ih}, b_{yh}, b_{hy}`.
        output_size: O, units of :math:`y_t` (default H).
        activation: :math:`\phi_h`, ``"tanh"``, ``"relu"`` or ``"sigmoid"``.
        output_activation: :math:`\phi_y`, ``"tanh"``, ``"sigmoid"``, ``"identity"`` or
            ``"softmax"``.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016):
    :math:`h_t = \phi_h(\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}(W_{yh} y_{t-1}) +
    b_{yh})`; the output layer is not normalized (``weight_ln_ih, bias_ln_ih, weight_ln_hh,
    bias_ln_hh``, H each).

    Shapes: x ``(N, I)``, state :math:`y_{t-1}` ``(N, O)``, y ``(N, O)``.

    Parameters (in this order): ``weight_ih`` (H, I), ``bias_ih`` (H), ``weight_yh`` (H, O),
    ``bias_yh`` (H), ``weight_hy`` (O, H), ``bias_hy`` (O), all initialised
    U(-1/sqrt(H), 1/sqrt(H)) as torch initialises its RNNs.

    >>> cell = JordanCell(3, 5, output_size=2, output_activation="softmax")
    >>> y, state = cell(torch.randn(4, 3))
    >>> y.shape, state.shape, torch.allclose(y.sum(1), torch.ones(4))
    (torch.Size([4, 2]), torch.Size([4, 2]), True)
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
        self.state_size = O
        kw = {"device": device, "dtype": dtype}
        # registration order = reset_parameters' order = state_dict order
        self.weight_ih = nn.Parameter(torch.empty(H, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.weight_yh = nn.Parameter(torch.empty(H, O, **kw))
        self.bias_yh = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.weight_hy = nn.Parameter(torch.empty(O, H, **kw))
        self.bias_hy = nn.Parameter(torch.empty(O, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": H, "hh": H}, **kw)
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., H)

    @property
    def recurrent_input_size(self) -> int:
        return self.output_size  # y_{t-1} is what enters the recurrent product

    def recurrent_weight_names(self) -> tuple[str, ...]:
        return ("weight_yh",)

    def zoned_state_names(self) -> tuple[str, ...]:
        return ("y",)

    def step(self, u: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h = self.phi_h(u + self.project(self.recurrent_input(y), self.weight_yh, self.bias_yh,
                                        "hh"))  # (N, H)
        y = self.phi_y(F.linear(h, self.weight_hy, self.bias_hy))  # (N, O)
        return y, y

    def extra_repr(self) -> str:
        return output_cell_repr(self)
