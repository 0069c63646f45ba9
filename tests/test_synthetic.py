"""Tests for rnnkit.data.synthetic.adding_problem."""

import pytest
import torch

from rnnkit.data.synthetic import adding_problem


@pytest.mark.parametrize("n, T", [(1, 2), (5, 3), (64, 50), (7, 151)])
def test_shapes_and_dtype(n, T):
    x, y = adding_problem(n, T, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, T, 2)
    assert y.shape == (n,)
    assert x.dtype == y.dtype == torch.float32


def test_dtype_argument():
    x, y = adding_problem(3, 10, dtype=torch.float64)
    assert x.dtype == y.dtype == torch.float64


@pytest.mark.parametrize("T", [2, 3, 10, 51])
def test_two_markers_one_in_each_half(T):
    x, _ = adding_problem(500, T, generator=torch.Generator().manual_seed(1))
    markers = x[..., 1]  # (n, T)
    half = T // 2
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(markers[:, :half].sum(dim=1) == 1)
    assert torch.all(markers[:, half:].sum(dim=1) == 1)


def test_values_in_unit_interval():
    x, _ = adding_problem(200, 30, generator=torch.Generator().manual_seed(2))
    values = x[..., 0]
    assert torch.all((values >= 0) & (values < 1))


def test_target_is_marked_sum():
    x, y = adding_problem(300, 40, generator=torch.Generator().manual_seed(3))
    expected = (x[..., 0] * x[..., 1]).sum(dim=1)
    torch.testing.assert_close(y, expected)


def test_marker_positions_cover_both_halves():
    # Positions are uniform within each half: with many rows every slot gets used.
    T = 10
    x, _ = adding_problem(2000, T, generator=torch.Generator().manual_seed(4))
    assert torch.all(x[..., 1].sum(dim=0) > 0)


def test_deterministic_for_seed():
    a = adding_problem(20, 15, generator=torch.Generator().manual_seed(5))
    b = adding_problem(20, 15, generator=torch.Generator().manual_seed(5))
    c = adding_problem(20, 15, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_mean_baseline_is_one_sixth():
    _, y = adding_problem(100_000, 4, generator=torch.Generator().manual_seed(7))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert abs(((y - 1.0) ** 2).mean().item() - 1 / 6) < 0.005


@pytest.mark.parametrize(
    "n, T, match",
    [
        (0, 10, r"n .*>= 1, got 0"),
        (-3, 10, r"n .*>= 1, got -3"),
        (4, 1, r"T .*>= 2.*got 1"),
        (4, 0, r"T .*>= 2.*got 0"),
    ],
)
def test_bad_sizes(n, T, match):
    with pytest.raises(ValueError, match=match):
        adding_problem(n, T)


def test_bad_types_and_dtype():
    with pytest.raises(TypeError, match="n must be an int"):
        adding_problem(2.0, 10)
    with pytest.raises(TypeError, match="T must be an int"):
        adding_problem(2, "10")
    with pytest.raises(ValueError, match="dtype must be a floating"):
        adding_problem(2, 10, dtype=torch.int64)
