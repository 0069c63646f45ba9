"""``rnnkit diagnose``: watch the gradient vanish (or not) while a cell trains.

Trains one cell on the adding problem (loss only at the last step, so every bit of signal about
the first marker has to travel back through time) and records, every few steps, the norm of the
back-propagated error at every time step,

    g_t = mean over the batch of ‖dL/dh_t‖₂,
    dL/dh_t = dL/dh_{T-1} · ∂h_{T-1}/∂h_{T-2} · ... · ∂h_{t+1}/∂h_t,

with :class:`rnnkit.training.diagnostics.GradientFlow`. For Elman ∂h_k/∂h_{k-1} =
diag(1 - h_k²) U and g_t dies away geometrically with the distance T-1-t; an LSTM starts the same
way (its forget gates begin near 1/2) but learns to carry the error along its memory cell. It
writes to ``out/``:

- ``grad_flow_heatmap.png``: log10 g_t over time step t (across) and training step (down);
- ``grad_flow_curve.png``: g_t against t on a log axis at a few training steps;
- ``loss_surface.png``: the loss against one recurrent weight, the others as trained;
- ``grad_flow.jsonl``: one ``{"step", "loss", "grad_flow"}`` record per measured step,

and prints the ratio g_0 / g_{T-1} at the first and the last measured step with a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rnnkit.cells import cell_names, get_cell
from rnnkit.config import Config
from rnnkit.tasks import make_task
from rnnkit.tasks.synthetic import LastStepRegressor
from rnnkit.training.diagnostics import (
    GradientFlowPlots,
    loss_along_weight,
    plot_loss_surface,
)
from rnnkit.training.loop import Trainer, TrainingStopped
from rnnkit.training.records import read_records

# Defaults chosen by experiment (one thread): at T = 100 Elman's g_0 / g_99 stays below 1e-10 for
# the whole run, while an LSTM at lr 0.02 leaves the predict-the-mean plateau after 400-1250 steps
# (seeds 0-4) and from then on carries the gradient (g_0 / g_99 ≈ 0.01-0.04); before that its
# gradient vanishes as fast as Elman's. 2000 steps leave a margin and take ~15 s of training
# (~22 s in all with the loss surface and the plots) for either cell.
SEQ_LEN = 100
HIDDEN_SIZE = 32
STEPS = 2000
EVERY = 25
LR = 2e-2
BATCH_SIZE = 64
CLIP_NORM = 1.0
SURFACE_SIZE = 256  # held-out sequences the loss surface is evaluated on
TRAIN_SIZE = 20_000  # training sequences (2000 steps x 64 = 6.4 passes over them)
SURFACE_POINTS = 321  # weight values from -4 to 4 in steps of 0.025
SURFACE_RANGE = 4.0

VANISHING = 1e-3  # g_0 / g_{T-1} below this: "vanishing"
EXPLODING = 1e3  # above this: "exploding"


def flow_verdict(ratio: float) -> str:
    """"vanishing" if g_0 / g_{T-1} < 1e-3, "exploding" if > 1e3, else "flowing";
    "no gradient" if the ratio is undefined (nothing reached the last step)."""
    if math.isnan(ratio):
        return "no gradient"
    if ratio < VANISHING:
        return "vanishing"
    if ratio > EXPLODING:
        return "exploding"
    return "flowing"


def flow_ratio(g: list[float]) -> float:
    """g_0 / g_{T-1}: how much of the error signal at the last step reaches the first."""
    first, last = g[0], g[-1]
    if last > 0:
        return first / last
    return math.inf if first > 0 else math.nan


def surface_weight(model: LastStepRegressor) -> tuple[str, nn.Parameter, tuple[int, int], str]:
    """The recurrent weight whose loss curve ``run_diagnose`` draws: the diagonal entry
    U[i, i] of the top cell's hidden-to-hidden matrix, for the hidden unit i the read-out
    weighs most (largest |head weight|). For gated cells (G gate blocks stacked as in torch:
    LSTM i,f,g,o; GRU r,z,n) it is the entry of the candidate block (LSTM g, GRU n), the one
    that plays Elman's U. Returns (parameter name, parameter, index, label)."""
    cell = model.rnn.stack.layers[-1]
    cell = getattr(cell, "fwd", cell).cell
    H = model.rnn.hidden_size
    i = int(model.head.weight.detach()[0, :H].abs().argmax())
    for name in ("weight_hh", "weight_R", "weight_yh"):  # Elman-likes, SCRN, Jordan
        param = getattr(cell, name, None)
        if isinstance(param, nn.Parameter) and param.dim() == 2:
            gates = param.shape[0] // H if name == "weight_hh" else 1
            block = 2 if gates in (3, 4) else 0
            row = min(block * param.shape[1] + i, param.shape[0] - 1)
            col = min(i, param.shape[1] - 1)
            return name, param, (row, col), f"{name}[{row}, {col}]"
    # any other cell: its first matrix that is not the input projection
    for name, param in cell.named_weights():
        if param.dim() == 2 and name != "weight_ih":
            row, col = min(i, param.shape[0] - 1), min(i, param.shape[1] - 1)
            return name, param, (row, col), f"{name}[{row}, {col}]"
    raise ValueError(f"cell: {type(cell).__name__} has no recurrent weight matrix to sweep")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def run_diagnose(
    cell: str,
    out,
    *,
    steps: int = STEPS,
    seq_len: int = SEQ_LEN,
    hidden_size: int = HIDDEN_SIZE,
    every: int = EVERY,
    seed: int = 0,
    lr: float = LR,
    batch_size: int = BATCH_SIZE,
    clip_norm: float = CLIP_NORM,
    threads: int | None = 1,
    progress: bool = True,
    print_fn: Callable[[str], object] = print,
) -> dict:
    """Train ``cell`` on the adding problem of length ``seq_len`` and diagnose its gradient flow.

    The model is :class:`rnnkit.demo.AddingModel` (recurrent layer, linear read-out of the last
    step), trained for ``steps`` steps of Adam(``lr``) on fresh batches of ``batch_size`` with
    gradient clipping to global norm ``clip_norm``; a :class:`GradientFlow` callback measures
    g_t on step 1 and every ``every`` steps. Model initialisation uses ``seed``, the training
    batches a generator seeded ``2 * seed`` and the loss surface's held-out set ``2 * seed + 1``.
    ``threads`` sets ``torch.set_num_threads`` for the run (restored after; None: leave it).

    Writes ``grad_flow_heatmap.png``, ``grad_flow_curve.png``, ``loss_surface.png`` and
    ``grad_flow.jsonl`` into ``out`` (created if needed) and prints a summary. Returns a dict:
    the four paths (keys ``heatmap``, ``curve``, ``loss_surface``, ``jsonl``), ``final_loss``
    (MSE on the held-out set), ``steps`` trained, and for the first and the last measured step
    ``first_step``, ``first_ratio``, ``first_verdict``, ``last_step``, ``last_ratio``,
    ``last_verdict`` (ratio = g_0 / g_{T-1}, verdict from :func:`flow_verdict`).
    """
    get_cell(cell)  # ValueError naming the registered cells
    _check_int("steps", steps, 1)
    _check_int("seq_len", seq_len, 2)
    _check_int("hidden_size", hidden_size, 1)
    _check_int("every", every, 1)
    _check_int("seed", seed, 0)
    _check_int("batch_size", batch_size, 1)
    for name, value in (("lr", lr), ("clip_norm", clip_norm)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a directory, got {str(out)!r}, an existing file")
    out.mkdir(parents=True, exist_ok=True)

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(cell, out, steps, seq_len, hidden_size, every, seed, lr, batch_size,
                    clip_norm, progress, print_fn)
    finally:
        torch.set_num_threads(old_threads)


def _run(cell, out, steps, seq_len, hidden_size, every, seed, lr, batch_size, clip_norm,
         progress, print_fn) -> dict:
    cfg = Config()
    cfg.model.cell, cfg.model.hidden_size = cell, hidden_size
    cfg.data.task, cfg.data.seq_len, cfg.data.batch_size = "adding", seq_len, batch_size
    cfg.data.train_size = max(TRAIN_SIZE, batch_size)
    cfg.data.val_size = cfg.data.test_size = SURFACE_SIZE
    cfg.data.seed = 2 * seed + 1
    cfg.train.lr, cfg.train.clip_norm, cfg.train.max_steps, cfg.train.seed = \
        lr, clip_norm, steps, seed
    cfg.train.eval_every = max(1, steps // 8)
    cfg.run.out, cfg.run.progress, cfg.run.checkpoint_every = str(out), progress, 0
    what = f"{cell}, adding problem T={seq_len}, hidden {hidden_size}"
    flow = GradientFlowPlots(every, title=what)
    trainer = Trainer(make_task(cfg), cfg, callbacks=[flow])
    trainer.log.truncate_after(0)  # a diagnose run starts its records afresh
    print_fn(f"rnnkit diagnose: {cell} on the adding problem, T={seq_len}, hidden {hidden_size}, "
             f"{steps} steps x batch {batch_size}, Adam lr={lr:g}, clip {clip_norm:g}, "
             f"seed {seed}; g_t measured every {every} steps")
    start = time.perf_counter()
    try:
        trainer.fit()
    except TrainingStopped as e:  # draw what was measured up to there
        print_fn(str(e))
        flow.on_train_end(trainer)
    seconds = time.perf_counter() - start
    done = trainer.step
    history = flow.history
    jsonl = out / "grad_flow.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for record in read_records(trainer.log.path):
            if "grad_flow" in record:
                f.write(json.dumps({k: record[k] for k in ("step", "loss", "grad_flow")}) + "\n")

    # the loss along one recurrent weight, on the held-out (validation) set
    model, val = trainer.model, trainer.task.sets["val"]

    def loss_fn():
        return nn.functional.mse_loss(model(val["x"])[0], val["y"])

    _name, param, index, label = surface_weight(model)
    current = float(param.detach()[index])
    lo, hi = min(-SURFACE_RANGE, current - 1), max(SURFACE_RANGE, current + 1)
    values = torch.linspace(lo, hi, SURFACE_POINTS).tolist()
    losses = loss_along_weight(model, loss_fn, param, index, values)
    with torch.no_grad():
        model.eval()
        final_loss = loss_fn().item()
        model.train()
    heatmap, curve = flow.paths["heatmap"], flow.paths["curve"]
    surface = plot_loss_surface(
        values, losses, out / "loss_surface.png",
        f"{what}, after {done} steps: loss along one recurrent weight, the others fixed",
        current=current, xlabel=f"value of the recurrent weight {label}",
        ylabel=f"loss (MSE on {SURFACE_SIZE} held-out sequences)")

    (first_step, g_first), (last_step, g_last) = history[0], history[-1]
    result = {
        "cell": cell, "out": out, "heatmap": heatmap, "curve": curve, "loss_surface": surface,
        "jsonl": jsonl, "steps": done, "train_seconds": seconds, "final_loss": final_loss,
        "first_step": first_step, "first_ratio": flow_ratio(g_first),
        "last_step": last_step, "last_ratio": flow_ratio(g_last),
    }
    result["first_verdict"] = flow_verdict(result["first_ratio"])
    result["last_verdict"] = flow_verdict(result["last_ratio"])

    T = len(g_last)
    print_fn(f"trained {done} steps in {seconds:.1f}s; final loss {final_loss:.4f} (MSE on "
             f"{SURFACE_SIZE} held-out sequences; predicting the mean scores about 0.167)")
    for key in ("first", "last"):
        print_fn(f"g_0 / g_{T - 1} at step {result[key + '_step']:>5}: "
                 f"{result[key + '_ratio']:9.3g}  {result[key + '_verdict']}")
    print_fn(f"wrote {heatmap}\n      {curve}\n      {surface}\n      {jsonl}")
    return result


# ---- command line ------------------------------------------------------------------------------


def _cell_name(text: str) -> str:
    if text not in cell_names():
        raise argparse.ArgumentTypeError(
            f"unknown cell {text!r}; expected one of {', '.join(cell_names())}")
    return text


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rnnkit diagnose``'s flags to ``parser`` (returned); :func:`main_diagnose` runs it."""
    parser.add_argument("--cell", type=_cell_name, default="elman",
                        help="the cell to train (default: elman; 'rnnkit cells' lists them: "
                        f"{', '.join(cell_names())})")
    parser.add_argument("--out", default=None,
                        help="directory for the plots and grad_flow.jsonl "
                        "(default: runs/diagnose-CELL)")
    parser.add_argument("--steps", type=_int_at_least(1), default=STEPS,
                        help=f"training steps (default: {STEPS})")
    parser.add_argument("--seq-len", type=_int_at_least(2), default=SEQ_LEN,
                        help=f"sequence length T of the adding problem (default: {SEQ_LEN})")
    parser.add_argument("--hidden-size", type=_int_at_least(1), default=HIDDEN_SIZE,
                        help=f"hidden units (default: {HIDDEN_SIZE})")
    parser.add_argument("--every", type=_int_at_least(1), default=EVERY,
                        help=f"measure the gradient flow on step 1 and every N steps "
                        f"(default: {EVERY})")
    parser.add_argument("--seed", type=_int_at_least(0), default=0,
                        help="random seed for the model and the data (default: 0)")
    parser.add_argument("--lr", type=_positive_float, default=LR,
                        help=f"Adam learning rate (default: {LR:g})")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not show the progress bar")
    return parser


def main_diagnose(args: argparse.Namespace) -> int:
    """Run ``rnnkit diagnose`` from parsed arguments; returns the exit status."""
    out = args.out if args.out is not None else f"runs/diagnose-{args.cell}"
    try:
        run_diagnose(args.cell, out, steps=args.steps, seq_len=args.seq_len,
                     hidden_size=args.hidden_size, every=args.every, seed=args.seed,
                     lr=args.lr, progress=not args.no_progress)
    except ValueError as e:
        print(f"rnnkit: error: diagnose: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rnnkit: error: diagnose: cannot write to {out!r}: {e}", file=sys.stderr)
        return 1
    return 0
