"""``rnnkit demo``: the vanishing-gradient lesson in numbers, on the adding problem.

For each sequence length T and each cell we train

    x (n, T, 2) -> recurrent layer -> h_T (n, hidden) -> Linear(hidden, 1) -> y_hat (n,)

with Adam on the mean squared error L = mean((y_hat - y)^2), on freshly drawn batches of the
adding problem (see :mod:`rnnkit.data.synthetic`), and report the test MSE on a fixed held-out
set next to the baseline of always predicting the mean, MSE = Var(U1 + U2) = 1/6 ≈ 0.167.

Why the cells differ: an Elman cell h_t = tanh(W x_t + U h_{t-1} + b) back-propagates through
the product of Jacobians dh_t/dh_{t-1} = diag(1 - h_t^2) U, whose norm typically shrinks
geometrically with the distance, so the gradient from y back to the first marker (up to T - 1
steps away) vanishes. LSTM and GRU carry an additive memory path (c_t = f_t * c_{t-1} + ...,
h_t = (1 - z_t) * h_{t-1} + ...) whose gates can keep that product close to 1.

Every run is seeded and trains for a fixed number of steps, so it is repeatable; a wall-clock
cap per run (``seconds``) is only a safety net on slow machines and is reported when hit.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rnnkit.data.synthetic import adding_problem
from rnnkit.networks import RecurrentNetwork

# Defaults chosen by experiment on a 2-core CPU with torch's kernels (which rnnkit's Elman, LSTM
# and GRU call): the 6 default runs train in about 1.5-2 minutes when the machine is idle
# (GRU at T=150 is the slowest, ~45 s).
# With lr=2e-2 an LSTM leaves the predict-the-mean plateau (MSE ≈ 0.167) at T=150 after
# 500-1100 steps (seeds 0-4), so 1500 steps leave a margin; at lr=1e-2 it took up to 1600.
# hidden=32 is as good as 64 here and about twice as fast for the LSTM.
HIDDEN_SIZE = 32
STEPS = 1500  # fixed, so a run is repeatable; SECONDS only guards against a slow machine
BATCH_SIZE = 64
LR = 2e-2
CLIP_NORM = 1.0
TEST_SIZE = 2000
SECONDS = 90.0  # wall-clock cap per run, about twice the slowest run on an idle machine

BASELINE_PREDICTION = 1.0  # E[y] = E[U1] + E[U2]
SOLVED_RATIO = 0.1  # test MSE < 0.1 * baseline -> "solved"
SOME_RATIO = 0.5  # test MSE < 0.5 * baseline -> "learned some"

KEYS = (
    "T", "cell", "steps", "capped", "train_seconds", "train_loss", "test_mse", "baseline_mse",
    "verdict",
)


def _make_rnn(cell: str, hidden_size: int) -> RecurrentNetwork:
    """The recurrent layer: any registered cell (see ``rnnkit cells``), input_size=2,
    batch_first=True. Unknown names raise ValueError listing the known ones."""
    return RecurrentNetwork(cell, 2, hidden_size, batch_first=True)


class AddingModel(nn.Module):
    """Recurrent layer followed by a linear read-out of the last step's output."""

    def __init__(self, cell: str, hidden_size: int) -> None:
        super().__init__()
        self.rnn = _make_rnn(cell, hidden_size)
        self.head = nn.Linear(self.rnn.output_size, 1)  # SCRN's output is [h; s], wider than H

    def forward(self, x: Tensor) -> Tensor:
        output, _state = self.rnn(x)  # output: (n, T, output_size); state unused
        return self.head(output[:, -1]).squeeze(-1)  # (n, output_size) -> (n,)


def verdict(test_mse: float, baseline_mse: float) -> str:
    """Classify a test MSE relative to the predict-the-mean baseline."""
    if not math.isfinite(test_mse):
        return "diverged"
    if test_mse < SOLVED_RATIO * baseline_mse:
        return "solved"
    if test_mse < SOME_RATIO * baseline_mse:
        return "learned some"
    return "no better than the mean"


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 500) -> float:
    """Mean squared error of ``model`` on (x, y), computed in chunks to bound memory."""
    model.eval()
    total = 0.0
    for start in range(0, len(y), chunk):
        pred = model(x[start:start + chunk])
        total += ((pred - y[start:start + chunk]) ** 2).sum().item()
    model.train()
    return total / len(y)


