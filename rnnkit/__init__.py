"""rnnkit: the whole family of recurrent networks as exact, fast, drop-in PyTorch modules.

>>> import torch, rnnkit
>>> lstm = rnnkit.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
>>> out, (h_n, c_n) = lstm(torch.randn(3, 7, 10), lengths=[7, 5, 2])
>>> out.shape, h_n.shape
(torch.Size([3, 7, 40]), torch.Size([4, 3, 20]))
"""

from .cells import (
    Cell,
    ElmanCell,
    GRUCell,
    LSTMCell,
    LSTMState,
    cell_names,
    get_cell,
    make_cell,
    register_cell,
)
from .family import GRU, LSTM, RNN
from .functional import scan
from .layers import Bidirectional, Recurrent, Stacked
from .networks import RecurrentNetwork

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "Bidirectional", "Cell", "ElmanCell", "GRUCell", "LSTMCell",
    "LSTMState", "Recurrent", "RecurrentNetwork", "Stacked", "cell_names", "get_cell",
    "make_cell", "register_cell", "scan",
]
