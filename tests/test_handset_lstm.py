"""The course's hand-set one-cell LSTM (examples/handset_lstm.py) follows its rule."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent.parent / "examples" / "handset_lstm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("handset_lstm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outputs_follow_the_rule(example):
    x1 = [1, 3, 2, 4, 2, 1, 3, 6, 1]
    x2 = [0, 1, 0, 1, 0, 0, -1, 1, 0]
    x3 = [0, 0, 0, 0, 0, 1, 0, 0, 1]
    ys = example.run(x1, x2, x3)
    assert len(ys) == 9
    for y, expected in zip(ys, [0, 0, 0, 0, 0, 7, 0, 0, 6], strict=True):
        assert abs(y - expected) < 0.01


def test_the_memory_adds_resets_and_holds(example):
    cs, ys = example.trace([2, 5, 9, 4], [1, 1, -1, 0], [0, 1, 1, 0])
    assert [round(c, 2) for c in cs] == [2, 7, 0, 0]
    assert [round(y, 2) for y in ys] == [0, 7, 0, 0]


def test_the_cell_is_the_hand_set_one(example):
    cell = example.handset_lstm()
    assert (cell.input_size, cell.hidden_size) == (3, 1)
    assert cell.candidate_activation == cell.cell_activation == "identity"
    assert cell.native_mode() is None
    assert torch.count_nonzero(cell.weight_hh) == 0 and torch.count_nonzero(cell.bias_hh) == 0


def test_the_script_runs():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["t", "x1", "x2", "x3", "c_t", "y_t"]
    assert len(lines) == 10
    assert [float(line.split()[-1]) for line in lines[1:]] == [0, 0, 0, 0, 0, 7, 0, 0, 6]
