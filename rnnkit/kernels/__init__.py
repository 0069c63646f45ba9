"""Fused sequence kernels: whole-sequence forward and hand-derived BPTT backward.

Each kernel computes exactly what :func:`rnnkit.scan` computes for one cell type, as one
``torch.autograd.Function`` (no autograd graph per step). See ``rnnkit/kernels/lstm.py``.
"""

from .lstm import LSTMSequence, lstm_sequence

__all__ = ["LSTMSequence", "lstm_sequence"]
