"""Evaluation metrics: conlleval's chunk F1 and per-tag token scores for tagging, accuracy,
macro-F1 and the confusion matrix for classification.

Every score is a percentage in [0, 100], as conlleval prints them (so a tagging run's F1 and
its intent accuracy read on the same scale). Where a ratio has a zero denominator the score is
0, as in conlleval (precision with no predicted chunk, recall with no gold chunk, F1 when
precision + recall = 0).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

_PREFIXES = ("B", "I", "E", "S")


def _split_tag(tag, where: str) -> tuple[str, str]:
    """``"B-fromloc.city_name"`` -> ``("B", "fromloc.city_name")``; ``"O"`` -> ``("O", "")``.
    Split at the first ``-``, as conlleval does (types may contain ``-``)."""
    if tag == "O":
        return "O", ""
    if isinstance(tag, str):
        prefix, dash, kind = tag.partition("-")
        if dash and prefix in _PREFIXES and kind:
            return prefix, kind
    raise ValueError(f"{where}: expected 'O' or a chunk tag like 'B-type' or 'I-type' "
                     f"(also 'E-type', 'S-type'), got {tag!r}")


def _continues(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    """Whether ``cur`` carries on the chunk of ``prev`` (B/I followed by I/E of the same type)."""
    return prev[0] in ("B", "I") and cur[0] in ("I", "E") and prev[1] == cur[1]


def bio_chunks(tags: Sequence[str], *, where: str = "tags") -> list[tuple[str, int, int]]:
    """The chunks of a tag sequence as ``(type, start, end)``, ``end`` exclusive, in order.

    conlleval's rules: a chunk of type x starts at a ``B-x``, and also at an ``I-x`` that follows
    ``O`` or a tag of another type (conlleval treats such an ``I`` as a chunk start); it goes on
    through the following ``I-x`` tags and ends before the first tag that is not ``I-x``.
    ``E-x`` is read as conlleval reads it (IOE: it carries a chunk on and ends it; an ``E-x`` or
    ``I-x`` after it starts a new chunk). On any IOB1, IOB2, IOE1 or IOE2 sequence the chunks
    are exactly conlleval's.

    Beyond conlleval, IOBES works too: ``S-x`` is a chunk of one token, and a ``B-x`` right
    after an ``E-x`` starts a new chunk (conlleval would merge the two, since it never expects
    ``E`` and ``B`` in one scheme). In one rule: a chunk starts at every non-``O`` tag that does
    not continue the previous one, where "continue" means the previous tag is ``B-x``/``I-x``
    and this one ``I-x``/``E-x`` of the same type x.

    >>> bio_chunks(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5), ('ORG', 5, 6)]

    Raises:
        ValueError: a tag that is neither ``O`` nor ``B-``/``I-``/``E-``/``S-`` + a type.
    """
    parsed = [_split_tag(t, f"{where}[{i}]") for i, t in enumerate(tags)]
    chunks = []
    start = None  # start of the open chunk, None outside
    for i, cur in enumerate(parsed):
        prev = parsed[i - 1] if i else ("O", "")
        if start is not None and not _continues(prev, cur):
            chunks.append((prev[1], start, i))
            start = None
        if cur[0] != "O" and start is None:
            start = i
        if cur[0] == "S":  # a one-token chunk; nothing continues it
            chunks.append((cur[1], i, i + 1))
            start = None
    if start is not None:
        chunks.append((parsed[-1][1], start, len(parsed)))
    return chunks


def _check_sentences(gold, pred) -> None:
    """Refuse tag sequences that cannot be scored: a str for a list, as many predicted sentences
    as gold ones, each as long as its gold one."""
    if isinstance(gold, (str, bytes)) or isinstance(pred, (str, bytes)):
        raise TypeError("gold, pred: expected lists of tag sequences (one per sentence), "
                        "got a str")
    if len(gold) != len(pred):
        raise ValueError(f"gold, pred: expected as many predicted sentences as gold ones, got "
                         f"{len(gold)} gold and {len(pred)} predicted")
    for n, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if isinstance(g, str) or isinstance(p, str):
            raise TypeError(f"gold[{n}], pred[{n}]: expected a list of tags, got a str")
        if len(g) != len(p):
            raise ValueError(f"pred[{n}]: expected {len(g)} tags (as gold[{n}]), got {len(p)}")


def _counts(gold: list, pred: list) -> tuple[Counter, Counter, Counter]:
    """Per label k of flat label lists: true positives (gold k, predicted k), false positives
    (predicted k, gold another) and false negatives (gold k, predicted another)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    return tp, fp, fn


