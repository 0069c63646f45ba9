"""Text data users bring: tagged sentences (CoNLL columns, ATIS-style ``word:TAG`` lines),
labelled texts (TSV/CSV), a tokenizer, a vocabulary and padding into a batch.

Every reader returns plain Python objects and fails on bad input with a :class:`DataFormatError`
whose message starts with ``<file>:<line>:``, so the user can open the file at the right place.
Files are read as UTF-8 (a leading byte-order mark is ignored; ``\\r\\n`` line ends are fine).
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.errors import DataFormatError, DataWarning  # noqa: F401 (importable here too)

PAD = "<pad>"
UNK = "<unk>"


class Sourced(tuple):
    """A tuple that remembers where it was read: ``source`` = (file name, line number). Equal
    to the plain tuple of its items (``Sourced(("pos", "good"), ("a.tsv", 3)) == ("pos",
    "good")``), for messages that point at a line."""

    def __new__(cls, items, source: tuple[str, int] | None = None):
        obj = super().__new__(cls, items)
        obj.source = source
        return obj


@dataclass
class TaggedSentence:
    """One sentence: its words, one tag per word, and (ATIS) the intent of the whole sentence."""

    words: list[str]
    tags: list[str]
    intent: str | None = None
    # where each word stands in its file: ``(file name, line number of every word)``, for
    # messages that point at a line; None for sentences not read from a file
    source: tuple[str, list[int]] | None = field(default=None, compare=False, repr=False)


def _lines(path) -> tuple[str, list[str]]:
    """The file's name (as the user gave it) and its lines, without line ends."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    name = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"{name}: is a directory, expected a file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFormatError(f"{name}:{line}: not valid UTF-8 text ({e.reason})") from None
    # split on "\n" only: str.splitlines() also splits on \x0b, \x1c, \u2028, ..., which would
    # shift the line numbers in our messages away from what an editor shows
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return name, [line.removesuffix("\r") for line in lines]


def _needed_columns(column: int) -> int:
    """How many columns a line needs for ``column`` (negative counts from the end) to exist."""
    return column + 1 if column >= 0 else -column


def _shown(line: str, limit: int = 80) -> str:
    """A line for a message: quoted, and cut after ``limit`` characters."""
    text = line.strip()
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text):,} chars)"


# the most columns a tab-separated token line may have: word, tag and feature columns between
# (tagger output); a line with more is not such a file but a broken one (lines run together)
MAX_COLUMNS = 64
_SPACES = re.compile(r"[ \t]+")


def split_columns(line: str, tabbed: bool) -> list[str]:
    """A CoNLL token line's columns: on tabs only in a tab-separated file (a word may contain
    or be a space), else on runs of ASCII spaces (never at U+3000 inside a word)."""
    return line.split("\t") if tabbed else _SPACES.split(line.strip(" \t"))


