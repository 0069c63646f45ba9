"""Deep, bidirectional networks of any cell, with ``torch.nn.LSTM``'s interface.

``RecurrentNetwork(cell, ...)`` stacks layers of a registered cell; the named networks in
:mod:`rnnkit.family` (``RNN``, ``LSTM``, ``GRU``, ...) are it with torch's exact signatures.
Inputs, initial states, outputs and ``state_dict()`` keys are torch's, so a user swaps
``torch.nn.LSTM`` for ``rnnkit.LSTM`` and nothing else changes.

Three paths compute the same numbers: where every cell is exactly what a torch kernel computes
(plain Elman, LSTM, GRU) the *native* path calls that kernel (``torch._VF``, as ``torch.nn`` does);
otherwise, or with ``native=False``, each layer runs rnnkit's fused kernel for its cell
(:mod:`rnnkit.kernels`), or with ``fused=False`` the reference :func:`~rnnkit.scan`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import os
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ._checks import check_lengths, check_positive_int, check_state_leaf
from .cells import cell_names, get_cell
from .cells.base import bind, state_from_leaves, state_leaves
from .errors import ShapeError
from .layers import Bidirectional, Recurrent, Stacked
from .regularize import Regularizers

# Native modes whose rnnkit fused kernel trains faster than torch's own on the CPU: torch's CPU
# GRU has no fused backward (autograd over its cell), and rnnkit's GRU kernel measured a
# 1.3-1.4x faster train step (benchmarks/RESULTS.md). So a GRU that records for backward on the
# CPU runs the fused kernel (same numbers to float rounding) even where the ops did not compile.
# torch's LSTM (oneDNN) kernel is the faster one, so it always stays; CUDA (cuDNN) stays native.
_FUSED_TRAINS_FASTER = frozenset({"gru"})
# Native modes whose *compiled* op (only where rnnkit.ops built: the pure-torch fallback is
# slower than torch's kernel) runs faster than torch's CPU kernel, training and inference alike:
# the Elman op measured 0.5-0.8x torch.nn.RNN's train step and 0.65-0.8x its inference, the GRU
# op 0.6-0.9x torch.nn.GRU's inference (benchmarks/RESULTS.md).
_OP_RUNS_FASTER = frozenset({"rnn_tanh", "rnn_relu", "gru"})
# Native modes whose cells rnnkit also computes as a registered op (torch.ops.rnnkit): under
# torch.compile or torch.export, where torch's own RNN kernels break the graph (Dynamo refuses
# them), those networks run the op instead, with the same numbers.
_REGISTERED_OPS = frozenset({"rnn_tanh", "rnn_relu", "gru", "lstm"})


class RecurrentNetwork(nn.Module):
    """A stack of ``num_layers`` recurrent layers of the cell ``cell``, optionally bidirectional.

    Args:
        cell: a registered cell name (``"elman"``, ``"lstm"``, ``"gru"``, ... see
            :func:`rnnkit.cells.cell_names`) or a factory ``f(input_size, hidden_size, **opts)``.
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in ``torch.nn.LSTM``.
        native: use torch's own kernel where the configuration is exactly one it computes
            (except on the CPU, where a GRU or an Elman network runs rnnkit's op, faster:
            see ``forward``).
        fused: elsewhere, use rnnkit's fused kernel where the cell has one (``rnnkit.kernels``);
            ``native=False, fused=False`` runs every layer through the reference ``scan``.
        side_size: features of a per-step side input appended to every layer's input (a
            CTRNN's Δt); the cells of every layer then take ``layer_input + side_size``.
        recurrent_dropout, zoneout, weight_drop, dropout_mode: regularizers, off by default
            (:mod:`rnnkit.regularize` has their equations): variational dropout of the state
            entering the recurrent product (one mask per sequence); zoneout ``p`` (or one ``p``
            per state tensor, ``(p_h, p_c)`` for the LSTM); DropConnect on the recurrent
            weights (one mask per forward); ``"variational"`` makes ``dropout`` between layers
            one mask per sequence instead of one per step.
        residual: every layer after the first adds its input to its output (residual
            connections, as Li et al. 2018 stack IndRNNs deep; :class:`~rnnkit.layers.Stacked`).
        **cell_options: passed to every cell (e.g. ``nonlinearity="relu"``).

    Forward: ``net(input, hx=None, *, lengths=None) -> (output, h_n)`` exactly as torch.nn.LSTM:

    - input ``(T, N, I)`` (``(N, T, I)`` if batch_first), ``(T, I)`` unbatched, or a
      ``PackedSequence``; ``lengths`` ``(N,)`` marks a right-padded batch (outputs past a length
      are zero, final states are taken at each sequence's last step).
    - hx / h_n: ``(D*num_layers, N, size)`` per state tensor, a tensor for one-tensor states
      (Elman, GRU) and a tuple for more (LSTM's ``(h, c)``); ``D = 2`` if bidirectional.
    - output ``(T, N, D*H_out)``, or a ``PackedSequence`` for a ``PackedSequence`` input.

    The network owns every cell's parameters under torch's flat names (``weight_ih_l0``,
    ``bias_hh_l1_reverse``, ``weight_peephole_l0``, ...), in torch's order: ``state_dict()``,
    ``named_parameters()``, ``weight_norm``, ``spectral_norm``, parametrizations, assignment and
    ``torch.func.functional_call`` see them as on ``torch.nn.LSTM``, and the cells compute with
    whatever the network holds there at each forward. Second-order gradients work on every path.
    """

    def __init__(
        self,
        cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        native: bool = True,
        fused: bool = True,
        side_size: int = 0,
        recurrent_dropout: float = 0.0,
        zoneout=0.0,
        weight_drop: float = 0.0,
        dropout_mode: str = "standard",
        residual: bool = False,
        device=None,
        dtype=None,
        **cell_options,
    ):
        super().__init__()
        factory = get_cell(cell) if isinstance(cell, str) else cell
        if not callable(factory):
            raise TypeError(f"cell: expected a cell name (one of {', '.join(cell_names())}) "
                            f"or a cell factory, got {cell!r}")
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        for name, flag in (("bias", bias), ("batch_first", batch_first),
                           ("bidirectional", bidirectional), ("residual", residual)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: expected a bool, got {type(flag).__name__} ({flag!r})")
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers, so it does nothing with num_layers=1",
                stacklevel=_stacklevel_outside_package(),
            )
        self.cell = cell if isinstance(cell, str) else getattr(cell, "__name__", repr(cell))
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout = float(dropout)
        self.native = native
        self.side_size = check_positive_int("side_size", side_size, minimum=0)
        D = 2 if bidirectional else 1
        layers, size = [], input_size
        _check_cell_options(factory, cell, cell_options)
        for _ in range(num_layers):
            cells = [factory(size + side_size, hidden_size, bias=bias, device=device, dtype=dtype,
                             **cell_options) for _ in range(D)]
            layers.append(Bidirectional(*cells) if bidirectional else Recurrent(cells[0]))
            size = layers[-1].output_size
        self.regularizers = Regularizers.checked(
            layers[0].cell if not bidirectional else layers[0].fwd.cell,
            recurrent_dropout=recurrent_dropout, zoneout=zoneout, weight_drop=weight_drop,
            dropout_mode=dropout_mode)
        self.residual = residual
        self.stack = Stacked(layers, self.dropout, self.regularizers.dropout_mode, residual)
        if self.regularizers.per_step:
            for m in self.stack.modules():
                if isinstance(m, Recurrent):
                    m.regularizers = self.regularizers
        self.fused = fused
        self.output_size = size  # D * H_out, the features of `output`

        # The network owns every cell's parameters under torch's flat names (`weight_ih` of
        # layer l, direction d -> `weight_ih_l{l}[_reverse]`), registered here in torch's order:
        # real attributes, so state_dict(), weight_norm, spectral_norm, parametrizations and
        # assignment see them exactly as on torch.nn.LSTM. Each cell reads its own back from
        # here (Cell.lend_to); forward binds their current values once per call (_bound).
        self._all_weights: list[list[str]] = [
            c.lend_to(self, f"_l{l}{'_reverse' if d else ''}") for l, d, c in self._cells()
        ]
        self._weight_shapes = {name: getattr(self, name).shape for name in self._flat_weights_names}

    # ---- structure --------------------------------------------------------------------------

    def _cells(self) -> list:
        """``(layer, direction, cell)`` in torch's order: layer-major, forward before reverse.
        Cached (walking the modules costs ~10 us a call), and re-walked when ``stack`` is another
        module, as in a DataParallel replica."""
        stack = self._modules["stack"]
        cached = self.__dict__.get("_cells_cache")
        if cached is None or cached[0] is not stack:
            cells, recurrents = [], []
            for l, layer in enumerate(stack.layers):
                directions = [layer.fwd, layer.bwd] if isinstance(layer, Bidirectional) \
                    else [layer]
                cells += [(l, d, rec.cell) for d, rec in enumerate(directions)]
                recurrents += directions
            cached = self.__dict__["_cells_cache"] = (stack, cells, recurrents)
        return cached[1]

    @property
    def fused(self) -> bool:
        self._cells()  # (fills the cache: walking self.modules() every forward cost ~15 us)
        return all(r.fused for r in self.__dict__["_cells_cache"][2])

    @fused.setter
    def fused(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, Recurrent):
                m.fused = value

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _flat_weights_names(self) -> list[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, in torch's order (as ``torch.nn.LSTM``)."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project every cell's weights back into its constraints, in place (an IndRNN's
        ``|u| <= max_recurrent_weight``): call it after each optimizer step, as ``rnnkit
        train`` does; a no-op for cells without constraints."""
        for _, _, c in self._cells():
            c.constrain_()

    def flatten_parameters(self) -> None:
        """No-op, for drop-in compatibility with ``torch.nn.LSTM``."""

    def reset_parameters(self) -> None:
        """Re-initialise every parameter: each cell's as at construction (torch's
        U(-1/sqrt(H), 1/sqrt(H)) and the cell's own rules: forget bias, IRNN identity, ...),
        then, as torch.nn's RNNs do, U(-1/sqrt(H), 1/sqrt(H)) for the parameters a
        reparametrized or replaced weight is computed from (weight_norm's g and v, a
        parametrization's ``original``, a weight drop's raw weight)."""
        plain, weights = set(), {}
        for _, _, c in self._cells():
            bound = {}
            for own, flat in c.borrowed_names().items():
                p = self._parameters.get(flat)
                if p is not None:
                    plain.add(id(p))
                # a computed weight: the cell's rules write into scratch, which nothing reads
                bound[own] = p if p is not None else torch.empty(self._weight_shapes[flat])
            weights[c] = bound
        with bind(weights):
            for c in weights:
                c.reset_parameters()
        k = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                if id(p) not in plain:
                    nn.init.uniform_(p, -k, k)

    @property
    def recurrent_dropout(self) -> float:
        return self.regularizers.recurrent_dropout

    @property
    def zoneout(self) -> tuple[float, ...]:
        return self.regularizers.zoneout

    @property
    def weight_drop(self) -> float:
        return self.regularizers.weight_drop

    @property
    def dropout_mode(self) -> str:
        return self.regularizers.dropout_mode

    def _layer_by_layer(self) -> bool:
        """Whether a regularizer changes the recurrence or what passes between layers (so
        torch's whole-stack kernel cannot run it): residual connections, zoneout, or while
        training recurrent dropout or variational dropout between layers."""
        reg = self.regularizers
        if self.residual and self.num_layers > 1:  # (torch's stack kernel has no skips)
            return True
        return bool(reg.zoneout) or self.training and bool(
            reg.recurrent_dropout or (reg.dropout_mode == "variational" and self.dropout))

    @contextlib.contextmanager
    def _bound(self):
        """Fix every cell's weights to the network's current values for one forward: each
        attribute read once (a parametrization computed once, as torch.nn's RNNs do), its shape
        checked against the cell's; while training with ``weight_drop``, each recurrent weight
        times this forward's DropConnect mask (scaled by 1/(1-p))."""
        params, shapes, weights = self._parameters, self._weight_shapes, {}
        drop = self.regularizers.weight_drop if self.training else 0.0
        for _, _, c in self._cells():
            current = {}
            for own, flat in c.__dict__["_borrowed"].items():
                w = params.get(flat)
                if w is None:  # computed (a parametrization, weight_norm's hook) or assigned
                    w = getattr(self, flat)
                if not isinstance(w, Tensor) or w.shape != shapes[flat]:
                    got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                    raise ShapeError(f"{flat}: expected a tensor of shape "
                                     f"{tuple(shapes[flat])}, got {got}")
                current[own] = w
            if drop:
                for own in c.recurrent_weight_names():
                    current[own] = F.dropout(current[own], drop, training=True)
            weights[c] = current
        with bind(weights):
            yield

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if type(self) is RecurrentNetwork:  # the façades' names already say which cell
            s = f"{self.cell!r}, " + s
        defaults = {"num_layers": 1, "nonlinearity": "tanh", "bias": True, "batch_first": False,
                    "dropout": 0.0, "bidirectional": False, "proj_size": 0,
                    "dropout_mode": "standard", "recurrent_dropout": 0.0, "zoneout": (),
                    "weight_drop": 0.0, "residual": False}
        for name, default in defaults.items():
            value = getattr(self, name, default)
            if value != default:
                s += f", {name}={value!r}"
        return s

    # ---- forward ----------------------------------------------------------------------------

    _side_name = "side input"  # what error messages call the side input

    def forward(self, input, hx=None, *, lengths=None):
        """Run the network over a batch of sequences: ``(output, h_n)``, as ``torch.nn.LSTM``.

        Args:
            input: ``(T, N, I)`` (``(N, T, I)`` with ``batch_first``), ``(T, I)`` unbatched, or a
                ``PackedSequence``.
            hx: the initial state, zeros if None: ``(D * num_layers, N, H)`` for a cell with one
                state tensor (Elman, GRU, Jordan's ``(.., N, O)``, ...), a tuple of them for more
                (LSTM ``(h_0, c_0)``; ``h_0`` is ``(.., N, proj_size)`` with a projection);
                ``(D * num_layers, H)`` per tensor for an unbatched input. ``D`` is 2 if
                bidirectional, else 1.
            lengths: ``(N,)`` integer lengths of a right-padded ``input`` (each in ``[1, T]``):
                outputs past a sequence's length are zero and its final state is taken at its
                last step (the reverse direction starts there). Not with a ``PackedSequence``.

        Returns:
            ``output`` ``(T, N, D * H_out)`` (batch first with ``batch_first``; a
            ``PackedSequence`` for one) and ``h_n``, laid out as ``hx``.

        Which kernel runs: with ``native=True`` (the default) a configuration torch computes
        (plain Elman, LSTM, GRU) runs torch's own kernel, except on the CPU where rnnkit's
        compiled Elman and GRU ops are faster and run instead, and under ``torch.compile`` /
        ``torch.export``, which trace rnnkit's registered ops; every other cell runs rnnkit's
        fused op (``torch.ops.rnnkit.<cell>_sequence``), and ``fused=False`` the reference loop
        (:func:`rnnkit.scan`) over the cell's ``step``. All give the same numbers to float
        rounding.
        """
        return self._run(input, hx, lengths, None)

    def initial_state(self, batch_size: int, *, device=None, dtype=None):
        """The state before a stream's first :meth:`step`: zeros laid out as ``forward``'s
        ``hx`` (a tensor ``(num_layers, N, size)``, or the cell's NamedTuple of them, e.g.
        ``LSTMState(h, c)``; see :mod:`rnnkit.streaming`). Unidirectional networks only."""
        from . import streaming

        return streaming.initial_state(self, batch_size, device=device, dtype=dtype)

    def step(self, input: Tensor, state=None, *, valid: Tensor | None = None,
             side: Tensor | None = None):
        """Advance one time step: ``input`` ``(N, input_size)`` (or unbatched
        ``(input_size,)``) and the state after the previous step (None: zeros) ->
        ``(output (N, H_out), state)``, the state laid out as ``forward``'s ``hx`` / ``h_n`` (so
        a ``forward`` over a prompt can be continued step by step). ``valid`` ``(N,)`` bool: the
        sequences still running (elsewhere the state is carried and the output zero, as past a
        length in ``forward``); ``side`` ``(N, side_size)`` for a network with a side input.
        Feeding a sequence step by step gives ``forward``'s outputs. Unidirectional networks
        only (a reverse direction needs the sequence's end first). See
        :mod:`rnnkit.streaming`."""
        from . import streaming

        return streaming.step(self, input, state, valid=valid, side=side)

    def _run(self, input, hx, lengths, side):
        """forward, plus ``side``: a per-step input laid out like ``input`` with ``side_size``
        features (a PackedSequence for a PackedSequence input), appended to every layer's."""
        with self._bound():
            return self._run_bound(input, hx, lengths, side)

    def _run_bound(self, input, hx, lengths, side):
        first_cell = self._cells()[0][2]
        x, N, unbatched, lengths = self._check_input(input, lengths)
        leaves = self._check_hx(hx, N, unbatched, x, first_cell.state_size)
        side = self._check_side(side, input, x)

        mode = first_cell.native_mode() if self.native and side is None else None
        if mode in _FUSED_TRAINS_FASTER and self._training_on_cpu(x):
            mode = None  # rnnkit's fused kernel (see _FUSED_TRAINS_FASTER)
        elif mode in _OP_RUNS_FASTER and self._fused_on_cpu(x) and _ops_compiled():
            mode = None  # rnnkit's compiled op (see _OP_RUNS_FASTER)
        if mode in _REGISTERED_OPS and torch.compiler.is_compiling():
            mode = None  # torch.compile/export cannot trace torch's RNN kernels; rnnkit's ops
        if mode is not None and self._layer_by_layer():
            mode = None  # per-layer masks (rnnkit.regularize): rnnkit's kernels, layer by layer
        x = input if isinstance(input, PackedSequence) else x
        if mode is not None:
            out, leaves = self._forward_native(mode, x, leaves, lengths, first_cell.state_size)
        else:
            out, leaves = self._forward_scan(x, leaves, lengths, first_cell.state_size, side)

        if unbatched:
            out, leaves = out.squeeze(1), [leaf.squeeze(1) for leaf in leaves]
        elif self.batch_first and not isinstance(out, PackedSequence):
            out = out.transpose(0, 1)
        return out, (leaves[0] if len(leaves) == 1 else tuple(leaves))

    def _fused_on_cpu(self, x: Tensor) -> bool:
        """Whether this call runs on the CPU with the fused kernels on."""
        return self.fused and x.device.type == "cpu"

    def _training_on_cpu(self, x: Tensor) -> bool:
        """Whether this call records for backward, on the CPU, with the fused kernels on."""
        return (self._fused_on_cpu(x) and torch.is_grad_enabled()
                and (x.requires_grad or any(p.requires_grad for p in self.parameters())))

    def _check_input(self, input, lengths):
        """Validate the input; return it time-major ``(T, N, I)`` (a PackedSequence's data),
        the batch size, whether it was unbatched, and the checked lengths."""
        name = type(self).__name__
        weight = next(self.parameters())
        unbatched = False
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: expected None for a PackedSequence input, which "
                                 f"carries its own lengths, got {lengths!r}")
            x, N = input.data, int(input.batch_sizes[0])
            if x.dim() != 2 or x.shape[1] != self.input_size:
                raise ShapeError(f"{name}: expected PackedSequence data of shape "
                                 f"(sum of lengths, input_size={self.input_size}), "
                                 f"got {tuple(x.shape)}")
        elif isinstance(input, Tensor):
            if input.dim() not in (2, 3):
                layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
                raise ValueError(f"{name}: expected input of shape {layout} or (T, input_size) "
                                 f"unbatched, got {input.dim()}-D shape {tuple(input.shape)}")
            unbatched = input.dim() == 2
            if unbatched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, N, I)
            if x.shape[0] == 0:  # ShapeError: a RuntimeError too, as torch raises here
                raise ShapeError(f"{name}: expected input with at least one time step (T >= 1), "
                                 f"got shape {tuple(input.shape)}")
            if x.shape[2] != self.input_size:
                raise ShapeError(f"{name}: expected input features (last dim) = input_size "
                                 f"{self.input_size}, got {x.shape[2]} in shape "
                                 f"{tuple(input.shape)}")
            N = x.shape[1]
            if lengths is not None:
                lengths = check_lengths(lengths, x.shape[0], N)
        else:
            raise TypeError(f"{name}: expected input to be a Tensor or a PackedSequence, "
                            f"got {type(input).__name__}")
        if x.dtype != weight.dtype:
            raise ValueError(f"{name}: input dtype {x.dtype} does not match the parameters' "
                             f"dtype {weight.dtype}; convert one with .to()")
        return x, N, unbatched, lengths

    def _check_hx(self, hx, N: int, unbatched: bool, x: Tensor, state_size,
                  name: str = "hx") -> list | None:
        """Validate hx in torch's layout; return its leaves as ``(D*num_layers, N, size)``.
        ``name``: what errors call it (``step`` passes ``"state"``)."""
        if hx is None:
            return None
        sizes = state_leaves(state_size)
        L = self.num_directions * self.num_layers
        if len(sizes) == 1:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{name}: expected a tensor of shape ({L}, N, {sizes[0]}), "
                                f"got {type(hx).__name__}")
            leaves, names = [hx], [name]
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != len(sizes):
                got = f"{len(hx)} items" if isinstance(hx, (tuple, list)) else type(hx).__name__
                raise TypeError(f"{name}: expected a tuple of {len(sizes)} state tensors "
                                f"(as torch.nn.LSTM's (h_0, c_0)), got {got}")
            fields = getattr(state_size, "_fields", None)
            leaves = list(hx)
            names = [f"{name}.{f}" for f in fields] if fields and name != "hx" \
                else [f"{name}[{i}]" for i in range(len(sizes))]
        for leaf, leaf_name, size in zip(leaves, names, sizes, strict=True):
            check_state_leaf(leaf_name, leaf, (L, size) if unbatched else (L, N, size), x)
        return [leaf.unsqueeze(1) for leaf in leaves] if unbatched else leaves

    def _check_side(self, side, input, x: Tensor) -> Tensor | None:
        """Validate the side input; return it time-major ``(T, N, side_size)``."""
        if self.side_size == 0:
            return None
        if isinstance(input, PackedSequence):
            if not isinstance(side, PackedSequence) or \
                    not torch.equal(side.batch_sizes, input.batch_sizes):
                raise ValueError(f"{self._side_name}: expected a PackedSequence with the "
                                 f"input's batch_sizes, got {type(side).__name__}")
            side = pad_packed_sequence(side)[0]
            expected = (len(input.batch_sizes), int(input.batch_sizes[0]), self.side_size)
            got = tuple(side.shape)
        else:
            expected = (*input.shape[:-1], self.side_size)
            got = tuple(side.shape) if isinstance(side, Tensor) else type(side).__name__
            if got == expected:
                side = side.unsqueeze(1) if input.dim() == 2 else \
                    (side.transpose(0, 1) if self.batch_first else side)
        if got != expected:
            raise ValueError(f"{self._side_name}: expected shape {expected}, got {got}")
        if side.dtype != x.dtype or side.device != x.device:
            raise ValueError(f"{self._side_name}: expected dtype {x.dtype} on {x.device} (the "
                             f"input's), got {side.dtype} on {side.device}")
        return side

    def _forward_native(self, mode, x, leaves, lengths, state_size):
        """torch's own kernel. ``x`` is time-major ``(T, N, I)`` or a PackedSequence."""
        weights = [w for _, _, c in self._cells() for w in c.native_weights()]
        kernel = getattr(_VF, mode)
        if leaves is None:
            N = int(x.batch_sizes[0]) if isinstance(x, PackedSequence) else x.shape[1]
            leaves = self._zero_leaves(N, state_size, x)
        hx = leaves[0] if len(leaves) == 1 else tuple(leaves)
        args = (weights, self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional)
        if lengths is None and not isinstance(x, PackedSequence):
            out, *finals = kernel(x, hx, *args, False)
            return out, finals
        T = x.shape[0] if lengths is not None else None
        packed = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
        if packed.sorted_indices is not None:  # the kernel wants hx in sorted order
            hx = tuple(h.index_select(1, packed.sorted_indices) for h in leaves)
            hx = hx[0] if len(hx) == 1 else hx
        data, *finals = kernel(packed.data, packed.batch_sizes, hx, *args)
        if packed.unsorted_indices is not None:
            finals = [h.index_select(1, packed.unsorted_indices) for h in finals]
        out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                             packed.unsorted_indices)
        if lengths is not None:
            out = pad_packed_sequence(out, total_length=T)[0]
        return out, finals

    def _forward_scan(self, x, leaves, lengths, state_size, side=None):
        """The reference path: every layer through ``scan``."""
        packed = x if isinstance(x, PackedSequence) else None
        if packed is not None:
            x, lengths = pad_packed_sequence(packed)  # (T, N, I), original batch order
        D = self.num_directions

        def state(l: int, d: int):
            return state_from_leaves(state_size, [leaf[l * D + d] for leaf in leaves])

        states = None
        if leaves is not None:
            states = [(state(l, 0), state(l, 1)) if D == 2 else state(l, 0)
                      for l in range(self.num_layers)]
        out, finals = self.stack(x, states, lengths, side)
        per_direction = [s for f in finals for s in (f if D == 2 else (f,))]
        leaves = [torch.stack(group) for group in zip(*map(state_leaves, per_direction),
                                                        strict=True)]
        if packed is not None:
            out = _repack(out, lengths, packed)
        return out, leaves

    def _zero_leaves(self, N: int, state_size, x) -> list[Tensor]:
        ref = x.data if isinstance(x, PackedSequence) else x
        L = self.num_directions * self.num_layers
        return [ref.new_zeros(L, N, size) for size in state_leaves(state_size)]


