"""Your own files through `rnnkit train`: tagging (CoNLL, slots lines) and classification
(TSV, CSV), then evaluate and predict from the saved run."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rnnkit.cli import main
from rnnkit.config import Config
from rnnkit.tasks import make_task

CITIES = ["boston", "denver", "dallas", "seattle", "atlanta", "miami"]
RUN = ["--model.hidden_size=16", "--model.embedding_size=16", "--model.bidirectional",
       "--train.lr=0.02", "--train.eval_every=40", "--data.batch_size=16",
       "--run.progress=false"]


def tagged_sentences(n: int, seed: int):
    """'leave X' / 'arrive in X' sentences: the same city is B-from or B-to by its context."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city = rng.choice(CITIES)
        if rng.random() < 0.5:
            out.append(([("i", "O"), ("leave", "O"), (city, "B-from")], "depart"))
        else:
            out.append(([("please", "O"), ("arrive", "O"), ("in", "O"), (city, "B-to")],
                        "arrive"))
    return out


def write_conll(path, sentences):
    path.write_text("\n\n".join("\n".join(f"{w} X {t}" for w, t in words)
                                for words, _ in sentences) + "\n")
    return path


def write_slots(path, sentences):
    path.write_text("".join(" ".join(f"{w}:{t}" for w, t in words) + f" <=> {intent}\n"
                            for words, intent in sentences))
    return path


def labelled_texts(n: int, seed: int):
    rng = random.Random(seed)
    good, bad = ["great", "superb", "lovely"], ["awful", "boring", "bad"]
    out = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        word = rng.choice(good if label == "pos" else bad)
        out.append((label, f"the film was {word}, {rng.choice(CITIES)} loved it"))
    return out


