"""The named networks: ``RecurrentNetwork`` of one cell each, with torch.nn's signatures.

``RNN``, ``LSTM`` and ``GRU`` take exactly ``torch.nn.RNN/LSTM/GRU``'s arguments; every other
member of the family takes the same ones (``input_size, hidden_size, num_layers, bias,
batch_first, dropout, bidirectional, device, dtype``) plus its cell's options as keywords.
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctests)

from .networks import RecurrentNetwork


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
                 *, native: bool = True):
        super().__init__("elman", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, device=device, dtype=dtype,
                         nonlinearity=nonlinearity)
        self.nonlinearity = nonlinearity


class LSTM(RecurrentNetwork):
    """LSTM with ``torch.nn.LSTM``'s signature, shapes, returns and state dict.

    See :class:`~rnnkit.cells.LSTMCell` (equations) and :class:`RecurrentNetwork`.

    >>> lstm = LSTM(10, 20, num_layers=2, bidirectional=True)
    >>> out, (h_n, c_n) = lstm(torch.randn(5, 3, 10))
    >>> out.shape, h_n.shape
    (torch.Size([5, 3, 40]), torch.Size([4, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, native: bool = True):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, device=device, dtype=dtype,
                         proj_size=proj_size)
        self.proj_size = proj_size


class GRU(RecurrentNetwork):
    """GRU with ``torch.nn.GRU``'s signature, shapes, returns and state dict.

    See :class:`~rnnkit.cells.GRUCell` (equations) and :class:`RecurrentNetwork`.

    >>> gru = GRU(10, 20, batch_first=True)
    >>> out, h_n = gru(torch.randn(3, 5, 10))
    >>> out.shape, h_n.shape
    (torch.Size([3, 5, 20]), torch.Size([1, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, native: bool = True):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, native=native, device=device, dtype=dtype)
