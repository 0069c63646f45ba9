"""Independently recurrent network (IndRNN): each unit feeds back only its own state."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, init_layer_norm

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def _bound(name: str, value) -> float | None:
    """A recurrent-weight bound: None, or a finite real number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number >= 0 or None, got "
                        f"{type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0 (a bound on |u|, the "
                         f"recurrent weights' magnitude), got {value!r}")
    return float(value)


class IndRNNCell(Cell):
    r"""IndRNN cell (Li, Li, Cook, Zhu & Gao 2018): a recurrent weight per unit, not a matrix.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + u \odot h_{t-1}),  \qquad y_t = h_t

    :math:`u` is a vector (H): unit n sees only its own previous state, so
    :math:`\partial h_{t,n} / \partial h_{t-k,n} = \prod u_n \phi'`, and bounding
    :math:`|u_n|` bounds how fast a gradient grows or fades over time, per unit (with ReLU,
    :math:`|u_n| \le 2^{1/T}` keeps it below 2 over T steps, the paper's choice for long
    sequences). Units interact only through the next layer's :math:`W_{ih}`, so depth does the
    mixing; :math:`\phi` is ReLU (default) or tanh.

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b_{ih}`.
        nonlinearity: ``"relu"`` or ``"tanh"``.
        max_recurrent_weight: :math:`\gamma \ge 0`, the bound :math:`|u_n| \le \gamma`, or None
            (unbounded). Kept by projection, as the paper does: :meth:`constrain_` clamps
            :math:`u` into :math:`[-\gamma, \gamma]` after each optimizer step (``rnnkit train``
            calls it; a loop of your own calls ``network.constrain_()``), and the
            initialisation draws inside the bound.
        recurrent_init: ``(a, b)``: :math:`u_n \sim U(a, b)` at initialisation (the paper's
            (0, 1)), then clamped to :math:`\pm\gamma`.

    Layer normalization (``layer_norm=True``) normalizes the input product:
    :math:`h_t = \phi(\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + u \odot h_{t-1})` (``weight_ln_ih,
    bias_ln_ih``, H each); the recurrent term is one number per unit, with nothing to normalize
    over.

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters: ``weight_ih`` (H, I) and ``bias_ih`` (H), U(-1/sqrt(H), 1/sqrt(H)) as torch
    initialises its RNNs; ``weight_hh`` (H), the vector :math:`u`.

    >>> cell = IndRNNCell(3, 5, max_recurrent_weight=2 ** (1 / 1000))
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape, cell.weight_hh.shape
    (torch.Size([2, 5]), torch.Size([5]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "relu",
        *,
        max_recurrent_weight: float | None = None,
        recurrent_init: tuple[float, float] = (0.0, 1.0),
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if not isinstance(nonlinearity, str) or nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"nonlinearity: Unknown nonlinearity {nonlinearity!r}; expected "
                             f"one of {sorted(_ACTIVATIONS)}")
        self.max_recurrent_weight = _bound("max_recurrent_weight", max_recurrent_weight)
        if (not isinstance(recurrent_init, (tuple, list)) or len(recurrent_init) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                           and math.isfinite(v) for v in recurrent_init)
                or recurrent_init[0] > recurrent_init[1]):
            raise ValueError(f"recurrent_init: expected (a, b), two finite numbers with a <= b, "
                             f"got {recurrent_init!r}")
        self.recurrent_init = (float(recurrent_init[0]), float(recurrent_init[1]))
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = self.output_size = self.state_size = hidden_size
        self.bias = bias
        self.nonlinearity = nonlinearity
        self.phi = _ACTIVATIONS[nonlinearity]
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(H, **kw))  # u
        self.bias_ih = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": hidden_size}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_weights():
            if not isinstance(p, nn.Parameter) or init_layer_norm(name, p):
                continue
            if name == "weight_hh":
                nn.init.uniform_(p, *self.recurrent_init)
            else:
                nn.init.uniform_(p, -k, k)
        self.constrain_()

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp :math:`u` into :math:`[-\\gamma, \\gamma]` (``max_recurrent_weight``), in
        place; nothing without a bound. Call it after each optimizer step."""
        if self.max_recurrent_weight is not None:
            u = self.weight_hh
            if isinstance(u, nn.Parameter):  # (a computed weight is constrained at its source)
                u.clamp_(-self.max_recurrent_weight, self.max_recurrent_weight)

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., H)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = self.phi(u + self.recurrent_input(h) * self.weight_hh)
        return h, h

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
        if self.max_recurrent_weight is not None:
            s += f", max_recurrent_weight={self.max_recurrent_weight}"
        if self.recurrent_init != (0.0, 1.0):
            s += f", recurrent_init={self.recurrent_init}"
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias else s + ", bias=False"
