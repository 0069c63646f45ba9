"""The named networks: ``RecurrentNetwork`` of one cell each, with torch.nn's signatures.

``RNN``, ``LSTM`` and ``GRU`` take exactly ``torch.nn.RNN/LSTM/GRU``'s arguments; every other
member of the family takes the same ones (``input_size, hidden_size, num_layers, bias,
batch_first, dropout, bidirectional, device, dtype``) plus its cell's options as keywords.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from .networks import RecurrentNetwork


def _no_projection(proj_size) -> None:
    """torch.nn.RNN and GRU take ``proj_size`` only to refuse it (a ValueError, as torch)."""
    if proj_size != 0:
        raise ValueError(f"proj_size: {proj_size!r} given, but the proj_size argument is only "
                         f"supported for LSTM, not RNN or GRU (as in torch.nn)")


class RNN(RecurrentNetwork):
    """Elman network with ``torch.nn.RNN``'s signature, shapes and state dict.

    .. math:: h_t = \\phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})

    See :class:`~rnnkit.cells.ElmanCell` and :class:`RecurrentNetwork`.

    >>> rnn = RNN(10, 20, num_layers=2)
    >>> out, h_n = rnn(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 *, native: bool = True, fused: bool = True, proj_size: int = 0, **options):
        _no_projection(proj_size)
        super().__init__("elman", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, fused=fused, device=device,
                         dtype=dtype, nonlinearity=nonlinearity, **options)
        self.nonlinearity = nonlinearity


class LSTM(RecurrentNetwork):
    """LSTM with ``torch.nn.LSTM``'s signature, shapes, returns and state dict.

    See :class:`~rnnkit.cells.LSTMCell` (equations) and :class:`RecurrentNetwork`. Keyword
    options go to every cell: ``peephole="diagonal"|"full"`` (Gers & Schmidhuber 2000),
    ``forget_bias=1.0`` (forget gate initialised open, for long time lags),
    ``candidate_activation``/``cell_activation`` (``"tanh"`` or ``"identity"``). Without peepholes
    and with tanh activations the network runs on torch's own kernel.

    >>> lstm = LSTM(10, 20, num_layers=2, bidirectional=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 40]), torch.Size([4, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, native: bool = True,
                 fused: bool = True, **options):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, fused=fused, device=device,
                         dtype=dtype, proj_size=proj_size, **options)
        self.proj_size = proj_size


class _Named(RecurrentNetwork):
    """A :class:`RecurrentNetwork` of the cell ``cell_name``, with ``torch.nn.GRU``'s signature
    (``input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
    dtype``); the cell's own options are keywords."""

    cell_name: str

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, native: bool = True, fused: bool = True,
                 **options):
        super().__init__(self.cell_name, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, fused=fused, device=device,
                         dtype=dtype, **options)


class GRU(_Named):
    """GRU with ``torch.nn.GRU``'s signature, shapes, returns and state dict.

    See :class:`~rnnkit.cells.GRUCell` (equations) and :class:`RecurrentNetwork`.

    >>> gru = GRU(10, 20, batch_first=True)
    >>> out, h_n = gru(torch.randn(3, 5, 10))
    >>> out.shape, h_n.shape
    (torch.Size([3, 5, 20]), torch.Size([1, 3, 20]))
    """

    cell_name = "gru"

    def __init__(self, *args, proj_size: int = 0, **kwargs):
        _no_projection(proj_size)
        super().__init__(*args, **kwargs)


