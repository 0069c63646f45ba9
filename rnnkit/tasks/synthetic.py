"""The long-memory tasks of rnnkit.data.synthetic as training tasks.

``adding``: many-to-one regression. x (N, T, 2) -> recurrent network -> the features at the
last step -> Linear -> y_hat (N,); loss = squared error, metric = MSE (baseline 1/6 ≈ 0.167
for predicting the mean).

``copy``: a label at every step. one_hot(x_t) -> recurrent network -> Linear -> scores over
blank + 8 symbols; loss = cross-entropy at every step, metric = the per-step cross-entropy
(memoryless baseline 10 ln 8 / (T + 20)) and the accuracy of the 10 recalled symbols.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.synthetic import adding_problem, copy_memory

from .base import Task, in_chunks, recurrent_from_config


def last_features(output: Tensor, bidirectional: bool) -> Tensor:
    """The features that have read the whole sequence: the forward direction at the last step,
    the reverse direction at the first. ``output`` (N, T, D*H) -> (N, D*H)."""
    if not bidirectional:
        return output[:, -1]
    H = output.shape[-1] // 2
    return torch.cat((output[:, -1, :H], output[:, 0, H:]), dim=-1)


class LastStepRegressor(nn.Module):
    """x (N, T, I) -> recurrent network -> last features -> Linear -> (N,)."""

    def __init__(self, model_cfg, input_size: int) -> None:
        super().__init__()
        self.rnn = recurrent_from_config(model_cfg, input_size)
        self.head = nn.Linear(self.rnn.output_size, 1)

    def forward(self, x: Tensor, state=None):
        output, state = self.rnn(x, state)  # (N, T, D*H)
        return self.head(last_features(output, self.rnn.bidirectional)).squeeze(-1), state


class StepClassifier(nn.Module):
    """tokens (N, T) -> one-hot -> recurrent network -> Linear -> scores (N, T, classes)."""

    def __init__(self, model_cfg, vocab: int, classes: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.rnn = recurrent_from_config(model_cfg, vocab)
        self.head = nn.Linear(self.rnn.output_size, classes)

    def forward(self, tokens: Tensor, state=None):
        x = F.one_hot(tokens, self.vocab).to(self.head.weight.dtype)  # (N, T, vocab)
        output, state = self.rnn(x, state)
        return self.head(output), state


def _splits(draw, data_cfg) -> dict[str, dict[str, Tensor]]:
    """Train, validation and test sets drawn from one generator seeded with ``data.seed``."""
    g = torch.Generator().manual_seed(data_cfg.seed)
    sizes = {"train": data_cfg.train_size, "val": data_cfg.val_size, "test": data_cfg.test_size}
    return {split: draw(n, g) for split, n in sizes.items()}


class AddingTask(Task):
    name = "adding"
    metric = "mse"
    mode = "min"
    time_keys = ("x",)

    def __init__(self, config) -> None:
        super().__init__(config)
        T = config.data.seq_len
        self.sets = _splits(lambda n, g: dict(zip("xy", adding_problem(n, T, generator=g),
                                                  strict=True)), config.data)

    def train_set(self):
        return self.sets["train"]

    def build_model(self):
        return LastStepRegressor(self.config.model, 2)

    def loss(self, model, chunk, state, final):
        pred, state = model(chunk["x"], state)
        if not final:  # the target is at the last step; earlier chunks only carry the state
            return pred.new_zeros(()), state
        return ((pred - chunk["y"]) ** 2).sum(), state

    def evaluate(self, model, split):
        data = self.sets[split]
        total = sum(in_chunks(lambda b: ((model(b["x"])[0] - b["y"]) ** 2).sum().item(), data,
                              model))
        baseline = ((data["y"] - 1.0) ** 2).mean().item()
        mse = total / len(data["y"])
        return {"mse": mse, "baseline_mse": baseline}

    def describe(self):
        return (f"adding problem, T={self.config.data.seq_len}: regress the sum of the two "
                f"marked values; predicting the mean scores MSE ≈ 0.167")


class CopyTask(Task):
    name = "copy"
    metric = "loss"
    mode = "min"
    time_keys = ("x", "y")
    item_name = "tok"
    SYMBOLS, LENGTH = 8, 10

    def __init__(self, config) -> None:
        super().__init__(config)
        T = config.data.seq_len
        self.sets = _splits(lambda n, g: dict(zip("xy", copy_memory(n, T, generator=g),
                                                  strict=True)), config.data)

    def train_set(self):
        return self.sets["train"]

    def build_model(self):
        return StepClassifier(self.config.model, self.SYMBOLS + 2, self.SYMBOLS + 1)

    def count(self, batch):
        return batch["y"].numel()

    def items(self, batch):
        return batch["y"].numel()

    def loss(self, model, chunk, state, final):
        scores, state = model(chunk["x"], state)  # (N, t, classes)
        return F.cross_entropy(scores.flatten(0, 1), chunk["y"].flatten(), reduction="sum"), state

    def evaluate(self, model, split):
        def measure(b):
            scores = model(b["x"])[0]
            ce = F.cross_entropy(scores.flatten(0, 1), b["y"].flatten(), reduction="sum")
            recalled = scores[:, -self.LENGTH:].argmax(-1) == b["y"][:, -self.LENGTH:]
            return ce.item(), recalled.sum().item()

        parts = in_chunks(measure, self.sets[split], model)
        y = self.sets[split]["y"]
        return {"loss": sum(p[0] for p in parts) / y.numel(),
                "recall_accuracy": sum(p[1] for p in parts) / (len(y) * self.LENGTH),
                "baseline_loss": self.baseline()}

    def baseline(self) -> float:
        T = self.config.data.seq_len
        return self.LENGTH * math.log(self.SYMBOLS) / (T + 2 * self.LENGTH)

    def describe(self):
        return (f"copy memory, T={self.config.data.seq_len}: recall 10 symbols after T steps; "
                f"the memoryless baseline scores {self.baseline():.4f} nats per step")
