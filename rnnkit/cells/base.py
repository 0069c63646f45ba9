"""The cell protocol: one step of a recurrent network.

Every network in rnnkit is a cell run over time by one loop (:func:`rnnkit.scan`). A cell maps
``(x_t, state_{t-1}) -> (y_t, state_t)`` for one time step and never loops over time itself.

State is a tensor of shape ``(N, size)`` or a NamedTuple of such tensors (``LSTMState(h, c)``).
Its structure is declared once, in ``state_size``: an ``int`` for a tensor state, or a NamedTuple
of ints of the same type as the state (``LSTMState(h=H, c=H)``).

The step is split in two so the loop can hoist the input projection out of the time loop:

- ``precompute(xs)`` maps inputs of shape ``(..., I)`` to whatever ``step`` consumes, for all steps
  at once (one matmul over ``T*N`` rows instead of ``T`` small ones). The default is the identity.
- ``step(u, state)`` advances one step from a precomputed input ``u`` of shape ``(N, G)``.

``forward(x, state)`` is ``step(precompute(x), state)``: the streaming step API, with the same
weights as the sequence layer.

Weights. A standalone cell owns its parameters. Inside a network the network owns them, under
torch's flat names (``weight_hh_l0``), and the cell *borrows* them (:meth:`Cell.lend_to`): it reads
``self.weight_hh`` from the network, so whatever the network holds there (a parameter, a
``weight_norm`` or parametrization's computed tensor, a tensor a user assigned) is what the cell
computes with. :func:`bind` fixes a cell's weights to given tensors for a block (one forward,
or the recomputation of a double backward): every read inside sees them.
"""

from __future__ import annotations

import math
import numbers
import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_dtype, check_state_leaf

State = Tensor | tuple
LN_EPS = 1e-5  # layer normalization's epsilon (torch.nn.LayerNorm's)

# Per thread, {id(cell): {name: tensor}}: the weights bind() fixed. Per thread, so that two
# threads running one network each see their own (and a backward in the autograd engine's
# thread binds its own).
class _Bound(threading.local):
    def __init__(self):  # (run in each thread on its first use)
        # set from the start: torch.compile guards on whether the attribute exists, and one
        # created on first use would recompile a compiled network after its first eager call
        self.cells: dict = {}


_BOUND = _Bound()


