"""Clockwork RNN: hidden modules that update at different clock rates."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell


def _identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                "identity": _identity}


class ClockworkState(NamedTuple):
    h: Tensor  # (N, H)
    t: Tensor  # (N, 1), the step counter: how many steps this sequence has taken, as a float


def default_num_modules(hidden_size: int) -> int:
    """The default number of modules g: the largest of 4, 3, 2, 1 that divides ``hidden_size``."""
    return next(g for g in (4, 3, 2, 1) if hidden_size % g == 0)


class ClockworkCell(Cell):
    r"""Clockwork RNN cell (Koutník, Greff, Gomez & Schmidhuber 2014, "A Clockwork RNN", ICML).

    Reference: J. Koutník, K. Greff, F. Gomez, J. Schmidhuber, "A Clockwork RNN", ICML 2014
    (arXiv:1402.3511). The H hidden units form g equal modules of H/g units with clock periods
    :math:`T_1 < \dots < T_g`. At step t, counted from 0 at a sequence's first step, module k
    updates if :math:`t \bmod T_k = 0` and keeps its value otherwise; it reads the input and only
    the modules at least as slow as itself (:math:`W_{hh}` is block upper-triangular):

    .. math::
        h_t^{(k)} &= \phi\Big(W_{ih}^{(k)} x_t + b_{ih}^{(k)}
                     + \sum_{j:\, T_j \ge T_k} W_{hh}^{(k,j)} h_{t-1}^{(j)} + b_{hh}^{(k)}\Big)
                     \quad \text{if } t \bmod T_k = 0,
                     \qquad h_t^{(k)} = h_{t-1}^{(k)} \text{ otherwise}  \\
        y_t &= h_t

    with :math:`\phi` = tanh (default), sigmoid, ReLU or identity. The step counter t is part of
    the state, so a sequence run in chunks (state carried) equals the whole sequence at once, and
    in a padded batch it does not advance on padded steps: a reverse pass counts from 0 at each
    sequence's own last valid step.

    Args:
        input_size: I, features of :math:`x_t`.
        hidden_size: H, units of :math:`h_t`; divisible by g = ``len(periods)``.
        bias: if False, no :math:`b_{ih}, b_{hh}`.
        periods: the clock periods :math:`T_1 < \dots < T_g`, strictly increasing positive ints.
            Default :math:`1, 2, 4, \dots, 2^{g-1}` with g the largest of 4, 3, 2, 1 dividing H
            (so g = 1, a plain Elman cell with a counter, if H is odd and not a multiple of 3).
        activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"identity"``.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016): the candidate is
    :math:`\phi(\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}((W_{hh} \odot M)
    h_{t-1}) + b_{hh})`, each product normalized over all H units (``weight_ln_ih, bias_ln_ih,
    weight_ln_hh, bias_ln_hh``).

    Shapes: x ``(N, I)``, state ``ClockworkState(h (N, H), t (N, 1))``, y ``(N, H)``. The counter
    t is a float tensor of the state's dtype, so it stacks, pads and is validated like any state
    tensor; a module's test rounds it first (``round(t) mod T_k``), so its derivative is zero.
    It counts exactly up to 2**24 steps in float32.

    Parameters (torch's names): ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih`` (H),
    ``bias_hh`` (H), all initialised U(-1/sqrt(H), 1/sqrt(H)) as in torch, then the entries of
    ``weight_hh`` outside the block upper-triangular mask are zeroed; the step uses
    ``weight_hh * mask`` (``mask`` a non-persistent buffer), so they also get zero gradient.
    This step computes every module and then discards the inactive ones (the batch's sequences
    may be at different steps), so it costs an Elman cell's step. The fused kernel
    (:mod:`rnnkit.kernels.clockwork`) computes only the active modules' rows at the steps where
    every sequence shares the counter (a fresh state, no padding: the usual training case); with
    ``layer_norm=True`` an active module needs the whole row's statistics, so it computes every
    row at the steps where some module is active, skipping only those where none is.

    >>> cell = ClockworkCell(3, 8, periods=(1, 2, 4, 8))
    >>> y, (h, t) = cell(torch.randn(2, 3))
    >>> y.shape, t.flatten().tolist()
    (torch.Size([2, 8]), [1.0, 1.0])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        periods=None,
        activation: str = "tanh",
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__} ({bias!r})")
        if periods is None:
            periods = tuple(2**k for k in range(default_num_modules(hidden_size)))
        periods = _check_periods(periods, hidden_size)
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        kw = {"device": device, "dtype": dtype}
        H, g = hidden_size, len(periods)
        self.input_size = input_size
        self.hidden_size = self.output_size = H
        self.state_size = ClockworkState(h=H, t=1)
        self.bias, self.periods, self.activation = bias, periods, activation
        self.phi = _ACTIVATIONS[activation]
        # the period of each unit, and mask[i, j] = 1 where unit i reads unit j (T_j >= T_i)
        fdtype = dtype if dtype is not None else torch.get_default_dtype()
        unit_periods = torch.tensor(periods, device=device, dtype=fdtype)
        unit_periods = unit_periods.repeat_interleave(H // g)  # (H,)
        self.register_buffer("unit_periods", unit_periods, persistent=False)
        mask = (unit_periods.unsqueeze(0) >= unit_periods.unsqueeze(1)).to(unit_periods.dtype)
        self.register_buffer("mask", mask, persistent=False)  # (H, H)
        self.weight_ih = nn.Parameter(torch.empty(H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(H, H, **kw))
        self.bias_ih = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": H, "hh": H}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's U(-1/sqrt(H), 1/sqrt(H)) for every parameter, then the recurrent entries
        outside the block upper-triangular mask set to zero."""
        super().reset_parameters()
        with torch.no_grad():
            self.weight_hh.mul_(self.mask)

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., H)

    def zoned_state_names(self) -> tuple[str, ...]:
        return ("h",)  # (t counts steps: never zoned)

    def step(self, u: Tensor, state: ClockworkState) -> tuple[Tensor, ClockworkState]:
        h, t = state  # (N, H), (N, 1)
        candidate = self.phi(u + self.project(self.recurrent_input(h), self.weight_hh * self.mask,
                                              self.bias_hh, "hh"))  # (N, H)
        active = torch.remainder(torch.round(t), self.unit_periods) == 0  # (N, H)
        h = torch.where(active, candidate, h)
        return h, ClockworkState(h, t + 1)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, periods={self.periods}"
        s += f", activation={self.activation!r}" if self.activation != "tanh" else ""
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias else s + ", bias=False"


def _check_periods(periods, hidden_size: int) -> tuple[int, ...]:
    """Strictly increasing positive ints, as many as divide ``hidden_size`` into equal modules."""
    if not isinstance(periods, (tuple, list)) or len(periods) == 0:
        raise TypeError(
            "periods: expected a non-empty tuple of strictly increasing positive ints, "
            f"got {periods!r}"
        )
    for p in periods:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            raise TypeError(
                f"periods: expected ints, got {type(p).__name__} ({p!r}) in {periods!r}"
            )
    periods = tuple(int(p) for p in periods)
    if periods[0] < 1 or any(a >= b for a, b in zip(periods[:-1], periods[1:], strict=True)):
        raise ValueError(
            f"periods: expected strictly increasing positive ints, got {periods!r}"
        )
    if hidden_size % len(periods):
        raise ValueError(
            f"hidden_size: expected a multiple of the number of modules g = len(periods) = "
            f"{len(periods)} (periods={periods!r}), got {hidden_size}"
        )
    return periods