def test_tagging_from_conll_files_learns_the_context(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", tagged_sentences(300, 0))
    test = write_conll(tmp_path / "test.conll", tagged_sentences(60, 1))
    out = tmp_path / "run"
    assert main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.test_file={test}", "--train.max_steps=120", *RUN,
                 f"--run.out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "270 train, 30 val, 60 test" in printed  # a fixed 10% of train held out
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == 100.0
    assert main(["predict", "--run", str(out), "i leave denver", "please arrive in denver",
                 "i leave zzyzx"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert ["denver", "B-from"] in lines and ["denver", "B-to"] in lines
    assert lines[-1][0] == "zzyzx"  # an unknown word still gets a tag


def test_tagging_from_slots_lines_with_intents(tmp_path, capsys):
    train = write_slots(tmp_path / "train.slots", tagged_sentences(300, 0))
    val = write_slots(tmp_path / "val.slots", tagged_sentences(40, 2))
    out = tmp_path / "run"
    assert main(["train", "--data.task=tag", f"--data.train_file={train}",
                 f"--data.val_file={val}", "--model.intent", "--model.head=crf",
                 "--train.max_steps=80", *RUN, f"--run.out={out}"]) == 0
    assert "no test split" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--split=val", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["f1"] == 100.0 and result["intent_accuracy"] == 100.0
    assert (out / "errors-val.txt").read_text() == (
        "# tagging, val: 40 sentences, 0 with wrong intents, 0 with a wrong tag\n")
    assert main(["evaluate", str(out), "--split=test"]) == 2
    assert "no test split" in capsys.readouterr().err
    assert main(["predict", "--run", str(out), "please arrive in miami"]) == 0
    assert capsys.readouterr().out.split("\n")[-3].split() == ["intent", "arrive"]


class FixedTagger(torch.nn.Module):
    """A stand-in model whose ``predict`` returns the given tag paths and intent lists."""

    def __init__(self, paths, intents):
        super().__init__()
        self.device_anchor = torch.nn.Parameter(torch.zeros(1))
        self.paths, self.intents = paths, intents

    def predict(self, tokens, lengths, chars=None):
        return self.paths[:len(lengths)], self.intents[:len(lengths)]


def test_the_errors_file_names_every_wrong_intent_and_tag(tmp_path):
    leave = ([("i", "O"), ("leave", "O"), ("boston", "B-from")], "depart")
    both = ([("please", "O"), ("arrive", "O"), ("in", "O"), ("denver", "B-to")],
            "arrive;depart")
    unseen = ([("i", "O"), ("leave", "O"), ("zzz", "B-from")], "unseen")
    cfg = Config()
    cfg.data.task, cfg.model.intent = "tag", True
    cfg.data.train_file = str(write_slots(tmp_path / "train.slots", [leave, both] * 5))
    cfg.data.test_file = str(write_slots(tmp_path / "test.slots", [leave, both, unseen]))
    task = make_task(cfg)
    tag, intent = task.tags.index, task.intents.index
    model = FixedTagger(  # right; a wrong city tag and one intent of two; a wrong intent
        [[tag("O"), tag("O"), tag("B-from")], [tag("O")] * 3 + [tag("B-from")],
         [tag("O"), tag("O"), tag("B-from")]],
        [[intent("depart")], [intent("arrive")], [intent("depart")]])
    assert task.evaluate(model, "test")["intent_accuracy"] == pytest.approx(100 / 3)
    [path] = task.report(model, "test", tmp_path)
    assert path == tmp_path / "errors-test.txt"
    assert path.read_text().splitlines() == [
        "# tagging, test: 3 sentences, 2 with wrong intents, 1 with a wrong tag",
        "",
        "## wrong intents: gold -> predicted | sentence",
        "arrive;depart -> arrive | please arrive in denver",
        "unseen -> depart | i leave zzz",  # an intent training never had keeps its name
        "",
        "## wrong tags: word[gold -> predicted] where they differ",
        "please arrive in denver[B-to -> B-from]",
    ]


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
def test_classification_from_label_text_files(tmp_path, capsys, suffix):
    sep = "\t" if suffix == ".tsv" else ","
    rows = labelled_texts(300, 0)
    train = tmp_path / f"train{suffix}"
    train.write_text(f"label{sep}text\n" + "".join(
        f'{label}{sep}"{text}"\n' if sep == "," else f"{label}{sep}{text}\n"
        for label, text in rows))
    test = tmp_path / f"test{suffix}"
    test.write_text("".join(f'{label}{sep}"{text}"\n' if sep == "," else f"{label}{sep}{text}\n"
                            for label, text in labelled_texts(50, 1)))
    out = tmp_path / "run"
    assert main(["train", "--data.task=classify", f"--data.train_file={train}",
                 f"--data.test_file={test}", "--model.pooling=attention",
                 "--train.max_steps=60", *RUN, f"--run.out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "test: accuracy 100" in printed and "confusion-test.png" in printed
    assert (out / "confusion-test.png").stat().st_size > 1000
    assert main(["predict", "--run", str(out), "it was superb", "so boring"]) == 0
    labels = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["pos", "neg"]


def test_file_errors_name_the_field_and_file(tmp_path, capsys):
    assert main(["train", "--data.task=classify", f"--run.out={tmp_path / 'a'}",
                 "--run.progress=false"]) == 2
    assert "data.train_file" in capsys.readouterr().err
    odd = tmp_path / "train.xyz"
    odd.write_text("a\tb\n")
    assert main(["train", "--data.task=classify", f"--data.train_file={odd}",
                 f"--run.out={tmp_path / 'b'}", "--run.progress=false"]) == 2
    err = capsys.readouterr().err
    assert "data.format" in err and "train.xyz" in err
    bad = tmp_path / "train.tsv"
    bad.write_text("pos\tfine text\nno tab on this line\n")
    assert main(["train", "--data.task=classify", f"--data.train_file={bad}",
                 f"--run.out={tmp_path / 'c'}", "--run.progress=false"]) == 1
    assert "train.tsv:2" in capsys.readouterr().err
    conll = write_conll(tmp_path / "t.conll", tagged_sentences(10, 0))
    assert main(["train", "--data.task=tag", f"--data.train_file={conll}", "--model.intent",
                 f"--run.out={tmp_path / 'd'}", "--run.progress=false"]) == 2
    assert "model.intent" in capsys.readouterr().err
    empty = tmp_path / "empty.conll"
    empty.write_text("")
    assert main(["train", "--data.task=tag", f"--data.train_file={empty}",
                 f"--run.out={tmp_path / 'e'}", "--run.progress=false"]) == 1
    assert "empty.conll" in capsys.readouterr().err


def test_tag_set_is_every_files_tags(tmp_path):
    train = write_conll(tmp_path / "train.conll", tagged_sentences(20, 0)[:1] * 20)
    test = tmp_path / "test.conll"
    test.write_text("fly X O\nto X O\nrome X B-dest\n")
    cfg = Config()
    cfg.data.task, cfg.data.train_file, cfg.data.test_file = "tag", str(train), str(test)
    task = make_task(cfg)
    assert "B-dest" in task.tags.to_list() and task.tags.to_list()[0] == "O"
