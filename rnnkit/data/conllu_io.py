"""CoNLL-U files (Universal Dependencies): read one column as tags, write predicted tags back.

CoNLL-U is UD's format: one token a line, ten tab-separated fields
``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC`` (``_`` for "no value"), a blank line
after each sentence, and ``#`` comment lines (``# sent_id = ...``, ``# text = ...``). The UD
rules followed here (https://universaldependencies.org/format.html):

- A line starting with ``#`` is a comment and is ignored (no token line starts with ``#``: it
  starts with its ID).
- Fields are separated by tabs only: a FORM or LEMMA may contain a space (``New York``).
- The ID is an integer (a word), a range ``3-4`` (a multiword token such as ``don't``, whose
  words ``do`` ``n't`` follow as lines 3 and 4) or a decimal ``8.1`` (an empty node of the
  enhanced graph). The sentence's words are the integer-ID lines, numbered 1, 2, 3, ... in
  order; range and decimal lines are kept in the file but are not words.

Each token line's fields also go through the `conllu <https://pypi.org/project/conllu/>`_
package's field parsers (ID, HEAD, FEATS, DEPS, MISC), so a value conllu rejects (a HEAD of
``x``, a DEPS pointing at ``5-3``) stops with a ``<file>:<line>:`` message too. The tags are the
chosen column's text exactly as written (conllu would turn ``_`` into None and FEATS into a dict).
CoNLL-U Plus files (``# global.columns = ...``) are read only when they list the ten standard
columns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from conllu.parser import DEFAULT_FIELD_PARSERS, parse_id_value

from rnnkit.data.text import DataFormatError, TaggedSentence, _lines

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
# the columns that can serve as tags: every one but the ID and the word itself
TAG_COLUMNS = CONLLU_COLUMNS[2:]
_FIELDS_SHOWN = " ".join(c.upper() for c in CONLLU_COLUMNS)
_ID_FORMS = "an integer like 3, a range like 3-4 or a decimal like 8.1"

# how much of a file looks_like_conllu reads: the first token line comes after a few comment
# lines, so 64 KiB is plenty, and a multi-GB treebank is never read whole just to sniff it
_SNIFF_BYTES = 64 * 1024


@dataclass
class _Sentence:
    words: list[str]
    tags: list[str]
    numbers: list[int]  # the line number (1-based) of every word line


def _parse_id(text: str) -> int | tuple | None:
    """The ID as conllu parses it (``3``, ``(3, '-', 4)``, ``(8, '.', 1)``); None if invalid."""
    try:
        return parse_id_value(text)  # None for '_' and ''
    except Exception:  # conllu's ParseException; the callers say what was expected
        return None


def _check_column(column: str) -> str:
    """``column`` in lower case, if it names a column that can serve as tags."""
    if isinstance(column, str) and column.lower() in TAG_COLUMNS:
        return column.lower()
    raise ValueError(f"column: expected one of {', '.join(TAG_COLUMNS)} (the CoNLL-U columns "
                     f"other than id and form), got {column!r}")


def _other_column(column: str) -> str:
    """A column to suggest instead of ``column`` when it is empty."""
    return "xpos" if column == "upos" else "upos"


def _check_global_columns(name: str, number: int, line: str) -> None:
    """Stop at a CoNLL-U Plus header that declares columns other than the standard ten: the
    fields would then mean something else than this reader assumes."""
    key, _, value = line[1:].partition("=")
    if key.strip() != "global.columns":
        return
    declared = value.split()
    if [c.lower() for c in declared] != list(CONLLU_COLUMNS):
        raise DataFormatError(
            f"{name}:{number}: this CoNLL-U Plus file declares the columns {' '.join(declared)}; "
            f"only the ten CoNLL-U columns {_FIELDS_SHOWN} can be read"
        )


def _read(path, column: str, allow_empty: bool) -> tuple[str, list[str], list[_Sentence]]:
    """The file's name, its lines and its sentences (the words and ``column`` tags)."""
    column = _check_column(column)
    at = CONLLU_COLUMNS.index(column)
    name, lines = _lines(path)
    sentences: list[_Sentence] = []
    # the sentence being read: its word lines, and the number of its first token line (for a
    # sentence that has token lines but no word)
    current = _Sentence([], [], [])
    first_token_line: int | None = None

    def flush() -> None:
        nonlocal current, first_token_line
        if current.words:
            sentences.append(current)
        elif first_token_line is not None:
            raise DataFormatError(
                f"{name}:{first_token_line}: expected a sentence with at least one word "
                f"(a line whose ID is an integer), got only multiword-token or empty-node lines"
            )
        current = _Sentence([], [], [])
        first_token_line = None

    for number, line in enumerate(lines, 1):
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            _check_global_columns(name, number, line)
            continue
        if first_token_line is None:
            first_token_line = number
        fields = line.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            spaces = " (the fields must be separated by tabs, not spaces)" if (
                len(fields) < len(CONLLU_COLUMNS) and len(line.split()) >= len(CONLLU_COLUMNS)
            ) else ""
            raise DataFormatError(
                f"{name}:{number}: expected {len(CONLLU_COLUMNS)} tab-separated fields (CoNLL-U "
                f"has 10: {_FIELDS_SHOWN}), got {len(fields)}{spaces}: {line[:80]!r}"
            )
        token_id = _parse_id(fields[0])
        if token_id is None:  # conllu also returns None for '_' and ''
            raise DataFormatError(f"{name}:{number}: expected an ID ({_ID_FORMS}), "
                                  f"got {fields[0]!r}")
        # the other fields conllu knows how to parse: a value it rejects is a broken file
        for i, field in enumerate(CONLLU_COLUMNS[1:], 1):
            parser = DEFAULT_FIELD_PARSERS.get(field)
            if parser is None:
                continue
            try:
                parser(fields, i)
            except Exception as e:  # whatever conllu raises, the user gets file:line
                # conllu's message names its own function for HEAD; say what UD expects
                why = (" (expected an integer: the ID of the word's head, 0 for the root)"
                       if field == "head" else f" ({e})")
                raise DataFormatError(f"{name}:{number}: the {field} column: {fields[i]!r} is "
                                      f"not valid CoNLL-U{why}") from None
        if not fields[1].strip():
            raise DataFormatError(f"{name}:{number}: empty FORM (the second field); "
                                  "a token needs its word ('_' if the word is an underscore)")
        if not isinstance(token_id, int):
            continue  # a multiword-token range (3-4) or an empty node (8.1): not a word
        expected = len(current.words) + 1
        if token_id != expected:
            more = (" (is a blank line missing before this sentence?)"
                    if token_id == 1 else "")
            raise DataFormatError(
                f"{name}:{number}: expected word ID {expected} (the words of a sentence are "
                f"numbered 1, 2, 3, ... in order), got {fields[0]}{more}"
            )
        tag = fields[at]
        # UD writes an underscore word's lemma as '_': that one is a lemma, not "no value"
        empty = tag in ("", "_") and not (column == "lemma" and fields[1] == "_")
        if empty and not allow_empty:
            shown = f"({tag!r})"
            other = _other_column(column)
            if not sentences and not current.words:
                why = (f"this file has no {column} tags (choose another column with "
                       f"--data.column, e.g. {other})")
            else:
                why = (f"every word needs a tag in the {column} column (or choose another "
                       f"column with --data.column, e.g. {other})")
            raise DataFormatError(f"{name}:{number}: the {column} column is empty {shown}; {why}")
        current.words.append(fields[1])
        current.tags.append("_" if empty else tag)
        current.numbers.append(number)
    flush()
    if not sentences:
        raise DataFormatError(f"{name}: no sentences found (empty file?)")
    return name, lines, sentences