def _prf(correct: int, found: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1 in percent: P = 100 c/found, R = 100 c/gold, F1 = 2PR/(P+R)."""
    p = 100.0 * correct / found if found else 0.0
    r = 100.0 * correct / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def chunk_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """conlleval's scores for predicted tag sequences against gold ones.

    A predicted chunk is correct when a gold chunk has the same type, start and end (chunks
    from :func:`bio_chunks`, per sentence). With c correct chunks among ``found`` predicted and
    ``gold`` gold ones (micro-averaged over all sentences and types):

        precision = 100 c / found,   recall = 100 c / gold,   F1 = 2 P R / (P + R)

    Args:
        gold, pred: one list of tags per sentence; ``pred[n]`` as long as ``gold[n]``.

    Returns:
        ``{"precision", "recall", "f1", "accuracy", "gold_chunks", "pred_chunks",
        "correct_chunks", "tokens", "per_type"}``: percentages as floats, counts as ints;
        ``accuracy`` = 100 * (tokens whose whole tag is right) / tokens, ``O`` included, as
        conlleval's; ``per_type`` maps every type in gold or pred (sorted) to
        ``{"precision", "recall", "f1", "support", "gold_chunks", "pred_chunks",
        "correct_chunks"}``, with ``support`` = ``gold_chunks``, the number of gold chunks of
        that type (the count conlleval prints after each type is ``pred_chunks``).
    """
    _check_sentences(gold, pred)
    if len(gold) == 0:
        raise ValueError("gold: expected at least one sentence, got none")
    gold_by_type: Counter[str] = Counter()
    pred_by_type: Counter[str] = Counter()
    correct_by_type: Counter[str] = Counter()
    tokens = right_tags = 0
    for n, (g, p) in enumerate(zip(gold, pred, strict=True)):
        gc = bio_chunks(g, where=f"gold[{n}]")
        pc = bio_chunks(p, where=f"pred[{n}]")
        gold_by_type.update(t for t, _, _ in gc)
        pred_by_type.update(t for t, _, _ in pc)
        correct_by_type.update(t for t, _, _ in set(gc) & set(pc))
        tokens += len(g)
        right_tags += sum(a == b for a, b in zip(g, p, strict=True))
    c, f, g = (sum(x.values()) for x in (correct_by_type, pred_by_type, gold_by_type))
    precision, recall, f1 = _prf(c, f, g)
    per_type = {}
    for kind in sorted(set(gold_by_type) | set(pred_by_type)):
        tp, tr, tf = _prf(correct_by_type[kind], pred_by_type[kind], gold_by_type[kind])
        per_type[kind] = {"precision": tp, "recall": tr, "f1": tf,
                          "support": gold_by_type[kind], "gold_chunks": gold_by_type[kind],
                          "pred_chunks": pred_by_type[kind],
                          "correct_chunks": correct_by_type[kind]}
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": 100.0 * right_tags / tokens if tokens else 0.0,
            "gold_chunks": g, "pred_chunks": f, "correct_chunks": c, "tokens": tokens,
            "per_type": per_type}


def tag_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Token-level scores of predicted tag sequences, each tag a class of its own (POS tags).

    With tp_k, fp_k, fn_k the words tagged k rightly, tagged k wrongly and missed of gold
    tag k, over all sentences:

        accuracy    = 100 * (words whose tag is right) / words
        precision_k = 100 tp_k / (tp_k + fp_k),  recall_k = 100 tp_k / (tp_k + fn_k),
        F1_k        = 2 P_k R_k / (P_k + R_k),   macro_f1 = mean_k F1_k

    Args:
        gold, pred: one list of tags per sentence; ``pred[n]`` as long as ``gold[n]``.

    Returns:
        ``{"accuracy", "macro_f1", "tokens", "per_tag"}``; ``per_tag`` maps every tag in gold
        or pred (sorted) to ``{"precision", "recall", "f1", "support"}`` (support: the gold
        count).
    """
    _check_sentences(gold, pred)
    gold_flat, pred_flat = _pair([t for g in gold for t in g], [t for p in pred for t in p])
    tp, fp, fn = _counts(gold_flat, pred_flat)
    per_tag = {}
    for tag in sorted(set(gold_flat) | set(pred_flat)):
        p, r, f = _prf(tp[tag], tp[tag] + fp[tag], tp[tag] + fn[tag])
        per_tag[tag] = {"precision": p, "recall": r, "f1": f, "support": tp[tag] + fn[tag]}
    return {"accuracy": 100.0 * sum(tp.values()) / len(gold_flat),
            "macro_f1": sum(v["f1"] for v in per_tag.values()) / len(per_tag),
            "tokens": len(gold_flat), "per_tag": per_tag}


def per_tag_table(per_tag: dict, heading: str = "tag") -> list[str]:
    """A per-tag score table as text lines: ``heading precision recall f1 support``, one row a
    tag (as :func:`tag_scores` and :func:`chunk_f1`'s ``per_type`` give them)."""
    width = max([len(heading)] + [len(str(t)) for t in per_tag])
    lines = [f"{heading:<{width}}  precision  recall      f1  support"]
    for tag, s in per_tag.items():
        lines.append(f"{tag:<{width}}  {s['precision']:9.2f}  {s['recall']:6.2f}  "
                     f"{s['f1']:6.2f}  {s['support']:7d}")
    return lines


def _labels(values, name: str) -> list:
    """A flat list of hashable labels from a list or a 1-D tensor."""
    if isinstance(values, Tensor):
        if values.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D tensor of labels, got shape "
                             f"{tuple(values.shape)}")
        return values.tolist()
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: expected a list of labels, got a str")
    values = list(values)
    for i, v in enumerate(values):
        try:
            hash(v)
        except TypeError:
            raise TypeError(f"{name}[{i}]: expected a label (str or int), got "
                            f"{type(v).__name__}; flatten nested lists first") from None
    return values


