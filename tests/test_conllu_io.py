"""CoNLL-U: read_conllu (words, tags, line numbers, every error), looks_like_conllu and
write_conllu."""

from __future__ import annotations

import io
import re

import pytest

from rnnkit.data.conllu_io import CONLLU_COLUMNS, looks_like_conllu, read_conllu, write_conllu
from rnnkit.data.text import DataFormatError, TaggedSentence


def row(*fields: str) -> str:
    """One token line; the fields are joined by tabs (a field may hold a space)."""
    assert len(fields) == 10, fields
    return "\t".join(fields)


# A UD English excerpt in EWT's style: document/paragraph comments, a multiword token
# (don't = do + n't, lines 2-3), a word with a space ("New York"), and an empty node 8.1 for the
# elided verb of "and you coffee".
LINES = [
    "# newdoc id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713",
    "# newpar id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713-p0001",
    "# sent_id = weblog-blogspot.com_nominations_20041117172713_ENG_20041117_172713-0001",
    "# text = From the AP comes this story:",
    row("1", "From", "from", "ADP", "IN", "_", "3", "case", "3:case", "_"),
    row("2", "the", "the", "DET", "DT", "Definite=Def|PronType=Art", "3", "det", "3:det", "_"),
    row("3", "AP", "AP", "PROPN", "NNP", "Number=Sing", "4", "obl", "4:obl:from", "_"),
    row("4", "comes", "come", "VERB", "VBZ",
        "Mood=Ind|Number=Sing|Person=3|Tense=Pres|VerbForm=Fin", "0", "root", "0:root", "_"),
    row("5", "this", "this", "DET", "DT", "Number=Sing|PronType=Dem", "6", "det", "6:det", "_"),
    row("6", "story", "story", "NOUN", "NN", "Number=Sing", "4", "nsubj", "4:nsubj",
        "SpaceAfter=No"),
    row("7", ":", ":", "PUNCT", ":", "_", "4", "punct", "4:punct", "_"),
    "",
    "# sent_id = example-0002",
    "# a comment without an equals sign: conllu's serializer would drop it",
    "# text = I don't drink tea in New York, and you coffee.",
    row("1", "I", "I", "PRON", "PRP", "Case=Nom|Number=Sing|Person=1|PronType=Prs", "4",
        "nsubj", "4:nsubj", "_"),
    row("2-3", "don't", "_", "_", "_", "_", "_", "_", "_", "_"),
    row("2", "do", "do", "AUX", "VBP", "Mood=Ind|Tense=Pres|VerbForm=Fin", "4", "aux", "4:aux",
        "_"),
    row("3", "n't", "not", "PART", "RB", "_", "4", "advmod", "4:advmod", "_"),
    row("4", "drink", "drink", "VERB", "VB", "VerbForm=Inf", "0", "root", "0:root", "_"),
    row("5", "tea", "tea", "NOUN", "NN", "Number=Sing", "4", "obj", "4:obj", "_"),
    row("6", "in", "in", "ADP", "IN", "_", "7", "case", "7:case", "_"),
    row("7", "New York", "New York", "PROPN", "NNP", "Number=Sing", "4", "obl", "4:obl:in",
        "SpaceAfter=No"),
    row("8", ",", ",", "PUNCT", ",", "_", "10", "punct", "8.1:punct", "_"),
    row("8.1", "drink", "drink", "VERB", "VB", "VerbForm=Inf", "_", "_", "4:conj:and",
        "CopyOf=4"),
    row("9", "and", "and", "CCONJ", "CC", "_", "10", "cc", "8.1:cc", "_"),
    row("10", "you", "you", "PRON", "PRP", "Case=Nom|Person=2|PronType=Prs", "4", "conj",
        "8.1:nsubj", "_"),
    row("11", "coffee", "coffee", "NOUN", "NN", "Number=Sing", "10", "orphan", "8.1:obj",
        "SpaceAfter=No"),
    row("12", ".", ".", "PUNCT", ".", "_", "4", "punct", "4:punct", "_"),
    "",  # the blank line after the last sentence: the file ends in "\n\n"
    "",
]
UD = "\n".join(LINES)

