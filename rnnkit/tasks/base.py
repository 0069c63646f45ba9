"""What the training engine asks of a task: its data, its model and its loss.

The engine (:class:`rnnkit.training.Trainer`) knows nothing of adding problems or slot filling;
a task tells it:

- ``train_set()``: a dict of tensors whose first dim indexes the training samples; a batch is
  the same dict with some of those rows. The keys in ``time_keys`` have time at dim 1 and are
  the ones truncated BPTT slices into chunks; a ``"reset"`` key (N, T) bool marks where a new
  document starts inside a sample (the engine zeroes the carried state there).
- ``build_model()``: the module; called after the engine seeds torch.
- ``loss(model, chunk, state, final)``: run the model on one time chunk from ``state`` (None
  = zeros) and return ``(sum of the chunk's loss items, new state)``; ``final`` says whether
  the chunk holds the last step. The engine divides by ``count(batch)`` (the loss items of the
  whole batch, over every process), so the loss is a mean however the batch is cut.
- ``evaluate(model, split)``: metrics on ``"val"`` or ``"test"``, the key ``metric`` among
  them; ``mode`` says whether it improves going down (``"min"``) or up (``"max"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Task:
    name: str = ""
    metric: str = "loss"
    mode: str = "min"
    time_keys: tuple[str, ...] = ("x",)
    item_name: str = "seq"  # what throughput counts: sequences, tokens, ...
    # A stream task's train_set holds data.batch_size long streams (S, L); batch i is the
    # window [i*W, (i+1)*W) of every stream, W = data.seq_len, in order, and the recurrent
    # state is carried from one batch to the next (detached), as a language model trains.
    stream: bool = False

    def __init__(self, config, *, state: dict | None = None, data: bool | None = None) -> None:
        """``state``: what :meth:`state` saved with a run (vocabularies, tag and label sets,
        normalisation statistics); None builds it from the training data. ``data``: whether to
        read the data files; default: only when there is no saved state (predicting needs the
        state alone; evaluating and resuming need both, and take the maps from the state)."""
        self.config = config  # the whole rnnkit.config.Config
        self.with_data = state is None if data is None else data

    def train_set(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, chunk: dict[str, Tensor], state, final: bool):
        raise NotImplementedError

    def count(self, batch: dict[str, Tensor]) -> int:
        """Loss items in ``batch`` (default: one per sample)."""
        return len(next(iter(batch.values())))

    def items(self, batch: dict[str, Tensor]) -> int:
        """Items processed in ``batch``, for throughput (default: samples)."""
        return len(next(iter(batch.values())))

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        """Whether the task has data for ``split`` (a user's files may have no test split)."""
        return True

    def report(self, model: nn.Module, split: str, directory) -> list:
        """Write files about ``split`` (a confusion matrix, a list of errors) into
        ``directory``; return their paths. Default: none."""
        return []

    def state(self) -> dict | None:
        """What the task needs, besides the weights, to rebuild its model and read new inputs
        (vocabularies); saved in every checkpoint. None: nothing."""
        return None

    def split_file(self, split: str) -> str:
        """``the <split> split (<file>)`` for messages: the file a split was read from
        (``data.<split>_file``; the validation split may be cut from the training file)."""
        data = self.config.data
        path = getattr(data, f"{split}_file", "") or (data.train_file if split == "val" else "")
        return f"the {split} split ({path})" if path else f"the {split} split"

    def warn_unseen(self, labels: dict[str, list], unit: str, what: str) -> None:
        """One DataWarning for each validation or test split whose ``labels`` (a list per
        split, one label per ``unit``: per word, per example) include some the training split
        never has: the model cannot learn them, so each such ``unit`` counts as an error."""
        import warnings
        from collections import Counter

        from rnnkit.errors import DataWarning

        seen = set(labels.get("train", ()))
        for split, values in labels.items():
            unseen = Counter(v for v in values if v not in seen)
            if split == "train" or not unseen:
                continue
            names = ", ".join(f"{v} ({n})" for v, n in unseen.most_common(5))
            warnings.warn(DataWarning(
                f"{self.split_file(split)}: {sum(unseen.values())} of {len(values)} {unit}s "
                f"have {len(unseen)} {what}{'s' if len(unseen) > 1 else ''} never seen in "
                f"training: {names}{', ...' if len(unseen) > 5 else ''}; they count as errors"),
                stacklevel=3)

    def describe(self) -> str:
        """One line for the start of a run: the task and its baseline, if it has one."""
        return self.name


def recurrent_from_config(model_cfg, input_size: int, **options):
    """The config's recurrent network (``model.cell``, sizes, layers, direction, dropout),
    batch first, over ``input_size`` features."""
    from rnnkit.networks import RecurrentNetwork

    return RecurrentNetwork(model_cfg.cell, input_size, model_cfg.hidden_size,
                            num_layers=model_cfg.num_layers, batch_first=True,
                            dropout=model_cfg.dropout, bidirectional=model_cfg.bidirectional,
                            **regularizer_options(model_cfg), **options)


def regularizer_options(model_cfg) -> dict:
    """The network's regularizer and gate-initialisation options from ``model.*`` (only those
    set, so a cell without them is built as before)."""
    from rnnkit.errors import ConfigError

    opts: dict = {}
    if model_cfg.dropout_mode != "standard":
        opts["dropout_mode"] = model_cfg.dropout_mode
    for name in ("recurrent_dropout", "weight_drop"):
        if getattr(model_cfg, name):
            opts[name] = getattr(model_cfg, name)
    if model_cfg.zoneout or model_cfg.zoneout_cell >= 0:
        p_c = model_cfg.zoneout if model_cfg.zoneout_cell < 0 else model_cfg.zoneout_cell
        if model_cfg.zoneout_cell >= 0 and "lstm" not in model_cfg.cell:
            raise ConfigError(f"model.zoneout_cell: only an LSTM has a memory cell, got "
                              f"model.cell={model_cfg.cell}; use model.zoneout")
        opts["zoneout"] = (model_cfg.zoneout, p_c) if "lstm" in model_cfg.cell \
            else model_cfg.zoneout
    if model_cfg.layer_norm:
        opts["layer_norm"] = True
    if model_cfg.residual:
        opts["residual"] = True
    if model_cfg.forget_bias:
        key = "tau_init" if model_cfg.cell == "ctrnn" else "forget_bias"
        value = model_cfg.forget_bias
        opts[key] = value if value == "chrono" else float(value)
        if value == "chrono":
            if model_cfg.max_lag < 2:
                raise ConfigError(f"model.max_lag: model.forget_bias=chrono needs the longest "
                                  f"time lag to expect, an integer >= 2, got {model_cfg.max_lag}")
            opts["max_lag"] = model_cfg.max_lag
    if model_cfg.max_lag and model_cfg.forget_bias != "chrono":
        raise ConfigError(f"model.max_lag: used only with model.forget_bias=chrono, got "
                          f"{model_cfg.max_lag}")
    bound = model_cfg.max_recurrent_weight
    if bound != -1:
        if model_cfg.cell != "indrnn":
            raise ConfigError(f"model.max_recurrent_weight: bounds an IndRNN's recurrent "
                              f"weights, got model.cell={model_cfg.cell}")
        if bound < 0:
            raise ConfigError(f"model.max_recurrent_weight: expected a number >= 0, or -1 for "
                              f"unbounded, got {bound}")
        opts["max_recurrent_weight"] = bound
    return opts  # (the network checks the values against its cell)


def in_chunks(fn, data: dict[str, Tensor], model: nn.Module, size: int = 500) -> list:
    """``[fn(rows), ...]`` over ``data`` in chunks of ``size`` rows (bounded memory), each
    moved to ``model``'s device, without recording gradients."""
    device = next(model.parameters()).device
    n = len(next(iter(data.values())))
    with torch.no_grad():
        return [fn({k: v[start:start + size].to(device) for k, v in data.items()})
                for start in range(0, n, size)]
