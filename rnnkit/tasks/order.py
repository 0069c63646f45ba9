"""The order of a run's training and validation examples, kept with the run.

A run on your own files cuts its validation split from the training file by position and draws
its batches by index, so the same sentences in another order would train another way. A run
saves a short key of every training and validation example, in order; when a later command
(``--resume``, ``evaluate``) reads a file that holds the same examples in another order, the
saved order is restored and the run goes on exactly as it would have. A file whose examples
differ is read as it is now (the warning about the changed file says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from itertools import chain

SPLITS = ("train", "val")


def example_keys(items: Sequence, key: Callable[[object], str]) -> list[str]:
    """A 12-hex-digit hash of each example's content (``key(item)`` is that content as text)."""
    return [hashlib.sha1(key(item).encode()).hexdigest()[:12] for item in items]


def keep_order(splits: dict, order: dict | None, key: Callable[[object], str]) -> dict:
    """Put the training and validation examples of ``splits`` back in a run's saved ``order``
    (in place) when they are exactly the same examples, in any order; returns the order to
    save with the run, ``{"train": [keys], "val": [keys]}``. With no saved order, or other
    examples, the splits stay as they are."""
    now = {split: example_keys(splits[split], key) for split in SPLITS if split in splits}
    same = order and set(order) == set(now) and \
        sorted(chain.from_iterable(order.values())) == sorted(chain.from_iterable(now.values()))
    if not same:
        return now
    pool: dict[str, list] = {}
    for split, keys in now.items():
        for k, item in zip(keys, splits[split], strict=True):
            pool.setdefault(k, []).append(item)
    for split, keys in order.items():
        splits[split] = [pool[k].pop() for k in keys]
    return {split: list(keys) for split, keys in order.items()}
