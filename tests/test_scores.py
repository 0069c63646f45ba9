"""Sequence scores (edit distance, error rates, BLEU) and the attention plots."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from rnnkit.scores import (
    bleu,
    edit_distance,
    error_rate,
    plot_attention,
    plot_image_attention,
    sequence_error_rate,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def split(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------- edit distance


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("kitten", "sitting", 3),
    ("", "x", 1),
    ("", "", 0),
    ("flaw", "lawn", 2),
    ("abc", "abc", 0),
    ("abc", "", 3),
    (["HH", "AH", "L", "OW"], ["HH", "EH", "L", "OW", "Z"], 2),
    ((1, 2, 3), [3, 2, 1], 2),
])
def test_edit_distance_known_cases(a, b, expected):
    assert edit_distance(a, b) == expected
    assert edit_distance(b, a) == expected  # symmetric


def test_edit_distance_takes_tensors_and_rejects_other_input():
    assert edit_distance(torch.tensor([1, 2, 3]), torch.tensor([1, 3])) == 1
    assert edit_distance(np.array([4, 5]), [4, 5]) == 0
    with pytest.raises(ValueError, match=r"ref: expected a 1-D sequence, got shape \(2, 2\)"):
        edit_distance(torch.zeros(2, 2), [1])
    with pytest.raises(TypeError, match="hyp: expected a sequence"):
        edit_distance([1], 5)


def test_edit_distance_is_symmetric_on_random_sequences():
    rng = random.Random(0)
    for _ in range(30):
        a = [rng.randrange(4) for _ in range(rng.randrange(9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(9))]
        d = edit_distance(a, b)
        assert d == edit_distance(b, a)
        assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))


# ---------------------------------------------------------------- error rates


def test_error_rate_sums_distances_over_reference_lengths():
    refs = [["K", "AE", "T"], ["D", "AO", "G", "Z"]]
    hyps = [["K", "AA", "T"], ["D", "AO", "G"]]
    assert error_rate(refs, hyps) == pytest.approx(100.0 * 2 / 7)
    assert error_rate(["kitten"], ["sitting"]) == pytest.approx(50.0)  # strings: characters
    assert error_rate([["a"]], [["b", "c", "d"]]) == pytest.approx(300.0)  # may exceed 100


def test_error_rate_with_alternatives_takes_the_closest_and_its_length():
    refs = [[["T", "AH", "M", "EY", "T", "OW"], ["T", "AH", "M", "AA", "T", "OW"]],
            [["R", "UW", "T"], ["R", "AW", "T", "S"]]]
    hyps = [["T", "AH", "M", "AA", "T", "OW"], ["R", "AW", "T"]]
    # item 0: the second alternative fits exactly (0 of 6); item 1: the first is 1 edit away
    # (3 long), the second also 1 edit away (4 long): the first listed counts
    assert error_rate(refs, hyps, multi_refs=True) == pytest.approx(100.0 * 1 / 9)
    # a closer but shorter alternative wins over a longer one farther away
    assert error_rate([[["a", "b", "c", "d", "e"], ["x"]]], [["x"]],
                      multi_refs=True) == 0.0
    # without multi_refs, a list of lists is one reference whose items are lists
    assert error_rate([[["x"]]], [["x"]]) == 100.0


def test_sequence_error_rate_with_and_without_alternatives():
    refs = [split("K AE T"), split("D AO G"), split("B ER D")]
    hyps = [split("K AE T"), split("D AA G"), split("B ER D")]
    assert sequence_error_rate(refs, hyps) == pytest.approx(100.0 / 3)
    alt_refs = [[split("T AH M EY T OW"), split("T AH M AA T OW")], [split("R UW T")]]
    assert sequence_error_rate(alt_refs, [split("T AH M AA T OW"), split("R AW T")],
                               multi_refs=True) == 50.0
    assert sequence_error_rate([(1, 2)], [[1, 2]]) == 0.0  # tuples and lists compare equal


@pytest.mark.parametrize("fn", [error_rate, sequence_error_rate])
def test_error_rates_reject_bad_input(fn):
    with pytest.raises(ValueError, match="got 2 refs and 1 hyps"):
        fn([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match="hyps: expected at least one hypothesis"):
        fn([], [])
    with pytest.raises(TypeError, match="refs: expected a list"):
        fn("abc", ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"refs\[0\]: expected at least one alternative"):
        fn([[]], [["a"]], multi_refs=True)
    with pytest.raises(TypeError, match=r"refs\[0\]: expected a list of alternative"):
        fn(["abc"], ["abc"], multi_refs=True)


def test_error_rate_with_only_empty_references_is_an_error():
    with pytest.raises(ValueError, match="refs: expected at least one non-empty reference"):
        error_rate([[], []], [["a"], []])


# ---------------------------------------------------------------- BLEU


def test_bleu_of_an_identical_corpus_is_100():
    sents = [split("the cat sat on the mat today"), split("a dog barked at the red ball"),
             split("it is")]  # shorter than 4: no 4-grams, and no penalty for that
    refs = [[s] for s in sents]
    assert bleu(refs, sents) == pytest.approx(100.0)
    assert bleu(refs, sents, smooth=True) == pytest.approx(100.0)


def test_bleu_classic_clipped_unigram_precision():
    refs = [[split("the cat is on the mat"), split("there is a cat on the mat")]]
    hyps = [split("the the the the the the the")]
    # "the" clipped to its most frequent count in one reference (2) out of 7; the closest
    # reference length is 7 (no brevity penalty)
    assert bleu(refs, hyps, max_n=1) == pytest.approx(100.0 * 2 / 7)
    assert bleu(refs, hyps, max_n=2) == 0.0  # no bigram matches


def test_bleu_hand_computed_orders_and_smoothing():
    refs = [[split("the cat is on the mat")]]
    hyps = [split("the cat sat on the mat")]
    # p1 = 5/6, p2 = 3/5, p3 = 1/4, p4 = 0/3; both 6 long (BP = 1)
    assert bleu(refs, hyps, max_n=3) == pytest.approx(50.0)  # (5/6 * 3/5 * 1/4) ** (1/3)
    assert bleu(refs, hyps) == 0.0
    # add-one on n > 1: 5/6 * 4/6 * 2/5 * 1/4 = 1/18
    assert bleu(refs, hyps, smooth=True) == pytest.approx(100.0 * (1 / 18) ** 0.25)
    # smoothing leaves p1 alone: no unigram match is still 0
    assert bleu([[split("a b c")]], [split("x y z")], smooth=True) == 0.0


def test_bleu_sums_counts_over_the_corpus():
    refs = [[split("a b")], [split("x q r s")]]
    hyps = [split("a b"), split("x y z w")]
    # corpus unigram precision (2 + 1) / (2 + 4), not the mean of 1 and 1/4
    assert bleu(refs, hyps, max_n=1) == pytest.approx(50.0)


def test_bleu_brevity_penalty():
    refs = [[split("the cat is on the mat")]]
    assert bleu(refs, [split("the cat")], max_n=1) == pytest.approx(100.0 * math.exp(1 - 6 / 2))
    # closest reference length: 4 and 6 are equally close to 5, the shorter (4) counts, so
    # the hypothesis is longer and has no penalty (with 6 it would be exp(1 - 6/5))
    tie = [[split("a b c d"), split("a b c d e f")]]
    assert bleu(tie, [split("a b c d e")], max_n=1) == pytest.approx(100.0)
    # an empty hypothesis scores 0
    assert bleu(refs, [[]], max_n=1) == 0.0


def test_bleu_rejects_bad_input():
    with pytest.raises(ValueError, match="got 1 refs and 2 hyps"):
        bleu([[["a"]]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="hyps: expected at least one hypothesis"):
        bleu([], [])
    with pytest.raises(TypeError, match=r"refs\[0\]: .*got a list of str; wrap a single"):
        bleu([["a", "b"]], [["a", "b"]])
    with pytest.raises(ValueError, match=r"refs\[0\]: expected at least one reference"):
        bleu([[]], [["a"]])
    with pytest.raises(TypeError, match=r"hyps\[0\]: expected a list of tokens, got a str"):
        bleu([[["a"]]], ["a b"])
    with pytest.raises(ValueError, match="max_n: expected an int >= 1, got 0"):
        bleu([[["a"]]], [["a"]], max_n=0)
    with pytest.raises(TypeError, match="smooth: expected a bool"):
        bleu([[["a"]]], [["a"]], smooth="yes")


def _noisy_corpus(seed: int, size: int = 40):
    """References from a small vocabulary and hypotheses that are edited copies of one of
    them; every hypothesis has at least 4 tokens (where nltk and Papineni agree)."""
    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(12)]
    refs, hyps = [], []
    for _ in range(size):
        alts = [[rng.choice(vocab) for _ in range(rng.randint(4, 14))]
                for _ in range(rng.randint(1, 3))]
        hyp = list(rng.choice(alts))
        for _ in range(rng.randint(0, 4)):
            k = rng.randrange(len(hyp))
            op = rng.random()
            if op < 0.4:
                hyp[k] = rng.choice(vocab)
            elif op < 0.7:
                hyp.insert(k, rng.choice(vocab))
            elif len(hyp) > 4:
                del hyp[k]
        refs.append(alts)
        hyps.append(hyp)
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_n", [1, 2, 4])
def test_bleu_equals_nltk_corpus_bleu(seed, max_n):
    from nltk.translate import bleu_score as nltk_bleu  # (the test extra installs it)
    refs, hyps = _noisy_corpus(seed)
    weights = (1.0 / max_n,) * max_n
    expected = nltk_bleu.corpus_bleu(refs, hyps, weights=weights)
    assert expected > 0.1
    assert bleu(refs, hyps, max_n=max_n) == pytest.approx(100.0 * expected, abs=1e-9)
    smoothed = nltk_bleu.corpus_bleu(refs, hyps, weights=weights,
                                     smoothing_function=nltk_bleu.SmoothingFunction().method2)
    assert bleu(refs, hyps, max_n=max_n, smooth=True) == pytest.approx(100.0 * smoothed,
                                                                       abs=1e-9)


# ---------------------------------------------------------------- plots


def _read_png(path):
    """The PNG's bytes start with the magic number and matplotlib reads it back."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    return pixels


