"""Scores for generated sequences: edit distance, token and sequence error rates (e.g. phoneme
and word error rate in grapheme-to-phoneme conversion), corpus BLEU, and attention plots for
seq2seq models and image captioning.

Every rate and score is a percentage, as in :mod:`rnnkit.metrics`. Sequences are lists (or
tuples, strings, 1-D tensors) of items compared with ``==``; BLEU takes token lists.

Several references per item: ``error_rate`` and ``sequence_error_rate`` take one reference
per hypothesis by default, and a list of alternatives per hypothesis with ``multi_refs=True``
(a word with several pronunciations); ``bleu`` always takes a list of references per
hypothesis (``[ref]`` when there is one).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .metrics import heat_map, save_png


def _as_list(seq, name: str) -> list:
    """A sequence as a plain list of items; a 1-D tensor or array becomes its values."""
    if isinstance(seq, (Tensor, np.ndarray)):
        if seq.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sequence, got shape {tuple(seq.shape)}")
        return seq.tolist()
    if isinstance(seq, (str, bytes)):
        return list(seq)
    if not isinstance(seq, Sequence):
        raise TypeError(f"{name}: expected a sequence (list, tuple, str, 1-D tensor), got "
                        f"{type(seq).__name__}")
    return list(seq)


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, insertions and deletions (each costing
    1) that turn ``ref`` into ``hyp``. O(len(ref) * len(hyp)) time, O(len(hyp)) memory.

    >>> edit_distance("kitten", "sitting")
    3
    >>> edit_distance(["HH", "AH", "L", "OW"], ["HH", "EH", "L", "OW"])
    1
    """
    ref, hyp = _as_list(ref, "ref"), _as_list(hyp, "hyp")
    # prev[j] = distance between ref[:i-1] and hyp[:j]; cur the same for ref[:i]
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1,  # delete r
                         cur[j - 1] + 1,  # insert h
                         prev[j - 1] + (r != h))  # substitute (free when equal)
        prev = cur
    return prev[-1]


def _corpus(refs, hyps) -> None:
    """Both are non-string sequences of the same, non-zero length."""
    for name, value in (("refs", refs), ("hyps", hyps)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name}: expected a list with one item per sequence, got "
                            f"{type(value).__name__}")
    if len(refs) != len(hyps):
        raise ValueError(f"refs, hyps: expected one reference entry per hypothesis, got "
                         f"{len(refs)} refs and {len(hyps)} hyps")
    if len(hyps) == 0:
        raise ValueError("hyps: expected at least one hypothesis, got an empty corpus")


def _alternatives(entry, n: int, multi_refs: bool) -> list[list]:
    """The reference(s) of item ``n`` as a non-empty list of lists."""
    if not multi_refs:
        return [_as_list(entry, f"refs[{n}]")]
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence):
        raise TypeError(f"refs[{n}]: expected a list of alternative references "
                        f"(multi_refs=True), got {type(entry).__name__}")
    if len(entry) == 0:
        raise ValueError(f"refs[{n}]: expected at least one alternative reference, got none")
    return [_as_list(alt, f"refs[{n}][{k}]") for k, alt in enumerate(entry)]


def error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence], *,
               multi_refs: bool = False) -> float:
    """Token error rate in percent: 100 * sum_i edit_distance(ref_i, hyp_i) / sum_i len(ref_i)
    (phoneme error rate when the items are phonemes, character error rate for strings).

    Args:
        refs: one reference sequence per hypothesis; with ``multi_refs=True``, one non-empty
            list of alternative references per hypothesis, of which the closest counts (least
            edit distance, the first listed on a tie) with its own length in the denominator.
        hyps: the generated sequences.

    The rate can exceed 100 (hypotheses much longer than their references).

    >>> error_rate([["K", "AE", "T"]], [["K", "AA", "T"]])  # doctest: +ELLIPSIS
    33.33...
    >>> error_rate([[["T", "AH", "M"], ["T", "OW", "M"]]], [["T", "OW", "M"]], multi_refs=True)
    0.0

    Raises:
        ValueError: lengths differ, an empty corpus, no alternative for an item, or every
            reference empty (the rate is undefined).
    """
    _corpus(refs, hyps)
    errors = total = 0
    for n, (entry, hyp) in enumerate(zip(refs, hyps, strict=True)):
        hyp = _as_list(hyp, f"hyps[{n}]")
        # min over (distance, position): the closest alternative, the first one on a tie
        dist, _, ref = min((edit_distance(ref, hyp), k, ref)
                           for k, ref in enumerate(_alternatives(entry, n, multi_refs)))
        errors += dist
        total += len(ref)
    if total == 0:
        raise ValueError("refs: expected at least one non-empty reference (the rate divides by "
                         "the total reference length), got only empty ones")
    return 100.0 * errors / total


