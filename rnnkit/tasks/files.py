"""Your own data files as a task's splits: ``data.train_file``, ``data.val_file``,
``data.test_file`` and ``data.format``.

Without a validation file, a fixed 10% of the training file (at least one example, drawn with
seed 0 by :func:`rnnkit.data.splits.split_off`) is held out for validation, so the same file
always gives the same split. Without a test file the run has no test split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rnnkit.data.splits import split_off
from rnnkit.errors import ConfigError

# the formats a task reads, by the suffix auto picks them from
SUFFIXES = {".conllu": "conllu", ".conll": "conll", ".txt": "conll", ".bio": "conll",
            ".iob": "conll", ".slots": "slots", ".tsv": "tsv", ".csv": "csv"}


def file_format(path: str, fmt: str, allowed: tuple[str, ...]) -> str:
    """The format of ``path``: ``fmt`` unless it is ``auto``, then by the suffix; one of
    ``allowed`` (the ones the task reads), else a ValueError naming data.format."""
    if Path(path).is_dir():  # before guessing a format from its name
        raise IsADirectoryError(f"{path}: is a directory, expected a file")
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
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


FILE_KEYS = ("train_file", "val_file", "test_file")


def file_fingerprints(data_cfg) -> dict[str, dict]:
    """``{"data.train_file": {"path", "size", "sha256"}, ...}`` of the data files the config
    names (each read once, in 1 MiB blocks), saved with a run so that a later command can tell
    whether the files changed since."""
    import hashlib

    prints = {}
    for key in FILE_KEYS:
        path = getattr(data_cfg, key, "")
        if not path or not Path(path).is_file():
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        prints[f"data.{key}"] = {"path": path, "size": Path(path).stat().st_size,
                                 "sha256": digest.hexdigest()}
    return prints


def changed_files(saved: dict, now: dict) -> list[str]:
    """One line for each data file that differs from the one a run was trained on (saved and
    now: :func:`file_fingerprints`)."""
    lines = []
    for key, was in saved.items():
        cur = now.get(key)
        if cur is None:
            lines.append(f"{key}: {was['path']} is gone or unreadable since this run was trained")
        elif cur["sha256"] != was["sha256"]:
            size = (f"{was['size']:,} -> {cur['size']:,} bytes" if cur["size"] != was["size"]
                    else f"the same {cur['size']:,} bytes, other content")
            lines.append(f"{key}: {cur['path']} changed since this run was trained ({size}); "
                         f"the vocabularies and tag/label sets saved with the run are used")
    return lines


def tagged_format(path: str, fmt: str) -> str:
    """The format of a tagged file: ``fmt``, or with ``auto`` CoNLL-U when the content is
    CoNLL-U (10 tab-separated columns that start with a token id, whatever the file's name),
    else by the suffix (conll or slots)."""
    from rnnkit.data.conllu_io import looks_like_conllu

    if fmt == "auto" and Path(path).is_file() and looks_like_conllu(path):
        return "conllu"
    return file_format(path, fmt, ("conll", "conllu", "slots"))


def read_tagged(path: str, data_cfg, *, allow_empty: bool = False) -> list:
    """Tagged sentences from ``path`` as ``data.format`` and ``data.column`` say: CoNLL-U
    (``column`` a field name, default upos), CoNLL (``column`` an index, default the last) or
    ATIS-style slot lines (no column). ``allow_empty``: a file to predict on may have no tags
    (CoNLL-U ``_``, or a CoNLL file with the words alone)."""
    from rnnkit.data.conllu_io import TAG_COLUMNS, read_conllu
    from rnnkit.data.text import read_conll, read_slot_lines

    fmt, column = tagged_format(path, data_cfg.format), data_cfg.column
    if fmt == "conllu":
        if column.lstrip("-").isdigit():
            raise ConfigError(f"data.column: {path} is CoNLL-U, whose columns have names; "
                              f"expected one of {', '.join(TAG_COLUMNS)}, got {column!r}")
        return read_conllu(path, column=column or "upos", allow_empty=allow_empty)
    if fmt == "slots":
        if column:
            raise ConfigError(f"data.column: {path} has word:tag slot lines, which have no "
                              f"columns; leave data.column empty, got {column!r}")
        return read_slot_lines(path)
    if column and not column.lstrip("-").isdigit():
        raise ConfigError(f"data.column: {path} is a CoNLL file, whose columns are numbered; "
                          f"expected an index like 1 or -1 (a field name such as {column!r} "
                          f"needs a CoNLL-U file)")
    return read_conll(path, tag_column=int(column or -1), tags_optional=allow_empty)