def test_plot_attention_writes_a_png(tmp_path):
    weights = torch.softmax(torch.randn(4, 6), dim=1)
    target = tmp_path / "sub" / "dir" / "att.png"
    out = plot_attention(weights, list("abcdef"), ["w", "x", "y", "z"], target, title="one")
    assert out == target
    _read_png(out)
    assert sorted(p.name for p in target.parent.iterdir()) == ["att.png"]  # no temp left
    # a plain numpy array, many labels
    out = plot_attention(np.full((30, 40), 0.025), [f"src{k}" for k in range(40)],
                         [f"out{k}" for k in range(30)], tmp_path / "big.png")
    _read_png(out)


def test_plot_attention_rejects_bad_shapes(tmp_path):
    bad = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=r"weights: expected 2 dimensions, got shape \(6,\)"):
        plot_attention(torch.rand(6), list("abcdef"), ["x"], bad)
    with pytest.raises(ValueError, match=r"source_labels: expected 6 labels .*, got 5"):
        plot_attention(torch.rand(4, 6), list("abcde"), list("wxyz"), bad)
    with pytest.raises(ValueError, match=r"target_labels: expected 4 labels .*, got 3"):
        plot_attention(torch.rand(4, 6), list("abcdef"), list("xyz"), bad)
    with pytest.raises(ValueError, match="weights: expected finite values"):
        plot_attention(torch.tensor([[0.5, float("nan")]]), ["a", "b"], ["x"], bad)
    assert not bad.exists()


