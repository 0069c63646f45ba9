"""benchmarks/intent_errors.py: per-run intent errors, the majority vote, and the sentences
every run gets wrong."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from test_user_files import RUN, tagged_sentences, write_slots

from rnnkit.cli import main as rnnkit_main

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "intent_errors.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(SCRIPT.stem, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_summary_counts_each_run_the_vote_and_the_errors_no_run_fixes(script):
    a, b, c, d, x, y = (frozenset([name]) for name in "abcdxy")
    gold = [a, b, c, d]
    runs = [[a, x, c, y], [a, b, y, y], [x, x, c, y]]
    s = script.summarize(gold, runs)
    assert s["errors"] == [2, 2, 3]
    assert s["vote_predictions"] == [a, x, c, y]  # 2 of 3 votes each
    assert s["vote"] == 2 and s["wrong_in_all"] == [3]
    tie = script.summarize([a], [[x], [y], [a]])
    assert tie["vote_predictions"] == [x]  # one vote each: the earliest run's set


def test_summary_rejects_runs_of_another_length(script):
    with pytest.raises(ValueError, match="runs: expected at least one run with 2 predictions"):
        script.summarize([frozenset("a")] * 2, [[frozenset("a")]])


def test_script_reads_saved_runs(tmp_path, capsys, script):
    train = write_slots(tmp_path / "train.slots", tagged_sentences(300, 0))
    test = write_slots(tmp_path / "test.slots", tagged_sentences(40, 2))
    out = tmp_path / "run"
    assert rnnkit_main(["train", "--data.task=tag", f"--data.train_file={train}",
                        f"--data.test_file={test}", "--model.intent", "--train.max_steps=80",
                        *RUN, f"--run.out={out}"]) == 0
    capsys.readouterr()
    s = script.main([str(out), str(out)])
    assert s["errors"] == [0, 0] and s["vote"] == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{out}: 0 of 40 wrong (100.00%)", f"{out}: 0 of 40 wrong (100.00%)",
        "majority vote of 2 runs: 0 wrong (100.00%)", "wrong in every run: 0"]


def test_script_names_a_run_without_intents(tmp_path, capsys, script):
    train = write_slots(tmp_path / "train.slots", tagged_sentences(60, 0))
    out = tmp_path / "plain"
    assert rnnkit_main(["train", "--data.task=tag", f"--data.train_file={train}",
                        "--train.max_steps=2", *RUN, f"--run.out={out}"]) == 0
    with pytest.raises(SystemExit, match="plain: this run has no intent head"):
        script.main([str(out)])
    with pytest.raises(SystemExit, match="no checkpoint|not found|no such"):
        script.main([str(tmp_path / "missing")])


def test_script_names_a_missing_split(tmp_path, capsys, script):
    train = write_slots(tmp_path / "train.slots", tagged_sentences(60, 0))
    out = tmp_path / "run"
    assert rnnkit_main(["train", "--data.task=tag", f"--data.train_file={train}",
                        "--model.intent", "--train.max_steps=2", *RUN, f"--run.out={out}"]) == 0
    with pytest.raises(SystemExit, match="--split: .*run has no test split"):
        script.main([str(out)])