def train_run(
    cell: str,
    T: int,
    test: tuple[Tensor, Tensor],
    *,
    hidden_size: int = HIDDEN_SIZE,
    steps: int = STEPS,
    seconds: float = SECONDS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    clip_norm: float = CLIP_NORM,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train one model on the adding problem of length T and evaluate it on ``test``.

    Stops after ``steps`` optimizer steps, or earlier if ``seconds`` of training time pass
    (then ``capped`` is True). Returns one row of the demo table (keys: :data:`KEYS`).
    """
    torch.manual_seed(seed)  # model initialisation
    data = torch.Generator().manual_seed(2 * seed)  # training batches; test uses 2*seed + 1
    model = AddingModel(cell, hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()

    bar = tqdm(
        total=steps, desc=f"T={T} {cell}", file=sys.stderr, leave=False, disable=not progress
    )
    smoothed = float("nan")  # exponential moving average of the training loss, for display
    done = 0
    capped = False
    start = time.perf_counter()
    while done < steps:
        if time.perf_counter() - start > seconds:
            capped = True
            break
        x, y = adding_problem(batch_size, T, generator=data)  # (B, T, 2), (B,)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        # Clipping by norm tames the rare exploding step (the other face of the same product
        # of Jacobians) without changing the direction of the gradient.
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        done += 1
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        bar.update(1)
        if done % 20 == 0:
            bar.set_postfix(loss=f"{smoothed:.4f}")
    train_seconds = time.perf_counter() - start
    bar.close()

    x_test, y_test = test
    test_mse = evaluate(model, x_test, y_test)
    baseline_mse = ((y_test - BASELINE_PREDICTION) ** 2).mean().item()
    return {
        "T": T,
        "cell": cell,
        "steps": done,
        "capped": capped,
        "train_seconds": train_seconds,
        "train_loss": smoothed,
        "test_mse": test_mse,
        "baseline_mse": baseline_mse,
        "verdict": verdict(test_mse, baseline_mse),
    }


def format_row(row: dict | None = None, width: int = 6) -> str:
    """One line of the table, the cell column ``width`` wide; ``None`` gives the header."""
    if row is None:
        return (
            f"{'T':>5}  {'cell':<{width}} {'steps':>6} {'time':>8}  {'test MSE':>9} "
            f"{'baseline':>9}  verdict"
        )
    time_text = f"{row['train_seconds']:.1f}s" + ("*" if row["capped"] else "")
    return (
        f"{row['T']:>5}  {row['cell']:<{width}} {row['steps']:>6} {time_text:>8}  "
        f"{row['test_mse']:>9.4f} {row['baseline_mse']:>9.4f}  {row['verdict']}"
    )


def run_demo(
    cells: Sequence[str] = ("elman", "lstm", "gru"),
    lengths: Sequence[int] = (50, 150),
    *,
    hidden_size: int = HIDDEN_SIZE,
    seconds: float = SECONDS,
    seed: int = 0,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    clip_norm: float = CLIP_NORM,
    test_size: int = TEST_SIZE,
    threads: int | None = 1,
    progress: bool = True,
    print_fn: Callable[[str], object] = print,
) -> list[dict]:
    """Train every cell on the adding problem of every length and print a results table.

    For each T in ``lengths`` a held-out set of ``test_size`` sequences is drawn once from a
    generator seeded with ``2 * seed + 1`` (training batches use ``2 * seed``), so all cells
    are scored on the same data. Each run trains for ``steps`` steps of Adam(lr) on batches of
    ``batch_size`` with gradient clipping at ``clip_norm``, capped at ``seconds`` of wall time.

    The table lists T, cell, steps trained, train time (``*`` = the time cap was hit), test
    MSE, the MSE of predicting the mean 1.0 on the same test set (≈ 1/6) and a verdict:
    "solved" if MSE < 0.1 * baseline, "learned some" if < 0.5 * baseline, else
    "no better than the mean".

    ``threads`` sets ``torch.set_num_threads`` for the demo (restored afterwards); ``None``
    leaves it alone. Returns the rows as dicts with keys :data:`KEYS`.
    """
    cells = list(cells)
    lengths = list(lengths)
    for T in lengths:
        if isinstance(T, bool) or not isinstance(T, int) or T < 2:
            raise ValueError(f"lengths must be integers >= 2, got {T!r}")
    for cell in cells:
        _make_rnn(cell, 1)  # fail early on an unknown cell name, before any training
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        print_fn(
            f"Adding problem: hidden={hidden_size}, {steps} steps x batch {batch_size}, "
            f"Adam lr={lr}, clip={clip_norm}, cap {seconds:g}s/run, seed={seed}, "
            f"{torch.get_num_threads()} thread(s)"
        )
        width = max(6, *map(len, cells))
        print_fn(format_row(width=width))
        for T in lengths:
            test_data = torch.Generator().manual_seed(2 * seed + 1)
            test = adding_problem(test_size, T, generator=test_data)  # same set for all cells
            for cell in cells:
                row = train_run(
                    cell, T, test, hidden_size=hidden_size, steps=steps, seconds=seconds,
                    batch_size=batch_size, lr=lr, clip_norm=clip_norm, seed=seed,
                    progress=progress,
                )
                rows.append(row)
                print_fn(format_row(row, width))
    finally:
        torch.set_num_threads(old_threads)
    total = sum(row["train_seconds"] for row in rows)
    print_fn(f"total training time {total:.1f}s; baseline = MSE of always predicting 1.0")
    if any(row["capped"] for row in rows):
        print_fn(f"* stopped by the {seconds:g}s time cap before {steps} steps (machine busy?)")
    return rows
