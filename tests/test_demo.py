"""Tests for rnnkit.demo (tiny runs only; the full demo takes minutes)."""

import math

import pytest
import torch

from rnnkit.cells import cell_names
from rnnkit.demo import KEYS, _make_rnn, run_demo, verdict


@pytest.mark.parametrize("cell", cell_names())
def test_every_registered_cell_trains_in_the_demo(cell):
    layer = _make_rnn(cell, 8)
    output, _state = layer(torch.zeros(3, 5, 2))  # (n, T, input=2), batch first
    assert output.shape == (3, 5, layer.output_size)
    rows = run_demo(cells=(cell,), lengths=(4,), hidden_size=8, steps=2, test_size=10,
                    threads=None, progress=False, print_fn=lambda line: None)
    assert math.isfinite(rows[0]["test_mse"])


def test_make_rnn_rejects_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell name 'transformer'"):
        _make_rnn("transformer", 8)


def test_verdict_thresholds():
    assert verdict(0.001, 1 / 6) == "solved"
    assert verdict(0.05, 1 / 6) == "learned some"
    assert verdict(0.16, 1 / 6) == "no better than the mean"
    assert verdict(float("nan"), 1 / 6) == "diverged"


def test_tiny_run_returns_rows():
    lines = []
    rows = run_demo(
        cells=("gru",), lengths=(10,), hidden_size=8, steps=5, seconds=2.0, seed=0,
        test_size=20_000, threads=None, progress=False, print_fn=lines.append,
    )
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == set(KEYS)
    assert (row["T"], row["cell"]) == (10, "gru")
    assert 1 <= row["steps"] <= 5
    assert row["steps"] == 5 or row["capped"]
    for key in ("train_seconds", "train_loss", "test_mse", "baseline_mse"):
        assert math.isfinite(row[key])
    assert abs(row["baseline_mse"] - 1 / 6) < 0.01  # 20,000 draws: std error ≈ 0.0014
    assert isinstance(row["verdict"], str)
    assert any("test MSE" in line for line in lines)  # header printed
    assert any("gru" in line for line in lines)  # row printed


def test_thread_count_is_restored():
    before = torch.get_num_threads()
    run_demo(
        cells=("lstm",), lengths=(4,), hidden_size=2, steps=1, test_size=10, threads=2,
        progress=False, print_fn=lambda line: None,
    )
    assert torch.get_num_threads() == before


def test_run_is_repeatable():
    kwargs = dict(
        cells=("elman",), lengths=(6,), hidden_size=4, steps=3, seconds=5.0, seed=3,
        test_size=50, threads=None, progress=False, print_fn=lambda line: None,
    )
    a, b = run_demo(**kwargs)[0], run_demo(**kwargs)[0]
    assert a["test_mse"] == b["test_mse"]
    assert a["baseline_mse"] == b["baseline_mse"]


def test_bad_arguments():
    quiet = dict(progress=False, print_fn=lambda line: None)
    with pytest.raises(ValueError, match="unknown cell name .nope."):
        run_demo(cells=("nope",), lengths=(10,), **quiet)
    with pytest.raises(ValueError, match="lengths must be integers >= 2"):
        run_demo(cells=("gru",), lengths=(1,), **quiet)
