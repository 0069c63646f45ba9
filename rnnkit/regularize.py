r"""Regularizers for every cell of the family: recurrent (variational) dropout, locked dropout
between layers, DropConnect on the recurrent weights, and zoneout.

They are options of :class:`~rnnkit.RecurrentNetwork` and every façade (``rnnkit.LSTM``,
``GRU``, ``RNN``, ``Jordan``, ...), off by default (and then the network computes exactly what it
computed without them). Per layer and direction, with :math:`p` the option's probability:

``recurrent_dropout=p`` (Gal & Ghahramani 2016). One mask per sequence and forward,
:math:`m \sim \text{Bernoulli}(1 - p)^{N \times R} / (1 - p)`, reused at every step, on the
carried state where it enters the recurrent weight product:

.. math:: W_{hh} h_{t-1} \;\to\; W_{hh} (m \odot h_{t-1})

That is :math:`h_{t-1}` for Elman, GRU, LSTM (its ``h``, ``proj_size`` wide with a projection)
and Clockwork; :math:`y_{t-1}` for Jordan; :math:`[h; y]_{t-1}` in both of the fully recurrent
net's products; :math:`h_{t-1}` in SCRN's :math:`R h_{t-1}`; :math:`\phi(h_{t-1})` in the CTRNN's
:math:`W_{hh} \phi(h_{t-1})`. What a cell carries on by itself is not dropped (GRU's
:math:`z \odot h_{t-1}`, the CTRNN's leak, Clockwork's resting modules, the LSTM's memory cell,
SCRN's context). At evaluation there is no mask.

``dropout_mode="variational"``. ``dropout`` (between layers, as in torch.nn) draws one mask per
sequence, :math:`(N, F)`, reused at every step, instead of a new one per step and element
(``"standard"``). The applications' ``input_dropout`` (embeddings and the last layer's outputs)
follows the same mode (``model.dropout_mode``): together, Gal's variational LSTM.

``weight_drop=p`` (DropConnect, Wan et al. 2013, on the recurrent weights as AWD-LSTM does,
Merity et al. 2018). One mask per forward, shared by the batch and every step, on each recurrent
weight matrix (:meth:`rnnkit.cells.base.Cell.recurrent_weight_names`):

.. math:: W_{hh} \;\to\; W_{hh} \odot M / (1 - p), \quad M \sim \text{Bernoulli}(1 - p)

The dropped weight is what the network hands its kernel for that forward (the kernel takes
the weight as an input: no copy replaces the module's parameter, so nothing warns about
non-contiguous weights, and torch's own LSTM kernel keeps running). At evaluation: :math:`W`.

``zoneout=p`` or a tuple with one probability per state tensor (``(p_h, p_c)`` for the LSTM;
Krueger et al. 2017). Each unit of each state tensor keeps its previous value with probability
:math:`p`, drawn anew at every step:

.. math::
    s_t = d_t \odot s_{t-1} + (1 - d_t) \odot \tilde s_t, \qquad
    d_t \sim \text{Bernoulli}(p)^{N \times S} \ \text{(training)}, \quad d_t = p \
    \text{(evaluation: the expectation)}

where :math:`\tilde s_t` is the cell's new state; the step's output is the cell's output of the
zoned state (:meth:`~rnnkit.cells.base.Cell.state_output`: :math:`h_t` for most cells). A
counter (Clockwork's step count) is never zoned. At a padded step the state is carried as
always.

Masks come from torch's random generator of the input's device, in a fixed order (per layer,
forward direction before reverse; the recurrent dropout mask, then the zoneout masks), so a
seeded run draws the same ones, and a run resumed with its generator's state continues
exactly. The chrono initialisation of gates (``forget_bias="chrono", max_lag=T``, Tallec &
Ollivier 2018) is a cell option: :class:`~rnnkit.cells.LSTMCell`, :class:`~rnnkit.cells.GRUCell`,
:class:`~rnnkit.cells.CTRNNCell`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells.base import Cell, bind, state_from_leaves, state_leaves

DROPOUT_MODES = ("standard", "variational")


def check_probability(name: str, value) -> float:
    """``value`` as a float in [0, 1), else a ValueError/TypeError that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a probability in [0, 1), got "
                        f"{type(value).__name__} ({value!r})")
    if not 0 <= value < 1:
        raise ValueError(f"{name}: expected a probability in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Regularizers:
    """A network's regularizer options (see the module's docstring), checked."""

    recurrent_dropout: float = 0.0
    zoneout: tuple[float, ...] = ()  # one probability per zoned state tensor; () = off
    weight_drop: float = 0.0
    dropout_mode: str = "standard"

    @classmethod
    def checked(cls, cell: Cell, *, recurrent_dropout=0.0, zoneout=0.0, weight_drop=0.0,
                dropout_mode="standard") -> Regularizers:
        """The options for networks of ``cell`` (one cell of the network, for its state's
        layout), or a clear error naming the option."""
        recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        weight_drop = check_probability("weight_drop", weight_drop)
        if dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"dropout_mode: expected one of {', '.join(map(repr, DROPOUT_MODES))}"
                             f", got {dropout_mode!r}")
        if weight_drop and not cell.recurrent_weight_names():
            raise ValueError(f"weight_drop: {type(cell).__name__} has no recurrent weight to "
                             f"drop (its state meets no weight), got {weight_drop!r}; use "
                             f"recurrent_dropout or zoneout")
        zoned = cell.zoned_state_names()
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != len(zoned):
                raise ValueError(
                    f"zoneout: expected one probability or {len(zoned)} (one per state tensor "
                    f"of {type(cell).__name__}: {', '.join(zoned)}), got {len(zoneout)} "
                    f"({tuple(zoneout)!r})")
            probs = tuple(check_probability(f"zoneout[{i}] ({name})", p)
                          for i, (name, p) in enumerate(zip(zoned, zoneout, strict=True)))
        else:
            probs = (check_probability("zoneout", zoneout),) * len(zoned)
        if not any(probs):
            probs = ()
        return cls(recurrent_dropout, probs, weight_drop, dropout_mode)

    @property
    def per_step(self) -> bool:
        """Whether the recurrence itself changes (recurrent dropout while training, zoneout
        always): the layers then run one by one with masks (not torch's whole-stack kernel)."""
        return bool(self.recurrent_dropout or self.zoneout)

    def masks(self, cell: Cell, T: int, N: int, like: Tensor, training: bool) -> Masks | None:
        """This forward's masks for one layer and direction of ``cell`` over ``T`` steps of
        ``N`` sequences (dtype and device of ``like``), or None where none applies."""
        drop = zone = None
        if training and self.recurrent_dropout:
            keep = 1.0 - self.recurrent_dropout
            drop = like.new_empty(N, cell.recurrent_input_size).bernoulli_(keep).div_(keep)
        if self.zoneout:
            sizes = zoned_sizes(cell)
            if training:  # one draw for all zoned leaves, each column at its leaf's p
                probs = [p for s, p in zip(sizes, self.zoneout, strict=True) for _ in range(s)]
                zone = bernoulli((T, N, sum(sizes)), probs, like)
            else:
                row = torch.cat([like.new_full((s,), p)
                                 for s, p in zip(sizes, self.zoneout, strict=True)])
                zone = row.expand(T, N, row.shape[0])
        if drop is None and zone is None:
            return None
        return Masks(drop, zone, training)


