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