def _pair(gold, pred) -> tuple[list, list]:
    gold, pred = _labels(gold, "gold"), _labels(pred, "pred")
    if len(gold) != len(pred):
        raise ValueError(f"gold, pred: expected the same number of labels, got {len(gold)} "
                         f"gold and {len(pred)} predicted")
    if not gold:
        raise ValueError("gold: expected at least one label, got none")
    return gold, pred


def accuracy(gold, pred) -> float:
    """100 * (number of i with gold[i] == pred[i]) / len(gold), for flat label lists or 1-D
    tensors."""
    gold, pred = _pair(gold, pred)
    return 100.0 * sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)


def macro_f1(gold_labels, pred_labels, labels=None) -> float:
    """The unweighted mean over classes of each class's F1, in percent.

    For class k with tp_k true positives, fp_k false positives and fn_k false negatives,
    F1_k = 100 * 2 tp_k / (2 tp_k + fp_k + fn_k) (0 when the denominator is 0), and
    macro-F1 = mean_k F1_k over ``labels`` (default: every label in gold or pred). As
    scikit-learn's ``f1_score(average="macro", zero_division=0)``: a class in ``labels`` that
    occurs in neither list counts as F1 0, and labels outside ``labels`` count only as the
    errors they are for the listed classes.
    """
    gold, pred = _pair(gold_labels, pred_labels)
    if labels is None:
        classes = list(dict.fromkeys(gold + pred))
    else:
        classes = _labels(labels, "labels")
        if not classes:
            raise ValueError("labels: expected at least one label, got none")
    tp, fp, fn = _counts(gold, pred)
    scores = [100.0 * 2 * tp[k] / d if (d := 2 * tp[k] + fp[k] + fn[k]) else 0.0
              for k in classes]
    return sum(scores) / len(scores)


