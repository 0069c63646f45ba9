"""Long short-term memory, with peephole connections and the options of its variants."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, check_chrono, chrono


class LSTMState(NamedTuple):
    h: Tensor  # (N, H), or (N, P) with a projection
    c: Tensor  # (N, H)


def _identity(x: Tensor) -> Tensor:
    return x


_ACTIVATIONS = {"tanh": torch.tanh, "identity": _identity}
_PEEPHOLES = (None, "diagonal", "full")


def _check_choice(name: str, value, allowed: tuple) -> None:
    """``value`` must be one of ``allowed`` (compared by type too: ``True`` is not ``1``)."""
    if not any(value is a or (isinstance(value, str) and value == a) for a in allowed):
        raise ValueError(
            f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}"
        )


class LSTMCell(Cell):
    r"""LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi} + p_i \odot c_{t-1})  \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf} + p_f \odot c_{t-1})  \\
        g_t &= \gamma(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg})                      \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t                                          \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho} + p_o \odot c_t)      \\
        h_t &= o_t \odot \phi(c_t)  \qquad (h_t = W_{hr}(o_t \odot \phi(c_t)) \text{ if } P > 0)

    i input gate, f forget gate, g candidate, o output gate, c memory cell, y_t = h_t.
    The peephole terms :math:`p \odot c` are absent by default (``peephole=None``), and are
    matrix products :math:`P_i c_{t-1}, P_f c_{t-1}, P_o c_t` with ``peephole="full"``;
    :math:`\gamma` and :math:`\phi` are tanh by default. With the defaults this is exactly
    ``torch.nn.LSTMCell`` (and one direction of one layer of ``torch.nn.LSTM``, including its
    ``proj_size`` projection, Sak et al. 2014), and networks of it run torch's own kernel.

    Peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and count") let
    the gates see the memory cell: the input and forget gates see :math:`c_{t-1}`, the output
    gate sees the *new* :math:`c_t`. ``peephole="diagonal"`` is the paper's form, one weight per
    unit (:math:`p \odot c`); ``peephole="full"`` uses full matrices (:math:`P_i c_{t-1}`,
    :math:`P_f c_{t-1}`, :math:`P_o c_t`), i.e. the memory cell is concatenated to the gates'
    input. Any peephole or non-tanh activation leaves torch's kernel: networks run rnnkit's fused
    LSTM op (``torch.ops.rnnkit.lstm_sequence``, compiled C++ on the CPU) instead.

    Args:
        input_size: I.  hidden_size: H.  bias: if False, no biases.
        proj_size: P > 0 projects h to P units (``weight_hr``); 0 means none.
        peephole: None (default), ``"diagonal"`` (or True) or ``"full"``.
        forget_bias: None (default: torch's init) or a number b: initialise the forget gate's
            bias to :math:`b_{if} = b, b_{hf} = 0` (Gers, Schmidhuber & Cummins 2000;
            Jozefowicz et al. 2015 recommend b = 1). It helps on long time lags: the gate starts
            open (:math:`f \approx \sigma(b)`), so the memory and its gradient survive the early
            updates instead of decaying by about 1/2 per step. Only an initialisation: the
            parameters, their names and torch's kernel stay as without it. Needs ``bias=True``.
            ``"chrono"`` (with ``max_lag``): Tallec & Ollivier 2018's chrono initialisation,
            :math:`b_f \sim \log U(1, T_{max} - 1)` per unit and :math:`b_i = -b_f`, so the
            units start with memories spread over 2 to :math:`T_{max}` steps.
        max_lag: :math:`T_{max}`, the longest time lag to expect, for ``forget_bias="chrono"``.
        candidate_activation: :math:`\gamma`, ``"tanh"`` (default) or ``"identity"``.
        cell_activation: :math:`\phi`, the squash of the memory in :math:`h_t`, ``"tanh"``
            (default) or ``"identity"`` (with both identity, the cell adds and outputs raw
            values, as in hand-set textbook LSTMs: ``examples/handset_lstm.py``).

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016): the gate
    pre-activations are :math:`\mathrm{LN}_{ih}(W_{ih} x_t) + b_{ih} + \mathrm{LN}_{hh}(W_{hh}
    h_{t-1}) + b_{hh}` (each 4H row normalized whole; peephole terms added after), and
    :math:`h_t = o_t \odot \phi(\mathrm{LN}_c(c_t))` (the carried :math:`c_t` stays
    unnormalized); gains and biases ``weight_ln_ih, bias_ln_ih, weight_ln_hh, bias_ln_hh`` (4H)
    and ``weight_ln_c, bias_ln_c`` (H). Networks of it leave torch's kernel.

    Shapes: x ``(N, I)``, state ``LSTMState(h (N, H or P), c (N, H))``, y ``(N, H or P)``.

    Parameters (torch's names and gate order i, f, g, o): ``weight_ih`` (4H, I),
    ``weight_hh`` (4H, H or P), ``bias_ih`` (4H), ``bias_hh`` (4H), ``weight_hr`` (P, H); then
    ``weight_peephole`` (3H) = :math:`[p_i; p_f; p_o]` for a diagonal peephole, or
    ``weight_ch`` (3H, H) = :math:`[P_i; P_f; P_o]` for a full one. All are initialised
    U(-1/sqrt(H), 1/sqrt(H)) in this order, as torch does, so the four torch parameters (and
    ``weight_hr``) of a seeded cell equal those of ``torch.nn.LSTMCell`` (``torch.nn.LSTM``
    with a projection) seeded alike.

    >>> cell = LSTMCell(3, 5)
    >>> y, (h, c) = cell(torch.randn(2, 3))
    >>> y.shape, c.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    >>> LSTMCell(3, 5, peephole="diagonal", forget_bias=1.0)
    LSTMCell(3, 5, peephole='diagonal', forget_bias=1.0)
    >>> LSTMCell(3, 5, peephole="full").weight_ch.shape
    torch.Size([15, 5])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        peephole: str | None = None,
        forget_bias: float | str | None = None,
        max_lag: int | None = None,
        candidate_activation: str = "tanh",
        cell_activation: str = "tanh",
        layer_norm: bool = False,
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
        if peephole is True:  # LSTM(peephole=True) reads naturally: the paper's diagonal form
            peephole = "diagonal"
        _check_choice("peephole", peephole, _PEEPHOLES)
        _check_choice("candidate_activation", candidate_activation, tuple(_ACTIVATIONS))
        _check_choice("cell_activation", cell_activation, tuple(_ACTIVATIONS))
        forget_bias, max_lag = check_chrono("forget_bias", forget_bias, max_lag)
        if forget_bias is not None and not bias:
            raise ValueError(
                f"forget_bias: expected None with bias=False (there is no forget-gate bias "
                f"to initialise), got {forget_bias!r}"
            )
        kw = {"device": device, "dtype": dtype}
        H, R = hidden_size, proj_size or hidden_size  # R: size of the recurrent h
        self.input_size, self.hidden_size = input_size, H
        self.proj_size, self.bias = proj_size, bias
        self.peephole, self.forget_bias, self.max_lag = peephole, forget_bias, max_lag
        self.candidate_activation, self.cell_activation = candidate_activation, cell_activation
        self._gamma = _ACTIVATIONS[candidate_activation]
        self._phi = _ACTIVATIONS[cell_activation]
        self.output_size = R
        self.state_size = LSTMState(h=R, c=H)
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, R, **kw))
        self.bias_ih = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * H, **kw)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(R, H, **kw)) if proj_size else None
        # after torch's parameters, so their random draws are torch's
        if peephole == "diagonal":
            self.weight_peephole = nn.Parameter(torch.empty(3 * H, **kw))  # p_i, p_f, p_o
        elif peephole == "full":
            self.weight_ch = nn.Parameter(torch.empty(3 * H, H, **kw))  # P_i; P_f; P_o
        self.add_layer_norm(layer_norm, {"ih": 4 * H, "hh": 4 * H, "c": H}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""torch's initialisation of every parameter, then ``forget_bias`` if given (chrono:
        :math:`b_f \sim \log U(1, T_{max} - 1)` and :math:`b_i = -b_f`)."""
        super().reset_parameters()
        if self.forget_bias is not None:
            H = self.hidden_size
            with torch.no_grad():
                if self.forget_bias == "chrono":
                    b_f = chrono(H, self.max_lag, self.bias_ih)
                    self.bias_ih[H : 2 * H].copy_(b_f)
                    self.bias_ih[:H].copy_(-b_f)
                    self.bias_hh[: 2 * H].zero_()
                else:
                    self.bias_ih[H : 2 * H].fill_(self.forget_bias)
                    self.bias_hh[H : 2 * H].zero_()

    def precompute(self, xs: Tensor) -> Tensor:
        return self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., 4H)

    def step(self, u: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        h, c = state
        z = u + self.project(self.recurrent_input(h), self.weight_hh, self.bias_hh, "hh")
        i, f, g, o = z.chunk(4, dim=1)
        if self.peephole is None:
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), self._gamma(g), torch.sigmoid(o)
            c = f * c + i * g
        else:
            diagonal = self.peephole == "diagonal"
            if diagonal:
                p_i, p_f, p_o = self.weight_peephole.chunk(3)  # (H,) each
                peep_i, peep_f = p_i * c, p_f * c
            else:
                H = self.hidden_size
                p_o = self.weight_ch[2 * H :]  # P_o (H, H)
                # P_i c_{t-1}, P_f c_{t-1}
                peep_i, peep_f = F.linear(c, self.weight_ch[: 2 * H]).chunk(2, dim=1)
            i, f, g = torch.sigmoid(i + peep_i), torch.sigmoid(f + peep_f), self._gamma(g)
            c = f * c + i * g
            o = torch.sigmoid(o + (p_o * c if diagonal else F.linear(c, p_o)))  # sees the new c_t
        h = o * self._phi(self.normalized(c, "c") if self.layer_norm else c)
        if self.weight_hr is not None:
            h = F.linear(h, self.weight_hr)  # (N, P)
        return h, LSTMState(h, c)

    @property
    def recurrent_input_size(self) -> int:
        return self.output_size  # h: proj_size wide with a projection

    def native_mode(self) -> str | None:
        plain = self.candidate_activation == "tanh" and self.cell_activation == "tanh"
        return "lstm" if self.peephole is None and plain and not self.layer_norm else None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += f", proj_size={self.proj_size}" if self.proj_size else ""
        s += "" if self.bias else ", bias=False"
        for name, default in (("peephole", None), ("forget_bias", None), ("max_lag", None),
                              ("candidate_activation", "tanh"), ("cell_activation", "tanh"),
                              ("layer_norm", False)):
            value = getattr(self, name)
            if value != default:
                s += f", {name}={value!r}"
        return s


def peephole_lstm(
    input_size: int,
    hidden_size: int,
    bias: bool = True,
    *,
    peephole: str = "diagonal",
    **options,
) -> LSTMCell:
    """LSTM with peephole connections, the gates see the memory cell (Gers & Schmidhuber 2000).

    ``LSTMCell(input_size, hidden_size, bias, peephole=peephole, **options)``: a diagonal
    peephole by default, ``peephole="full"`` for full matrices; see :class:`LSTMCell`.

    >>> peephole_lstm(3, 5)
    LSTMCell(3, 5, peephole='diagonal')
    """
    return LSTMCell(input_size, hidden_size, bias, peephole=peephole, **options)