WORDS_1 = ["From", "the", "AP", "comes", "this", "story", ":"]
WORDS_2 = ["I", "do", "n't", "drink", "tea", "in", "New York", ",", "and", "you", "coffee", "."]
UPOS_1 = ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]
UPOS_2 = ["PRON", "AUX", "PART", "VERB", "NOUN", "ADP", "PROPN", "PUNCT", "CCONJ", "PRON",
          "NOUN", "PUNCT"]
# line numbers of the word lines: lines 5-11; then 16, 18-24 (17 is 2-3), 26-29 (25 is 8.1)
LINES_1 = list(range(5, 12))
LINES_2 = [16, *range(18, 25), *range(26, 30)]


def esc(path) -> str:
    """The path as a regular expression (for pytest.raises(match=...))."""
    return re.escape(str(path))


def write(tmp_path, name: str, text: str, newline: str = "\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def replace_line(number: int, line: str) -> str:
    """UD with line ``number`` (1-based) replaced."""
    lines = list(LINES)
    lines[number - 1] = line
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# read_conllu


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_upos_words_and_lines(tmp_path, newline):
    path = write(tmp_path, "en_ewt-ud-dev.conllu", UD, newline)
    sentences = read_conllu(path)
    # the multiword token "don't" and the empty node 8.1 are no words; "New York" is one
    assert sentences == [TaggedSentence(WORDS_1, UPOS_1), TaggedSentence(WORDS_2, UPOS_2)]
    assert sentences[0].source == (str(path), LINES_1)
    assert sentences[1].source == (str(path), LINES_2)
    assert all(s.intent is None for s in sentences)
    # the file name as given: a str stays the same str
    assert read_conllu(str(path))[0].source[0] == str(path)


def test_read_other_columns(tmp_path):
    path = write(tmp_path, "a.conllu", UD)
    xpos = read_conllu(path, column="xpos")
    assert xpos[0].tags == ["IN", "DT", "NNP", "VBZ", "DT", "NN", ":"]
    assert xpos[1].words == WORDS_2
    deprel = read_conllu(path, column="DEPREL")  # any case
    assert deprel[1].tags == ["nsubj", "aux", "advmod", "root", "obj", "case", "obl", "punct",
                              "cc", "conj", "orphan", "punct"]
    feats = read_conllu(path, column="feats", allow_empty=True)
    assert feats[0].tags[1] == "Definite=Def|PronType=Art"  # the text, not conllu's dict
    assert feats[0].tags[0] == "_"


@pytest.mark.parametrize("column", ["id", "form", "FORM", "pos", "", 3])
def test_read_bad_column(tmp_path, column):
    path = write(tmp_path, "a.conllu", UD)
    with pytest.raises(ValueError, match=r"column: expected one of lemma, upos, xpos, .*misc.*"
                                         + re.escape(repr(column))) as info:
        read_conllu(path, column=column)
    assert not isinstance(info.value, DataFormatError)


@pytest.mark.parametrize("line, got", [
    ("\t".join(["5", "this", "this", "DET", "DT", "_", "6", "det", "6:det"]), "got 9"),
    (row("5", "this", "this", "DET", "DT", "_", "6", "det", "6:det", "_") + "\t", "got 11"),
    ("5 this this DET DT _ 6 det 6:det _", "got 1 (the fields must be separated by tabs"),
])
def test_read_wrong_field_count(tmp_path, line, got):
    path = write(tmp_path, "a.conllu", replace_line(9, line))
    with pytest.raises(DataFormatError) as info:
        read_conllu(path)
    message = str(info.value)
    assert message.startswith(f"{path}:9: expected 10 tab-separated fields (CoNLL-U has 10: "
                              "ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC)")
    assert got in message


@pytest.mark.parametrize("token_id, what", [
    ("x", "got 'x'"), ("_", "got '_'"), ("5-3", "got '5-3'"), ("5.", "got '5.'"),
    ("05", "got '05'"),
])
def test_read_bad_id(tmp_path, token_id, what):
    path = write(tmp_path, "a.conllu",
                 replace_line(9, row(token_id, "this", "this", "DET", "DT", "_", "6", "det",
                                     "6:det", "_")))
    expected = r"expected an ID \(an integer like 3, a range like 3-4 or a decimal like 8.1\)"
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:9: {expected}, {what}"):
        read_conllu(path)


def test_read_ids_out_of_order(tmp_path):
    skip = replace_line(9, row("6", "this", "this", "DET", "DT", "_", "6", "det", "6:det", "_"))
    path = write(tmp_path, "a.conllu", skip)
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:9: expected word ID 5 .*got 6$"):
        read_conllu(path)
    # a missing blank line between sentences: the ids start again at 1
    path = write(tmp_path, "b.conllu", UD.replace("\n\n# sent_id = example-0002", ""))
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:14: expected word ID 8 .*got 1 "
                                              r"\(is a blank line missing"):
        read_conllu(path)


