r"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We
Needed?"): gates that read only the input, so the recurrence is linear in the state,
:math:`h_t = a_t \odot h_{t-1} + b_t`, and a whole sequence trains through a parallel scan over
time (:mod:`rnnkit.ops.minrnn`) instead of a loop of matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_positive_int
from .base import Cell


def candidate(v: Tensor) -> Tensor:
    r""":math:`g(v) = v + \tfrac12` for :math:`v \ge 0`, :math:`\sigma(v)` below: the paper's
    positive, continuous candidate activation (what its log-space models use)."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def update_preactivation(blocks, lstm: bool) -> Tensor:
    r"""The update gate's pre-activation :math:`k` from the gate blocks of the input product
    (each ``(..., H)``): minGRU's :math:`k_z`; minLSTM's :math:`\mathrm{softplus}(-k_f) -
    \mathrm{softplus}(-k_i)`, for which :math:`\sigma(k) = i / (f + i)`, the normalized input
    gate."""
    if not lstm:
        return blocks[0]
    return F.softplus(-blocks[0]) - F.softplus(-blocks[1])


class _MinCell(Cell):
    """What minGRU and minLSTM share: one input product ``u = W_ih x + b_ih`` of ``gates``
    blocks of H (the last the candidate's), and the step
    ``h_t = (1 - z) h_{t-1} + z g(v)``."""

    gates: int
    lstm: bool

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 layer_norm: bool = False, device=None, dtype=None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = self.output_size = self.state_size = hidden_size
        self.bias = bias
        G = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(G, **kw)) if bias else None
        self.add_layer_norm(layer_norm, {"ih": G}, **kw)
        self.reset_parameters()

    def precompute(self, xs: Tensor) -> Tensor:
        # (..., gates, H): the step takes its blocks apart with unbind, whose backward needs no
        # sizes (a slice's saves one, which torch's scan cannot trace for an ONNX export)
        u = self.project(xs, self.weight_ih, self.bias_ih, "ih")  # (..., G)
        return u.unflatten(-1, (self.gates, self.hidden_size))

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        blocks = u.unbind(-2)
        z = torch.sigmoid(update_preactivation(blocks, self.lstm))
        cand = candidate(blocks[-1])
        h = h + z * (self.recurrent_input(cand) - h)  # (1 - z) h + z cand
        return h, h

    def recurrent_weight_names(self) -> tuple[str, ...]:
        return ()  # the state meets no weight: nothing for weight_drop to drop

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        s += ", layer_norm=True" if self.layer_norm else ""
        return s if self.bias else s + ", bias=False"


class MinGRUCell(_MinCell):
    r"""minGRU cell (Feng et al. 2024): a GRU whose gate and candidate read only the input.

    .. math::
        z_t = \sigma(W_z x_t + b_z), \qquad \tilde h_t = g(W_h x_t + b_h), \qquad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t, \qquad y_t = h_t

    with :math:`g(v) = v + \tfrac12` for :math:`v \ge 0` and :math:`\sigma(v)` below (the
    paper's activation, which keeps :math:`\tilde h_t > 0`). No weight touches
    :math:`h_{t-1}`: the recurrence is linear, :math:`h_t = a_t \odot h_{t-1} + b_t` with
    :math:`a_t = 1 - z_t`, :math:`b_t = z_t \odot \tilde h_t` known for every step at once, so
    a sequence trains without a loop of products: through a parallel scan in :math:`O(\log
    T)` depth on CUDA, a fused sweep over the units on the CPU (:mod:`rnnkit.ops.minrnn`);
    :meth:`step` is the sequential form, for streaming.

    ``recurrent_dropout`` has no recurrent product to act in: it drops the candidate,
    :math:`z_t \odot (m \odot \tilde h_t)` (Semeniuta et al. 2016's recurrent dropout without
    memory loss; one mask per sequence); ``weight_drop`` has no recurrent weight and is
    refused. Layer normalization (``layer_norm=True``) normalizes the input product
    :math:`W x_t` (``weight_ln_ih, bias_ln_ih``, 2H each) before the bias.

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``. Parameters: ``weight_ih``
    ``(2H, I)`` (:math:`[W_z; W_h]`) and ``bias_ih`` ``(2H)``, U(-1/sqrt(H), 1/sqrt(H)).

    >>> cell = MinGRUCell(3, 5)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape, cell.weight_ih.shape
    (torch.Size([2, 5]), torch.Size([10, 3]))
    """

    gates, lstm = 2, False


class MinLSTMCell(_MinCell):
    r"""minLSTM cell (Feng et al. 2024): an LSTM whose gates read only the input, with its
    forget and input gates normalized to sum to one and no output gate or separate memory.

    .. math::
        f_t = \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i), \quad
        \tilde h_t = g(W_h x_t + b_h),

        h_t = \frac{f_t}{f_t + i_t} \odot h_{t-1} + \frac{i_t}{f_t + i_t} \odot \tilde h_t,
        \qquad y_t = h_t

    (:math:`g` as in :class:`MinGRUCell`). The normalized input gate is computed stably as
    :math:`i_t / (f_t + i_t) = \sigma(\mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i))`, so
    the cell is a minGRU with that update gate, and trains through the same parallel scan.
    Regularizers and layer normalization as :class:`MinGRUCell` (the input product is 3H wide).

    Shapes: x ``(N, I)``, state h ``(N, H)``, y ``(N, H)``. Parameters: ``weight_ih``
    ``(3H, I)`` (:math:`[W_f; W_i; W_h]`) and ``bias_ih`` ``(3H)``, U(-1/sqrt(H), 1/sqrt(H)).

    >>> cell = MinLSTMCell(3, 5)
    >>> y, h = cell(torch.randn(2, 3))
    >>> y.shape, cell.weight_ih.shape
    (torch.Size([2, 5]), torch.Size([15, 3]))
    """

    gates, lstm = 3, True