def read_conllu(path, *, column: str = "upos", allow_empty: bool = False
                ) -> list[TaggedSentence]:
    """Read a CoNLL-U file: the FORM column as the words and ``column`` as their tags.

    Args:
        path: the file (UTF-8; a byte-order mark and ``\\r\\n`` line ends are fine).
        column: which column gives the tags: ``lemma``, ``upos`` (the default), ``xpos``,
            ``feats``, ``head``, ``deprel``, ``deps`` or ``misc`` (any case).
        allow_empty: accept ``_`` (no value) in ``column``, giving the tag ``"_"``; for files
            to predict on, which need not have gold tags.

    Returns:
        One :class:`TaggedSentence` per sentence, its words the integer-ID lines (multiword-token
        ranges and empty nodes are skipped), ``source`` the file name as given and the line
        number of every word.

    Raises:
        ValueError: ``column`` is not one of those above.
        DataFormatError: ``<file>:<line>: ...`` for a token line without exactly 10
            tab-separated fields, a bad or out-of-order ID, an empty FORM, ``_`` in ``column``
            (unless ``allow_empty``), or a value the conllu package rejects; ``<file>: ...``
            when the file has no sentence.
        FileNotFoundError, IsADirectoryError: as :func:`rnnkit.data.text.read_conll`.
    """
    name, _, sentences = _read(path, column, allow_empty)
    return [TaggedSentence(s.words, s.tags, None, (name, s.numbers)) for s in sentences]