def test_read_empty_column(tmp_path):
    # no xpos tags at all (as in many UD treebanks): the first word already says so
    no_xpos = "\n".join(
        "\t".join(f[:4] + ["_"] + f[5:]) if (f := line.split("\t"))[0].isdigit() else line
        for line in LINES
    )
    path = write(tmp_path, "no_xpos.conllu", no_xpos)
    with pytest.raises(DataFormatError) as info:
        read_conllu(path, column="xpos")
    assert str(info.value) == (
        f"{path}:5: the xpos column is empty ('_'); this file has no xpos tags (choose another "
        "column with --data.column, e.g. upos)"
    )
    # one word without its tag, further down
    path = write(tmp_path, "a.conllu",
                 replace_line(20, row("4", "drink", "drink", "_", "VB", "_", "0", "root", "_",
                                      "_")))
    with pytest.raises(DataFormatError) as info:
        read_conllu(path)
    message = str(info.value)
    assert message.startswith(f"{path}:20: the upos column is empty ('_')")
    assert "--data.column, e.g. xpos" in message
    # allow_empty: the tag is '_', and the rest reads as usual
    sentences = read_conllu(path, allow_empty=True)
    assert sentences[1].tags == UPOS_2[:3] + ["_"] + UPOS_2[4:]
    assert read_conllu(write(tmp_path, "c.conllu", no_xpos), column="xpos",
                       allow_empty=True)[0].tags == ["_"] * 7


def test_read_underscore_word_has_lemma_underscore(tmp_path):
    # UD writes the word "_" with the lemma "_": a lemma, not a missing value
    path = write(tmp_path, "a.conllu",
                 replace_line(11, row("7", "_", "_", "SYM", "NFP", "_", "4", "punct", "4:punct",
                                      "_")))
    assert read_conllu(path, column="lemma")[0].tags[-1] == "_"
    assert read_conllu(path)[0].words[-1] == "_"


def test_read_empty_form(tmp_path):
    path = write(tmp_path, "a.conllu",
                 replace_line(10, row("6", "", "story", "NOUN", "NN", "_", "4", "nsubj", "_",
                                      "_")))
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:10: empty FORM"):
        read_conllu(path)


def test_read_conllu_package_errors_name_the_line(tmp_path):
    # values conllu's own field parsers reject: a HEAD that is no number, a DEPS head 5-3
    path = write(tmp_path, "a.conllu",
                 replace_line(8, row("4", "comes", "come", "VERB", "VBZ", "_", "root", "0",
                                     "0:root", "_")))
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:8: the head column: 'root' is not "
                                              r"valid CoNLL-U \(expected an integer"):
        read_conllu(path)
    path = write(tmp_path, "b.conllu",
                 replace_line(18, row("2", "do", "do", "AUX", "VBP", "_", "4", "aux", "5-3:aux",
                                      "_")))
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:18: the deps column: '5-3:aux'"):
        read_conllu(path)


def test_read_no_sentences(tmp_path):
    for name, text in [("empty.conllu", ""), ("comments.conllu", "# sent_id = 1\n\n\n# x\n")]:
        path = write(tmp_path, name, text)
        with pytest.raises(DataFormatError,
                           match=f"^{esc(path)}: no sentences found \\(empty file\\?\\)$"):
            read_conllu(path)