class Masks(NamedTuple):
    """One forward's masks for one layer and direction."""

    drop: Tensor | None  # (N, R): recurrent dropout, scaled by 1/(1-p); None: off
    zone: Tensor | None  # (T, N, S): zoneout weights d (1 = keep the previous value); None: off
    training: bool  # whether d is a 0/1 draw (else the expectation p, at evaluation)


def bernoulli(shape: tuple, p, like: Tensor) -> Tensor:
    """0/1 draws with probability ``p`` (a float, or one per column of the last dimension;
    rounded to a multiple of 2^-15), in ``like``'s dtype and device: 15 random bits per draw,
    four draws from each 64-bit number of torch's generator, compared in place as floats
    against each column's threshold.

    On the CPU (one thread, T=50, N=32, 2H=256 draws) that is 0.12 ms against 0.74 ms for
    comparing the int16 bits into a bool tensor and converting it (bool to float is not
    vectorized), and 2.4 ms for ``bernoulli_`` (one 32-bit number and a float compare per
    draw): the masks were most of zoneout's cost."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_()
    bits = words.view(torch.int16)[:n].bitwise_and_(0x7FFF)  # (a 63-bit number's top bit is 0)
    # the bits (< 2^15) and thresholds are exact in float32 and float64, not in half types
    exact = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    ps = [p] * shape[-1] if isinstance(p, (int, float)) else list(p)
    if len(ps) != shape[-1]:
        raise ValueError(f"p: expected a float or {shape[-1]} probabilities (one per column), "
                         f"got {len(ps)}")
    threshold = torch.tensor([round(q * 32768) for q in ps], dtype=exact, device=like.device)
    draws = bits.to(exact).view(shape).lt_(threshold)
    return draws if exact == like.dtype else draws.to(like.dtype)


def zoned_sizes(cell: Cell) -> list[int]:
    """The widths of the state tensors zoneout acts on, in the state's order."""
    names = getattr(cell.state_size, "_fields", None)
    leaves = state_leaves(cell.state_size)
    if names is None:
        return leaves
    zoned = set(cell.zoned_state_names())
    return [size for name, size in zip(names, leaves, strict=True) if name in zoned]


