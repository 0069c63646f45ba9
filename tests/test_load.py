"""``rnnkit.load(run_dir)``: a run trained by the CLI as a Python object, for every task that
``rnnkit predict``/``generate`` serve (tagging, text and series classification, sequence to
sequence, language model), with the CLI's own answers; and a clear error for a missing,
partial or corrupt run."""

import pytest
import torch
from small_runs import text_files, train

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import CheckpointError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    texts, lines = text_files(root)
    return {
        "atis": train(root / "atis", "--data.task=atis", "--model.intent"),
        "classify": train(root / "classify", "--data.task=classify", f"--data.train_file={texts}"),
        "vowels": train(root / "vowels", "--data.task=vowels"),
        "text": train(root / "text", "--data.task=text", f"--data.train_file={lines}",
                      "--data.seq_len=8"),
        "adding": train(root / "adding", "--data.task=adding", "--data.seq_len=10",
                        "--data.train_size=32", "--data.val_size=8", "--data.test_size=8",
                        "--data.batch_size=8", "--model.hidden_size=4", "--train.max_steps=2"),
    }


def test_a_tagger_predicts_what_rnnkit_predict_prints(runs, capsys):
    model = rnnkit.load(runs["atis"])
    assert isinstance(model, torch.nn.Module) and model.kind == "tagging"
    assert not model.network.training and model.config.data.task == "atis"
    assert {"words", "tags", "intents"} <= set(model.vocabularies)
    assert model.vocabularies["tags"][:1] and "O" in model.vocabularies["tags"]
    text = "show me flights from boston to denver"
    tagged, intent = model.predict(text)
    assert [w for w, _ in tagged] == text.split()
    assert all(tag in model.vocabularies["tags"] for _, tag in tagged)
    capsys.readouterr()
    assert main(["predict", "--run", str(runs["atis"]), text]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [x for w, t in tagged for x in (w, t)] + ["intent", intent]
    both = model.predict([text, "leave boston"])
    assert both[0] == (tagged, intent) and [w for w, _ in both[1][0]] == ["leave", "boston"]


def test_classifiers_predict_texts_and_series(runs, capsys):
    model = rnnkit.load(runs["classify"])
    assert model.kind == "text classification" and model.vocabularies["labels"] == ["neg", "pos"]
    label, probs = model.predict("good fine film")
    assert label in ("neg", "pos") and sum(probs.values()) == pytest.approx(1.0)
    capsys.readouterr()
    assert main(["predict", "--run", str(runs["classify"]), "good fine film"]) == 0
    assert capsys.readouterr().out.startswith(f"{label}  (p={probs[label]:.3f})")

    series = rnnkit.load(runs["vowels"])
    assert series.kind == "series classification"
    x = torch.randn(15, 12)
    label, probs = series.predict(x)
    assert label in series.vocabularies["labels"] and len(probs) == 9
    batch_label, batch_probs = series.predict([x, torch.randn(7, 12)])[0]  # padded with another
    assert batch_label == label and batch_probs == pytest.approx(probs, abs=1e-6)
    with pytest.raises(ValueError, match=r"x\[0\]: expected a float tensor \(T, 12\)"):
        series.predict([torch.randn(15, 3)])


def test_a_language_model_generates_as_rnnkit_generate(runs, capsys):
    model = rnnkit.load(runs["text"])
    assert model.kind == "language model" and "<unk>" in model.vocabularies["vocab"]
    text = model.predict("a b", length=6, temperature=0)
    capsys.readouterr()
    assert main(["generate", "a b", "--run", str(runs["text"]), "--greedy", "--length", "6"]) == 0
    assert capsys.readouterr().out == "a b" + text + "\n"
    assert model.predict("a b", length=5, seed=3) == model.predict("a b", length=5, seed=3)
    with pytest.raises(TypeError, match="expected a priming text"):
        model.predict(3)


def test_a_sequence_to_sequence_run_decodes_text(tmp_path, monkeypatch):
    from test_seq2seq import ReverseTask, reverse_config

    from rnnkit.run import run_train
    from rnnkit.tasks import TASKS

    monkeypatch.setitem(TASKS, "reverse", ReverseTask)
    cfg = reverse_config(tmp_path / "run")
    cfg.data.task, cfg.train.max_steps = "reverse", 3
    run_train(cfg, print_fn=lambda _line: None)
    model = rnnkit.load(tmp_path / "run")
    assert model.kind == "sequence to sequence"
    assert {"source", "target"} <= set(model.vocabularies)
    out = model.predict("f a d e")
    assert out == model.task.translate_text(model.network, list("fade"))
    assert model.predict(["f a d e", "b a"])[0] == out


def test_the_network_is_the_module_and_other_tasks_say_predict_is_not_theirs(runs):
    model = rnnkit.load(runs["adding"], checkpoint="latest")
    assert model.kind == "other"
    x = torch.rand(2, 10, 2)
    torch.testing.assert_close(model(x)[0], model.network(x)[0])
    with pytest.raises(TypeError, match="'adding' run has no predict"):
        model.predict(x)
    with pytest.raises(TypeError, match="options .* are for a language model"):
        rnnkit.load(runs["atis"]).predict("a b", length=3)


def test_missing_partial_and_corrupt_runs_are_named(runs, tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory"):
        rnnkit.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        rnnkit.load(tmp_path / "empty")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs["atis"], broken)
    for weights in (broken / "checkpoints").rglob("model.safetensors"):
        weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        rnnkit.load(broken)
    with pytest.raises(ValueError, match="checkpoint: expected 'best' or 'latest'"):
        rnnkit.load(runs["atis"], checkpoint="first")
    with pytest.raises(ValueError, match="x: expected a text with at least one word"):
        rnnkit.load(runs["atis"]).predict("  ")
