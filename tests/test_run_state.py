"""A saved run keeps its meaning: evaluate and --resume take the vocabularies and tag sets saved
with the run, never rebuild them from today's files, and say when a data file has changed."""

import json
import random

import torch
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.training.checkpoint import load_checkpoint

TINY = ["--data.batch_size=4", "--model.hidden_size=8", "--model.embedding_size=8",
        "--train.max_steps=6", "--train.eval_every=3", "--run.checkpoint_every=3",
        "--run.progress=false", "--run.plots=false"]

WORDS = {"DET": ["the", "a", "every", "this"], "ADJ": ["big", "small", "red", "old", "new"],
         "NOUN": ["dog", "cat", "bird", "man", "tree", "car"],
         "VERB": ["runs", "sleeps", "sees", "eats", "likes"]}
PATTERNS = [("DET", "ADJ", "NOUN", "VERB"), ("DET", "NOUN", "VERB", "DET", "NOUN"),
            ("DET", "NOUN", "VERB")]


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["\n".join(f"{rng.choice(WORDS[t])} {t}" for t in PATTERNS[i % 3]) for i in range(n)]


def write(path, blocks) -> str:
    path.write_text("\n\n".join(blocks) + "\n")
    return str(path)


def train(tmp_path, *extra):
    train_file = write(tmp_path / "train.conll", sentences(30, 0))
    test_file = write(tmp_path / "test.conll", sentences(9, 1))
    out = tmp_path / "run"
    assert main(["train", "--data.task=tag", f"--data.train_file={train_file}",
                 f"--data.test_file={test_file}", *TINY, f"--run.out={out}", *extra]) == 0
    return out, tmp_path / "train.conll"


def evaluate(out, capsys) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def saved_words(out) -> list[str]:
    """The word list saved with the run's latest checkpoint."""
    return load_checkpoint(out).trainer_state["task"]["words"]


def test_evaluate_after_the_training_file_is_reordered_gives_the_same_scores(tmp_path, capsys):
    out, train_file = train(tmp_path)
    before, err = evaluate(out, capsys)
    assert "rnnkit: warning" not in err
    blocks = train_file.read_text().strip().split("\n\n")
    write(train_file, blocks[::-1])  # the same sentences, another order: other word ids
    after, err = evaluate(out, capsys)
    assert after == before
    warnings = [line for line in err.splitlines() if line.startswith("rnnkit: warning:")]
    assert len(warnings) == 1 and "data.train_file" in warnings[0]
    assert "train.conll changed since this run was trained (the same" in warnings[0]


def test_resume_after_the_training_file_is_reordered_trains_the_same(tmp_path, capsys):
    """Straight to step 6, or to step 3, the training file reordered, resumed to 6: the same
    vocabulary, the same validation split and batches, the same weights, bit for bit."""
    (tmp_path / "straight").mkdir()
    (tmp_path / "split").mkdir()
    straight, _ = train(tmp_path / "straight")
    out, train_file = train(tmp_path / "split", "--train.max_steps=3")
    words = saved_words(out)
    blocks = train_file.read_text().strip().split("\n\n")
    write(train_file, blocks[::-1])
    capsys.readouterr()
    assert main(["train", "--resume", f"--run.out={out}", "--train.max_steps=6"]) == 0
    err = capsys.readouterr().err
    assert "data.train_file" in err and "changed since this run was trained" in err
    assert load_checkpoint(out).step == 6
    assert saved_words(out) == words  # the embeddings stay with their words
    a, b = load_checkpoint(straight), load_checkpoint(out)
    assert a.step == b.step == 6
    ours = load_file(b.directory / "model.safetensors")
    for key, value in load_file(a.directory / "model.safetensors").items():
        assert torch.equal(value, ours[key]), key


def test_evaluate_val_after_reordering_gives_the_same_scores(tmp_path, capsys):
    out, train_file = train(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split=val", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    write(train_file, train_file.read_text().strip().split("\n\n")[::-1])
    assert main(["evaluate", str(out), "--split=val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == before


def test_evaluate_refuses_a_tag_the_run_never_had(tmp_path, capsys):
    out, _ = train(tmp_path)
    (tmp_path / "test.conll").write_text("the DET\nwow INTJ\n")
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "test.conll:2: tag 'INTJ'" in err and "trained with" in err
