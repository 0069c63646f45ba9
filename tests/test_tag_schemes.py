"""Tag schemes (bio, bioes, none), the CRF's constraints for each, and per-tag token scores."""

import pytest
import torch

from rnnkit.data.schemes import check_scheme, detect_scheme, fits
from rnnkit.data.text import DataFormatError, TaggedSentence
from rnnkit.heads.crf import CRF, bio_allowed, scheme_allowed
from rnnkit.metrics import per_tag_table, tag_scores


@pytest.mark.parametrize("tags, scheme", [
    (["O", "B-city", "I-city"], "bio"),
    (["O", "B-PER", "I-PER", "E-PER", "S-LOC"], "bioes"),
    (["O", "S-LOC"], "bioes"),
    (["ADJ", "NOUN", "VERB"], "none"),
    (["O", "B-x", "NOUN"], "none"),  # one tag that is not a chunk tag: no chunks
    (["O"], "none"),  # nothing but O marks no chunk
    (["B-"], "none"),  # a prefix without a type
    (["X-foo", "O"], "none"),
])
def test_detect_scheme(tags, scheme):
    chosen, why = detect_scheme(tags)
    assert chosen == scheme and why


def test_fits():
    assert fits("B-fromloc.city_name", "bio") and fits("O", "bio")
    assert not fits("E-x", "bio") and fits("E-x", "bioes") and fits("S-x", "bioes")
    assert not fits("ADJ", "bioes") and fits("ADJ", "none")
    assert fits("I-a-b", "bio")  # the type may contain '-', as conlleval allows


def test_a_forced_chunk_scheme_names_the_file_line_and_tag():
    sentences = [TaggedSentence(["big", "cat"], ["O", "B-x"], None, ("a.conll", [1, 2])),
                 TaggedSentence(["red", "dog"], ["ADJ", "NOUN"], None, ("a.conll", [4, 5]))]
    check_scheme(sentences, "none", "train")
    with pytest.raises(DataFormatError, match=r"a\.conll:4: data\.tag_scheme=bio expects O, "
                       r"B-type or I-type tags, got 'ADJ' \(word 'red'\)"):
        check_scheme(sentences, "bio", "train")
    with pytest.raises(DataFormatError, match=r"^the train split: .*'ADJ'"):
        check_scheme([TaggedSentence(["red"], ["ADJ"])], "bioes", "the train split")


def test_bio_constraints_are_unchanged():
    tags = ["O", "B-a", "I-a", "B-b", "I-b"]
    transitions, starts = scheme_allowed(tags, "bio")
    assert starts.tolist() == [True, True, False, True, False]
    # I-a only after B-a or I-a; everything else anywhere
    assert transitions[:, 2].tolist() == [False, True, True, False, False]
    assert transitions[:, [0, 1, 3]].all()
    old_transitions, old_starts = bio_allowed(tags)
    assert (old_transitions == transitions).all() and (old_starts == starts).all()


def test_bioes_constraints():
    tags = ["O", "B-a", "I-a", "E-a", "S-a", "B-b", "E-b"]
    transitions, starts = scheme_allowed(tags, "bioes")
    assert starts.tolist() == [True, True, False, False, True, True, False]
    # an open chunk (after B-a, I-a) goes on with I-a or ends with E-a, nothing else
    for prev in (1, 2):
        assert transitions[prev].tolist() == [False, False, True, True, False, False, False]
    # after O, E-a or S-a: a new chunk or O, never I-/E-
    for prev in (0, 3, 4):
        assert transitions[prev].tolist() == [True, True, False, False, True, True, False]
    assert scheme_allowed(tags, "none") is None
    with pytest.raises(ValueError, match="scheme: expected bio, bioes or none, got 'iob'"):
        scheme_allowed(tags, "iob")


def test_crf_decodes_only_what_bioes_allows():
    tags = ["O", "B-a", "I-a", "E-a", "S-a"]
    crf = CRF(len(tags), allowed=scheme_allowed(tags, "bioes"))
    torch.manual_seed(0)
    emissions = torch.randn(16, 9, len(tags)) * 3
    paths = crf.decode(emissions, torch.ones(16, 9, dtype=torch.bool))
    for path in paths:
        names = [tags[k] for k in path]
        for prev, cur in zip(["O"] + names[:-1], names, strict=True):
            if prev in ("B-a", "I-a"):
                assert cur in ("I-a", "E-a"), names
            else:
                assert cur not in ("I-a", "E-a"), names


def test_tag_scores_by_hand():
    gold = [["DET", "NOUN", "VERB"], ["NOUN", "VERB"]]
    pred = [["DET", "VERB", "VERB"], ["NOUN", "NOUN"]]
    s = tag_scores(gold, pred)
    assert s["accuracy"] == pytest.approx(60.0) and s["tokens"] == 5
    # NOUN: tp 1, fp 1 (the 2nd sentence's VERB), fn 1; VERB: tp 1, fp 1, fn 1
    assert s["per_tag"]["NOUN"] == pytest.approx(
        {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2})
    assert s["per_tag"]["DET"] == pytest.approx(
        {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 1})
    assert s["macro_f1"] == pytest.approx((100 + 50 + 50) / 3)
    table = per_tag_table(s["per_tag"])
    assert table[0].split() == ["tag", "precision", "recall", "f1", "support"]
    assert table[1].split() == ["DET", "100.00", "100.00", "100.00", "1"]


def test_tag_scores_agree_with_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    g = torch.Generator().manual_seed(0)
    names = ["ADJ", "NOUN", "VERB", "DET", "X"]
    gold = [[names[i] for i in torch.randint(0, 5, (n,), generator=g)] for n in (3, 7, 1, 9)]
    pred = [[t if torch.rand(1, generator=g) < 0.6 else names[int(torch.randint(0, 5, (1,),
            generator=g))] for t in s] for s in gold]
    ours = tag_scores(gold, pred)
    flat_g, flat_p = sum(gold, []), sum(pred, [])
    labels = sorted(set(flat_g) | set(flat_p))
    p, r, f, n = precision_recall_fscore_support(flat_g, flat_p, labels=labels,
                                                 zero_division=0)
    for k, tag in enumerate(labels):
        row = ours["per_tag"][tag]
        assert row["precision"] == pytest.approx(100 * p[k])
        assert row["recall"] == pytest.approx(100 * r[k])
        assert row["f1"] == pytest.approx(100 * f[k])
        assert row["support"] == n[k]


def test_tag_scores_reject_bad_input():
    with pytest.raises(ValueError, match=r"pred\[0\]: expected 2 tags"):
        tag_scores([["A", "B"]], [["A"]])
    with pytest.raises(ValueError, match="gold: expected at least one label"):
        tag_scores([], [])
    with pytest.raises(TypeError, match="got a str"):
        tag_scores("AB", "AB")
