"""How CoNLL columns are split, and how a broken line is told from a file whose lines carry a
varying number of feature columns (tagger output): the rule in read_conll's docstring."""

import pytest

from rnnkit.cli import main
from rnnkit.data.text import MAX_COLUMNS, DataFormatError, read_conll


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tab_separated_feature_columns_may_vary(tmp_path):
    # tagger output: word, a varying number of features, the tag last
    path = write(tmp_path, "out.tsv", "EU\tNNP\tB-NP\tB-ORG\nrejects\tVBZ\tO\n"
                                       "German\tJJ\tB-NP\tcap=1\tB-MISC\n")
    (s,) = read_conll(path)
    assert s.words == ["EU", "rejects", "German"] and s.tags == ["B-ORG", "O", "B-MISC"]


def test_tab_separated_words_may_contain_or_be_a_space(tmp_path):
    path = write(tmp_path, "ja.conll", "東京\u3000駅\tNOUN\n\u3000\tSYM\nNew York\tPROPN\n")
    (s,) = read_conll(path)
    assert s.words == ["東京\u3000駅", "\u3000", "New York"]
    assert s.tags == ["NOUN", "SYM", "PROPN"]


def test_space_separated_never_splits_inside_a_word_at_an_ideographic_space(tmp_path):
    path = write(tmp_path, "ja.conll", "東京\u3000駅 NOUN\nへ ADP\n")
    assert read_conll(path)[0].words == ["東京\u3000駅", "へ"]


def test_a_line_with_one_column_more_in_a_two_column_file(tmp_path):
    path = write(tmp_path, "a.conll", "EU B-ORG\nrejects O\nGerman call O\nfor O\n")
    with pytest.raises(DataFormatError, match=r"a\.conll:3: expected 2 space-separated columns, "
                       r"as on every token line since line 1, got 3: 'German call O'"):
        read_conll(path)


def test_a_megabyte_line_inside_a_good_file(tmp_path):
    huge = " ".join(["x"] * 150_000)
    path = write(tmp_path, "a.conll", f"EU B-ORG\nrejects O\n{huge}\nfor O\n")
    with pytest.raises(DataFormatError) as e:
        read_conll(path)
    message = str(e.value)
    assert message.startswith(f"{path}:3: expected 2 space-separated columns")
    assert "got 150000" in message and "(299,999 chars)" in message and len(message) < 400


def test_a_megabyte_line_in_a_tab_separated_file(tmp_path):
    huge = "\t".join(["x"] * 150_000)
    path = write(tmp_path, "a.tsv", f"EU\tB-ORG\n{huge}\n")
    with pytest.raises(DataFormatError, match=rf"a\.tsv:2: expected at most {MAX_COLUMNS} "
                       r"tab-separated columns .*got 150,000"):
        read_conll(path)


def test_a_line_without_a_tab_in_a_tab_separated_file(tmp_path):
    path = write(tmp_path, "a.tsv", "EU\tB-ORG\nrejects O\n")
    with pytest.raises(DataFormatError, match=r"a\.tsv:2: expected tab-separated columns, as on "
                       r"every token line since line 1, got a line without a tab"):
        read_conll(path)


def test_an_empty_tag_in_a_tab_separated_file(tmp_path):
    path = write(tmp_path, "a.tsv", "EU\tB-ORG\nrejects\t\n")
    with pytest.raises(DataFormatError, match=r"a\.tsv:2: expected a word and a tag, got an "
                       r"empty tag"):
        read_conll(path)


CONLLU = ("# text = the dog\n1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
          "2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n\n")


def test_a_conllu_file_read_as_conll_is_refused(tmp_path):
    path = write(tmp_path, "ud.conll", CONLLU)
    with pytest.raises(DataFormatError, match=r"ud\.conll:2: this is a CoNLL-U file .* "
                       r"data\.format=conllu"):
        read_conll(path)


def test_a_conllu_file_named_conll_forced_to_conll_is_one_error_line(tmp_path, capsys):
    path = write(tmp_path, "ud.conll", CONLLU * 3)
    code = main(["train", "--data.task=tag", f"--data.train_file={path}", "--data.format=conll",
                 "--train.max_steps=1", "--run.progress=false", f"--run.out={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.count("rnnkit: error:") == 1 and "ud.conll:2: this is a CoNLL-U file" in err
