"""Multivariate time series for classification, in the ``.ts`` format of the UEA/UCR archive
(and of aeon, which ships JapaneseVowels).

A ``.ts`` file: ``#`` comment lines, ``@`` header lines (``@problemName``, ``@dimensions 12``,
``@classLabel true 1 2 ...``, ...), then ``@data`` and one case per line::

    1.86,1.89,...,1.26:-0.21,-0.19,...:...:1      (one comma list per dimension, then the label)

JapaneseVowels (Kudo et al. 1999): 9 speakers saying "ae", 12 LPC cepstrum coefficients per
step; 270 train and 370 test cases of 7 to 29 steps. Its files store each case at its own
length (the header says ``@equalLength false``; no padding, no missing values), and so do we.
"""

from __future__ import annotations

import math

import torch

from .packages import data_file
from .text import DataFormatError, _lines

AEON = "aeon==1.6.0"
_MISSING = (f"JapaneseVowels not found: install it with `pip install --no-deps {AEON}` "
            f"(or `make venv`)")


def read_ts(path) -> list[tuple[torch.Tensor, str]]:
    """The cases of a ``.ts`` file as ``[(series (T_i, C) float32, label), ...]``, each at its
    own length, in file order.

    Raises:
        DataFormatError: ``<file>:<line>: <what>`` for a missing ``@data``, a case with the
            wrong number of dimensions, dimensions of different lengths, a value that is not a
            finite number (``?`` included), or a label outside ``@classLabel``; or no case.
    """
    name, lines = _lines(path)
    headers: dict[str, list[str]] = {}
    cases: list[tuple[torch.Tensor, str]] = []
    in_data = False
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataFormatError(f"{name}:{number}: expected an @ header line or @data "
                                      f"before the cases, got {line[:40]!r}")
            if line.lower() == "@data":
                in_data = True
            else:  # "@classLabel true 1 2 3" -> headers["classlabel"] = ["true", "1", ...]
                key, _, value = line[1:].partition(" ")
                headers[key.lower()] = value.split()
            continue
        *dims, label = line.split(":")
        expected = int(headers["dimensions"][0]) if headers.get("dimensions") else None
        if not dims or (expected is not None and len(dims) != expected):
            raise DataFormatError(f"{name}:{number}: expected {expected or 'some'} dimensions "
                                  f"and a label separated by ':', got {len(dims)} dimensions")
        allowed = headers.get("classlabel", [])[1:]
        if allowed and label not in allowed:
            raise DataFormatError(f"{name}:{number}: label {label!r} is not one of @classLabel "
                                  f"({' '.join(allowed)})")
        try:
            values = [[float(v) for v in dim.split(",")] for dim in dims]
        except ValueError as e:
            raise DataFormatError(f"{name}:{number}: expected comma-separated numbers ({e})") \
                from None
        if any(not math.isfinite(v) for dim in values for v in dim):
            raise DataFormatError(f"{name}:{number}: missing or infinite values are not "
                                  f"supported")
        lengths = {len(dim) for dim in values}
        if len(lengths) != 1:
            raise DataFormatError(f"{name}:{number}: the dimensions have different lengths "
                                  f"{sorted(lengths)}")
        cases.append((torch.tensor(values, dtype=torch.float32).T.contiguous(), label))
    if not in_data:
        raise DataFormatError(f"{name}: no @data line (not a .ts file?)")
    if not cases:
        raise DataFormatError(f"{name}: no cases after @data (empty file?)")
    return cases


def load_japanese_vowels() -> dict[str, list[tuple[torch.Tensor, str]]]:
    """JapaneseVowels from the installed aeon package: ``{"train": 270 cases, "test": 370}``,
    each ``((T, 12) float32 with 7 <= T <= 29, speaker "1".."9")``."""
    folder = "datasets/data/JapaneseVowels/JapaneseVowels"
    return {split: read_ts(data_file("aeon", f"{folder}_{split.upper()}.ts", _MISSING))
            for split in ("train", "test")}
