"""Continuous-time recurrent neural network, integrated by Euler steps."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, check_chrono, chrono, init_layer_norm


def _identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
                "identity": _identity}


class CTRNNCell(Cell):
    r"""Continuous-time RNN cell (Beer 1995): leaky units with learned time constants, Euler steps.

    Reference: R. D. Beer, "On the dynamics of small continuous-time recurrent neural networks",
    Adaptive Behavior 3(4), 1995. One Euler step of the ODE per time step:

    .. math::
        \tau \odot \frac{dh}{dt} &= -h + W_{hh} \phi(h) + W_{ih} x + b                       \\
        h_t &= h_{t-1} + \frac{\Delta t}{\tau} \odot
               \big(-h_{t-1} + W_{hh} \phi(h_{t-1}) + W_{ih} x_t + b\big),
               \qquad y_t = \phi(h_t)

    with one time constant :math:`\tau = \exp(\text{log\_tau}) > 0` per unit (learned) and
    :math:`\phi` = tanh (default), sigmoid, ReLU or identity. (Beer writes the bias and a gain
    inside :math:`\phi`; here the bias is outside, with the input.) The step is computed as the
    equal :math:`h_t = (1 - \alpha) \odot h_{t-1} + \alpha \odot (W_{hh} \phi(h_{t-1}) + W_{ih}
    x_t + b)`, :math:`\alpha = \Delta t / \tau`, so :math:`\Delta t = \tau` (the default
    ``dt=1.0, tau_init=1.0`` at initialisation) is exactly the non-leaky
    :math:`h_t = W_{hh} \phi(h_{t-1}) + W_{ih} x_t + b`.

    Args:
        input_size: I, features of :math:`x_t`, including the :math:`\Delta t` channel if
            ``dt_input``.
        hidden_size: H, units of :math:`h_t`.
        bias: if False, no :math:`b`.
        dt: the constant step :math:`\Delta t > 0` (without ``dt_input``).
        dt_input: read a per-step, per-sample :math:`\Delta t` from the LAST input channel, for
            irregularly sampled series; the other I - 1 channels are :math:`x_t`. It is not
            checked (a padded step may hold 0). In a ``RecurrentNetwork`` every layer's cell
            gets the option, so deeper layers would read a hidden unit as their
            :math:`\Delta t`: use it in the first layer (or a one-layer network).
        activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"identity"``.
        tau_init: initial :math:`\tau > 0` of every unit, or ``"chrono"`` (with ``max_lag``,
            Tallec & Ollivier 2018): :math:`\tau / \Delta t \sim 1 + U(1, T_{max} - 1)` per unit,
            the time constants the chrono LSTM's forget gates start with.
        max_lag: :math:`T_{max}` for ``tau_init="chrono"``.

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016): the drive is
    :math:`\mathrm{LN}_{hh}(W_{hh} \phi(h)) + \mathrm{LN}_{ih}(W_{ih} x) + b` (``weight_ln_ih,
    bias_ln_ih, weight_ln_hh, bias_ln_hh``, H each).

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``.

    Parameters, in order: ``weight_ih`` (H, I, or I - 1 with ``dt_input``), ``weight_hh``
    (H, H), ``bias`` (H), ``log_tau`` (H); the first three U(-1/sqrt(H), 1/sqrt(H)) as in torch,
    ``log_tau`` = log(tau_init).

    >>> cell = CTRNNCell(3, 5, dt=0.1, tau_init=2.0)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape, cell.log_tau.exp().tolist()
    (torch.Size([2, 5]), [2.0, 2.0, 2.0, 2.0, 2.0])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dt: float = 1.0,
        dt_input: bool = False,
        activation: str = "tanh",
        tau_init: float | str = 1.0,
        max_lag: int | None = None,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        for name, flag in (("bias", bias), ("dt_input", dt_input)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} ({flag!r})")
        _check_positive_number("dt", dt)
        tau_init, max_lag = check_chrono("tau_init", tau_init, max_lag)
        if tau_init != "chrono":
            _check_positive_number("tau_init", tau_init)
        if dt_input and dt != 1.0:
            raise ValueError(
                f"dt: unused with dt_input=True (Δt is read from the last input channel); "
                f"leave it at 1.0, got {dt!r}"
            )
        if dt_input and input_size < 2:
            raise ValueError(
                "input_size: expected >= 2 with dt_input=True (the last channel is Δt, the "
                f"others the input), got {input_size}"
            )
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        kw = {"device": device, "dtype": dtype}
        H = hidden_size
        self.input_size = input_size
        self.hidden_size = self.output_size = self.state_size = H
        self.dt, self.dt_input, self.tau_init = float(dt), dt_input, tau_init
        self.max_lag = max_lag
        self.activation = activation
        self.phi = _ACTIVATIONS[activation]
        self.weight_ih = nn.Parameter(torch.empty(H, input_size - dt_input, **kw))
        self.weight_hh = nn.Parameter(torch.empty(H, H, **kw))
        self.bias = nn.Parameter(torch.empty(H, **kw)) if bias else None
        self.log_tau = nn.Parameter(torch.empty(H, **kw))
        self.add_layer_norm(layer_norm, {"ih": H, "hh": H}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's U(-1/sqrt(H), 1/sqrt(H)) for the weights and bias, in registration order;
        ``log_tau`` = log(tau_init)."""
        k = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, p in self.named_weights():
                if name == "log_tau" and self.tau_init == "chrono":
                    # 1 / alpha = tau / dt ~ 1 + U(1, T_max - 1): the time constants the
                    # chrono LSTM's forget gates start with, in steps of dt
                    dt = 1.0 if self.dt_input else self.dt
                    p.copy_(chrono(p.shape[0], self.max_lag, p).exp_().add_(1).mul_(dt).log_())
                elif name == "log_tau":
                    p.fill_(math.log(self.tau_init))
                elif isinstance(p, nn.Parameter) and not init_layer_norm(name, p):
                    nn.init.uniform_(p, -k, k)  # (see Cell.reset_parameters)

    def precompute(self, xs: Tensor) -> Tensor:
        if not self.dt_input:
            return self.project(xs, self.weight_ih, self.bias, "ih")  # (..., H)
        drive = self.project(xs[..., :-1], self.weight_ih, self.bias, "ih")
        return torch.cat([drive, xs[..., -1:]], dim=-1)  # (..., H + 1): [W_ih x + b ; Δt]

    def state_output(self, h: Tensor) -> Tensor:
        return self.phi(h)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if self.dt_input:
            drive, dt = u[:, :-1], u[:, -1:]  # (N, H), (N, 1)
        else:
            drive, dt = u, self.dt
        alpha = dt / torch.exp(self.log_tau)  # (N, H) or (H,)
        fed_back = self.project(self.recurrent_input(self.phi(h)), self.weight_hh, None, "hh")
        h = (1 - alpha) * h + alpha * (fed_back + drive)
        return self.phi(h), h

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, "
        s += "dt_input=True" if self.dt_input else f"dt={self.dt}"
        s += f", activation={self.activation!r}" if self.activation != "tanh" else ""
        s += f", tau_init={self.tau_init!r}" if self.tau_init != 1.0 else ""
        s += f", max_lag={self.max_lag}" if self.max_lag is not None else ""
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias is not None else s + ", bias=False"


def _check_positive_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__} "
                        f"({value!r})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
