"""Gradient flow over time: the vanishing/exploding gradient lesson, measured and drawn.

An Elman cell h_t = tanh(W x_t + U h_{t-1} + b) back-propagates a loss L at the last step T-1
through the product of Jacobians

    dL/dh_t = dL/dh_{T-1} · prod_{k=t+1}^{T-1} dh_k/dh_{k-1},   dh_k/dh_{k-1} = diag(1 - h_k²) U,

so g_t = ‖dL/dh_t‖₂ shrinks (vanishing) or grows (exploding) geometrically as t moves away from
T-1. LSTM and GRU carry an additive memory (c_t = f_t ⊙ c_{t-1} + ...) whose gates can keep the
product near 1. This module measures g_t during training and draws it:

- :func:`grad_norms_over_time`: g_t for one output and one loss, with ``torch.autograd.grad``.
- :class:`GradientFlow`: a training-loop callback that records g_t every few steps from the
  per-step states of the model's :class:`~rnnkit.networks.RecurrentNetwork`.
- :func:`plot_gradient_heatmap`, :func:`plot_gradient_curve`: its history as PNG.
- :func:`loss_along_weight`, :func:`plot_loss_surface`: the loss against one recurrent weight,
  the "rough error surface" of Pascanu, Mikolov & Bengio (2013).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

History = Sequence[tuple[int, Sequence[float]]]  # [(training step s, [g_0, ..., g_{T-1}]), ...]


# ---- measuring ---------------------------------------------------------------------------------


def _norms(grad: Tensor, batch_first: bool) -> Tensor:
    """g_t = mean over the batch of ‖grad[t]‖₂ (norm over the feature axis), shape (T,).

    ``grad`` is (N, T, F) if batch_first else (T, N, F); a 2-D (T, F) is one unbatched sequence.
    """
    if grad.dim() == 2:
        return grad.detach().norm(dim=-1)  # (T,)
    per_sample = grad.detach().norm(dim=-1)  # (N, T) or (T, N)
    return per_sample.mean(dim=0 if batch_first else 1)  # (T,)


def grad_norms_over_time(
    output: Tensor | Sequence[Tensor], loss: Tensor, batch_first: bool = True
) -> Tensor:
    """g_t = mean_n ‖∂loss/∂h_t[n]‖₂ for every time step t, shape (T,), float32, on the CPU.

    ``output`` is either

    - a sequence of T tensors h_t (N, F), the states an unrolled loop fed from step to step:
      then ∂loss/∂h_t is the total derivative of backpropagation through time,
      δ_t = ∂L/∂y_t + (∂h_{t+1}/∂h_t)ᵀ δ_{t+1}, the quantity that vanishes or explodes; or
    - one tensor (N, T, F) if ``batch_first`` else (T, N, F) ((T, F) unbatched): then it is the
      gradient with respect to that tensor itself, i.e. only the *direct* dependence of the loss
      on each step of it. For a recurrent network's stacked output this misses the path through
      the recurrence (a loss at the last step gives 0 for every t < T-1); use
      :class:`GradientFlow` or the per-step states for δ_t.

    Uses ``torch.autograd.grad(loss, output, retain_graph=True)``, so ``loss.backward()`` still
    works afterwards. Steps the loss does not depend on give 0.
    """
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss: expected a scalar tensor, got {shape}")
    if not loss.requires_grad:
        raise ValueError("loss: expected a tensor that requires grad (computed from output "
                         "with autograd on), got one that does not")
    if isinstance(output, Tensor):
        if output.dim() not in (2, 3):
            raise ValueError(f"output: expected a tensor of shape (N, T, F) or (T, N, F) (or "
                             f"(T, F) unbatched), got {tuple(output.shape)}")
        steps, stacked = [output], True
    else:
        steps, stacked = list(output), False
        if not steps or not all(isinstance(h, Tensor) and h.dim() in (1, 2) for h in steps):
            raise ValueError("output: expected a tensor or a non-empty sequence of per-step "
                             "tensors (N, F), got " + (repr(type(output).__name__) if not steps
                                                       else "other elements"))
    wanted = [h for h in steps if h.requires_grad]  # others cannot carry the loss' gradient
    grads = dict.fromkeys(map(id, steps))
    if wanted:
        found = torch.autograd.grad(loss, wanted, retain_graph=True, allow_unused=True)
        grads.update(zip(map(id, wanted), found, strict=True))
    if stacked:
        grad = grads[id(output)]
        if grad is None:
            T = output.shape[0] if output.dim() == 2 else output.shape[1 if batch_first else 0]
            return torch.zeros(T)
        return _norms(grad, batch_first).float().cpu()
    # per step: mean over the batch of the norm over features; a 1-D h_t is one sequence
    return torch.stack([
        torch.zeros(()) if grads[id(h)] is None
        else grads[id(h)].detach().norm(dim=-1).mean().float().cpu()
        for h in steps
    ])


def find_recurrent_network(model: nn.Module) -> nn.Module:
    """The first :class:`~rnnkit.networks.RecurrentNetwork` in ``model.modules()``."""
    from rnnkit.networks import RecurrentNetwork

    for m in model.modules():
        if isinstance(m, RecurrentNetwork):
            return m
    raise ValueError(f"model: expected a model containing an rnnkit RecurrentNetwork (found by "
                     f"GradientFlow to measure dL/dh_t), got {type(model).__name__} without one; "
                     "pass GradientFlow(module=...) to name the recurrent module")


class GradientFlow:
    """Training-loop callback recording g_t = mean over the batch of ‖dL/dh_t‖₂ for every t.

    h_t is the hidden state that the top layer of the recurrent network ``module`` carries from
    step t to step t+1 (the ``h`` of a NamedTuple state such as LSTM's (h_t, c_t), the state
    itself for Elman, GRU, CTRNN, Jordan; both directions of a bidirectional layer,
    concatenated); for most cells it is also what the network outputs at step t. dL/dh_t is
    the total derivative of backpropagation through time,

        δ_t = ∂L/∂y_t + (dh_{t+1}/dh_t)ᵀ δ_{t+1}      (Elman: dh_{t+1}/dh_t = diag(1 - h²_{t+1}) U),

    the error signal that vanishes or explodes with the distance from the loss. (The gradient
    of the stacked output tensor would miss the path through the recurrence.) ``module``
    defaults to the first ``RecurrentNetwork`` in ``trainer.model.modules()``.

    Measured steps are s = 1 and every s with ``s % every == 0``. For those only,
    ``on_step_begin`` runs ``module`` through the reference loop (``rnnkit.scan``: the same
    numbers as torch's and the fused kernels, which keep no per-step states) and wraps its top
    cells' ``step`` to ``retain_grad()`` every h_t; ``on_step_end`` reads the gradients, adds
    ``record["grad_flow"] = [g_0, ..., g_{T-1}]``, appends ``(s, [g_t])`` to :attr:`history`
    and restores the module. Several forward calls in one step (truncated BPTT's consecutive
    time slices) are concatenated along time. Steps the loss did not reach give zeros, and so
    do the padded steps of a padded or packed batch (they count in the batch mean).

    >>> flow = GradientFlow(every=50)   # Trainer(task, cfg, callbacks=[flow])
    """

    def __init__(self, every: int, module: nn.Module | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected a positive int (measure every N steps), "
                             f"got {every!r}")
        if module is not None:
            _top_layers(module)  # fail now on a module we cannot measure
        self.every = every
        self.module = module
        self.history: list[tuple[int, list[float]]] = []
        self._armed: list = []  # what to undo: hook handles and saved attributes
        self._calls: list[list[list[Tensor]]] = []  # per call, per direction, per t: h_t
        self._current: list[list[Tensor]] | None = None
        self._directions: list[bool] = []  # per measured direction: whether it runs reversed

    def measures(self, step: int) -> bool:
        """Whether step ``step`` (1-based) is measured: s == 1 or s % every == 0."""
        return step == 1 or step % self.every == 0

    # ---- the callback protocol -------------------------------------------------------------

    def on_train_begin(self, trainer) -> None:
        if self.module is None:
            self.module = find_recurrent_network(trainer.model)

    def on_step_begin(self, trainer, step: int) -> None:
        self._disarm()
        if self.measures(step):
            if self.module is None:
                self.module = find_recurrent_network(trainer.model)
            self._arm()

    def on_step_end(self, trainer, step: int, record: dict) -> None:
        if not self._armed:
            return
        calls, self._calls = self._calls, []
        self._disarm()
        if not calls:
            return  # the module was not called this step
        g = [float(v) for v in torch.cat([_call_norms(c) for c in calls])]  # (sum of T,)
        record["grad_flow"] = g
        self.history.append((step, g))

    def on_eval(self, trainer, step: int, metrics: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        self._disarm()

    # ---- arming --------------------------------------------------------------------------------

    def _arm(self) -> None:
        module = self.module
        directions = _top_layers(module)
        if hasattr(module, "native"):  # torch's kernel: no per-step states to hold on to
            self._armed.append((setattr, module, "native", module.native))
            module.native = False
        for d, rec in enumerate(directions):
            self._armed.append((setattr, rec, "fused", rec.fused))
            rec.fused = False  # rnnkit's fused kernel: the same
            cell = rec.cell
            original = cell.step
            self._armed.append((_restore_step, cell, "step", cell.__dict__.get("step")))
            cell.step = self._wrap(original, d)
        self._armed.append(module.register_forward_pre_hook(self._call_begins))
        self._armed.append(module.register_forward_hook(self._call_ends))
        self._directions = [rec.reverse for rec in directions]

    def _wrap(self, step, d: int):
        def probed_step(*args, **kwargs):
            y, state = step(*args, **kwargs)
            if self._current is not None:
                h = _hidden(state)
                if h.requires_grad:
                    h.retain_grad()
                self._current[d].append(h)
            return y, state

        return probed_step

    def _call_begins(self, module, args) -> None:
        self._current = [[] for _ in self._directions]

    def _call_ends(self, module, args, result) -> None:
        current, self._current = self._current, None
        if current is None or not current[0]:
            return
        # a reverse direction ran from t = T-1 down to 0: put its h_t in time order
        self._calls.append([steps[::-1] if reverse else steps
                            for steps, reverse in zip(current, self._directions, strict=True)])

    def _disarm(self) -> None:
        while self._armed:
            item = self._armed.pop()  # undo in reverse order
            if isinstance(item, tuple):
                fn, obj, name, value = item
                fn(obj, name, value)
            else:
                item.remove()
        self._calls, self._current = [], None


class GradientFlowPlots(GradientFlow):
    """:class:`GradientFlow` that also draws its history into the run directory at the end:
    ``grad_flow_heatmap.png`` and ``grad_flow_curve.png`` (``rnnkit train
    --run.grad_flow_every=N``; ``rnnkit diagnose``)."""

    def __init__(self, every: int, module: nn.Module | None = None, title: str = "") -> None:
        super().__init__(every, module)
        self.title = title
        self.paths: dict[str, Path] = {}

    def on_train_end(self, trainer) -> None:
        super().on_train_end(trainer)
        if not trainer.is_main or not self.history:
            return
        what = self.title or "gradient flow"
        out = Path(trainer.out_dir)
        self.paths["heatmap"] = plot_gradient_heatmap(
            self.history, out / "grad_flow_heatmap.png",
            f"{what}: log10 ‖dL/dh_t‖ over training (dark = vanished)")
        self.paths["curve"] = plot_gradient_curve(
            self.history, out / "grad_flow_curve.png", f"{what}: ‖dL/dh_t‖ against time step t")


def _restore_step(cell: nn.Module, name: str, value) -> None:
    """Undo the wrapped ``cell.step``: put back an instance attribute or drop ours."""
    if value is None:
        cell.__dict__.pop(name, None)
    else:
        cell.__dict__[name] = value


def _hidden(state) -> Tensor:
    """h_t of a cell's state: the field ``h`` of a NamedTuple state (LSTM, Clockwork, SCRN,
    fully recurrent), else the state itself (Elman, GRU, CTRNN, Jordan)."""
    if isinstance(state, tuple):
        return state.h if hasattr(state, "h") else _hidden(state[0])
    return state


def _top_layers(module: nn.Module) -> list:
    """The ``Recurrent`` layers (one per direction) whose states GradientFlow measures: the top
    layer of a RecurrentNetwork, or a Recurrent/Bidirectional layer itself."""
    from rnnkit.layers import Bidirectional, Recurrent
    from rnnkit.networks import RecurrentNetwork

    layer = module.stack.layers[-1] if isinstance(module, RecurrentNetwork) else module
    if isinstance(layer, Bidirectional):
        return [layer.fwd, layer.bwd]
    if isinstance(layer, Recurrent):
        return [layer]
    raise TypeError(f"module: expected an rnnkit RecurrentNetwork, Recurrent or Bidirectional "
                    f"(GradientFlow needs the per-step states of rnnkit's loop), got "
                    f"{type(module).__name__}")


def _call_norms(call: list[list[Tensor]]) -> Tensor:
    """g_t for one forward call, from its h_t per direction and time step (N, H) each:
    g_t = mean_n sqrt(sum over directions of ‖∂L/∂h_t[n]‖²), shape (T,)."""
    T, N = len(call[0]), call[0][0].shape[0]
    squares = torch.zeros(T, N)  # (T, N)
    for steps in call:
        for t, h in enumerate(steps):
            if h.grad is not None:  # None: the loss did not reach this step
                squares[t] += h.grad.detach().float().pow(2).sum(dim=-1).cpu()
    return squares.sqrt().mean(dim=1)  # (T,)


# ---- the loss along one weight ----------------------------------------------------------------


def loss_along_weight(
    model: nn.Module,
    loss_fn: Callable[[], Tensor | float],
    param: nn.Parameter,
    index: tuple,
    values: Sequence[float],
) -> list[float]:
    """L(v) = loss_fn() with the single entry ``param[index]`` set to v, for each v in ``values``.

    Evaluated under ``torch.no_grad()`` with ``model`` in eval mode (dropout off); the entry's
    value and the model's training mode are restored afterwards, also when ``loss_fn`` raises.
    ``param`` must be one of ``model.parameters()``.
    """
    if not isinstance(param, Tensor) or not any(p is param for p in model.parameters()):
        raise ValueError("param: expected one of model.parameters(), got "
                         + (f"a tensor of shape {tuple(param.shape)} not in the model"
                            if isinstance(param, Tensor) else type(param).__name__))
    if isinstance(index, int):
        index = (index,)
    if not isinstance(index, tuple) or len(index) != param.dim() or not all(
            isinstance(i, int) and not isinstance(i, bool) and -n <= i < n
            for i, n in zip(index, param.shape, strict=True)):
        raise ValueError(f"index: expected a tuple of {param.dim()} ints inside the parameter's "
                         f"shape {tuple(param.shape)}, got {index!r}")
    was_training = model.training
    with torch.no_grad():
        original = param[index].clone()
        model.eval()
        try:
            losses = []
            for v in values:
                param[index] = float(v)
                loss = loss_fn()
                losses.append(float(loss.item() if isinstance(loss, Tensor) else loss))
        finally:
            param[index] = original
            model.train(was_training)
    return losses


# ---- plots -------------------------------------------------------------------------------------

G_LABEL = "g_t = mean over batch of ‖dL/dh_t‖₂"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_history(history: History) -> list[tuple[int, list[float]]]:
    rows = [(int(s), [float(v) for v in g]) for s, g in history]
    if not any(g for _, g in rows):
        raise ValueError("history: expected at least one measured step with g_t values, got none")
    return rows


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_gradient_heatmap(history: History, path, title: str = "") -> Path:
    """Heatmap of log10 g_t: time step t across, training step down, as a PNG at ``path``.

    ``history`` is :attr:`GradientFlow.history`, ``[(training step, [g_0, ..., g_{T-1}]), ...]``.
    Vanishing gradients show as a dark region on the left (early t, far from a loss at the last
    step); exact zeros (no gradient reached t: saturated units, float32 underflow) are grey.
    Returns the path.
    """
    import numpy as np
    from matplotlib.patches import Patch

    plt = _pyplot()
    rows = _check_history(history)
    T = max(len(g) for _, g in rows)
    grid = np.full((len(rows), T), np.nan)  # (measured steps, T); NaN pads shorter rows
    for i, (_, g) in enumerate(rows):
        grid[i, :len(g)] = g
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(grid > 0, np.log10(grid), np.nan)
    steps = [s for s, _ in rows]

    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    cmap = plt.get_cmap("magma").with_extremes(bad="0.75")
    # one row per measured step, labelled with its training step (rows may be unevenly spaced)
    mesh = ax.pcolormesh(np.arange(T + 1) - 0.5, np.arange(len(rows) + 1) - 0.5,
                         np.ma.masked_invalid(logs), cmap=cmap, shading="flat")
    ticks = np.unique(np.linspace(0, len(rows) - 1, min(len(rows), 8)).round().astype(int))
    ax.set_yticks(ticks, [str(steps[i]) for i in ticks])
    ax.invert_yaxis()  # first training step at the top
    ax.set_xlabel("time step t (a loss at the last step sits at t = T-1, on the right)")
    ax.set_ylabel("training step")
    ax.set_title(title or "gradient flow over time", fontsize=10)
    bar = fig.colorbar(mesh, ax=ax)
    bar.set_label(f"log10 g_t,   {G_LABEL}")
    if (grid == 0).any():
        ax.legend(handles=[Patch(color="0.75", label="g_t = 0 exactly")], loc="lower right",
                  fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def pick_rows(n: int, k: int = 5) -> list[int]:
    """Up to ``k`` indices spread over range(n): the first, some in the middle and the last."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def plot_gradient_curve(history: History, path, title: str = "") -> Path:
    """g_t against t on a log y axis, one line for each of a few measured training steps (the
    first, some in the middle, the last), as a PNG at ``path``. Zeros are left out (log axis).
    Returns the path."""
    plt = _pyplot()
    rows = _check_history(history)
    picked = pick_rows(len(rows))
    colours = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    drew = False
    for j, i in enumerate(picked):
        s, g = rows[i]
        ys = [v if v > 0 and math.isfinite(v) else float("nan") for v in g]
        drew = drew or any(v == v for v in ys)
        ax.plot(range(len(g)), ys, color=colours(0.9 * j / max(1, len(picked) - 1)),
                label=f"training step {s}")
    if drew:
        ax.set_yscale("log")
    ax.set_xlabel("time step t (a loss at the last step sits at t = T-1, on the right)")
    ax.set_ylabel(G_LABEL)
    ax.set_title(title or "gradient norm over time", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    zeros = any(v == 0 for i in picked for v in rows[i][1])
    ax.legend(fontsize=8, title="lines stop where g_t = 0 exactly" if zeros else None,
              title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_surface(
    values: Sequence[float],
    losses: Sequence[float],
    path,
    title: str = "",
    current: float | None = None,
    xlabel: str = "value of the recurrent weight",
    ylabel: str = "loss",
) -> Path:
    """The loss against one weight (from :func:`loss_along_weight`) as a PNG at ``path``, with
    the trained value ``current`` marked. The y axis is logarithmic when the finite positive
    losses span more than a factor 100. Returns the path."""
    plt = _pyplot()
    values, losses = [float(v) for v in values], [float(v) for v in losses]
    if len(values) != len(losses) or not values:
        raise ValueError(f"values, losses: expected two non-empty sequences of the same length, "
                         f"got {len(values)} and {len(losses)}")
    finite = [v for v in losses if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    ax.plot(values, [v if math.isfinite(v) else float("nan") for v in losses], color="C0",
            lw=1.5, label="loss")
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
    if current is not None:
        ax.axvline(current, color="C3", ls="--", lw=1, label=f"trained value {current:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "loss along one recurrent weight", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
