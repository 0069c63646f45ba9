"""The ATIS tagging task on the engine, and `rnnkit predict` from a saved run."""

import pytest

from rnnkit.cli import main
from rnnkit.config import Config
from rnnkit.tasks import make_task
from rnnkit.training import Trainer

SMALL = ["--data.task=atis", "--model.cell=gru", "--model.bidirectional",
         "--model.hidden_size=32", "--model.embedding_size=32", "--model.intent",
         "--train.lr=0.01", "--train.max_steps=80", "--train.eval_every=80",
         "--data.batch_size=32", "--run.progress=false", "--run.plots=false"]


@pytest.fixture(scope="module")
def atis_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("atis") / "run"
    assert main(["train", *SMALL, f"--run.out={out}"]) == 0
    return out


def test_atis_splits_and_vocabularies():
    cfg = Config()
    cfg.data.task = "atis"
    task = make_task(cfg)
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [4478, 500, 893]
    assert len(task.tags) == 130 and task.tags.token(task.tags.index("O")) == "O"
    assert task.sets["train"]["tokens"].shape[0] == 4478
    # the summary counts the intents of the data, not the vocabulary's <unk>
    cfg.model.intent = True
    task = make_task(cfg)
    n = len({i for s in task.splits["train"] for i in s.intent.split(";")})
    assert f", {n} intents" in task.describe()


def test_a_short_run_learns_the_slots(atis_run, capsys):
    assert main(["evaluate", str(atis_run), "--split=val", "--json"]) == 0
    import json

    metrics = json.loads(capsys.readouterr().out)
    assert metrics["f1"] > 60 and metrics["intent_accuracy"] > 70  # 80 steps of a small model


def test_predict_prints_every_word_with_its_slot(atis_run, capsys, monkeypatch):
    import rnnkit.data.atis as atis

    def no_data(**_):
        raise AssertionError("predict must not read the training data")

    monkeypatch.setattr(atis, "load_atis", no_data)
    assert main(["predict", "--run", str(atis_run), "leave boston for zzyzx",
                 "arrive in denver"]) == 0
    lines = capsys.readouterr().out.split("\n")
    words = [line.split()[0] for line in lines if line.strip()]
    assert words == ["leave", "boston", "for", "zzyzx", "intent", "arrive", "in", "denver",
                     "intent"]  # an unknown word still gets a tag


def test_predict_errors_are_one_line(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path / "none"), "hello"]) == 1
    assert "no checkpoint found" in capsys.readouterr().err


def test_tagging_refuses_truncated_bptt(tmp_path):
    cfg = Config()
    cfg.data.task, cfg.train.tbptt = "atis", 5
    with pytest.raises(ValueError, match="train.tbptt: a tagging task trains on whole"):
        Trainer(make_task(cfg), cfg)


def test_the_atis_demo_trains_scores_and_contrasts_then_resumes(tmp_path):
    from rnnkit.atis_demo import CONTRASTS, demo_config, run_atis_demo

    cfg = demo_config(str(tmp_path / "demo"))
    cfg.model.hidden_size, cfg.model.embedding_size = 16, 16
    cfg.train.max_steps, cfg.train.eval_every, cfg.run.checkpoint_every = 30, 30, 30
    lines = []
    summary = run_atis_demo(cfg, print_fn=lines.append, progress=False)
    text = "\n".join(lines)
    assert "ATIS test set (893 utterances): slot F1" in text
    tagged = [line.split() for line in lines if line.startswith("  ")]
    assert [[w.split("/")[0] for w in line] for line in tagged] == \
        [sentence.split() for pair in CONTRASTS for sentence in pair]
    assert summary["step"] == 30
    again = []
    assert run_atis_demo(cfg, print_fn=again.append, progress=False)["test"] == summary["test"]
    assert any("resumed" in line for line in again)


def test_demo_flags_of_the_adding_demo_are_refused_for_atis(capsys):
    assert main(["demo", "--cells", "all"]) == 2
    assert "rnnkit demo adding --cells" in capsys.readouterr().err


def test_chunk_f1_agrees_with_seqeval_on_atis_test_predictions(atis_run):
    """conlleval's chunk scores, as seqeval computes them (its default mode is conlleval's),
    on a short run's ATIS test predictions (softmax head: some I- tags start chunks)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    from rnnkit.metrics import chunk_f1
    from rnnkit.run import _load_run, _saved_model

    ckpt, cfg = _load_run(atis_run, "best")
    task = make_task(cfg)
    rows = task.predictions(_saved_model(task, ckpt, "cpu"), "test")
    gold, pred = [g for g, *_ in rows], [p for _, p, *_ in rows]
    assert gold != pred  # errors to score
    ours = chunk_f1(gold, pred)
    assert 60 < ours["f1"] < 100
    assert abs(ours["f1"] - 100 * f1_score(gold, pred)) < 0.01
    assert abs(ours["precision"] - 100 * precision_score(gold, pred)) < 0.01
    assert abs(ours["recall"] - 100 * recall_score(gold, pred)) < 0.01


def test_predict_input_rewrites_slot_lines(atis_run, tmp_path, capsys):
    """A file of ATIS-style lines comes back in its own format: every word with its predicted
    slot, and the predicted intent (the model has an intent head)."""
    source = tmp_path / "two.slots"
    source.write_text("i:O leave:O boston:O <=> atis_flight\n\nflights:O to:O denver:O\n")
    out = tmp_path / "tagged.slots"
    assert main(["predict", "--run", str(atis_run), "--input", str(source),
                 "--output", str(out)]) == 0
    assert "tagged 2 sentences" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    words = [[token.rpartition(":")[0] for token in line.split(" <=> ")[0].split()]
             for line in lines]
    assert words == [["i", "leave", "boston"], ["flights", "to", "denver"]]
    assert all(" <=> atis_" in line for line in lines)