def sequence_error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence], *,
                        multi_refs: bool = False) -> float:
    """Percent of hypotheses that are not exactly their reference (with ``multi_refs=True``:
    not exactly any of their alternatives). The word error rate of grapheme-to-phoneme
    conversion, where each item is the pronunciation of one word. Arguments as in
    :func:`error_rate`.

    >>> sequence_error_rate([["K", "AE", "T"], ["D", "AO", "G"]], [["K", "AE", "T"], ["D"]])
    50.0
    """
    _corpus(refs, hyps)
    wrong = 0
    for n, (entry, hyp) in enumerate(zip(refs, hyps, strict=True)):
        hyp = _as_list(hyp, f"hyps[{n}]")
        wrong += all(ref != hyp for ref in _alternatives(entry, n, multi_refs))
    return 100.0 * wrong / len(hyps)


def _tokens(seq, name: str) -> tuple:
    """A token list as a tuple of hashable tokens."""
    if isinstance(seq, (str, bytes)):
        raise TypeError(f"{name}: expected a list of tokens, got a str; split it into tokens "
                        f"first")
    tokens = tuple(_as_list(seq, name))
    try:
        hash(tokens)
    except TypeError:
        raise TypeError(f"{name}: expected hashable tokens (str), got an unhashable one in "
                        f"{tokens!r:.100}") from None
    return tokens


def _ngrams(tokens: tuple, n: int) -> Counter:
    return Counter(tokens[i:i + n] for i in range(len(tokens) - n + 1))


def bleu(refs: Sequence[Sequence[Sequence[str]]], hyps: Sequence[Sequence[str]],
         max_n: int = 4, smooth: bool = False) -> float:
    """Corpus BLEU in percent (Papineni et al. 2002), uniform weights 1/max_n.

    For each order n, the clipped n-gram matches (each hypothesis n-gram counted at most as
    often as it occurs in any one of that hypothesis's references) and the hypothesis n-grams
    are summed over the corpus, p_n = matches_n / total_n. With c the total hypothesis length
    and r the sum of each hypothesis's closest reference length (the shorter on a tie):

        BLEU = 100 * BP * exp(sum_n log(p_n) / max_n),   BP = 1 if c > r else exp(1 - r / c)

    Without ``smooth`` the score is 0 when any p_n is 0 (also when no hypothesis is n tokens
    long). With ``smooth``, p_n = (matches_n + 1) / (total_n + 1) for n > 1 (add-one smoothing
    of Lin & Och 2004, nltk's ``SmoothingFunction().method2``); p_1 stays, and p_1 = 0 still
    gives 0.

    Equal to nltk's ``corpus_bleu`` (with ``method2`` when smoothing) whenever every hypothesis
    has at least ``max_n`` tokens. nltk counts a shorter hypothesis as 1 n-gram of each order
    it lacks; here it has none, as in Papineni's definition, so a perfect corpus scores 100.

    Args:
        refs: per hypothesis, a non-empty list of references, each a list of tokens.
        hyps: the generated token lists.
        max_n: the highest n-gram order, >= 1.

    >>> bleu([[["the", "cat", "sat"]]], [["the", "cat", "sat"]], max_n=3)
    100.0
    """
    from ._checks import check_positive_int

    check_positive_int("max_n", max_n)
    if not isinstance(smooth, bool):
        raise TypeError(f"smooth: expected a bool, got {type(smooth).__name__} ({smooth!r})")
    _corpus(refs, hyps)
    matches = [0] * (max_n + 1)  # index n: clipped n-gram matches over the corpus
    totals = [0] * (max_n + 1)  # index n: hypothesis n-grams over the corpus
    hyp_length = ref_length = 0
    for i, (entry, hyp) in enumerate(zip(refs, hyps, strict=True)):
        hyp = _tokens(hyp, f"hyps[{i}]")
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence):
            raise TypeError(f"refs[{i}]: expected a list of references (each a list of "
                            f"tokens), got {type(entry).__name__}")
        if len(entry) == 0:
            raise ValueError(f"refs[{i}]: expected at least one reference, got none")
        if isinstance(entry[0], str):
            raise TypeError(f"refs[{i}]: expected a list of references (each a list of "
                            f"tokens), got a list of str; wrap a single reference as [ref]")
        alts = [_tokens(ref, f"refs[{i}][{k}]") for k, ref in enumerate(entry)]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            most = Counter()  # per n-gram, its highest count in one reference
            for ref in alts:
                most |= _ngrams(ref, n)
            matches[n] += sum(min(c, most[g]) for g, c in counts.items())
            totals[n] += sum(counts.values())
        hyp_length += len(hyp)
        ref_length += min((len(ref) for ref in alts), key=lambda r: (abs(r - len(hyp)), r))

    log_p = 0.0
    for n in range(1, max_n + 1):
        m, t = matches[n], totals[n]
        if smooth and n > 1:
            m, t = m + 1, t + 1
        if m == 0:  # also t == 0: no n-gram of this order at all
            return 0.0
        log_p += (math.log(m) - math.log(t)) / max_n
    # hyp_length > 0 here: p_1 > 0 needs a hypothesis token
    bp = 1.0 if hyp_length > ref_length else math.exp(1.0 - ref_length / hyp_length)
    return 100.0 * bp * math.exp(log_p)


