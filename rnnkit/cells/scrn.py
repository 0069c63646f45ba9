"""Structurally constrained recurrent network (SCRN)."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell, bound_weight, init_layer_norm


class SCRNState(NamedTuple):
    h: Tensor  # (N, H) hidden units
    s: Tensor  # (N, S) context units


class SCRNCell(Cell):
    r"""SCRN cell (Mikolov et al. 2015): a sigmoid Elman cell plus slow, leaky context units.

    Structurally constrained recurrent network, from "Learning longer memory in recurrent
    neural networks" (Mikolov, Joulin, Chopra, Mathieu & Ranzato, ICLR 2015 workshop).

    .. math::
        s_t &= (1 - \alpha) B x_t + \alpha s_{t-1}                       \\
        h_t &= \sigma(P s_t + A x_t + R h_{t-1} + b)                      \\
        y_t &= [h_t ; s_t]

    The context s keeps a fixed fraction :math:`\alpha` of itself per step (its recurrent
    matrix is :math:`\alpha I`, the "structural constraint"), so it remembers the input for about
    :math:`1 / (1 - \alpha)` steps and a gradient through it shrinks only by :math:`\alpha`
    per step. The output carries both layers, so a linear read-out of it is the paper's
    :math:`U h_t + V s_t`.

    With :math:`\alpha = 0` the context is memoryless, :math:`s_t = B x_t`, and the cell is an
    Elman network with sigmoid units and input weight :math:`P B + A`:
    :math:`h_t = \sigma((P B + A) x_t + R h_{t-1} + b)`, with :math:`y_t = [h_t ; B x_t]`.

    Args:
        input_size: I.  hidden_size: H.  bias: if False, no b.
        context_size: S, the context units; default ``max(1, hidden_size // 2)`` (the paper
            pairs a few tens of context units with a larger hidden layer, e.g. 40 with 100).
        alpha: :math:`\alpha`, the context's retention, in [0, 1] (the paper's 0.95 by default);
            in (0, 1) with ``learn_alpha``.
        learn_alpha: learn one :math:`\alpha` per context unit, kept in (0, 1) as
            :math:`\alpha = \sigma(a)` with the parameter ``alpha_logit`` a (S), initialised to
            the given ``alpha`` (in floating point it rounds to 1, freezing the unit, only past
            a = 17 in float32); otherwise :math:`\alpha` is the fixed float ``alpha`` (as in
            the paper).

    Layer normalization (``layer_norm=True``, Ba, Kiros & Hinton 2016): :math:`h_t =
    \sigma(\mathrm{LN}_{ih}(A x_t) + b + P s_t + \mathrm{LN}_{hh}(R h_{t-1}))`; the context and
    its projection are not normalized (``weight_ln_ih, bias_ln_ih, weight_ln_hh, bias_ln_hh``,
    H each).

    Shapes: x ``(N, I)``, state ``SCRNState(h (N, H), s (N, S))``, y ``(N, H + S)``.

    Parameters: ``weight_B`` (S, I), ``weight_P`` (H, S), ``weight_A`` (H, I), ``weight_R``
    (H, H), ``bias`` (H), all U(-1/sqrt(H), 1/sqrt(H)) as torch initialises its RNNs; and
    ``alpha_logit`` (S) = logit(alpha) with ``learn_alpha``.

    >>> cell = SCRNCell(3, 4, context_size=2)
    >>> y, (h, s) = cell(torch.randn(5, 3))
    >>> y.shape, h.shape, s.shape
    (torch.Size([5, 6]), torch.Size([5, 4]), torch.Size([5, 2]))
    >>> SCRNCell(3, 4, learn_alpha=True).alpha
    tensor([0.9500, 0.9500], grad_fn=<SigmoidBackward0>)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        context_size: int | None = None,
        alpha: float = 0.95,
        learn_alpha: bool = False,
        layer_norm: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if context_size is None:
            context_size = max(1, hidden_size // 2)
        check_positive_int("context_size", context_size)
        if not isinstance(learn_alpha, bool):
            raise TypeError(
                f"learn_alpha: expected a bool, got {type(learn_alpha).__name__} ({learn_alpha!r})"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise TypeError(f"alpha: expected a number, got {type(alpha).__name__} ({alpha!r})")
        if learn_alpha and not 0 < alpha < 1:
            raise ValueError(
                f"alpha: expected 0 < alpha < 1 with learn_alpha=True (alpha = sigmoid of a "
                f"finite parameter), got {alpha!r}"
            )
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha: expected 0 <= alpha <= 1, got {alpha!r}")
        kw = {"device": device, "dtype": dtype}
        I, H, S = input_size, hidden_size, context_size
        self.input_size, self.hidden_size, self.context_size = I, H, S
        self.learn_alpha, self.alpha_init = learn_alpha, float(alpha)
        self.output_size = H + S
        self.state_size = SCRNState(h=H, s=S)
        self.weight_B = nn.Parameter(torch.empty(S, I, **kw))
        self.weight_P = nn.Parameter(torch.empty(H, S, **kw))
        self.weight_A = nn.Parameter(torch.empty(H, I, **kw))
        self.weight_R = nn.Parameter(torch.empty(H, H, **kw))
        if bias:  # `bias` is the parameter (or None), as in torch.nn.Linear
            self.bias = nn.Parameter(torch.empty(H, **kw))
        else:
            self.register_parameter("bias", None)
        if learn_alpha:
            self.alpha_logit = nn.Parameter(torch.empty(S, **kw))
        else:
            self.register_parameter("alpha_logit", None)
        self.add_layer_norm(layer_norm, {"ih": H, "hh": H}, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights and bias U(-1/sqrt(H), 1/sqrt(H)); ``alpha_logit`` = logit(alpha)."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_weights():
            if name != "alpha_logit" and isinstance(p, nn.Parameter) \
                    and not init_layer_norm(name, p):  # (see Cell's)
                nn.init.uniform_(p, -k, k)
        if self.alpha_logit is not None:
            a = self.alpha_init
            nn.init.constant_(self.alpha_logit, math.log(a / (1 - a)))

    @property
    def alpha(self) -> float | Tensor:
        """The context's retention: the fixed float, or sigmoid(alpha_logit) (S) if learned."""
        bound = bound_weight(self, "alpha")  # a kernel's double backward binds it
        if bound is not None:
            return bound
        return self.alpha_init if self.alpha_logit is None else torch.sigmoid(self.alpha_logit)

    def precompute(self, xs: Tensor) -> Tensor:
        """``[(1 - alpha) B x ; A x + b]`` ``(..., S + H)``: both input projections, one matmul."""
        keep = 1 - self.alpha  # a float, or (S,) if learned
        if isinstance(keep, Tensor):
            keep = keep.unsqueeze(1)  # scales the rows of B
        weight = torch.cat([keep * self.weight_B, self.weight_A])  # (S + H, I)
        bias = self.bias
        if self.layer_norm:  # LN(A x) + b; the context's projection is not normalized
            u_s, u_h = torch.split(F.linear(xs, weight), [self.context_size, self.hidden_size],
                                   dim=-1)
            u_h = self.normalized(u_h, "ih")
            return torch.cat([u_s, u_h if bias is None else u_h + bias], dim=-1)
        if bias is not None:
            bias = torch.cat([bias.new_zeros(self.context_size), bias])
        return F.linear(xs, weight, bias)

    def recurrent_weight_names(self) -> tuple[str, ...]:
        return ("weight_R",)  # (P reads the current context s_t, not a carried state)

    def state_output(self, state: SCRNState) -> Tensor:
        return torch.cat(list(state), dim=1)

    def step(self, u: Tensor, state: SCRNState) -> tuple[Tensor, SCRNState]:
        h, s = state
        S = self.context_size
        # (split, not slices or narrow: their int arguments break torch's ONNX export of the
        # loop, in its type-promotion pass over the scan's body)
        u_s, u_h = torch.split(u, [S, self.hidden_size], dim=1)
        s = u_s + s * self.alpha  # (1 - alpha) B x_t + alpha s_{t-1}
        h = torch.sigmoid(u_h + F.linear(s, self.weight_P)
                          + self.project(self.recurrent_input(h), self.weight_R, None, "hh"))
        return torch.cat([h, s], dim=1), SCRNState(h, s)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, context_size={self.context_size}"
        s += f", alpha={self.alpha_init}"
        s += ", learn_alpha=True" if self.learn_alpha else ""
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias is not None else s + ", bias=False"