def test_plot_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "att.png"
    target.write_bytes(b"old")

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_attention(torch.rand(2, 2), ["a", "b"], ["x", "y"], target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["att.png"]


@pytest.mark.parametrize("channels_first", [True, False])
def test_plot_image_attention_writes_a_grid(tmp_path, channels_first):
    image = torch.rand(3, 40, 60) if channels_first else np.random.rand(40, 60, 3)
    words = ["a", "dog", "runs", "on", "the", "green", "grass"]
    maps = torch.softmax(torch.randn(7, 7 * 7), dim=1).reshape(7, 7, 7)
    out = plot_image_attention(image, maps, words, tmp_path / "cap" / "att.png")
    assert out == tmp_path / "cap" / "att.png"
    pixels = _read_png(out)
    assert pixels.shape[1] > pixels.shape[0]  # 5 columns, 2 rows
    assert sorted(p.name for p in out.parent.iterdir()) == ["att.png"]
    one = _read_png(plot_image_attention(image, maps[:1], words[:1], tmp_path / "one.png"))
    assert one.shape[1] < pixels.shape[1]  # a single panel


def test_plot_image_attention_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.png"
    maps = torch.rand(2, 7, 7)
    with pytest.raises(ValueError, match="got 2 maps and 3 words"):
        plot_image_attention(torch.rand(3, 20, 20), maps, ["a", "b", "c"], bad)
    with pytest.raises(ValueError, match=r"image: expected an RGB image .*got \(4, 20, 20\)"):
        plot_image_attention(torch.rand(4, 20, 20), maps, ["a", "b"], bad)
    with pytest.raises(ValueError, match=r"image: expected 3 dimensions, got shape \(20, 20\)"):
        plot_image_attention(torch.rand(20, 20), maps, ["a", "b"], bad)
    with pytest.raises(ValueError, match=r"image: expected values in \[0, 1\]"):
        plot_image_attention(torch.rand(3, 20, 20) * 255, maps, ["a", "b"], bad)
    with pytest.raises(ValueError, match=r"maps: expected 3 dimensions, got shape \(2, 49\)"):
        plot_image_attention(torch.rand(3, 20, 20), torch.rand(2, 49), ["a", "b"], bad)
    with pytest.raises(ValueError, match="alpha: expected a number in"):
        plot_image_attention(torch.rand(3, 20, 20), maps, ["a", "b"], bad, alpha=2)
    assert not bad.exists()