def test_read_sentence_without_words(tmp_path):
    path = write(tmp_path, "a.conllu",
                 UD + row("1-2", "don't", "_", "_", "_", "_", "_", "_", "_", "_") + "\n")
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:31: expected a sentence with at least "
                                              "one word"):
        read_conllu(path)


def test_read_conllu_plus_columns(tmp_path):
    plus = "# global.columns = ID FORM UPOS\n" + UD
    path = write(tmp_path, "a.conllup", plus)
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:1: this CoNLL-U Plus file declares "
                                              "the columns ID FORM UPOS"):
        read_conllu(path)
    standard = "# global.columns = " + " ".join(c.upper() for c in CONLLU_COLUMNS) + "\n" + UD
    assert read_conllu(write(tmp_path, "b.conllup", standard))[1].tags == UPOS_2


def test_read_file_errors_as_read_conll(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_conllu(tmp_path / "missing.conllu")
    with pytest.raises(IsADirectoryError):
        read_conllu(tmp_path)
    path = tmp_path / "latin1.conllu"
    path.write_bytes(UD.encode("utf-8") + "# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=f"^{esc(path)}:31: not valid UTF-8"):
        read_conllu(path)


# ---------------------------------------------------------------------------------------------
# looks_like_conllu


def test_looks_like_conllu(tmp_path):
    assert looks_like_conllu(write(tmp_path, "a.conllu", UD))
    assert looks_like_conllu(write(tmp_path, "named.conll", UD))  # the content decides
    assert looks_like_conllu(write(tmp_path, "crlf.txt", UD, "\r\n"))
    # a multiword token or an empty node may be the first token line
    assert looks_like_conllu(write(tmp_path, "mwt.conllu", "\n".join(LINES[16:])))
    assert looks_like_conllu(write(tmp_path, "bom.conllu", "\ufeff" + UD))
    assert not looks_like_conllu(write(tmp_path, "two.conll", "EU B-ORG\nrejects O\n"))
    assert not looks_like_conllu(write(tmp_path, "conll03.conll",
                                       "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n"))
    assert not looks_like_conllu(write(tmp_path, "spaces.conll", UD.replace("\t", " ")))
    assert not looks_like_conllu(write(tmp_path, "nine.tsv",
                                       "\t".join(["1"] + ["x"] * 8) + "\n"))
    assert not looks_like_conllu(write(tmp_path, "word_id.tsv",
                                       "\t".join(["one"] + ["x"] * 9) + "\n"))
    assert not looks_like_conllu(write(tmp_path, "empty.conllu", ""))
    assert not looks_like_conllu(write(tmp_path, "comments.conllu", "# text = hi\n\n"))
    assert not looks_like_conllu(tmp_path / "missing.conllu")
    assert not looks_like_conllu(tmp_path)  # a directory
    binary = tmp_path / "binary.conllu"
    binary.write_bytes(bytes(range(256)) * 4)
    assert not looks_like_conllu(binary)


def test_looks_like_conllu_reads_only_the_start(tmp_path):
    # a big file with a token line first: the sniff reads 64 KiB, whatever comes later
    path = tmp_path / "big.conllu"
    path.write_bytes(UD.encode() + b"\n" + b"\xff" * (1 << 20))
    assert looks_like_conllu(path)
    # a first token line past 64 KiB is not seen
    late = write(tmp_path, "late.conllu", "# " + "x" * (64 * 1024) + "\n" + UD)
    assert not looks_like_conllu(late)


# ---------------------------------------------------------------------------------------------
# write_conllu


PREDICTED_1 = ["P1", "P2", "P3", "P4", "P5", "P6", "P7"]
PREDICTED_2 = [f"Q{i}" for i in range(1, 13)]


@pytest.mark.parametrize("column, at", [("upos", 3), ("xpos", 4), ("deprel", 7)])
def test_write_round_trip(tmp_path, column, at):
    path = write(tmp_path, "a.conllu", UD)
    out = io.StringIO()
    assert write_conllu(path, [PREDICTED_1, PREDICTED_2], column, out) == 2
    written = out.getvalue().split("\n")
    assert len(written) == len(UD.split("\n"))
    word_lines = set(LINES_1 + LINES_2)
    for number, (old, new) in enumerate(zip(UD.split("\n"), written, strict=True), 1):
        if number in word_lines:
            old_fields, new_fields = old.split("\t"), new.split("\t")
            assert new_fields[:at] + new_fields[at + 1:] == old_fields[:at] + old_fields[at + 1:]
            assert new_fields[at][0] in "PQ"
        else:
            # comments, the multiword token 2-3, the empty node 8.1, blank lines: as they were
            assert new == old
    again = write(tmp_path, "predicted.conllu", out.getvalue())
    sentences = read_conllu(again, column=column)
    assert [s.tags for s in sentences] == [PREDICTED_1, PREDICTED_2]
    assert [s.words for s in sentences] == [WORDS_1, WORDS_2]


def test_write_without_gold_tags_and_without_final_blank_line(tmp_path):
    # a file to predict on: no upos at all, and no blank line after the last sentence
    bare = "\n".join(
        "\t".join(f[:3] + ["_"] + f[4:]) if (f := line.split("\t"))[0].isdigit() else line
        for line in LINES
    ).rstrip("\n")
    path = write(tmp_path, "test.conllu", bare, "\r\n")
    with pytest.raises(DataFormatError, match="upos column is empty"):
        read_conllu(path)
    sentences = read_conllu(path, allow_empty=True)
    assert [s.tags for s in sentences] == [["_"] * 7, ["_"] * 12]
    out = io.StringIO()
    assert write_conllu(path, [UPOS_1, UPOS_2], "upos", out) == 2
    assert out.getvalue() == UD  # the gold file, \n line ends, ending in a blank line


def test_write_wrong_lengths(tmp_path):
    path = write(tmp_path, "a.conllu", UD)
    out = io.StringIO()
    with pytest.raises(ValueError, match=r"^tags_per_sentence\[1\]: expected 12 tags \(sentence "
                                         f"1 at {esc(path)}:16 has 12 words\\), got 11$"):
        write_conllu(path, [PREDICTED_1, PREDICTED_2[:-1]], "upos", out)
    with pytest.raises(ValueError, match=r"^tags_per_sentence: expected 2 tag lists .*got 3$"):
        write_conllu(path, [PREDICTED_1, PREDICTED_2, PREDICTED_1], "upos", out)
    with pytest.raises(ValueError, match=r"^tags_per_sentence: expected 2 tag lists .*got 1$"):
        write_conllu(path, [PREDICTED_1], "upos", out)
    assert out.getvalue() == ""  # nothing written when the tags do not fit


@pytest.mark.parametrize("tag", ["", "_", "A\tB", "A\nB"])
def test_write_rejects_tags_that_do_not_read_back(tmp_path, tag):
    path = write(tmp_path, "a.conllu", UD)
    with pytest.raises(ValueError, match=r"^tags_per_sentence\[0\]\[2\]: expected a tag"):
        write_conllu(path, [PREDICTED_1[:2] + [tag] + PREDICTED_1[3:], PREDICTED_2], "upos",
                     io.StringIO())


def test_write_bad_arguments(tmp_path):
    path = write(tmp_path, "a.conllu", UD)
    with pytest.raises(ValueError, match="column: expected one of .*got 'form'"):
        write_conllu(path, [PREDICTED_1, PREDICTED_2], "form", io.StringIO())
    with pytest.raises(TypeError, match=r"tags_per_sentence\[0\]: expected a list of tags"):
        write_conllu(path, ["P1 P2", PREDICTED_2], "upos", io.StringIO())
    with pytest.raises(TypeError, match=r"tags_per_sentence\[1\]\[0\]: expected a str tag"):
        write_conllu(path, [PREDICTED_1, [1] * 12], "upos", io.StringIO())


def test_read_form_with_two_spaces(tmp_path):
    # conllu's parse_line splits on tabs *or* two spaces, which would shift every field here;
    # CoNLL-U separates fields by tabs only
    path = write(tmp_path, "a.conllu",
                 replace_line(23, row("7", "New  York", "New  York", "PROPN", "NNP", "_", "4",
                                      "obl", "4:obl:in", "SpaceAfter=No")))
    sentence = read_conllu(path)[1]
    assert sentence.words[6] == "New  York"
    assert sentence.tags == UPOS_2