def read_conll(path, *, word_column: int = 0, tag_column: int = -1,
               tags_optional: bool = False) -> list[TaggedSentence]:
    """Read a CoNLL-style file: one token per line, its columns separated by tabs or spaces, a
    blank line between sentences (e.g. CoNLL-2003 ``EU NNP B-NP B-ORG``).

    ``word_column`` and ``tag_column`` pick the columns (negative counts from the end, so the
    default reads the first column as the word and the last as the tag). How a line splits
    into columns, and what makes a line broken, depends on the file's first token line:

    - **tab-separated** (the first token line has a tab): every token line is split on tabs
      only, so a word may contain a space or be one (``New York``, U+3000). The number of
      columns may change from line to line (tagger output puts a varying number of feature
      columns between the word and the tag), between 2 and ``MAX_COLUMNS`` (64); a line
      without a tab, with more columns, or with an empty word or tag is broken.
    - **space-separated** (no tab on the first token line): lines split on runs of ASCII
      spaces (never inside a word such as U+3000), and every token line has as many columns
      as the first: a line with more or fewer is broken (a word with a space in it, a missing
      tag, two lines run together).

    A broken line stops the reading at its line. Lines starting with ``-DOCSTART-`` end the
    current sentence and are skipped. A line starting with ``#`` where a sentence would begin
    is a comment (CoNLL-U's ``# text = ...``) and is skipped; inside a sentence it is a token
    (the word ``#``). ``tags_optional`` (a file to predict on): a line of one column is a word
    without a tag (its tag reads ``_``). A CoNLL-U file (10 tab-separated columns starting with
    a token id) is refused: read it with ``data.format=conllu``.

    Raises:
        DataFormatError: a broken line (``<file>:<line>``, what was expected and the line), a
            CoNLL-U file, or no sentence in the file.
    """
    for arg, value in (("word_column", word_column), ("tag_column", tag_column)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg}: expected an int, got {type(value).__name__} ({value!r})")
    need = max(_needed_columns(word_column), _needed_columns(tag_column), 2)
    name, lines = _lines(path)
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []
    first: tuple[bool, int, int] | None = None  # (tab-separated, columns, line) of line one

    def flush() -> None:
        if words:
            sentences.append(TaggedSentence(list(words), list(tags), None,
                                            (name, list(numbers))))
            words.clear()
            tags.clear()
            numbers.clear()

    def broken(number: int, what: str, line: str) -> DataFormatError:
        return DataFormatError(f"{name}:{number}: {what}: {_shown(line)}")

    for number, line in enumerate(lines, 1):
        if not line.strip(" \t") or line.startswith("-DOCSTART-"):
            flush()
            continue
        if line.startswith("#") and not words:
            continue
        if first is None and word_column == 0:
            from .conllu_io import is_token_line  # here: conllu_io reads with this module

            if is_token_line(line):
                raise broken(number, "this is a CoNLL-U file (10 tab-separated columns, the "
                             "first a token id), not CoNLL columns; read it with "
                             "data.format=conllu (or auto)", line)
        tabbed = first[0] if first is not None else "\t" in line
        if tabbed and "\t" not in line and not (tags_optional and first is None):
            raise broken(number, f"expected tab-separated columns, as on every token line "
                         f"since line {first[2]}, got a line without a tab", line)
        columns = split_columns(line, tabbed)
        if tags_optional and len(columns) == 1:
            words.append(columns[0])
            tags.append("_")
            numbers.append(number)
            continue
        separated = "tab-separated" if tabbed else "space-separated"
        if len(columns) < need:
            raise broken(number, f"expected at least {need} {separated} columns (word_column="
                         f"{word_column}, tag_column={tag_column}), got {len(columns)}", line)
        if first is None:
            first = (tabbed, len(columns), number)
        elif tabbed and len(columns) > MAX_COLUMNS:
            raise broken(number, f"expected at most {MAX_COLUMNS} tab-separated columns (word, "
                         f"features, tag), got {len(columns):,}", line)
        elif not tabbed and len(columns) != first[1]:
            raise broken(number, f"expected {first[1]} {separated} columns, as on every token "
                         f"line since line {first[2]}, got {len(columns)}", line)
        if word_column % len(columns) == tag_column % len(columns):
            raise broken(number, f"word_column={word_column} and tag_column={tag_column} are "
                         f"the same column on this line of {len(columns)} columns", line)
        word, tag = columns[word_column], columns[tag_column]
        if not word or not tag.strip():
            raise broken(number, f"expected a word and a tag, got an empty "
                         f"{'word' if not word else 'tag'}", line)
        words.append(word)
        tags.append(tag.strip(" "))
        numbers.append(number)
    flush()
    if not sentences:
        raise DataFormatError(f"{name}: no sentences found (empty file?)")
    return sentences



