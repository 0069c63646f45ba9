"""Your own data files as a task's splits: ``data.train_file``, ``data.val_file``,
``data.test_file`` and ``data.format``.

Without a validation file, a fixed 10% of the training file (at least one example, drawn with
seed 0 by :func:`rnnkit.data.splits.split_off`) is held out for validation, so the same file
always gives the same split. Without a test file the run has no test split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rnnkit.config import ConfigError
from rnnkit.data.splits import split_off

# the formats a task reads, by the suffix auto picks them from
SUFFIXES = {".conll": "conll", ".txt": "conll", ".bio": "conll", ".iob": "conll",
            ".slots": "slots", ".tsv": "tsv", ".csv": "csv"}


def file_format(path: str, fmt: str, allowed: tuple[str, ...]) -> str:
    """The format of ``path``: ``fmt`` unless it is ``auto``, then by the suffix; one of
    ``allowed`` (the ones the task reads), else a ValueError naming data.format."""
    if fmt == "auto":
        fmt = SUFFIXES.get(Path(path).suffix.lower(), "")
        if not fmt:
            raise ConfigError(f"data.format: cannot tell the format of {path} from its suffix; "
                             f"set data.format to one of {', '.join(allowed)}")
    if fmt not in allowed:
        raise ConfigError(f"data.format: this task reads {', '.join(allowed)}, got {fmt!r} "
                         f"(for {path})")
    return fmt


def read_splits(data_cfg, task: str, read: Callable[[str], list]) -> dict[str, list]:
    """``{"train", "val"[, "test"]}``: each given file read with ``read(path)``, the validation
    split cut from the training file when there is no validation file."""
    if not data_cfg.train_file:
        raise ConfigError(f"data.train_file: the {task} task trains on your own files; give "
                         f"--data.train_file=PATH (and optionally data.val_file, "
                         f"data.test_file)")
    splits = {"train": read(data_cfg.train_file)}
    if data_cfg.val_file:
        splits["val"] = read(data_cfg.val_file)
    else:
        if len(splits["train"]) < 2:
            raise ConfigError(f"data.train_file: {data_cfg.train_file} has "
                             f"{len(splits['train'])} example; a validation split needs at "
                             f"least 2 (or give data.val_file)")
        size = max(1, len(splits["train"]) // 10)
        splits["train"], splits["val"] = split_off(splits["train"], size, seed=0)
    if data_cfg.test_file:
        splits["test"] = read(data_cfg.test_file)
    return splits
