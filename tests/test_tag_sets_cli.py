"""`rnnkit train --data.task=tag` with any tag set, through the command line: part-of-speech
tags (scheme none, scored by accuracy and a per-tag table), CoNLL-U columns, BIOES chunk tags,
`rnnkit predict --input` writing the input's own format back, and the data errors that must
stop a run with one line before any training."""

from __future__ import annotations

import json
import random

import pytest

from rnnkit.cli import main

TINY = ["--data.batch_size=4", "--model.hidden_size=8", "--model.embedding_size=8",
        "--train.max_steps=3", "--train.eval_every=3", "--run.progress=false", "--run.plots=false"]

# part-of-speech tags: UPOS and a Penn-style XPOS for the same words
LEXICON = {"DET": ["the", "a"], "ADJ": ["big", "small", "red", "old"],
           "NOUN": ["dog", "cat", "bird", "man"], "VERB": ["runs", "sleeps", "sees", "eats"]}
XPOS = {"DET": "DT", "ADJ": "JJ", "NOUN": "NN", "VERB": "VBZ", "ADV": "RB"}
PATTERNS = [("DET", "ADJ", "NOUN", "VERB"), ("DET", "NOUN", "VERB"),
            ("DET", "NOUN", "VERB", "DET", "NOUN"), ("DET", "ADJ", "NOUN", "VERB", "DET", "NOUN")]
POS_TAGS = {"DET", "ADJ", "NOUN", "VERB"}


def pos_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """``n`` short English sentences as (word, UPOS) pairs; every pattern, so every tag,
    occurs in any four consecutive sentences."""
    rng = random.Random(seed)
    return [[(rng.choice(LEXICON[t]), t) for t in PATTERNS[i % len(PATTERNS)]]
            for i in range(n)]


def write_conll(path, sentences) -> str:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n")
    return str(path)


# a sentence with a multiword token (3-4) and an empty node (5.1): neither is a word
SPECIAL = [
    "# sent_id = special",
    "# text = the dog doesn't run",
    "1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_",
    "2\tdog\tdog\tNOUN\tNN\t_\t5\tnsubj\t_\t_",
    "3-4\tdoesn't\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No",
    "3\tdoes\tdo\tVERB\tVBZ\t_\t5\taux\t_\t_",
    "4\tn't\tnot\tADV\tRB\t_\t5\tadvmod\t_\t_",
    "5\trun\trun\tVERB\tVBZ\t_\t0\troot\t_\t_",
    "5.1\trun\trun\tVERB\tVBZ\t_\t_\t_\t2:nsubj\t_",
]
SPECIAL_WORDS = ["the", "dog", "does", "n't", "run"]


def conllu_lines(sentences, *, special: bool = True, xpos: bool = True) -> list[str]:
    """CoNLL-U lines of the sentences (``# text =`` comments, ten tab-separated fields), the
    special sentence first; ``xpos=False`` leaves the XPOS column ``_``."""
    lines = [*SPECIAL, ""] if special else []
    for n, s in enumerate(sentences):
        lines += [f"# sent_id = s{n}", f"# text = {' '.join(w for w, _ in s)}"]
        for i, (w, t) in enumerate(s, 1):
            lines.append("\t".join([str(i), w, w, t, XPOS[t] if xpos else "_", "_",
                                    "0" if i == 1 else "1", "root" if i == 1 else "dep",
                                    "_", "_"]))
        lines.append("")
    return lines


def write_conllu(path, sentences, **kwargs) -> str:
    path.write_text("\n".join(conllu_lines(sentences, **kwargs)) + "\n")
    return str(path)


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def final_record(out) -> dict:
    (record,) = [r for r in records(out) if r["kind"] == "test"]
    return record