def read_slot_lines(path) -> list[TaggedSentence]:
    """Read ATIS-style lines, one sentence each: ``word:TAG word:TAG ... <=> intent``.

    Each token is split at its *last* ``:`` (so a word may contain ``:``, e.g. ``6:45:B-time``;
    tags never do). The `` <=> intent`` part is optional: without it the intent is None.
    Intents are kept as written, so a multi-intent like ``atis_flight;atis_airfare`` is one
    label. Blank lines are skipped.

    Raises:
        DataFormatError: a token without ``:``, with an empty word or tag, more than one
            ``<=>``, an empty intent, or no tokens on a line (``<file>:<line>``, and the token);
            or no sentence in the file.
    """
    name, lines = _lines(path)
    sentences: list[TaggedSentence] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("<=>")
        if len(parts) > 2:
            raise DataFormatError(
                f"{name}:{number}: expected at most one '<=>' (tokens <=> intent), "
                f"got {len(parts) - 1}"
            )
        intent = None
        if len(parts) == 2:
            intent = parts[1].strip()
            if not intent:
                raise DataFormatError(f"{name}:{number}: expected an intent after '<=>', got none")
            if len(intent.split()) > 1:
                raise DataFormatError(
                    f"{name}:{number}: expected one intent (no spaces) after '<=>', "
                    f"got {intent!r}"
                )
        tokens = parts[0].split()
        if not tokens:
            raise DataFormatError(f"{name}:{number}: expected word:TAG tokens, got none")
        words, tags = [], []
        for position, token in enumerate(tokens, 1):
            word, colon, tag = token.rpartition(":")
            if not colon or not word or not tag:
                what = "no ':'" if not colon else ("an empty word" if not word else "an empty tag")
                raise DataFormatError(
                    f"{name}:{number}: token {position} {token!r}: expected word:TAG, got {what}"
                )
            words.append(word)
            tags.append(tag)
        sentences.append(TaggedSentence(words, tags, intent, (name, [number] * len(words))))
    if not sentences:
        raise DataFormatError(f"{name}: no sentences found (empty file?)")
    return sentences


_DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "'|'"}


def read_labelled_text(path, *, delimiter: str | None = None) -> list[tuple[str, str]]:
    """Read a text-classification file, one ``(label, text)`` example a line.

    Format ``label<delimiter>text``. ``delimiter=None`` picks it from the suffix: ``.csv`` means
    ``,`` (read with Python's :mod:`csv`, so a quoted text may contain commas; unquoted commas
    after the first also stay in the text), anything else (``.tsv``, ``.txt``, ...) a tab (the
    line is split at the first tab). Label and text are stripped of surrounding whitespace. A
    first line that reads ``label<delimiter>text`` (any case) is a header and skipped; blank
    lines are skipped.

    Raises:
        DataFormatError: a line without the delimiter, or with an empty label or text
            (``<file>:<line>``); or no example in the file.
    """
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"delimiter: expected one character (e.g. ',' or '\\t'), "
                         f"got {delimiter!r}")
    name, lines = _lines(path)
    if delimiter is None:
        delimiter = "," if Path(name).suffix.lower() == ".csv" else "\t"
    shown = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
    examples: list[tuple[str, str]] = []
    seen_content = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if delimiter == ",":
            fields = next(csv.reader([line]))
            fields = [fields[0], ",".join(fields[1:])] if len(fields) > 1 else fields
        else:
            fields = line.split(delimiter, 1)
        first = not seen_content
        seen_content = True
        if len(fields) < 2:
            raise DataFormatError(
                f"{name}:{number}: expected label{delimiter!r}text, found no {shown} "
                "(for another format: data.format, or delimiter= in Python)"
            )
        label, text = fields[0].strip(), fields[1].strip()
        if first and label.lower() == "label" and text.lower() == "text":
            continue  # header
        if not label:
            raise DataFormatError(f"{name}:{number}: empty label before the {shown}")
        if not text:
            raise DataFormatError(f"{name}:{number}: empty text after the {shown}")
        examples.append(Sourced((label, text), (name, number)))
    if not examples:
        raise DataFormatError(f"{name}: no examples found (empty file?)")
    return examples