def _array(values, name: str, ndim: int) -> Tensor:
    """A finite float64 CPU tensor with ``ndim`` dimensions, none of them empty."""
    try:
        t = torch.as_tensor(values).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: expected a tensor or array of numbers, got "
                        f"{type(values).__name__} ({e})") from None
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected no empty dimension, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return t


def _labels(values, name: str, count: int, what: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: expected a list of labels, got a str")
    labels = [str(v) for v in values]
    if len(labels) != count:
        raise ValueError(f"{name}: expected {count} labels ({what}), got {len(labels)}")
    return labels


def plot_attention(weights, source_labels: Sequence[str], target_labels: Sequence[str], path,
                   title: str = "") -> Path:
    """Draw seq2seq attention weights as a heat map PNG: the source tokens along x, the
    generated tokens along y (row t: the attention of output step t over the inputs).

    Args:
        weights: tensor or array (T_out, T_in).
        source_labels: T_in labels; target_labels: T_out labels.
        path: the PNG to write (atomically; parents created).

    Returns:
        ``path`` as a Path. Uses a bare :class:`matplotlib.figure.Figure` (Agg), so the
        caller's pyplot backend is untouched.
    """
    w = _array(weights, "weights", 2)  # (T_out, T_in)
    T_out, T_in = w.shape
    xs = _labels(source_labels, "source_labels", T_in, "one per column of weights")
    ys = _labels(target_labels, "target_labels", T_out, "one per row of weights")

    width = min(max(4.0, 0.35 * T_in + 2.5), 40.0)  # inches; room for the labels
    height = min(max(3.0, 0.35 * T_out + 2.0), 40.0)
    fig, ax = heat_map(w, xs, ys, size=(width + 1.0, height), xlabel="source",
                       ylabel="generated", colorbar="attention weight",
                       small=(T_in > 20, T_out > 20), cmap="viridis", aspect="auto",
                       interpolation="nearest")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def _hwc_image(image) -> Tensor:
    """An RGB image (3, H, W) or (H, W, 3) with values in [0, 1] as (H, W, 3). A shape that
    fits both, (3, H, 3), is read as channels first, as torch stores images."""
    img = _array(image, "image", 3)
    if img.shape[0] == 3:
        img = img.permute(1, 2, 0)
    elif img.shape[-1] != 3:
        raise ValueError(f"image: expected an RGB image of shape (3, H, W) or (H, W, 3), got "
                         f"{tuple(img.shape)}")
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"image: expected values in [0, 1], got values in [{lo:g}, {hi:g}]")
    return img


def plot_image_attention(image, maps, words: Sequence[str], path, *, alpha: float = 0.6,
                         title: str = "") -> Path:
    """Draw where a captioning model looked for each word: one panel per generated word, the
    image with that step's attention map upsampled to the image size (bilinear) and laid over
    it, the word as the panel's title; up to 5 panels per row. Each map is coloured from 0 to
    its own maximum, so every panel shows its focus.

    Args:
        image: RGB tensor or array (3, H, W) or (H, W, 3), values in [0, 1].
        maps: attention over the feature grid, (T, h, w), one map per word.
        words: the T generated words.
        path: the PNG to write (atomically; parents created).
        alpha: opacity of the attention overlay, in [0, 1].

    Returns:
        ``path`` as a Path.
    """
    from matplotlib.figure import Figure

    img = _hwc_image(image)  # (H, W, 3)
    att = _array(maps, "maps", 3)  # (T, h, w)
    if isinstance(words, (str, bytes)):
        raise TypeError("words: expected a list of words, got a str")
    words = [str(word) for word in words]
    if att.shape[0] != len(words):
        raise ValueError(f"maps, words: expected one attention map per word, got "
                         f"{att.shape[0]} maps and {len(words)} words")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    H, W = img.shape[0], img.shape[1]
    # (T, 1, h, w) -> (T, 1, H, W) -> (T, H, W)
    up = torch.nn.functional.interpolate(att[:, None], size=(H, W), mode="bilinear",
                                         align_corners=False)[:, 0]

    T = len(words)
    cols = min(5, T)
    rows = math.ceil(T / cols)
    panel = 2.6  # inches per panel, scaled by the image's aspect
    # each row: the image at its aspect plus room for the word above it
    fig = Figure(figsize=(cols * panel, rows * (panel * H / W + 0.35) + (0.4 if title else 0.0)))
    img_np = img.numpy()
    for t in range(T):
        ax = fig.add_subplot(rows, cols, t + 1)
        ax.imshow(img_np)
        lo, hi = min(0.0, float(up[t].min())), float(up[t].max())
        ax.imshow(up[t].numpy(), cmap="jet", alpha=float(alpha), vmin=lo,
                  vmax=hi if hi > lo else lo + 1.0)  # a flat map: one colour
        ax.set_title(words[t], fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