def looks_like_conllu(path) -> bool:
    """Whether the file looks like CoNLL-U: its first line that is neither blank nor a ``#``
    comment has exactly 10 tab-separated fields, the first an ID (``3``, ``3-4`` or ``8.1``).

    Only the first 64 KiB are read. A missing or unreadable file gives False.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    try:
        with Path(path).open("rb") as f:
            raw = f.read(_SNIFF_BYTES + 1)
    except (OSError, ValueError):  # missing, a directory, no permission, a NUL in the name
        return False
    # errors="replace": the 64 KiB may end inside a character, and a sniff must not raise
    lines = raw[:_SNIFF_BYTES].decode("utf-8-sig", errors="replace").split("\n")
    if len(raw) > _SNIFF_BYTES:
        lines.pop()  # cut off: the last line may be incomplete
    for line in lines:
        line = line.removesuffix("\r")
        if not line.strip() or line.startswith("#"):
            continue
        return is_token_line(line)
    return False


def is_token_line(line: str) -> bool:
    """Whether ``line`` is a CoNLL-U token line: 10 tab-separated fields, the first an ID."""
    fields = line.split("\t")
    return len(fields) == len(CONLLU_COLUMNS) and _parse_id(fields[0]) is not None


def _check_tag(n: int, i: int, tag) -> None:
    """A predicted tag must fit in one CoNLL-U field and read back as itself."""
    if not isinstance(tag, str):
        raise TypeError(f"tags_per_sentence[{n}][{i}]: expected a str tag, "
                        f"got {type(tag).__name__} ({tag!r})")
    if tag in ("", "_") or any(c in tag for c in "\t\n\r"):
        raise ValueError(f"tags_per_sentence[{n}][{i}]: expected a tag that is not empty, not "
                         f"'_' (CoNLL-U's 'no value') and without tabs or line ends, got {tag!r}")


def write_conllu(source_path, tags_per_sentence: Sequence[Sequence[str]], column: str,
                 out: TextIO) -> int:
    """Write the CoNLL-U file ``source_path`` to ``out`` with ``column`` of every word replaced
    by the predicted tags.

    The file is read again as :func:`read_conllu` reads it (with ``allow_empty=True``, since a
    file to predict on may have ``_`` in ``column``); ``tags_per_sentence[n]`` holds one tag per
    word of sentence ``n``. Every other line (comments, multiword-token ranges, empty nodes,
    blank lines) and every other field is written as it was, so ``read_conllu(output,
    column=column)`` gives back exactly the predicted tags. Lines end in ``\\n`` and the output
    ends with a blank line, as CoNLL-U requires. Nothing is written unless all tags fit.

    Returns:
        The number of sentences written.

    Raises:
        ValueError: ``column`` is not a tag column, the number of sentences differs from the
            file's, ``tags_per_sentence[n]`` has a different number of tags than sentence ``n``
            has words, or a tag is empty, ``_`` or holds a tab or line end.
        DataFormatError: the file is not CoNLL-U (as :func:`read_conllu`).
    """
    column = _check_column(column)
    name, lines, sentences = _read(source_path, column, allow_empty=True)
    if isinstance(tags_per_sentence, str) or not isinstance(tags_per_sentence, Sequence):
        raise TypeError(f"tags_per_sentence: expected a list of tag lists, one per sentence, "
                        f"got {type(tags_per_sentence).__name__}")
    if len(tags_per_sentence) != len(sentences):
        raise ValueError(f"tags_per_sentence: expected {len(sentences)} tag lists (one per "
                         f"sentence of {name}), got {len(tags_per_sentence)}")
    at = CONLLU_COLUMNS.index(column)
    replace: dict[int, str] = {}  # line number -> its new tag
    for n, (sentence, tags) in enumerate(zip(sentences, tags_per_sentence, strict=True)):
        if isinstance(tags, str) or not isinstance(tags, Sequence):
            raise TypeError(f"tags_per_sentence[{n}]: expected a list of tags, "
                            f"got {type(tags).__name__}")
        if len(tags) != len(sentence.words):
            raise ValueError(
                f"tags_per_sentence[{n}]: expected {len(sentence.words)} tags (sentence {n} at "
                f"{name}:{sentence.numbers[0]} has {len(sentence.words)} words), got {len(tags)}"
            )
        for i, (number, tag) in enumerate(zip(sentence.numbers, tags, strict=True)):
            _check_tag(n, i, tag)
            replace[number] = tag
    # the lines are written as they were (not through conllu's TokenList.serialize(), which
    # drops comments without '=' and rewrites '# key = value' spacing)
    for number, line in enumerate(lines, 1):
        tag = replace.get(number)
        if tag is not None:
            fields = line.split("\t")
            fields[at] = tag
            line = "\t".join(fields)
        out.write(line + "\n")
    if lines and lines[-1].strip():
        out.write("\n")  # the last sentence's closing blank line, where the file had none
    return len(sentences)
