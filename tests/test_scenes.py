"""Tests for rnnkit.data.scenes: generated images and captions for a captioner."""

from __future__ import annotations

import math

import pytest
import torch

from rnnkit.data.scenes import (
    COLOUR_RGB,
    COLOURS,
    GAP,
    RELATIONS,
    SHAPES,
    VOCAB,
    make_scenes,
    scene_splits,
)


@pytest.fixture(scope="module")
def batch():
    return make_scenes(500, seed=7)


def colour_map(image: torch.Tensor) -> torch.Tensor:
    """Index into COLOURS of each pixel, -1 for black; fails on any other pixel value.
    ``image`` (3, H, W) -> int64 (H, W)."""
    out = torch.full(image.shape[1:], -2, dtype=torch.int64)
    out[(image == 0).all(dim=0)] = -1
    for i, name in enumerate(COLOURS):
        rgb = torch.tensor(COLOUR_RGB[name])[:, None, None]
        out[(image == rgb).all(dim=0)] = i
    assert (out != -2).all(), "a pixel is neither black nor a palette colour"
    return out


def parse(caption: list[str]) -> tuple[str, str, str, str, str]:
    """(colour 1, shape 1, relation, colour 2, shape 2) of a caption."""
    return caption[1], caption[2], " ".join(caption[3:-3]), caption[-2], caption[-1]


def box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column) of the True pixels of (H, W) ``mask``."""
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def shape_of(mask: torch.Tensor) -> str:
    """Which shape the True pixels of (H, W) ``mask`` draw: a square fills its box, a triangle
    (apex up) has a shorter top row than bottom row, a circle neither."""
    r0, r1, c0, c1 = box(mask)
    inside = mask[r0 : r1 + 1, c0 : c1 + 1]
    if inside.all():
        return "square"
    if inside[0].sum() < inside[-1].sum():
        return "triangle"
    return "circle"


@pytest.mark.parametrize("n, size", [(1, 16), (9, 32), (4, 45)])
def test_shapes_dtype_range(n, size):
    images, captions = make_scenes(n, seed=0, size=size)
    assert images.shape == (n, 3, size, size)
    assert images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert len(captions) == n


def test_same_seed_same_data_other_seed_other_data():
    a, ca = make_scenes(50, seed=3)
    b, cb = make_scenes(50, seed=3)
    c, cc = make_scenes(50, seed=4)
    assert torch.equal(a, b) and ca == cb
    assert not torch.equal(a, c) and ca != cc


def test_caption_grammar_and_colour_order(batch):
    _, captions = batch
    for cap in captions:
        c1, s1, rel, c2, s2 = parse(cap)
        assert len(cap) == (8 if rel in ("left of", "right of") else 7)
        assert set(cap) <= set(VOCAB)
        assert cap[0] == "a" and cap[-3] == "a"
        assert rel in RELATIONS
        assert s1 in SHAPES and s2 in SHAPES
        # named first: the colour that comes first in COLOURS (so the colours differ too)
        assert COLOURS.index(c1) < COLOURS.index(c2)


def test_image_holds_the_two_named_colours_on_black(batch):
    images, captions = batch
    for image, cap in zip(images, captions, strict=True):
        c1, _, _, c2, _ = parse(cap)
        present = set(colour_map(image).unique().tolist())
        assert present == {-1, COLOURS.index(c1), COLOURS.index(c2)}


def test_relation_matches_pixel_centroids(batch):
    images, captions = batch
    for image, cap in zip(images, captions, strict=True):
        c1, _, rel, c2, _ = parse(cap)
        cmap = colour_map(image)
        (y1, x1), (y2, x2) = (
            (cmap == COLOURS.index(c)).nonzero().float().mean(dim=0) for c in (c1, c2)
        )
        dx, dy = float(x2 - x1), float(y2 - y1)  # from the first-named object to the second
        if rel in ("left of", "right of"):
            assert abs(dx) > abs(dy)
            assert (dx > 0) == (rel == "left of")
        else:
            assert abs(dy) > abs(dx)
            assert (dy > 0) == (rel == "above")  # rows grow downwards


def test_shapes_match_pixels_and_sizes(batch):
    images, captions = batch
    size = images.shape[-1]
    for image, cap in zip(images, captions, strict=True):
        c1, s1, _, c2, s2 = parse(cap)
        cmap = colour_map(image)
        for colour, shape in ((c1, s1), (c2, s2)):
            mask = cmap == COLOURS.index(colour)
            assert shape_of(mask) == shape
            _, _, first_col, last_col = box(mask)
            assert math.ceil(size / 5) <= last_col - first_col + 1 <= size // 3


def test_every_relation_and_shape_occurs(batch):
    _, captions = batch
    relations = {parse(cap)[2] for cap in captions}
    shapes = {s for cap in captions for s in (parse(cap)[1], parse(cap)[4])}
    assert relations == set(RELATIONS)
    assert shapes == set(SHAPES)


@pytest.mark.parametrize("size", [16, 32])
def test_shapes_do_not_overlap_and_have_a_gap(size):
    images, captions = make_scenes(300, seed=11, size=size)
    for image, cap in zip(images, captions, strict=True):
        c1, _, rel, c2, _ = parse(cap)
        cmap = colour_map(image)
        a = box(cmap == COLOURS.index(c1))
        b = box(cmap == COLOURS.index(c2))
        # on the relation's axis, >= GAP black lines between the two shapes' pixel boxes
        lo, hi = (2, 3) if rel in ("left of", "right of") else (0, 1)
        gap = max(b[lo] - a[hi], a[lo] - b[hi]) - 1
        assert gap >= GAP


def test_scene_splits_use_fixed_seeds():
    splits = scene_splits(train=6, valid=4, test=3, size=16)
    assert list(splits) == ["train", "valid", "test"]
    for name, count, seed in (("train", 6, 1), ("valid", 4, 2), ("test", 3, 3)):
        images, captions = splits[name]
        expected_images, expected_captions = make_scenes(count, seed, 16)
        assert torch.equal(images, expected_images) and captions == expected_captions


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: make_scenes(0, 1), ValueError, "n: expected an int >= 1, got 0"),
        (lambda: make_scenes(2.0, 1), TypeError, "n: expected an int"),
        (lambda: make_scenes(2, 1, size=15), ValueError, "size: expected an int >= 16, got 15"),
        (lambda: make_scenes(2, "1"), TypeError, "seed: expected an int, got str"),
        (lambda: make_scenes(2, True), TypeError, "seed: expected an int, got bool"),
        (lambda: scene_splits(valid=0), ValueError, "valid: expected an int >= 1, got 0"),
        (lambda: scene_splits(size=8), ValueError, "size: expected an int >= 16, got 8"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