def one_error(err: str, *parts: str) -> str:
    """The one ``rnnkit: error:`` line of ``err``, which holds every part; no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rnnkit: error:")]
    assert len(lines) == 1, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def table_rows(printed: str, heading: str = "tag") -> dict[str, list[str]]:
    """The per-tag table printed after the test scores: its header has precision, recall, f1
    and support; a row per tag (name, 3 scores, support)."""
    lines = printed.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.split()[:1] == [heading]
                and all(k in line for k in ("precision", "recall", "f1", "support"))]
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if len(fields) != 5 or not fields[4].isdigit():
            break
        rows[fields[0]] = fields
    return rows


# ---- 1. part-of-speech tags in a two-column CoNLL file ---------------------------------------

@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_pos_tags_in_conll_train_with_scheme_none(head, tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", pos_sentences(20, 0))
    test = write_conll(tmp_path / "test.conll", pos_sentences(8, 1))
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.test_file={test}", "--model.bidirectional", f"--model.head={head}",
                 "--model.char_filters=4", *TINY, f"--run.out={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    printed = captured.out
    assert "tag scheme none (data.tag_scheme=auto" in printed
    (test_line,) = [line for line in printed.splitlines() if line.startswith("test: ")]
    assert "accuracy" in test_line and "macro_f1" in test_line
    assert set(table_rows(printed)) == POS_TAGS

    record = final_record(out)
    assert {"accuracy", "macro_f1", "per_tag"} <= set(record)
    assert set(record["per_tag"]) == POS_TAGS
    for scores in record["per_tag"].values():
        assert {"precision", "recall", "f1", "support"} <= set(scores)
    evals = [r for r in records(out) if r["kind"] == "eval"]
    assert evals and all("per_tag" not in r and "accuracy" in r for r in evals)


# ---- 2. CoNLL-U: a chosen column; sniffed whatever the file's name -------------------------

@pytest.mark.parametrize("column, tags", [
    ("upos", POS_TAGS | {"ADV"}),
    ("xpos", {"DT", "JJ", "NN", "VBZ", "RB"}),
])
def test_conllu_column_gives_the_tags(column, tags, tmp_path, capsys):
    train = write_conllu(tmp_path / "train.conllu", pos_sentences(20, 0))
    test = write_conllu(tmp_path / "test.conllu", pos_sentences(6, 1))
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.val_file={test}", f"--data.test_file={test}",
                 f"--data.column={column}", *TINY, f"--run.out={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tag scheme none" in captured.out
    assert set(final_record(out)["per_tag"]) == tags
    assert set(table_rows(captured.out)) == tags


def test_conllu_content_in_a_conll_file_is_read_as_conllu(tmp_path, capsys):
    from rnnkit.training.checkpoint import load_checkpoint

    train = write_conllu(tmp_path / "train.conll", pos_sentences(20, 0))
    test = write_conllu(tmp_path / "test.conll", pos_sentences(6, 1))
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.val_file={test}", f"--data.test_file={test}", *TINY,
                 f"--run.out={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert set(final_record(out)["per_tag"]) == POS_TAGS | {"ADV"}  # upos, not misc's "_"
    state = load_checkpoint(out).trainer_state["task"]
    words = set(state["words"])
    assert {"the", "dog", "does", "n't", "run"} <= words  # the forms ...
    assert not words & {"1", "2", "3-4", "5.1"}  # ... not the ids
    assert "doesn't" not in words  # a multiword token's range line is not a word


# ---- 3. rnnkit predict --input: the input's own format back ---------------------------------

@pytest.fixture(scope="module")
def conllu_run(tmp_path_factory):
    """A tiny run trained on CoNLL-U (data.column left empty: upos) and its tag set."""
    import contextlib
    import io

    base = tmp_path_factory.mktemp("conllu_run")
    train = write_conllu(base / "train.conllu", pos_sentences(20, 0))
    out = base / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--data.task=tag", f"--data.train_file={train}",
                     f"--data.val_file={train}", *TINY, f"--run.out={out}"]) == 0
    return out, POS_TAGS | {"ADV"}


def test_predict_conllu_keeps_every_line_but_the_tags(conllu_run, tmp_path, capsys):
    run, tagset = conllu_run
    source = tmp_path / "test.conllu"
    write_conllu(source, pos_sentences(5, 3))
    target = tmp_path / "out.conllu"
    assert main(["predict", "--run", str(run), "--input", str(source),
                 "--output", str(target)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "error" not in captured.err
    assert "tagged 6 sentences" in captured.out
    before = source.read_text().split("\n")
    after = target.read_text().split("\n")
    assert len(after) == len(before)
    words = 0
    for old, new in zip(before, after, strict=True):
        fields = old.split("\t")
        if len(fields) == 10 and fields[0].isdigit():  # a word: only upos may differ
            new_fields = new.split("\t")
            assert len(new_fields) == 10
            assert new_fields[3] in tagset
            assert new_fields[:3] + new_fields[4:] == fields[:3] + fields[4:]
            words += 1
        else:  # comments, the 3-4 range, the 5.1 empty node, blank lines
            assert new == old
    assert words == 5 + sum(len(s) for s in pos_sentences(5, 3))
    for kept in ("# text = the dog doesn't run", SPECIAL[4], SPECIAL[-1]):
        assert kept in after


def test_predict_conll_two_columns_and_words_alone(conllu_run, tmp_path, capsys):
    run, tagset = conllu_run
    sentences = pos_sentences(3, 4)
    two = write_conll(tmp_path / "test.conll", sentences)
    target = tmp_path / "out.conll"
    assert main(["predict", "--run", str(run), "--input", two, "--output", str(target)]) == 0
    capsys.readouterr()
    blocks = target.read_text().rstrip("\n").split("\n\n")
    assert len(blocks) == len(sentences)
    for block, s in zip(blocks, sentences, strict=True):
        rows = [line.split() for line in block.split("\n")]
        assert [r[0] for r in rows] == [w for w, _ in s]
        assert all(len(r) == 2 and r[1] in tagset for r in rows)

    # words alone: a tag column is added; without --output it goes to standard output
    alone = tmp_path / "words.txt"
    alone.write_text("\n\n".join("\n".join(w for w, _ in s) for s in sentences) + "\n")
    assert main(["predict", "--run", str(run), "--input", str(alone)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    blocks = captured.out.rstrip("\n").split("\n\n")
    assert len(blocks) == len(sentences)
    for block, s in zip(blocks, sentences, strict=True):
        rows = [line.split() for line in block.split("\n")]
        assert [r[0] for r in rows] == [w for w, _ in s]
        assert all(len(r) == 2 and r[1] in tagset for r in rows)


def test_predict_output_onto_a_directory_is_one_line(conllu_run, tmp_path, capsys):
    run, _ = conllu_run
    source = write_conll(tmp_path / "test.conll", pos_sentences(2, 5))
    (tmp_path / "out").mkdir()
    assert main(["predict", "--run", str(run), "--input", source,
                 "--output", str(tmp_path / "out")]) == 1
    one_error(capsys.readouterr().err, "out")


def test_predict_needs_sentences_or_an_input_file(conllu_run, capsys):
    run, _ = conllu_run
    assert main(["predict", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--input" in lines[0]


# ---- 4. bad data: one line, before any training ---------------------------------------------

def train_fails(tmp_path, capsys, *flags) -> tuple[int, str]:
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", *flags, *TINY, f"--run.out={out}"])
    err = capsys.readouterr().err
    assert not (out / "checkpoints").exists()
    return code, err


def test_conll_line_with_a_wrong_number_of_columns(tmp_path, capsys):
    train = tmp_path / "train.conll"
    train.write_text("the DET\ncat NOUN\nsleeps VERB\n\na DET\ncat NOUN extra\nruns VERB\n")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}")
    assert code == 1
    one_error(err, "train.conll:6:", "expected 2 space-separated columns")


def test_empty_training_file(tmp_path, capsys):
    train = tmp_path / "train.conll"
    train.write_text("")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}")
    assert code == 1
    one_error(err, "train.conll", "no sentences")


def test_conllu_without_the_chosen_column(tmp_path, capsys):
    train = write_conllu(tmp_path / "train.conllu", pos_sentences(6, 0), special=False,
                         xpos=False)
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}",
                            "--data.column=xpos")
    assert code == 1
    one_error(err, "train.conllu:3:", "xpos", "--data.column")


def test_conllu_line_with_nine_fields(tmp_path, capsys):
    lines = conllu_lines(pos_sentences(4, 0), special=False)
    number = 11  # 1-based: the second word of the second sentence
    assert lines[number - 1].startswith("2\t")
    lines[number - 1] = "\t".join(lines[number - 1].split("\t")[:9])
    train = tmp_path / "train.conllu"
    train.write_text("\n".join(lines) + "\n")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}")
    assert code == 1
    one_error(err, f"train.conllu:{number}:", "10", "got 9")


def test_forced_bio_scheme_on_pos_tags(tmp_path, capsys):
    train = tmp_path / "train.conll"
    train.write_text("the O\ncat B-X\n\na O\nbig ADJ\ndog B-X\n\nthe O\ndog B-X\n")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}",
                            "--data.tag_scheme=bio")
    assert code == 1
    one_error(err, "train.conll:5:", "'ADJ'", "data.tag_scheme")


def test_named_column_on_a_conll_file_is_a_config_error(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", pos_sentences(6, 0))
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}",
                            "--data.column=upos")
    assert code == 2
    one_error(err, "data.column", "train.conll")


def test_unknown_column_is_refused_at_parse_time(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", pos_sentences(6, 0))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--data.task=tag", f"--data.train_file={train}", "--data.column=bogus",
              *TINY, f"--run.out={out}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--data.column" in lines[0] and "bogus" in lines[0]
    assert not out.exists()


def test_a_directory_as_training_file_is_one_line(tmp_path, capsys):
    (tmp_path / "train.conll").mkdir()
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={tmp_path / 'train.conll'}")
    assert code == 1
    one_error(err, "train.conll", "is a directory")


def test_a_test_tag_outside_the_scheme_auto_chose(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", NER * 3)
    test = tmp_path / "test.conll"
    test.write_text("john S-PER\nruns VERB\n")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}",
                            f"--data.test_file={test}")
    assert code == 1
    one_error(err, "test.conll:2:", "'VERB'", "data.tag_scheme")


def test_a_scheme_error_under_auto_says_auto_chose_it(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", NER * 3)
    test = tmp_path / "test.conll"
    test.write_text("john S-PER\nruns VERB\n")
    code, err = train_fails(tmp_path, capsys, f"--data.train_file={train}",
                            f"--data.test_file={test}")
    assert code == 1
    line = one_error(err, "test.conll:2:")
    assert "data.tag_scheme=auto" in line
    assert "or auto" not in line


# ---- 5. a test tag never seen in training ---------------------------------------------------

def test_unseen_test_tag_is_one_warning(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", pos_sentences(20, 0))
    test_sentences = pos_sentences(4, 1) + [[("wow", "INTJ")], [("oh", "INTJ"), ("no", "INTJ")]]
    test = write_conll(tmp_path / "test.conll", test_sentences)
    words = sum(len(s) for s in test_sentences)
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.val_file={train}", f"--data.test_file={test}", *TINY,
                 f"--run.out={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    warnings = [line for line in captured.err.splitlines()
                if line.startswith("rnnkit: warning:")]
    assert len(warnings) == 1, captured.err
    assert "test.conll" in warnings[0] and f"3 of {words} words" in warnings[0]
    assert "INTJ" in warnings[0]
    record = final_record(out)
    assert record["accuracy"] <= 100.0 * (words - 3) / words
    assert record["per_tag"]["INTJ"]["recall"] == 0.0


# ---- 6. BIOES chunk tags ---------------------------------------------------------------------

NER = [
    [("john", "S-PER"), ("lives", "O"), ("in", "O"), ("paris", "S-LOC")],
    [("mary", "B-PER"), ("smith", "E-PER"), ("visits", "O"), ("new", "B-LOC"), ("york", "E-LOC")],
    [("anna", "S-PER"), ("likes", "O"), ("new", "B-LOC"), ("york", "I-LOC"), ("city", "E-LOC")],
    [("we", "O"), ("met", "O"), ("john", "B-PER"), ("smith", "E-PER"), ("in", "O"),
     ("rome", "S-LOC")],
]


def test_bioes_tags_are_scored_by_chunks(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", NER * 4)
    test = write_conll(tmp_path / "test.conll", NER)
    out = tmp_path / "run"
    code = main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.test_file={test}", "--model.head=crf", *TINY, f"--run.out={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tag scheme bioes (data.tag_scheme=auto" in captured.out
    record = final_record(out)
    assert {"f1", "precision", "recall", "accuracy", "per_tag"} <= set(record)
    assert set(record["per_tag"]) == {"PER", "LOC"}
    assert set(table_rows(captured.out, "chunk")) == {"PER", "LOC"}
