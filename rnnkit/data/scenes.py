"""Generated captioning scenes for a CNN + RNN captioner ("show, attend and tell").

Each image is a black square with two filled shapes on it, e.g. a red circle left of a blue
square, and one caption that names them and their relation:

    ["a", "red", "circle", "left", "of", "a", "blue", "square"]    (8 tokens)
    ["a", "green", "triangle", "above", "a", "white", "circle"]    (7 tokens)

Rules that make every caption the only correct one for its image:

- the two shapes have different colours (from :data:`COLOURS`), any shapes (:data:`SHAPES`);
- each shape fits a box of side ~size/5..size/3, the two boxes are apart by a gap of >= 2
  black pixels along one axis, and the centres are clearly on that axis (the distance along it
  is at least twice the distance across it), so the relation is left/right or above/below;
- the object named first is the one whose colour comes first in :data:`COLOURS`.

Layouts come from ``random.Random(seed)`` alone, so the same seed gives the same data. There
are 10 colour pairs (ordered by the naming rule) x 9 shape pairs x 4 relations = 360 distinct
captions, so held-out captions mostly also occur in training; the images differ (positions,
sizes), and a model has to read them to get the caption right.
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor

from .._checks import check_positive_int

COLOURS = ("red", "green", "blue", "yellow", "white")
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
# pure RGB corners: any two differ by at least 1.0 in some channel
COLOUR_RGB = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}
# every caption token: the article, colours, shapes and the words of the relations
VOCAB = ("a", *COLOURS, *SHAPES, "left", "right", "of", "above", "below")
GAP = 2  # black pixels at least between the two shapes' boxes along the relation's axis


def _place(rng: random.Random, size: int, s0: int, s1: int) -> tuple[int, int, int, int]:
    """Top-left corners along (main axis, cross axis) of two boxes of sides ``s0`` and ``s1``:
    box 0 comes first on the main axis, >= GAP pixels before box 1, and the centres differ
    across by at most half of what they differ along. Returns ``(a0, a1, b0, b1)``."""
    while True:
        a0 = rng.randint(0, size - s0 - GAP - s1)
        a1 = rng.randint(a0 + s0 + GAP, size - s1)
        along = (a1 + s1 / 2) - (a0 + s0 / 2)  # distance of the centres along the main axis
        b0 = rng.randint(0, size - s0)
        centre0 = b0 + s0 / 2
        # b1 + s1/2 must lie within along/2 of centre0, and box 1 inside the image
        lo = max(0, math.ceil(centre0 - along / 2 - s1 / 2))
        hi = min(size - s1, math.floor(centre0 + along / 2 - s1 / 2))
        if lo <= hi:  # always true for sides in [size/5, size/3]; kept as a guard
            return a0, a1, b0, rng.randint(lo, hi)


def _layouts(n: int, seed: int, size: int) -> tuple[Tensor, list[list[str]]]:
    """Draw ``n`` layouts. Returns ``params`` int64 (n, 2, 5), per object
    ``(x, y, side, shape index, colour index)`` with (x, y) the top-left corner of its box, and
    the captions."""
    rng = random.Random(seed)
    smallest, largest = math.ceil(size / 5), size // 3
    params = []
    captions = []
    for _ in range(n):
        horizontal = rng.random() < 0.5
        s0, s1 = rng.randint(smallest, largest), rng.randint(smallest, largest)
        a0, a1, b0, b1 = _place(rng, size, s0, s1)
        # object 0 is left of (horizontal) or above (vertical) object 1
        (x0, y0), (x1, y1) = ((a0, b0), (a1, b1)) if horizontal else ((b0, a0), (b1, a1))
        c0, c1 = rng.sample(range(len(COLOURS)), 2)
        k0, k1 = rng.randrange(len(SHAPES)), rng.randrange(len(SHAPES))
        params.append([[x0, y0, s0, k0, c0], [x1, y1, s1, k1, c1]])
        first_is_0 = c0 < c1  # name the object whose colour comes first in COLOURS
        if horizontal:
            relation = "left of" if first_is_0 else "right of"
        else:
            relation = "above" if first_is_0 else "below"
        named = [(c0, k0), (c1, k1)] if first_is_0 else [(c1, k1), (c0, k0)]
        (ca, ka), (cb, kb) = named
        captions.append(["a", COLOURS[ca], SHAPES[ka], *relation.split(),
                         "a", COLOURS[cb], SHAPES[kb]])
    return torch.tensor(params, dtype=torch.int64), captions


def _masks(params: Tensor, size: int) -> Tensor:
    """Filled-shape masks, bool (n, size, size), for one object per image; ``params`` is
    int64 (n, 5) as in :func:`_layouts`. Pixel (row i, column j) is in a shape when its centre
    (j + 0.5, i + 0.5) is."""
    x, y, side, shape = (params[:, k].to(torch.float32)[:, None, None] for k in range(4))
    r = side / 2  # (n, 1, 1) half side
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    px = centres[None, None, :] - (x + r)  # (n, 1, size) offset from the box centre
    py = centres[None, :, None] - (y + r)  # (n, size, 1)
    circle = px**2 + py**2 <= r**2
    square = (px.abs() <= r) & (py.abs() <= r)
    # apex at the top middle of the box, base along its bottom: half-width grows from 0 to r
    triangle = (py <= r) & (px.abs() <= (py + r) / 2)
    shape = shape.long()  # (n, 1, 1)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def make_scenes(n: int, seed: int, size: int = 32) -> tuple[Tensor, list[list[str]]]:
    """``n`` scenes drawn from ``seed``: ``(images, captions)``.

    Args:
        n: number of images, >= 1.
        seed: any int; the same seed gives the same images and captions.
        size: image side in pixels, >= 16.

    Returns:
        ``images`` float32 (n, 3, size, size) in [0, 1] (black background, each shape in its
        pure :data:`COLOUR_RGB` colour), and ``captions``, one token list per image:
        ``["a", colour, shape, *relation, "a", colour, shape]`` with relation "left of" /
        "right of" (two tokens) or "above" / "below" (one), so 8 or 7 tokens.
    """
    check_positive_int("n", n)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__} ({seed!r})")
    check_positive_int("size", size, minimum=16)
    params, captions = _layouts(n, seed, size)  # (n, 2, 5)
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])  # (5, 3)
    images = torch.zeros(n, 3, size, size)
    for k in range(2):
        mask = _masks(params[:, k], size)[:, None]  # (n, 1, size, size)
        colour = palette[params[:, k, 4]][:, :, None, None]  # (n, 3, 1, 1)
        # the boxes do not overlap, so painting order does not matter
        images = torch.where(mask, colour, images)
    return images, captions


def scene_splits(
    train: int = 8000, valid: int = 1000, test: int = 1000, size: int = 32
) -> dict[str, tuple[Tensor, list[list[str]]]]:
    """Fixed splits ``{"train": (images, captions), "valid": ..., "test": ...}`` drawn with
    seeds 1, 2 and 3 (see :func:`make_scenes` for the shapes). The splits are independent
    draws: with only 360 distinct captions, most test captions also occur in train, but the
    images (positions and sizes) differ."""
    counts = {"train": train, "valid": valid, "test": test}
    for name, count in counts.items():
        check_positive_int(name, count)
    check_positive_int("size", size, minimum=16)
    seeds = {"train": 1, "valid": 2, "test": 3}
    return {name: make_scenes(count, seeds[name], size) for name, count in counts.items()}