def confusion_matrix(gold, pred, labels) -> Tensor:
    """Counts ``M[i, j]`` = number of items with gold label ``labels[i]`` predicted as
    ``labels[j]``: a LongTensor (K, K), rows gold, columns predicted.

    Raises:
        ValueError: a gold or predicted label that is not in ``labels``.
    """
    gold, pred = _pair(gold, pred)
    labels = _labels(labels, "labels")
    index = {label: k for k, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels: expected distinct labels, got {labels!r:.200}")
    matrix = torch.zeros(len(labels), len(labels), dtype=torch.long)
    for name, values in (("gold", gold), ("pred", pred)):
        for i, v in enumerate(values):
            if v not in index:
                raise ValueError(f"{name}[{i}]: label {v!r} is not in labels "
                                 f"({len(labels)} labels: {labels[:5]!r:.120}...)")
    rows = torch.tensor([index[g] for g in gold])
    cols = torch.tensor([index[p] for p in pred])
    matrix.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
    return matrix


def plot_confusion_matrix(matrix, labels: Sequence[str], path, title: str = "") -> Path:
    """Draw a confusion matrix as a PNG: each row normalised to sum to 1 (the share of gold
    label i predicted as j; an empty row stays 0), with the counts written in the cells when
    there are at most 25 labels. Writes ``path`` (parents created) and returns it as a Path.

    Uses a bare :class:`matplotlib.figure.Figure`, so the caller's pyplot backend is untouched.
    """
    counts = torch.as_tensor(matrix)
    labels = [str(label) for label in labels]
    K = len(labels)
    if counts.ndim != 2 or counts.shape != (K, K):
        raise ValueError(f"matrix: expected shape ({K}, {K}) (one row and column per label), "
                         f"got {tuple(counts.shape)}")
    if K == 0:
        raise ValueError("labels: expected at least one label, got none")
    counts = counts.to(torch.float64)
    totals = counts.sum(dim=1, keepdim=True)  # (K, 1)
    shares = torch.where(totals > 0, counts / totals.clamp(min=1), torch.zeros_like(counts))

    side = min(max(4.0, 0.35 * K + 2.5), 40.0)  # inches; room for K labels
    fig, ax = heat_map(shares, labels, labels, size=(side + 1.2, side), xlabel="predicted",
                       ylabel="gold", colorbar="share of the gold row", small=(K > 12, K > 12),
                       cmap="Blues", vmin=0.0, vmax=1.0)
    if K <= 25:
        for i in range(K):
            for j in range(K):
                n = int(counts[i, j])
                if n:
                    dark = shares[i, j] > 0.5
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7 if K > 12 else 9,
                            color="white" if dark else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def save_png(fig, path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically: into a temporary file beside it, then
    ``os.replace``, so a reader never sees a half-written image. Parents are created."""
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def heat_map(values: Tensor, x_labels: Sequence[str], y_labels: Sequence[str], *,
             size: tuple[float, float], xlabel: str, ylabel: str, colorbar: str,
             small: tuple[bool, bool] = (False, False), **imshow):
    """A labelled heat map of ``values`` (rows along y, columns along x) with a colour bar, on a
    bare :class:`matplotlib.figure.Figure` (the caller's pyplot backend is untouched); ``small``
    shrinks the x and y tick labels when there are many. Returns ``(fig, ax)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    image = ax.imshow(values.numpy(), **imshow)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar)
    ax.set_xticks(range(len(x_labels)), x_labels, rotation=60, ha="right",
                  rotation_mode="anchor", fontsize=8 if small[0] else 10)
    ax.set_yticks(range(len(y_labels)), y_labels, fontsize=8 if small[1] else 10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax
