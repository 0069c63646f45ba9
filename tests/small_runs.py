"""Tiny runs trained by the CLI for the tests that load, export or stream a run: a few steps
of a small model, quiet, and the small text files the classify and text tasks read."""

from rnnkit.cli import main

QUIET = ["--run.progress=false", "--run.plots=false", "--train.eval_every=1000"]
SMALL = ["--model.hidden_size=8", "--model.embedding_size=8", "--train.max_steps=3",
         "--data.batch_size=8"]


def train(out, *flags):
    """``rnnkit train`` with ``flags`` (after the small defaults, so they override them) into
    ``out``; returns ``out``."""
    assert main(["train", *SMALL, *flags, *QUIET, f"--run.out={out}"]) == 0
    return out


def text_files(root):
    """``(texts.tsv, lines.txt)`` in ``root``: labelled texts for the classify task, lines of
    words for the text (language model) task."""
    texts = root / "texts.tsv"
    texts.write_text("".join(f"{'pos' if n % 2 else 'neg'}\t{'good fine' if n % 2 else 'bad'} "
                             f"film {n}\n" for n in range(40)), encoding="utf-8")
    lines = root / "lines.txt"
    lines.write_text("a b c d\n" * 60, encoding="utf-8")
    return texts, lines