# a word: letters/digits, joined by inner apostrophes ("i'd", "o'hare"); or one of a few
# abbreviations that keep their final period ("st. louis", as in ATIS)
_TOKEN = re.compile(r"\b(?:st|mt|ft|dr|mr|mrs|ms)\.|[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into words.

    A word is a run of letters and digits (any script), possibly joined by inner apostrophes
    (``"I'd"`` -> ``"i'd"``, ``"O'Hare"`` -> ``"o'hare"``); everything else (spaces, periods and
    other punctuation, hyphens, ``_``) separates words and is dropped. The abbreviations
    ``st. mt. ft. dr. mr. mrs. ms.`` keep their period, as ATIS writes ``st. louis``. Curly
    apostrophes count as ``'``. This matches ATIS's tokens for ordinary English; times like
    ``6:45`` become ``["6", "45"]`` (ATIS writes ``645``) and ``p.m.`` becomes ``["p", "m"]``
    (ATIS: ``pm``).

    >>> tokenize("Flights from St. Louis to O'Hare, round-trip!")
    ['flights', 'from', 'st.', 'louis', 'to', "o'hare", 'round', 'trip']
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


class Vocab:
    """A token <-> index map: the specials first, then the tokens.

    Word vocabularies use the default specials, so ``"<pad>"`` is 0 and ``"<unk>"`` is 1 and
    unknown words map to ``"<unk>"``; tag vocabularies use ``specials=()`` so tags index from 0
    (and an unknown tag is an error).

    Args:
        tokens: a stream of tokens (repeats counted); the vocabulary keeps each distinct token
            seen at least ``min_count`` times, the most frequent first (ties in order of first
            appearance, so a list of distinct tokens keeps its order).
        specials: tokens placed first, whatever their counts.
        min_count: the least number of occurrences a token needs to be kept.

    >>> v = Vocab.build([["a", "b", "a"], ["c"]])
    >>> v.to_list(), v.encode(["a", "zzz"]), v.decode([2, 3])
    (['<pad>', '<unk>', 'a', 'b', 'c'], [2, 1], ['a', 'b'])
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        specials: Sequence[str] = (PAD, UNK),
        min_count: int = 1,
    ) -> None:
        if isinstance(specials, str):
            raise TypeError(f"specials: expected a sequence of str, got the str {specials!r}")
        specials = tuple(specials)
        for s in specials:
            if not isinstance(s, str):
                raise TypeError(f"specials: expected str tokens, got {type(s).__name__} ({s!r})")
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials: expected distinct tokens, got {specials!r}")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count: expected an int >= 1, got {min_count!r}")
        if isinstance(tokens, str):
            raise TypeError("tokens: expected an iterable of str tokens, got one str; "
                            "wrap it in a list or tokenize it first")
        counts: Counter[str] = Counter()
        for token in tokens:
            if not isinstance(token, str):
                raise TypeError(f"tokens: expected str tokens, got {type(token).__name__} "
                                f"({token!r})")
            counts[token] += 1
        # Counter keeps first-appearance order, and sorted() is stable: ties stay in that order
        kept = [t for t, c in sorted(counts.items(), key=lambda tc: -tc[1])
                if c >= min_count and t not in specials]
        self._specials = specials
        self._itos = list(specials) + kept
        self._stoi = {t: i for i, t in enumerate(self._itos)}

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        min_count: int = 1,
        specials: Sequence[str] = (PAD, UNK),
    ) -> Vocab:
        """The vocabulary of all tokens in ``sequences`` (e.g. one list of words per sentence)."""

        def stream():
            for i, seq in enumerate(sequences):
                if isinstance(seq, str):
                    raise TypeError(f"sequences[{i}]: expected a list of tokens, got the str "
                                    f"{seq!r}; tokenize it first")
                yield from seq

        return cls(stream(), specials=specials, min_count=min_count)

    @classmethod
    def from_list(cls, tokens: Sequence[str], specials: Sequence[str] = (PAD, UNK)) -> Vocab:
        """The vocabulary whose :meth:`to_list` is ``tokens`` (which starts with ``specials``);
        for vocabularies saved as JSON lists in checkpoints."""
        tokens = list(tokens)
        specials = tuple(specials)
        if tuple(tokens[: len(specials)]) != specials:
            raise ValueError(f"tokens: expected a list starting with the specials {specials!r}, "
                             f"got {tokens[: len(specials)]!r}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"tokens: expected distinct tokens, got {dup!r} more than once")
        return cls(tokens[len(specials):], specials=specials)

    def to_list(self) -> list[str]:
        """All tokens in index order, the specials included (JSON-friendly)."""
        return list(self._itos)

    @property
    def specials(self) -> tuple[str, ...]:
        return self._specials

    @property
    def pad_index(self) -> int | None:
        """Index of ``"<pad>"``, or None if this vocabulary has none."""
        return self._stoi.get(PAD) if PAD in self._specials else None

    @property
    def unk_index(self) -> int | None:
        """Index of ``"<unk>"``, or None if this vocabulary has none."""
        return self._stoi.get(UNK) if UNK in self._specials else None

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token) -> bool:
        return token in self._stoi

    def __eq__(self, other) -> bool:
        return (isinstance(other, Vocab) and self._itos == other._itos
                and self._specials == other._specials)

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self._itos[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"Vocab({len(self)} tokens: [{head}{more}])"

    def index(self, token: str) -> int:
        """The index of ``token``; an unknown token gives :attr:`unk_index`.

        Raises:
            KeyError: the token is unknown and the vocabulary has no ``"<unk>"``.
        """
        i = self._stoi.get(token)
        if i is not None:
            return i
        unk = self.unk_index
        if unk is None:
            shown = ", ".join(repr(t) for t in self._itos[:5]) + (", ..." if len(self) > 5 else "")
            raise KeyError(f"token {token!r} is not in the vocabulary ({len(self)} tokens: "
                           f"{shown}) and it has no '<unk>' to map it to")
        return unk

    def token(self, i: int) -> str:
        """The token at index ``i`` (0 <= i < len(self))."""
        if isinstance(i, Tensor):
            i = i.item()
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"index: expected an int, got {type(i).__name__} ({i!r})")
        if not 0 <= i < len(self._itos):
            raise IndexError(f"index: expected 0 <= index < {len(self._itos)}, got {i}")
        return self._itos[i]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Indices of ``tokens`` (unknown ones map to ``"<unk>"``)."""
        if isinstance(tokens, str):
            raise TypeError(f"tokens: expected a list of tokens, got the str {tokens!r}; "
                            "tokenize it first")
        return [self.index(t) for t in tokens]

    def decode(self, ids: Iterable[int] | Tensor) -> list[str]:
        """Tokens at the indices ``ids`` (a list of ints or a 1-D integer tensor)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return [self.token(i) for i in ids]


def pad_batch(seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[Tensor, Tensor]:
    """Stack integer sequences of different lengths into one padded batch.

    Returns:
        ``(batch, lengths)``: ``batch`` a LongTensor (N, T) with ``T = max length``, row ``n``
        holding ``seqs[n]`` followed by ``pad``; ``lengths`` a LongTensor (N,).

    Raises:
        ValueError: no sequences, or an empty one (recurrent layers need length >= 1).
    """
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise TypeError(f"pad: expected an int, got {type(pad).__name__} ({pad!r})")
    if len(seqs) == 0:
        raise ValueError("seqs: expected at least one sequence, got none")
    rows = []
    for n, seq in enumerate(seqs):
        if len(seq) == 0:
            raise ValueError(f"seqs[{n}]: expected a non-empty sequence, got length 0")
        try:
            row = torch.as_tensor(seq)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"seqs[{n}]: expected a sequence of ints, got {seq!r:.80}") from None
        if row.ndim != 1 or row.is_floating_point() or row.is_complex() or row.dtype == torch.bool:
            raise TypeError(f"seqs[{n}]: expected a 1-D sequence of ints, got "
                            f"{row.ndim}-D {row.dtype}")
        rows.append(row)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    batch = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)
    for n, row in enumerate(rows):
        batch[n, : len(row)] = row  # (len,) into (T,)
    return batch, lengths
