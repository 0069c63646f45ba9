"""Cells and the registry that maps names to them.

>>> from rnnkit.cells import make_cell
>>> make_cell("gru", 3, 5)
GRUCell(3, 5)
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Cell, map_state, state_from_leaves, state_leaves
from .clockwork import ClockworkCell, ClockworkState
from .ctrnn import CTRNNCell
from .elman import ElmanCell, irnn
from .fully import FullyRecurrentCell, FullyState
from .gru import GRUCell
from .indrnn import IndRNNCell
from .jordan import JordanCell
from .lstm import LSTMCell, LSTMState, peephole_lstm
from .minrnn import MinGRUCell, MinLSTMCell
from .scrn import SCRNCell, SCRNState

_REGISTRY: dict[str, Callable[..., Cell]] = {}


def register_cell(name: str, factory: Callable[..., Cell]) -> None:
    """Make ``factory(input_size, hidden_size, **options)`` available as ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"cell name {name!r} is already registered to {_REGISTRY[name]}")
    _REGISTRY[name] = factory


def cell_names() -> list[str]:
    """The registered cell names, sorted."""
    return sorted(_REGISTRY)


def get_cell(name: str) -> Callable[..., Cell]:
    """The cell factory registered as ``name``; ValueError naming the known ones otherwise."""
    if not isinstance(name, str):
        raise TypeError(
            f"cell: expected a cell name (str), one of {', '.join(cell_names())}; "
            f"got {type(name).__name__} ({name!r})"
        )
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"cell: unknown cell name {name!r}; expected one of {', '.join(cell_names())}"
        ) from None


def make_cell(name: str, input_size: int, hidden_size: int, **options) -> Cell:
    """Build the cell registered as ``name``."""
    return get_cell(name)(input_size, hidden_size, **options)


register_cell("elman", ElmanCell)
register_cell("lstm", LSTMCell)
register_cell("gru", GRUCell)
register_cell("jordan", JordanCell)
register_cell("fully", FullyRecurrentCell)
register_cell("irnn", irnn)
register_cell("clockwork", ClockworkCell)
register_cell("ctrnn", CTRNNCell)
register_cell("peephole_lstm", peephole_lstm)
register_cell("scrn", SCRNCell)
register_cell("indrnn", IndRNNCell)
register_cell("mingru", MinGRUCell)
register_cell("minlstm", MinLSTMCell)

__all__ = [
    "Cell", "ElmanCell", "GRUCell", "LSTMCell", "LSTMState",
    "cell_names", "get_cell", "make_cell", "map_state", "register_cell",
    "state_from_leaves", "state_leaves",
    "FullyRecurrentCell", "FullyState", "JordanCell", "irnn",
    "ClockworkCell", "ClockworkState", "CTRNNCell",
    "SCRNCell", "SCRNState", "peephole_lstm", "IndRNNCell",
    "MinGRUCell", "MinLSTMCell",
]
