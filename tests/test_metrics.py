"""Metrics: conlleval chunks and scores, accuracy, macro-F1, confusion matrix and its plot."""

from __future__ import annotations

import random

import pytest
import torch

from rnnkit.metrics import (
    accuracy,
    bio_chunks,
    chunk_f1,
    confusion_matrix,
    macro_f1,
    plot_confusion_matrix,
)

# ---------------------------------------------------------------------------------------------
# bio_chunks


@pytest.mark.parametrize(
    ("tags", "chunks"),
    [
        ([], []),
        (["O", "O"], []),
        # plain IOB2, a chunk at the very end
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        # trailing multi-token chunk
        (["O", "B-LOC", "I-LOC", "I-LOC"], [("LOC", 1, 4)]),
        # I after O starts a chunk (conlleval), and so does I at the very start
        (["I-LOC", "O", "I-LOC", "I-LOC"], [("LOC", 0, 1), ("LOC", 2, 4)]),
        # I of another type ends the chunk and starts a new one
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        # B after B of the same type: two chunks; B inside a run of I: a new chunk
        (["B-PER", "B-PER", "I-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 3), ("PER", 3, 4)]),
        # IOB1: I I of the same type is one chunk, a B separates two adjacent ones
        (["I-NP", "I-NP", "B-NP", "I-NP"], [("NP", 0, 2), ("NP", 2, 4)]),
        # types with '-' and '.' split at the first '-' only (conlleval, 2004)
        (["B-a-b", "I-a-b", "I-a"], [("a-b", 0, 2), ("a", 2, 3)]),
        (["B-fromloc.city_name", "I-fromloc.city_name"], [("fromloc.city_name", 0, 2)]),
        # IOE2 as conlleval reads E: E ends a chunk, the next I or E starts one
        (["I-NP", "E-NP", "E-NP", "I-NP", "E-NP"], [("NP", 0, 2), ("NP", 2, 3), ("NP", 3, 5)]),
        # IOBES: S is one token; B after E is a new chunk (conlleval would merge these)
        (["S-X", "S-X", "B-X", "E-X", "B-X", "I-X", "E-X", "S-Y"],
         [("X", 0, 1), ("X", 1, 2), ("X", 2, 4), ("X", 4, 7), ("Y", 7, 8)]),
        # an I after S starts a new chunk
        (["S-X", "I-X", "O"], [("X", 0, 1), ("X", 1, 2)]),
    ],
)
def test_bio_chunks(tags, chunks):
    assert bio_chunks(tags) == chunks


@pytest.mark.parametrize("bad", ["PER", "B-", "X-PER", "b-PER", "", None, 3])
def test_bio_chunks_rejects_unknown_tags_naming_the_position(bad):
    with pytest.raises(ValueError, match=r"tags\[1\]: expected 'O' or a chunk tag") as e:
        bio_chunks(["O", bad, "O"])
    assert repr(bad) in str(e.value)


# ---------------------------------------------------------------------------------------------
# chunk_f1: a hand-made example whose conlleval output is known
#
# Fed to conlleval (one "word gold pred" line per token, blank lines between sentences), the
# three sentences below give
#
#   processed 17 tokens with 7 phrases; found: 8 phrases; correct: 3.
#   accuracy:  58.82%; precision:  37.50%; recall:  42.86%; FB1:  40.00
#                 LOC: precision:  33.33%; recall:  33.33%; FB1:  33.33  3
#                MISC: precision:   0.00%; recall:   0.00%; FB1:   0.00  1
#                 ORG: precision:  50.00%; recall: 100.00%; FB1:  66.67  2
#                 PER: precision:  50.00%; recall:  50.00%; FB1:  50.00  2
#
# by hand from conlleval's rules:
#   s1 gold PER(0,2) LOC(3,5) ORG(6,7); pred PER(0,2) LOC(3,4) ORG(6,7) (I-ORG after O starts a
#      chunk): PER and ORG correct, LOC ends early.
#   s2 gold LOC(1,2) LOC(2,4) PER(5,6); pred LOC(0,2) (I-LOC I-LOC is one chunk) LOC(2,4)
#      ORG(5,6): only LOC(2,4) correct.
#   s3 gold MISC(1,4); pred MISC(1,2) PER(2,4) (I-PER after B-MISC starts a PER): none correct.
#   gold 7, found 8, correct 3: P = 3/8 = 37.5 %, R = 3/7 = 42.857 %, F1 = 2*3/(8+7) = 40 %.
#   tags right: s1 5 of 7, s2 3 of 6, s3 2 of 4: accuracy 10/17 = 58.82 %.
#   LOC 1 of 3 found, 3 gold; MISC 0/1, 1; ORG 1/2, 1; PER 1/2, 2.

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG"],
    ["O", "B-LOC", "B-LOC", "I-LOC", "O", "B-PER"],
    ["O", "B-MISC", "I-MISC", "I-MISC"],
]
PRED = [
    ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "I-ORG"],
    ["I-LOC", "I-LOC", "B-LOC", "I-LOC", "O", "I-ORG"],
    ["O", "B-MISC", "I-PER", "I-PER"],
]


def test_chunk_f1_matches_conlleval_on_the_hand_example():
    r = chunk_f1(GOLD, PRED)
    assert (r["tokens"], r["gold_chunks"], r["pred_chunks"], r["correct_chunks"]) == (17, 7, 8, 3)
    assert r["precision"] == pytest.approx(100 * 3 / 8)
    assert r["recall"] == pytest.approx(100 * 3 / 7)
    assert r["f1"] == pytest.approx(40.0)
    assert r["accuracy"] == pytest.approx(100 * 10 / 17)
    # conlleval's printed lines, to its two decimals
    assert f"{r['accuracy']:6.2f} {r['precision']:6.2f} {r['recall']:6.2f} {r['f1']:6.2f}" == (
        " 58.82  37.50  42.86  40.00")
    printed = {t: (f"{v['precision']:.2f}", f"{v['recall']:.2f}", f"{v['f1']:.2f}",
                   v["pred_chunks"]) for t, v in r["per_type"].items()}
    assert printed == {
        "LOC": ("33.33", "33.33", "33.33", 3),
        "MISC": ("0.00", "0.00", "0.00", 1),
        "ORG": ("50.00", "100.00", "66.67", 2),
        "PER": ("50.00", "50.00", "50.00", 2),
    }
    assert list(r["per_type"]) == ["LOC", "MISC", "ORG", "PER"]  # sorted, as conlleval
    assert {t: v["support"] for t, v in r["per_type"].items()} == {
        "LOC": 3, "MISC": 1, "ORG": 1, "PER": 2}
    assert r["per_type"]["ORG"]["correct_chunks"] == 1


def test_chunk_f1_per_type_includes_types_only_predicted_and_zero_divisions():
    r = chunk_f1([["O", "B-A"]], [["B-B", "O"]])
    assert r["precision"] == r["recall"] == r["f1"] == 0.0
    assert r["per_type"]["A"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                  "gold_chunks": 1, "pred_chunks": 0, "correct_chunks": 0}
    assert r["per_type"]["B"]["support"] == 0 and r["per_type"]["B"]["pred_chunks"] == 1
    none = chunk_f1([["O", "O"]], [["O", "O"]])  # no chunks anywhere: scores 0, accuracy 100
    assert (none["f1"], none["accuracy"], none["per_type"]) == (0.0, 100.0, {})


def test_chunk_f1_perfect_and_one_span_error():
    assert chunk_f1(GOLD, GOLD)["f1"] == 100.0
    # one token too long: the chunk is wrong although 4 of 5 tags are right
    r = chunk_f1([["B-X", "I-X", "O", "B-Y", "O"]], [["B-X", "I-X", "I-X", "B-Y", "O"]])
    assert (r["correct_chunks"], r["precision"], r["recall"]) == (1, 50.0, 50.0)
    assert r["accuracy"] == 80.0


def test_chunk_f1_errors_are_clear():
    with pytest.raises(ValueError, match=r"pred\[1\]: expected 6 tags \(as gold\[1\]\), got 5"):
        chunk_f1(GOLD, [PRED[0], PRED[1][:5], PRED[2]])
    with pytest.raises(ValueError, match="1 gold and 2 predicted"):
        chunk_f1(GOLD[:1], PRED[:2])
    with pytest.raises(ValueError, match="at least one sentence"):
        chunk_f1([], [])
    with pytest.raises(ValueError, match=r"pred\[0\]\[2\]: .*'<pad>'"):
        chunk_f1([["O", "O", "O"]], [["O", "O", "<pad>"]])
    with pytest.raises(TypeError, match="got a str"):
        chunk_f1(["B-X O"], ["B-X O"])


def _conlleval_counts(gold, pred):
    """conlleval's own counting loop (2004 version), written out in Python as a reference:
    it walks the tokens once with chunk start/end tests on consecutive tags rather than
    comparing chunk sets. Returns (found_correct, found_guessed, correct_chunk)."""

    def split(tag):
        return tuple(tag.split("-", 1)) if "-" in tag else (tag, "")

    def end(prev, cur):
        (pt, pk), (t, k) = prev, cur
        return ((pt, t) in {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"),
                            ("E", "I"), ("E", "O")} or (pt != "O" and pk != k))

    def start(prev, cur):
        (pt, pk), (t, k) = prev, cur
        return ((pt, t) in {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"),
                            ("E", "I"), ("O", "E")} or (t != "O" and pk != k))

    found_correct = found_guessed = correct = 0
    in_correct = False
    last_c = last_g = ("O", "")
    # sentences are joined by a boundary token tagged O/O, as conlleval reads blank lines
    tokens = [t for g, p in zip(gold, pred, strict=True)
              for t in [*zip(g, p, strict=True), ("O", "O")]]
    for g, p in tokens:
        c, q = split(g), split(p)
        if in_correct:
            if end(last_c, c) and end(last_g, q) and last_g[1] == last_c[1]:
                in_correct = False
                correct += 1
            elif end(last_c, c) != end(last_g, q) or q[1] != c[1]:
                in_correct = False
        if start(last_c, c) and start(last_g, q) and q[1] == c[1]:
            in_correct = True
        found_correct += start(last_c, c)
        found_guessed += start(last_g, q)
        last_c, last_g = c, q
    return found_correct, found_guessed, correct + in_correct


@pytest.mark.parametrize("prefixes", [("B", "I"), ("I",), ("I", "E")])  # IOB2, IOB1, IOE
def test_chunk_f1_counts_equal_conllevals_loop_on_random_tags(prefixes):
    rng = random.Random(len(prefixes) + ord(prefixes[-1]))
    tagset = ["O"] + [f"{p}-{k}" for p in prefixes for k in ("X", "Y", "x-y")]
    for _ in range(150):
        lengths = [rng.randint(1, 8) for _ in range(rng.randint(1, 4))]
        gold = [[rng.choice(tagset) for _ in range(n)] for n in lengths]
        pred = [[rng.choice(tagset) for _ in range(n)] for n in lengths]
        r = chunk_f1(gold, pred)
        assert (r["gold_chunks"], r["pred_chunks"], r["correct_chunks"]) == (
            _conlleval_counts(gold, pred)), (gold, pred)


def test_the_reference_loop_itself_on_the_hand_example():
    # guards the reference: it must reproduce conlleval's known output too
    assert _conlleval_counts(GOLD, PRED) == (7, 8, 3)


# ---------------------------------------------------------------------------------------------
# classification metrics


def test_accuracy():
    assert accuracy(["a", "b", "c", "a"], ["a", "c", "c", "b"]) == 50.0
    assert accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0])) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="3 gold and 2 predicted"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least one label"):
        accuracy([], [])
    with pytest.raises(ValueError, match="1-D tensor"):
        accuracy(torch.zeros(2, 2), torch.zeros(2, 2))


def test_macro_f1_by_hand():
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    # a: tp 2 fp 0 fn 1 -> 4/5; b: tp 1 fp 1 fn 1 -> 2/4; c: tp 1 fp 1 fn 0 -> 2/3
    expected = 100 * (4 / 5 + 2 / 4 + 2 / 3) / 3
    assert macro_f1(gold, pred) == pytest.approx(expected)
    # a listed class that never occurs counts as F1 0; an unlisted one is dropped from the mean
    assert macro_f1(gold, pred, labels=["a", "b", "c", "d"]) == pytest.approx(expected * 3 / 4)
    assert macro_f1(gold, pred, labels=["a", "b"]) == pytest.approx(100 * (4 / 5 + 2 / 4) / 2)
    # a class only predicted, never gold, is in the default label set with F1 0
    assert macro_f1(["a", "a"], ["a", "z"]) == pytest.approx(100 * (2 / 3 + 0) / 2)
    assert macro_f1([0, 1, 1], [0, 1, 1]) == 100.0


def test_confusion_matrix_rows_are_gold():
    gold = ["x", "x", "y", "z", "z", "z"]
    pred = ["x", "y", "y", "x", "z", "z"]
    m = confusion_matrix(gold, pred, ["x", "y", "z"])
    assert m.dtype == torch.long
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert int(m.sum()) == 6 and int(m.trace()) == 4
    t = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), [0, 1])
    assert t.tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match=r"pred\[1\]: label 'w' is not in labels"):
        confusion_matrix(["x", "x"], ["x", "w"], ["x", "y"])
    with pytest.raises(ValueError, match="distinct labels"):
        confusion_matrix(["x"], ["x"], ["x", "x"])


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    m = confusion_matrix(["x", "x", "y", "z"], ["x", "y", "y", "y"], ["x", "y", "z"])
    out = plot_confusion_matrix(m, ["x", "y", "z"], tmp_path / "sub" / "cm.png", title="intents")
    assert out == tmp_path / "sub" / "cm.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    # many labels (no counts drawn), an empty row, a plain nested list
    K = 30
    big = [[(i + j) % 3 if i else 0 for j in range(K)] for i in range(K)]
    out = plot_confusion_matrix(big, [f"atis_label_{k}" for k in range(K)], tmp_path / "big.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"matrix: expected shape \(2, 2\)"):
        plot_confusion_matrix(m, ["x", "y"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
