"""Small float64 tasks for the training-engine tests, and a reference BPTT written step by step."""

from __future__ import annotations

import torch
from torch import nn

from rnnkit.config import Config
from rnnkit.networks import RecurrentNetwork
from rnnkit.tasks import Task


class StepRegressor(nn.Module):
    """x (N, T, 3) -> one recurrent layer (4 units) -> [dropout] -> Linear -> (N, T), in
    float64. With ``dropout`` every training forward draws from torch's RNG."""

    def __init__(self, cell: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = RecurrentNetwork(cell, 3, 4, batch_first=True, dtype=torch.float64)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, 1, dtype=torch.float64)

    def forward(self, x, state=None):
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)).squeeze(-1), state


class ToyTask(Task):
    """Per-step regression on fixed random data; ``stream`` lays it out as long streams, and
    ``resets`` marks document starts. Loss = sum of squared errors; metric = mean of it."""

    name = "toy"
    time_keys = ("x", "y")

    def __init__(self, config, *, cell="gru", n=8, T=12, resets=False, stream=False,
                 nan_at_step=None, frozen_metric=False, dropout=0.0) -> None:
        super().__init__(config)
        self.dropout = dropout
        g = torch.Generator().manual_seed(7)
        self.cell, self.stream = cell, stream
        self.sets = {"x": torch.randn(n, T, 3, generator=g, dtype=torch.float64),
                     "y": torch.randn(n, T, generator=g, dtype=torch.float64)}
        if resets:
            self.sets["reset"] = torch.rand(n, T, generator=g) < 0.15
        self.nan_at_step, self.calls, self.frozen_metric = nan_at_step, 0, frozen_metric

    def train_set(self):
        return self.sets

    def build_model(self):
        return StepRegressor(self.cell, self.dropout)

    def count(self, batch):
        return batch["y"].numel()

    def loss(self, model, chunk, state, final):
        pred, state = model(chunk["x"], state)
        loss = ((pred - chunk["y"]) ** 2).sum()
        self.calls += final
        if self.nan_at_step is not None and self.calls >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, state

    def evaluate(self, model, split):
        if self.frozen_metric:  # a validation metric that never improves
            return {"loss": 1.0}
        pred, _ = model(self.sets["x"])
        return {"loss": ((pred - self.sets["y"]) ** 2).mean().item()}


def toy_config(tmp_path, **train) -> Config:
    cfg = Config()
    cfg.data.batch_size = 8
    cfg.run.out = str(tmp_path / "run")
    cfg.run.progress = False
    cfg.run.plots = False
    cfg.run.checkpoint_every = 0
    for key, value in train.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _map(fn, state):
    return tuple(_map(fn, s) for s in state) if isinstance(state, tuple) else fn(state)


def reference_gradients(model: StepRegressor, x, y, k: int = 0, reset=None):
    """The mean squared error over all steps and its gradients, stepping the layer's cell one
    step at a time from the equations' point of view: the state is detached before every step
    that is a multiple of ``k`` (k = 0: never) and zeroed before a reset step."""
    cell = model.rnn.stack.layers[0].cell
    N, T = y.shape
    state, total = None, 0.0
    for t in range(T):
        if state is not None and k and t % k == 0:
            state = _map(torch.Tensor.detach, state)
        if state is not None and reset is not None:
            keep = (~reset[:, t]).to(x.dtype)[:, None]
            state = _map(lambda s, keep=keep: s * keep, state)
        out, state = cell(x[:, t], state)
        total = total + ((model.head(out).squeeze(-1) - y[:, t]) ** 2).sum()
    loss = total / (N * T)
    return loss.item(), torch.autograd.grad(loss, list(model.parameters()))