class IRNN(_Named):
    """IRNN (Le, Jaitly & Hinton 2015): ReLU Elman layers whose recurrent weights start at the
    identity. Options: ``scale`` (W_hh = scale·I). Runs on torch's ``rnn_relu`` kernel, and its
    state dict loads into ``torch.nn.RNN(nonlinearity="relu")``. See :func:`~rnnkit.cells.irnn`.

    >>> out, h_n = IRNN(10, 20, num_layers=2)(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    cell_name = "irnn"


class Jordan(_Named):
    """Jordan network (Jordan 1986): the output, not the hidden layer, is fed back.
    Options: ``output_size`` (O, default H), ``activation``, ``output_activation``
    (``"tanh"``, ``"sigmoid"``, ``"identity"``, ``"softmax"``). State and output are y: ``h_n``
    is ``(D*num_layers, N, O)``. See :class:`~rnnkit.cells.JordanCell`.

    >>> out, y_n = Jordan(10, 20, output_size=4, bidirectional=True)(torch.randn(5, 3, 10))
    >>> out.shape, y_n.shape
    (torch.Size([5, 3, 8]), torch.Size([2, 3, 4]))
    """

    cell_name = "jordan"


class FullyRecurrent(_Named):
    """Fully recurrent network: hidden and output units alike are fed back to every unit.
    Options as :class:`Jordan`; the state is ``(h_n, y_n)``. See
    :class:`~rnnkit.cells.FullyRecurrentCell`.

    >>> out, (h_n, y_n) = FullyRecurrent(10, 20, output_size=4)(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape, y_n.shape
    (torch.Size([5, 3, 4]), torch.Size([1, 3, 20]), torch.Size([1, 3, 4]))
    """

    cell_name = "fully"


class Clockwork(_Named):
    """Clockwork RNN (Koutník et al. 2014): modules of hidden units updated at their own periods.
    Options: ``periods`` (default 1, 2, 4, ...), ``activation``. The state is ``(h_n, t_n)``, the
    step counter included, so chunks run with the state carried equal the whole sequence. See
    :class:`~rnnkit.cells.ClockworkCell`.

    >>> out, (h_n, t_n) = Clockwork(10, 8, periods=(1, 2, 4, 8))(torch.randn(5, 3, 10))
    >>> out.shape, t_n.flatten().tolist()
    (torch.Size([5, 3, 8]), [5.0, 5.0, 5.0])
    """

    cell_name = "clockwork"


class SCRN(_Named):
    """Structurally constrained recurrent network (Mikolov et al. 2015): a slow context layer
    beside a fast hidden one. Options: ``context_size``, ``alpha``, ``learn_alpha``. The output is
    ``[h; s]`` and the state ``(h_n, s_n)``. See :class:`~rnnkit.cells.SCRNCell`.

    >>> net = SCRN(10, 20, context_size=8)
    >>> out, (h_n, s_n) = net(torch.randn(5, 3, 10))
    >>> out.shape, s_n.shape
    (torch.Size([5, 3, 28]), torch.Size([1, 3, 8]))
    """

    cell_name = "scrn"


class IndRNN(_Named):
    """Independently recurrent network (Li et al. 2018): a recurrent weight per unit,
    :math:`h_t = \\phi(W_{ih} x_t + b_{ih} + u \\odot h_{t-1})`. Options: ``nonlinearity``
    (``"relu"``, default, or ``"tanh"``), ``max_recurrent_weight`` (the bound on ``|u|``, kept by
    :meth:`constrain_` after each optimizer step), ``recurrent_init``. See
    :class:`~rnnkit.cells.IndRNNCell`.

    >>> net = IndRNN(10, 20, num_layers=2, max_recurrent_weight=2 ** (1 / 1000))
    >>> out, h_n = net(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 20]), torch.Size([2, 3, 20]))
    """

    cell_name = "indrnn"


class MinGRU(_Named):
    """minGRU (Feng et al. 2024): a GRU whose gate and candidate read only the input,
    :math:`h_t = (1 - z_t) \\odot h_{t-1} + z_t \\odot g(W_h x_t + b_h)`, so a sequence
    trains through a parallel scan over time (:mod:`rnnkit.ops.minrnn`). See
    :class:`~rnnkit.cells.MinGRUCell`.

    >>> net = MinGRU(10, 20, num_layers=2, bidirectional=True)
    >>> out, h_n = net(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 40]), torch.Size([4, 3, 20]))
    """

    cell_name = "mingru"


class MinLSTM(_Named):
    """minLSTM (Feng et al. 2024): forget and input gates of the input only, normalized to sum
    to one, :math:`h_t = f'_t \\odot h_{t-1} + i'_t \\odot g(W_h x_t + b_h)`; trains through
    the same parallel scan as :class:`MinGRU`. See :class:`~rnnkit.cells.MinLSTMCell`.

    >>> net = MinLSTM(10, 20)
    >>> out, h_n = net(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 20]), torch.Size([1, 3, 20]))
    """

    cell_name = "minlstm"


def _check_steps(dt: torch.Tensor, valid: torch.Tensor | None) -> None:
    """Every Δt positive and finite, as the constant ``dt`` must be (a zero step freezes the
    state, a negative one runs it backwards, a NaN poisons it), at the steps that count."""
    if not dt.is_floating_point():
        raise TypeError(f"dt: expected a floating-point tensor of time steps, got {dt.dtype}")
    if torch.compiler.is_compiling():  # the values are data: checked in eager runs only
        return
    bad = ~(torch.isfinite(dt) & (dt > 0))
    if valid is not None and valid.shape == bad.shape:
        bad &= valid
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"dt: expected positive, finite time steps (as the constant dt), got "
                         f"{dt[where].item()!r} at index {where} ({int(bad.sum())} such steps)")


class CTRNN(_Named):
    """Continuous-time RNN (Beer 1995), integrated by Euler steps of Δt with learned time
    constants τ. Options: ``dt`` (a constant, default 1.0; or ``None`` to give Δt per step and per
    sequence in ``forward``, for irregularly sampled series), ``activation``, ``tau_init``.
    See :class:`~rnnkit.cells.CTRNNCell`.

    ``forward(input, hx=None, *, lengths=None, dt=None)``: with ``dt=None`` at construction,
    ``dt`` is a tensor laid out like ``input`` without its feature dimension (``(T, N)``,
    ``(N, T)`` if batch_first, ``(T,)`` unbatched) or a PackedSequence of Δt packed like a
    PackedSequence input. Every layer sees the same Δt; a reverse direction uses Δt_t for its
    step into t.

    >>> net = CTRNN(2, 16, num_layers=2, dt=None, batch_first=True)
    >>> dt = torch.rand(3, 7) + 0.1                 # irregular sampling: (N, T)
    >>> out, h_n = net(torch.randn(3, 7, 2), dt=dt)
    >>> out.shape, h_n.shape
    (torch.Size([3, 7, 16]), torch.Size([2, 3, 16]))
    """

    cell_name = "ctrnn"
    _side_name = "dt"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, dt: float | None = 1.0, **options):
        per_step = dt is None
        if per_step:  # Δt rides along as the last input channel of every layer's cells
            options.update(dt_input=True, side_size=1)
        else:
            options["dt"] = dt
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, **options)
        self.dt = dt

    def forward(self, input, hx=None, *, lengths=None, dt=None):
        """As :meth:`RecurrentNetwork.forward`, plus ``dt``: with ``dt=None`` at construction,
        the Δt of every step, laid out as ``input`` without its feature dimension (``(T, N)``,
        ``(N, T)`` with ``batch_first``, or a ``PackedSequence`` like ``input``), each > 0;
        None (and no other value) for a CTRNN built with a constant ``dt``."""
        if self.dt is not None:
            self._no_dt(dt)
            return super().forward(input, hx, lengths=lengths)
        if isinstance(dt, PackedSequence):
            _check_steps(dt.data, None)
            side = dt._replace(data=dt.data.unsqueeze(-1))  # (sum of lengths, 1)
        elif isinstance(dt, torch.Tensor):
            if isinstance(input, torch.Tensor) and tuple(dt.shape) != tuple(input.shape[:-1]):
                raise ValueError(f"dt: expected shape {tuple(input.shape[:-1])} (the input's "
                                 f"without its feature dimension), got {tuple(dt.shape)}")
            _check_steps(dt, self._valid_steps(dt, lengths))
            side = dt.unsqueeze(-1)
        else:
            raise TypeError("dt: expected Δt per step as a tensor laid out like the input "
                            "without its feature dimension (this CTRNN was built with "
                            f"dt=None), got {type(dt).__name__}")
        return self._run(input, hx, lengths, side)

    def step(self, input, state=None, *, valid=None, dt=None):
        """As :meth:`RecurrentNetwork.step`, plus ``dt``: with ``dt=None`` at construction,
        this step's Δt per sequence, ``(N,)`` (a 0-d tensor unbatched), each > 0."""
        if self.dt is not None:
            self._no_dt(dt)
            return super().step(input, state, valid=valid)
        if not isinstance(dt, torch.Tensor):
            raise TypeError("dt: expected this step's Δt per sequence as a tensor (N,) (this "
                            f"CTRNN was built with dt=None), got {type(dt).__name__}")
        _check_steps(dt, None if valid is None else valid)
        return super().step(input, state, valid=valid, side=dt.unsqueeze(-1))

    def _no_dt(self, dt) -> None:
        """A CTRNN built with a constant dt takes no dt in forward or step."""
        if dt is not None:
            raise ValueError(f"dt: expected None, since this CTRNN has a constant "
                             f"dt={self.dt} (build it with dt=None to give Δt per step), "
                             f"got {type(dt).__name__}")

    def _valid_steps(self, dt: torch.Tensor, lengths) -> torch.Tensor | None:
        """A bool mask of the steps ``lengths`` keeps (padding past a sequence's end may hold
        any Δt, e.g. 0); None: every step counts."""
        if lengths is None or dt.dim() != 2:
            return None
        from ._checks import check_lengths
        from .kernels._common import valid_mask

        T, N = (dt.shape[1], dt.shape[0]) if self.batch_first else dt.shape
        valid = valid_mask(check_lengths(lengths, T, N), T, dt.device)  # (T, N) or None
        return valid.T if valid is not None and self.batch_first else valid