class Cell(nn.Module):
    """Base class of all cells. Subclasses set ``input_size``, ``hidden_size``,
    ``output_size`` and ``state_size``, and implement ``step`` (and usually ``precompute``)."""

    input_size: int
    hidden_size: int
    output_size: int
    state_size: int | tuple

    def __getattr__(self, name: str):
        # Only reached for names not in __dict__: parameters, buffers, submodules, borrowed.
        bound = _BOUND.cells
        if bound:
            weights = bound.get(id(self))
            if weights is not None and name in weights:
                return weights[name]
        d = self.__dict__
        borrowed = d.get("_borrowed")
        if borrowed is not None and name in borrowed and name not in d["_parameters"]:
            return getattr(d["_owner"], borrowed[name])
        return super().__getattr__(name)

    def lend_to(self, owner: nn.Module, suffix: str) -> list[str]:
        """Move this cell's parameters to ``owner`` as ``name + suffix`` (``weight_hh`` ->
        ``weight_hh_l0``) and read them from there from now on. Returns the owner's names, in
        registration order (= torch's order, = ``reset_parameters``' order)."""
        borrowed = {}
        for name, p in list(self._parameters.items()):
            if p is None:  # bias=False: stays the cell's own None
                continue
            owner.register_parameter(name + suffix, p)
            del self._parameters[name]
            borrowed[name] = name + suffix
        self.__dict__["_borrowed"] = borrowed  # not through nn.Module: no submodule, no cycle
        self.__dict__["_owner"] = owner
        return list(borrowed.values())

    def named_weights(self):
        """Yield ``(name, tensor)`` for every weight this cell computes with, in registration
        order: its own parameters, or the current values of those it borrows from its network
        (read lazily: a parametrization is computed only for the names taken)."""
        borrowed = self.__dict__.get("_borrowed")
        if borrowed is None:
            yield from self.named_parameters(recurse=False)
            return
        for name in borrowed:
            yield name, getattr(self, name)

    def borrowed_names(self) -> dict[str, str]:
        """``{cell name: owner's name}`` of the borrowed weights (empty for a standalone cell)."""
        return dict(self.__dict__.get("_borrowed") or {})

    def precompute(self, xs: Tensor) -> Tensor:
        """Input-only part of the step for any number of steps: ``(..., I) -> (..., G)``."""
        return xs

    def step(self, u: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from a precomputed input ``u`` ``(N, G)``; returns ``(y, new_state)``."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step: ``x`` ``(N, I)`` and ``state`` -> ``(y (N, output_size), new_state)``."""
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{type(self).__name__}: expected x to be a Tensor (N, input_size="
                f"{self.input_size}), got {type(x).__name__}"
            )
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: expected x of shape (N, input_size={self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        check_dtype("x", x, self)
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        else:
            check_state(state, self.state_size, x.shape[0], x)
        return self.step(self.precompute(x), state)

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The zero state: tensors of shape ``(batch_size, size)`` shaped like ``state_size``."""
        if dtype is None or device is None:
            p = next((w for _, w in self.named_weights()), None)
            if p is not None:
                device = p.device if device is None else device
                dtype = p.dtype if dtype is None else dtype

        def zeros(size: int) -> Tensor:
            return torch.zeros(batch_size, size, device=device, dtype=dtype)

        return map_state(zeros, self.state_size)

    def reset_parameters(self) -> None:
        """torch's RNN initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H)), in registration
        order, so a seeded rnnkit network starts from the same numbers as its torch.nn twin.
        (A weight its network computes, by a reparametrization, is not a parameter: the network
        re-initialises what it is computed from; see ``RecurrentNetwork.reset_parameters``.)"""
        k = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_weights():
            if isinstance(p, nn.Parameter) and not init_layer_norm(name, p):
                nn.init.uniform_(p, -k, k)

    # ---- layer normalization (Ba, Kiros & Hinton 2016), a cell option ----

    layer_norm = False  # (a cell built with layer_norm=True has its own True)

    def add_layer_norm(self, on: bool, sizes: dict, device=None, dtype=None) -> None:
        """The ``layer_norm`` option: if ``on``, for each ``name: width``, a gain
        ``weight_ln_<name>`` (ones) and a bias ``bias_ln_<name>`` (zeros), registered after the
        cell's others."""
        if not isinstance(on, bool):
            raise TypeError(f"layer_norm: expected a bool, got {type(on).__name__} ({on!r})")
        if not on:
            return
        self.layer_norm = True
        for name, width in sizes.items():
            setattr(self, f"weight_ln_{name}",
                    nn.Parameter(torch.ones(width, device=device, dtype=dtype)))
            setattr(self, f"bias_ln_{name}",
                    nn.Parameter(torch.zeros(width, device=device, dtype=dtype)))

    def normalized(self, z: Tensor, name: str) -> Tensor:
        r""":math:`\alpha \odot (z - \mu) / \sqrt{\sigma^2 + 10^{-5}} + \beta` over ``z``'s last
        dimension, with the gain and bias ``name``."""
        return F.layer_norm(z, z.shape[-1:], getattr(self, f"weight_ln_{name}"),
                            getattr(self, f"bias_ln_{name}"), eps=LN_EPS)

    def project(self, x: Tensor, weight: Tensor, bias: Tensor | None, name: str) -> Tensor:
        """``x W^T + b``; with layer normalization ``LN_name(x W^T) + b``."""
        if not self.layer_norm:
            return F.linear(x, weight, bias)
        z = self.normalized(F.linear(x, weight), name)
        return z if bias is None else z + bias

    # ---- what the regularizers (rnnkit.regularize) need to know of a cell ----

    def constrain_(self) -> None:
        """Project the weights back into the cell's constraints, in place, after an optimizer
        step (an IndRNN's bound on its recurrent weights); most cells have none."""

    def recurrent_input(self, h: Tensor) -> Tensor:
        """What of the carried state enters the recurrent weight product: ``h`` itself, times
        the recurrent dropout mask where one is set for this forward (``rnnkit.regularize``).
        Every ``step`` passes its product's state input through here."""
        bound = _BOUND.cells
        weights = bound.get(id(self)) if bound else None
        mask = None if weights is None else weights.get("recurrent_mask")
        return h if mask is None else h * mask

    @property
    def recurrent_input_size(self) -> int:
        """The width of what :meth:`recurrent_input` receives (the recurrent dropout mask's)."""
        return self.hidden_size

    def recurrent_weight_names(self) -> tuple[str, ...]:
        """The weights applied to the carried state (what ``weight_drop`` drops)."""
        return ("weight_hh",)

    def zoned_state_names(self) -> tuple[str, ...]:
        """The state tensors zoneout acts on (their NamedTuple fields; ``("h",)`` for a
        one-tensor state)."""
        return tuple(getattr(self.state_size, "_fields", None) or ("h",))

    def state_output(self, state: State) -> Tensor:
        """The step's output ``y`` given its new state (what a zoned state outputs): the first
        state tensor, where a cell outputs its state."""
        return state_leaves(state)[0]

    def native_mode(self) -> str | None:
        """Name of the ``torch._VF`` kernel that computes exactly this cell over a sequence
        (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``), or None if there is none."""
        return None

    def native_weights(self) -> list[Tensor]:
        """This cell's weights in the order the native kernel takes them:
        ``weight_ih, weight_hh[, bias_ih, bias_hh][, weight_hr]``."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        return [w for w in (getattr(self, n, None) for n in names) if w is not None]


def init_layer_norm(name: str, p: Tensor) -> bool:
    """Initialise ``p`` if it is a layer normalization gain (ones) or bias (zeros); return
    whether it was one."""
    if name.startswith("weight_ln_"):
        with torch.no_grad():
            p.fill_(1.0)
        return True
    if name.startswith("bias_ln_"):
        with torch.no_grad():
            p.zero_()
        return True
    return False


def check_chrono(name: str, value, max_lag, *, numeric: bool = True):
    """Check a gate-bias option that may be a number (``numeric``), None, or ``"chrono"`` (with
    ``max_lag``, an int >= 2). Returns ``(value, max_lag)``, a number as a float."""
    if value == "chrono" and isinstance(value, str):
        if isinstance(max_lag, bool) or not isinstance(max_lag, numbers.Integral) \
                or max_lag < 2:
            raise ValueError(f"max_lag: {name}='chrono' draws its biases from the longest time "
                             f"lag to expect (Tallec & Ollivier 2018): expected an int >= 2, got "
                             f"{max_lag!r}")
        return value, int(max_lag)
    if max_lag is not None:
        raise ValueError(f"max_lag: used only with {name}='chrono', got max_lag={max_lag!r} "
                         f"with {name}={value!r}")
    if value is None:
        return None, None
    if not numeric or isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        expected = "None, a finite number or 'chrono'" if numeric else "a number or 'chrono'"
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        raise (ValueError if real and numeric else TypeError)(
            f"{name}: expected {expected}, got {value!r}")
    return float(value), None


def chrono(n: int, max_lag: int, like: Tensor) -> Tensor:
    """The chrono initialisation (Tallec & Ollivier 2018): ``n`` values log U(1, max_lag - 1),
    so a gate sigma(b) keeps its memory over ~U(2, max_lag) steps."""
    return torch.empty(n, dtype=like.dtype, device=like.device).uniform_(1, max_lag - 1).log_()


@contextmanager
def bind(weights: dict):
    """Within the block, every read of ``cell.<name>`` returns ``weights[cell][name]`` (in this
    thread): ``weights`` maps cells to ``{name: tensor}``. Nested binds restore the outer one."""
    bound = _BOUND.cells
    saved = {id(c): bound.get(id(c)) for c in weights}
    bound.update({id(c): w for c, w in weights.items()})
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                bound.pop(key, None)
            else:
                bound[key] = old


def bound_weight(cell: Cell, name: str):
    """The tensor :func:`bind` fixed for ``cell.<name>`` in this thread, or None (for a
    property such as SCRN's ``alpha``, which ``__getattr__`` never sees)."""
    bound = _BOUND.cells
    weights = bound.get(id(cell)) if bound else None
    return None if weights is None else weights.get(name)


def check_state(state, size, batch_size: int, ref: Tensor, name: str = "state") -> None:
    """``state`` must have the structure of ``size`` (a cell's ``state_size``) and leaves of
    shape ``(batch_size, leaf_size)`` with ``ref``'s dtype and device: no broadcasting."""
    if isinstance(size, tuple):
        fields = getattr(size, "_fields", None) or [str(i) for i in range(len(size))]
        if not isinstance(state, tuple) or len(state) != len(size):
            got = f"{len(state)} items" if isinstance(state, tuple) else type(state).__name__
            raise TypeError(
                f"{name}: expected a tuple of {len(size)} state tensors ({', '.join(fields)}), "
                f"got {got}"
            )
        for field, leaf, leaf_size in zip(fields, state, size, strict=True):
            check_state(leaf, leaf_size, batch_size, ref, f"{name}.{field}")
    else:
        check_state_leaf(name, state, (batch_size, size), ref)


def map_state(fn, *states):
    """Apply ``fn`` leaf by leaf to one or more states of the same structure.

    A leaf is a tensor (or an int in a ``state_size``); NamedTuples keep their type.
    """
    first = states[0]
    if isinstance(first, tuple):
        parts = [map_state(fn, *leaves) for leaves in zip(*states, strict=True)]
        return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)
    return fn(*states)


def state_leaves(state) -> list:
    """The leaves of a state (or a ``state_size``) in order: ``LSTMState(h, c) -> [h, c]``."""
    if isinstance(state, tuple):
        return [leaf for part in state for leaf in state_leaves(part)]
    return [state]


def state_from_leaves(template, leaves: list):
    """Inverse of :func:`state_leaves`: rebuild the structure of ``template`` from leaves."""
    it = iter(leaves)
    out = map_state(lambda _: next(it), template)
    return out
