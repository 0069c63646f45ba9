"""rnnkit: the whole family of recurrent networks as exact, fast, drop-in PyTorch modules.

>>> import torch, rnnkit
>>> lstm = rnnkit.LSTM(10, 20, num_layers=2, bidirectional=True, batch_first=True)
>>> out, (h_n, c_n) = lstm(torch.randn(3, 7, 10), lengths=[7, 5, 2])
>>> out.shape, h_n.shape
(torch.Size([3, 7, 40]), torch.Size([4, 3, 20]))
"""

from .cells import (
    Cell,
    ClockworkCell,
    ClockworkState,
    CTRNNCell,
    ElmanCell,
    FullyRecurrentCell,
    FullyState,
    GRUCell,
    IndRNNCell,
    JordanCell,
    LSTMCell,
    LSTMState,
    MinGRUCell,
    MinLSTMCell,
    SCRNCell,
    SCRNState,
    cell_names,
    get_cell,
    irnn,
    make_cell,
    peephole_lstm,
    register_cell,
)
from .family import (
    CTRNN,
    GRU,
    IRNN,
    LSTM,
    RNN,
    SCRN,
    Clockwork,
    FullyRecurrent,
    IndRNN,
    Jordan,
    MinGRU,
    MinLSTM,
)
from .functional import scan
from .layers import Bidirectional, Recurrent, Stacked
from .networks import RecurrentNetwork
from .trained import Trained, load

__version__ = "0.1.0"

__all__ = [
    # networks with torch.nn.LSTM's interface
    "RNN", "LSTM", "GRU", "IRNN", "Jordan", "FullyRecurrent", "Clockwork", "SCRN", "CTRNN",
    "IndRNN", "MinGRU", "MinLSTM", "RecurrentNetwork",
    # cells, their states and the registry
    "Cell", "ElmanCell", "LSTMCell", "GRUCell", "JordanCell", "FullyRecurrentCell",
    "ClockworkCell", "SCRNCell", "CTRNNCell", "IndRNNCell", "MinGRUCell", "MinLSTMCell",
    "LSTMState", "FullyState",
    "ClockworkState", "SCRNState", "irnn", "peephole_lstm", "cell_names", "get_cell",
    "make_cell", "register_cell",
    # the loop and the layers
    "scan", "Recurrent", "Bidirectional", "Stacked",
    # a run trained by the CLI
    "load", "Trained",
]