# Where the gate-bias initialisations apply (what an error names when another cell gets one)
_OPTION_HOMES = {"forget_bias": "lstm and gru (its update gate); a ctrnn's time constants "
                                 "take tau_init='chrono'",
                 "max_lag": "lstm and gru with forget_bias='chrono', ctrnn with tau_init='chrono'"}


def _check_cell_options(factory, cell, options: dict) -> None:
    """Every option must be one the cell factory takes: else a TypeError naming the option,
    the cell and what it does take."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    taken = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
             and n not in ("input_size", "hidden_size", "bias", "device", "dtype")]
    for name in options:
        if name not in params:
            name_of = cell if isinstance(cell, str) else getattr(cell, "__name__", repr(cell))
            where = f"; it applies to {_OPTION_HOMES[name]}" if name in _OPTION_HOMES else ""
            raise TypeError(f"{name}: not an option of the {name_of} cell (its options: "
                            f"{', '.join(taken) or 'none'}){where}")


def _ops_compiled() -> bool:
    """Whether rnnkit's compiled ops loaded (importing rnnkit.ops loads them, once)."""
    from . import ops

    return ops.compiled()


def _repack(out: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack a padded time-major ``out`` (original batch order) in ``like``'s layout."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    data = pack_padded_sequence(out, lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _stacklevel_outside_package() -> int:
    """``stacklevel`` for a warning issued in the caller: the first frame outside rnnkit
    (the user's code, not a façade's ``super().__init__``)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level
