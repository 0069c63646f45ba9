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

SPLITS = ("train", "val")


def example_keys(items: Sequence, key: Callable[[object], str]) -> list[str]:
    """A 12-hex-digit hash of each example's content (``key(item)`` is that content as text)."""
    return [hashlib.sha1(key(item).encode()).hexdigest()[:12] for item in items]


def saved_order(splits: dict, key: Callable[[object], str]) -> dict[str, list[str]]:
    """``{"train": [keys], "val": [keys]}`` of the splits as they are now, to save with a run."""
    return {split: example_keys(splits[split], key) for split in SPLITS if split in splits}


def restore_order(splits: dict, order: dict | None, key: Callable[[object], str]) -> bool:
    """Put the training and validation examples back in the run's saved ``order`` (in place)
    when the current splits hold exactly the same examples; returns whether they were moved.
    Nothing changes when there is no saved order or the examples differ."""
    if not order or any(split not in splits for split in order):
        return False
    pool: dict[str, list] = {}
    for split in order:
        for k, item in zip(example_keys(splits[split], key), splits[split], strict=True):
            pool.setdefault(k, []).append(item)
    if sorted(pool) != sorted(set(k for keys in order.values() for k in keys)) or \
            sum(map(len, pool.values())) != sum(map(len, order.values())):
        return False
    restored = {}
    for split, keys in order.items():
        items = []
        for k in keys:
            if not pool.get(k):
                return False  # a duplicate more in the saved order than in the files
            items.append(pool[k].pop())
        restored[split] = items
    moved = any(restored[s] != splits[s] for s in order)
    splits.update(restored)
    return moved