def zone_merge(cell: Cell, new, old, d: Tensor):
    """``d * old + (1 - d) * new`` leaf by leaf for the zoned leaves (``d`` ``(N, S)``, their
    widths side by side), the others (a counter) as ``new``."""
    names = getattr(cell.state_size, "_fields", None)
    zoned = set(cell.zoned_state_names())
    out, col = [], 0
    for i, (a, b) in enumerate(zip(state_leaves(new), state_leaves(old), strict=True)):
        if names is not None and names[i] not in zoned:
            out.append(a)
            continue
        w = d[:, col : col + a.shape[1]]
        col += a.shape[1]
        out.append(torch.lerp(a, b, w))  # a + w (b - a)
    return state_from_leaves(cell.state_size, out)


def dropping(cell: Cell, drop: Tensor | None):
    """A context in which ``cell.recurrent_input`` applies the recurrent dropout mask
    ``drop`` (the reference loops' steps read it there)."""
    from .cells.base import _BOUND

    weights = dict(_BOUND.cells.get(id(cell)) or {})
    weights["recurrent_mask"] = drop
    return bind({cell: weights})


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """Dropout of ``x`` ``(T, N, F)`` with one mask per sequence ``(1, N, F)`` for every step
    (variational / locked dropout), scaled by 1/(1-p)."""
    if p == 0:
        return x
    if p >= 1:  # (as F.dropout: everything dropped)
        return x * 0
    keep = 1.0 - p
    mask = x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(keep).div_(keep)
    return x * mask


class SequenceDropout(nn.Module):
    """Dropout of batch-first sequences ``(N, T, F)``: ``"standard"`` as ``nn.Dropout`` (a new
    mask per element), ``"variational"`` one mask ``(N, 1, F)`` per sequence for all its steps,
    scaled by 1/(1-p). Other shapes (a pooled ``(N, F)``) get standard dropout."""

    def __init__(self, p: float = 0.0, mode: str = "standard"):
        super().__init__()
        if mode not in DROPOUT_MODES:
            raise ValueError(f"dropout_mode: expected one of "
                             f"{', '.join(map(repr, DROPOUT_MODES))}, got {mode!r}")
        self.p, self.mode = float(p), mode

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.mode == "variational" and x.dim() == 3:
            return locked_dropout(x.transpose(0, 1), self.p).transpose(0, 1)
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}" + (f", mode={self.mode!r}" if self.mode != "standard" else "")


__all__ = ["DROPOUT_MODES", "Masks", "Regularizers", "SequenceDropout", "check_probability",
           "dropping",
           "locked_dropout", "zone_merge", "zoned_sizes"]
