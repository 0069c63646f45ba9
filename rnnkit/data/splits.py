"""Fixed-seed splits: the same items held out on every machine and Python version."""

from __future__ import annotations

import random
from collections.abc import Sequence


def split_off(items: Sequence, size: int, seed: int) -> tuple[list, list]:
    """``(rest, taken)``: ``size`` items drawn uniformly without replacement, both parts in
    their original order.

    Each item gets a key ``random.Random(seed).random()`` (in order) and the ``size`` lowest
    keys are taken. Only ``Random.random()`` is used, whose sequence for an int seed Python
    guarantees across versions (``Random.sample``'s algorithm is not guaranteed).
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(items):
        raise ValueError(f"size: expected an int in [0, {len(items)}], got {size!r}")
    rng = random.Random(seed)
    keys = [rng.random() for _ in items]
    taken = set(sorted(range(len(items)), key=keys.__getitem__)[:size])
    return ([x for i, x in enumerate(items) if i not in taken],
            [x for i, x in enumerate(items) if i in taken])
