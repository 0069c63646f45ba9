"""Tag schemes: whether a tag set marks chunks (``B-x I-x ... O``) or stands on its own.

- ``bio``: ``O``, ``B-x`` (a chunk of type x begins) and ``I-x`` (it goes on); slot filling,
  named entities. Scored by chunk precision/recall/F1 as conlleval scores them.
- ``bioes``: ``bio`` plus ``E-x`` (a chunk ends) and ``S-x`` (a chunk of one word). Scored as
  ``bio``.
- ``none``: every tag is a class of its own (part-of-speech tags ``NOUN``, ``VERB``, dependency
  relations ...). Scored by token accuracy.

``auto`` (:func:`detect_scheme`) picks ``bio`` when every training tag is ``O``, ``B-x`` or
``I-x`` (at least one not ``O``), ``bioes`` when ``E-x``/``S-x`` occur too, else ``none``.
A chunk tag splits at its first ``-``, as conlleval splits it (a type may contain ``-``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .text import DataFormatError, TaggedSentence

SCHEMES = ("bio", "bioes", "none")
_PREFIXES = {"bio": "BI", "bioes": "BIES"}
_CHUNK_TAG = re.compile(r"([BIES])-.+", re.DOTALL)


def fits(tag: str, scheme: str) -> bool:
    """Whether ``tag`` belongs to ``scheme``: every tag fits ``none``; ``O`` and
    ``<prefix>-<type>`` fit the chunk schemes."""
    if scheme == "none":
        return True
    match = _CHUNK_TAG.fullmatch(tag)
    return tag == "O" or (match is not None and match.group(1) in _PREFIXES[scheme])


def detect_scheme(tags: Iterable[str]) -> tuple[str, str]:
    """The scheme of a training tag set and why: ``("bio", "...")``, ``("bioes", ...)`` or
    ``("none", "...")``. The reason names a few tags, for the message that says what auto
    chose."""
    tags = set(tags)
    others = sorted(t for t in tags if not fits(t, "bioes"))
    if others or tags <= {"O"}:
        shown = ", ".join(others[:5] or sorted(tags)[:5]) + (", ..." if len(others) > 5 else "")
        return "none", f"the training tags are not chunk tags: {shown}"
    if all(fits(t, "bio") for t in tags):
        return "bio", "every training tag is O, B-x or I-x"
    return "bioes", "the training tags are O and B-/I-/E-/S- chunk tags"


def check_scheme(sentences: Iterable[TaggedSentence], scheme: str, source: str, *,
                 auto: bool = False) -> None:
    """Refuse a tag that a chunk scheme cannot read, at its file and line. ``auto``: the scheme
    was chosen from the training tags (and this tag comes from another split).

    Raises:
        DataFormatError: ``<file>:<line>: tag 'ADJ' is not a bio tag ...``.
    """
    if scheme == "none":
        return
    form = "O, B-type or I-type" if scheme == "bio" else "O, B-type, I-type, E-type or S-type"
    for s in sentences:
        for i, tag in enumerate(s.tags):
            if fits(tag, scheme):
                continue
            where = f"{s.source[0]}:{s.source[1][i]}" if s.source else source
            if auto:
                raise DataFormatError(
                    f"{where}: data.tag_scheme=auto chose {scheme} from the training tags, "
                    f"which expects {form} tags, but this file has {tag!r} (word "
                    f"{s.words[i]!r}); set data.tag_scheme=none to read every tag as a class "
                    f"of its own")
            raise DataFormatError(
                f"{where}: data.tag_scheme={scheme} expects {form} tags, got {tag!r} "
                f"(word {s.words[i]!r}); use data.tag_scheme=none or auto for a tag set "
                f"without chunks")
