"""Elman network (simple recurrent network)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, init_layer_norm

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
        identity_init: None for torch's initialisation; a number s for IRNN's (Le et al. 2015):
            :math:`W_{hh} = s I`, zero biases, :math:`W_{ih} \sim \mathcal{N}(0, 0.001^2)`.
            See :func:`irnn`. ``reset_parameters()`` re-applies whichever is chosen.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016) normalizes each product:
    :math:`h_t = \phi(\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) +
    b_{hh})`, :math:`\mathrm{LN}(z) = \alpha \odot (z - \mu_z) / \sqrt{\sigma^2_z + 10^{-5}} +
    \beta` over the row, with gains and biases ``weight_ln_ih, bias_ln_ih, weight_ln_hh,
    bias_ln_hh`` (H each; ones and zeros at initialisation).

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
        *,
        identity_init: float | None = None,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if not isinstance(nonlinearity, str) or nonlinearity not in _ACTIVATIONS:
            raise ValueError(
                f"nonlinearity: Unknown nonlinearity {nonlinearity!r}; expected "
                f"one of {sorted(_ACTIVATIONS)}"
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
        if identity_init is not None:
            if isinstance(identity_init, bool) or not isinstance(identity_init, numbers.Real):
                raise TypeError(f"identity_init: expected a real number or None, got "
                                f"{type(identity_init).__name__} ({identity_init!r})")
            if not math.isfinite(identity_init):
                raise ValueError(f"identity_init: expected a finite number, got {identity_init!r}")
            identity_init = float(identity_init)
        self.identity_init = identity_init
        self.add_layer_norm(layer_norm, {"ih": hidden_size, "hh": hidden_size}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.identity_init is None:
            return super().reset_parameters()
        for name, p in self.named_weights():
            init_layer_norm(name, p)
        with torch.no_grad():  # IRNN: identity recurrence, zero biases, tiny input weights
            nn.init.normal_(self.weight_ih, mean=0.0, std=0.001)
            nn.init.eye_(self.weight_hh).mul_(self.identity_init)  # (H, H) = s I
            if self.bias:
                self.bias_ih.zero_()
                self.bias_hh.zero_()

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., H)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        h = self.phi(u + self.project(self.recurrent_input(h), self.weight_hh, self.bias_hh, "hh"))
        return h, h

    def native_mode(self) -> str | None:
        return None if self.layer_norm else "rnn_" + self.nonlinearity

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"
        s += f", identity_init={self.identity_init}" if self.identity_init is not None else ""
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias else s + ", bias=False"


def irnn(
    input_size: int,
    hidden_size: int,
    bias: bool = True,
    *,
    scale: float = 1.0,
    layer_norm: bool = False,
    device=None,
    dtype=None,
) -> ElmanCell:
    r"""IRNN (Le, Jaitly & Hinton 2015): a ReLU Elman cell initialised at the identity.

    .. math::
        h_t = \mathrm{relu}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),  \qquad y_t = h_t

    with, at initialisation, :math:`W_{hh} = s I`, :math:`b_{ih} = b_{hh} = 0` and
    :math:`W_{ih} \sim \mathcal{N}(0, 0.001^2)`. Why: with an identity recurrence and ReLU, a unit
    in its linear regime copies its state to the next step, so at initialisation the Jacobian
    :math:`\partial h_t / \partial h_{t-1}` is (a masked) :math:`s I` and gradients neither vanish
    nor explode over long sequences, while the tiny input weights keep the state from being
    swamped; a plain ReLU RNN can then learn long-range dependencies that need an LSTM otherwise.
    ``scale`` < 1 (e.g. 0.01, as in the paper's language-model runs) damps the memory.

    This is a factory, not a class: it returns a plain :class:`ElmanCell` (nonlinearity
    ``"relu"``), so networks of it keep torch's native ``rnn_relu`` kernel and state dicts load
    into ``torch.nn.RNN(nonlinearity="relu")``. Only the initialisation differs: it draws from
    torch's global RNG, so ``torch.manual_seed`` makes it repeatable; ``reset_parameters()``
    re-applies it (it is the cell's ``identity_init`` option).

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b_{ih}, b_{hh}`.
        scale: s, the recurrent matrix at initialisation is :math:`s I`.
        layer_norm: as :class:`ElmanCell`'s.

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters (torch's names): ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih`` (H),
    ``bias_hh`` (H).

    >>> cell = irnn(3, 5, scale=0.5)
    >>> torch.equal(cell.weight_hh, 0.5 * torch.eye(5)), cell.native_mode()
    (True, 'rnn_relu')
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a real number, got {type(scale).__name__} ({scale!r})")
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite real number, got {scale!r}")
    return ElmanCell(input_size, hidden_size, bias, "relu", identity_init=scale,
                     layer_norm=layer_norm, device=device, dtype=dtype)
