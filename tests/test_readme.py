"""The README's Python snippets run, in order, in one namespace (as a reader pastes them into
one session): a snippet that stops working fails here. The one that loads ``runs/atis`` (what
``make demo`` trains) reads a short run of the demo's own configuration made here."""

import io
import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """``(line, code)`` of every fenced ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A 5-step run of the demo's configuration in <tmp>/runs/atis."""
    from rnnkit.atis_demo import demo_config
    from rnnkit.run import run_train

    root = tmp_path_factory.mktemp("readme")
    cfg = demo_config(str(root / "runs" / "atis"))
    cfg.train.max_steps, cfg.train.eval_every, cfg.run.checkpoint_every = 5, 5, 5
    cfg.run.progress = cfg.run.plots = False
    summary = run_train(cfg, print_fn=lambda _line: None, tables=False)
    return root, summary


def test_the_readme_has_python_snippets():
    assert len(python_blocks()) >= 5


def test_every_python_snippet_runs(demo_run, monkeypatch, capsys):
    monkeypatch.chdir(demo_run[0])
    namespace: dict = {"__name__": "readme"}
    for line, code in python_blocks():
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 (name the snippet, then fail)
            pytest.fail(f"the README snippet at line {line} failed: {type(e).__name__}: {e}")


def test_the_demo_prints_the_same_numbers_again(demo_run, tmp_path):
    """The demo's seed and thread count (2) fix its numbers: a second run of the same
    configuration scores the same, to the last bit."""
    from rnnkit.atis_demo import demo_config
    from rnnkit.run import run_train

    cfg = demo_config(str(tmp_path / "again"))
    assert cfg.train.threads == 2 and cfg.train.seed == 0
    cfg.train.max_steps, cfg.train.eval_every, cfg.run.checkpoint_every = 5, 5, 5
    cfg.run.progress = cfg.run.plots = False
    again = run_train(cfg, print_fn=lambda _line: None, tables=False)
    first = demo_run[1]
    assert (again["test"]["f1"], again["test"]["intent_accuracy"], again["best"]) == \
        (first["test"]["f1"], first["test"]["intent_accuracy"], first["best"])


# The README's cheap commands, verbatim, each run here with a few steps (the flags appended
# last override the line's own): a command the README shows that stops working fails here.
SMALL_DATA = ["--data.train_size=64", "--data.val_size=32", "--data.test_size=32",
              "--data.batch_size=16", "--run.progress=false", "--run.plots=false"]
COMMANDS = [
    ("rnnkit cells", []),
    ("rnnkit train --model.cell=lstm --train.lr=0.01 --train.max_steps=600 --run.out=runs/adding",
     [*SMALL_DATA, "--train.max_steps=3", "--train.eval_every=3"]),
    ("rnnkit evaluate runs/adding", []),
    ("rnnkit train --run.out=runs/adding --resume --train.max_steps=1000",
     [*SMALL_DATA, "--train.max_steps=5"]),
    ("rnnkit train --config examples/copy.toml --model.cell=lstm",
     [*SMALL_DATA, "--train.max_steps=2", "--train.eval_every=2", "--run.checkpoint_every=2"]),
    ("rnnkit diagnose --cell elman", ["--steps=3", "--every=1", "--seq-len=5",
                                      "--no-progress"]),
    ("rnnkit train --data.task=atis --model.intent --model.char_filters=32 "
     "--train.max_steps=1500 --run.out=runs/atis-stream",
     ["--train.max_steps=3", "--train.eval_every=3", "--run.progress=false",
      "--run.plots=false"]),
    ("rnnkit export runs/atis-stream --format pt2", []),
    ("rnnkit export runs/atis-stream --format onnx", []),
]


def readme_commands() -> set[str]:
    """The README's shell lines (comments cut, continuation lines joined)."""
    text = README.read_text(encoding="utf-8")
    lines = set()
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            lines.add(re.sub(r"\s+", " ", line))
    return lines


def test_the_readmes_cheap_commands_run(tmp_path, monkeypatch, capsys):
    import shlex
    import shutil

    from rnnkit.cli import main

    shown = readme_commands()
    shutil.copytree(README.parent / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    for line, small in COMMANDS:
        assert line in shown, f"the README no longer shows {line!r}"
        assert main([*shlex.split(line)[1:], *small]) == 0, line
    out = capsys.readouterr().out
    assert "resumed runs/adding at step 3" in out and "g_0 / g_" in out
    # the streaming line: `printf '...' | rnnkit predict --stream ...`, stdin as printf writes it
    (piped,) = [line for line in shown if "predict --stream" in line]
    left, right = piped.split(" | ")
    typed = shlex.split(left)[1].replace("\\n", "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert main(shlex.split(right)[1:]) == 0, piped
    words = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert [w.split("\t")[0] for w in words] == typed.splitlines()[0].split() + ["intent"]
