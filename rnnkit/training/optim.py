"""Optimizers and learning-rate schedules named by the config (``train.optimizer``,
``train.schedule``).

Schedules: the rate of optimizer step s + 1 (s = 0, 1, ...), with lr_0 = ``train.lr``:

- ``none``: lr_s = lr_0.
- ``step``: lr_s = lr_0 * gamma ** floor(s / step_size).
- ``cosine``: lr_s = lr_0 * (1 + cos(pi * s / max_steps)) / 2, down to 0 at the last step.
- ``plateau``: lr <- gamma * lr when the validation metric has not improved for
  ``plateau_patience`` evaluations (torch's ReduceLROnPlateau, stepped after each evaluation).

With ``train.recurrent_lr_scale`` = c != 1 the recurrent layers form a second parameter group
whose rate is c times the one above at every step.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import lr_scheduler

from ..cells.base import Cell
from ..errors import ConfigError
from ..networks import RecurrentNetwork

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("none", "step", "cosine", "plateau")


def parameter_groups(model: nn.Module, train) -> list[dict]:
    """``model``'s parameters as optimizer groups: one at ``train.lr``; with
    ``train.recurrent_lr_scale`` != 1, the recurrent layers' (every rnnkit network or cell,
    and torch's RNN modules) in a second group at ``train.lr * train.recurrent_lr_scale``.
    Each group carries its ``lr_scale``, which the schedules and resumes keep."""
    scale = train.recurrent_lr_scale
    if scale == 1.0:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    recurrent_types = (RecurrentNetwork, Cell, nn.RNNBase, nn.RNNCellBase)
    recurrent = {id(p): p for m in model.modules() if isinstance(m, recurrent_types)
                 for p in m.parameters()}
    if not recurrent:
        raise ConfigError("train.recurrent_lr_scale: this model has no recurrent layer to "
                          f"give its own rate; expected 1, got {scale}")
    rest = [p for p in model.parameters() if id(p) not in recurrent]
    groups = [{"params": rest, "lr_scale": 1.0},
              {"params": list(recurrent.values()), "lr": train.lr * scale, "lr_scale": scale}]
    return [g for g in groups if g["params"]]


def make_optimizer(parameters, train) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` over ``parameters`` (tensors, or groups from
    :func:`parameter_groups`; ``train``: a TrainConfig)."""
    name, lr, wd = train.optimizer, train.lr, train.weight_decay
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=train.momentum, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, momentum=train.momentum, weight_decay=wd)
    raise ValueError(f"train.optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def make_scheduler(optimizer, train, mode: str = "min"):
    """The schedule ``train.schedule``, or None for ``none``. ``mode`` says whether the
    validation metric improves by going down ("min") or up ("max"), for ``plateau``."""
    name = train.schedule
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=train.step_size, gamma=train.gamma)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.max_steps)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=train.gamma,
                                              patience=train.plateau_patience)
    raise ValueError(f"train.schedule: expected one of {', '.join(SCHEDULES)}, got {name!r}")


def steps_per_update(scheduler) -> bool:
    """Whether the schedule steps after every optimizer step (else after every evaluation)."""
    return scheduler is not None and not isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)


def adopt_settings(optimizer, scheduler, train, saved: dict, step: int) -> None:
    """After a resume, apply the ``train`` settings that differ from the checkpoint's
    (``saved``: its ``train`` section as a dict), at optimizer step ``step``.

    Loading the optimizer's and schedule's states brings back the checkpoint's rate,
    momentum, weight decay and schedule shape, so without this a resumed run would silently
    ignore, say, a new ``--train.lr`` or a longer ``--train.max_steps`` (the cosine would
    rise again past the old end). A rate the schedule computes (``none``, ``step``,
    ``cosine``) is recomputed at ``step`` from the new settings; ``plateau`` takes a new
    ``train.lr`` as its current rate. Settings that did not change are left alone, so a plain
    resume stays bit-for-bit the uninterrupted run."""
    def changed(key: str) -> bool:
        return key in saved and saved[key] != getattr(train, key)

    for group in optimizer.param_groups:
        group["weight_decay"] = train.weight_decay
        if "momentum" in group:
            group["momentum"] = train.momentum
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.factor, scheduler.patience = train.gamma, train.plateau_patience
        if changed("lr"):
            _set_lr(optimizer, scheduler, train.lr)
        return
    if not any(changed(key) for key in ("lr", "max_steps", "step_size", "gamma")):
        return
    lr = train.lr
    if isinstance(scheduler, lr_scheduler.StepLR):
        scheduler.step_size, scheduler.gamma = train.step_size, train.gamma
        lr = train.lr * train.gamma ** (step // train.step_size)
    elif isinstance(scheduler, lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = train.max_steps
        lr = train.lr * (1 + math.cos(math.pi * step / train.max_steps)) / 2
    if scheduler is not None:
        scheduler.base_lrs = [train.lr * _scale(g) for g in optimizer.param_groups]
    _set_lr(optimizer, scheduler, lr)


def _scale(group: dict) -> float:
    return group.get("lr_scale", 1.0)  # checkpoints from before parameter groups had none


def _set_lr(optimizer, scheduler, lr: float) -> None:
    """Every group at ``lr`` times its own scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * _scale(group)
    if scheduler is not None:  # what get_last_lr() reports
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
