"""Many-to-one pooling and the sequence classifier, against loops over unpadded sequences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import ModelConfig
from rnnkit.heads.classifier import SequenceClassifier
from rnnkit.heads.pooling import POOLINGS, Pooling, length_mask
from rnnkit.networks import RecurrentNetwork

LENGTHS = torch.tensor([5, 2, 1, 4])


def padded_outputs(F_=6, seed=0):
    """(N, T, F) outputs whose padded steps hold large garbage, and their mask."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(len(LENGTHS), int(LENGTHS.max()), F_, generator=g, dtype=torch.float64)
    mask = length_mask(LENGTHS, out.shape[1])
    return out.masked_fill(~mask[..., None], 1e6), mask


def naive(how, seq, directions, pool):
    """The pooled vector of one unpadded sequence (L, F), written from the equations."""
    if how == "mean":
        return seq.mean(0)
    if how == "max":
        return seq.max(0).values
    if how == "final":
        if directions == 1:
            return seq[-1]
        H = seq.shape[1] // 2
        return torch.cat([seq[-1, :H], seq[0, H:]])
    e = torch.stack([pool.query(torch.tanh(pool.project(h))).squeeze() for h in seq])
    a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
    return sum(a_t * h for a_t, h in zip(a, seq, strict=True))


@pytest.mark.parametrize("how", POOLINGS)
@pytest.mark.parametrize("directions", [1, 2])
def test_pooling_matches_each_sequence_alone(how, directions):
    torch.manual_seed(0)
    pool = Pooling(how, 6, directions).double()
    out, mask = padded_outputs()
    got = pool(out, mask)
    for n, L in enumerate(LENGTHS.tolist()):
        want = naive(how, out[n, :L], directions, pool)
        torch.testing.assert_close(got[n], want, rtol=1e-12, atol=1e-12)
    if how == "attention":
        w = pool.weights
        torch.testing.assert_close(w.sum(1), torch.ones(len(LENGTHS), dtype=torch.float64))
        assert (w[~mask] == 0).all()


@pytest.mark.parametrize("how", POOLINGS)
def test_pooling_gradcheck(how):
    torch.manual_seed(1)
    pool = Pooling(how, 4, 2).double()
    out, mask = padded_outputs(F_=4, seed=1)
    out = out.masked_fill(~mask[..., None], 0.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda o: pool(o, mask), (out,))


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_final_pooling_is_the_networks_final_state(cell):
    """'final' from the outputs equals h_n of both directions (each at its own last step)."""
    torch.manual_seed(2)
    net = RecurrentNetwork(cell, 3, 5, batch_first=True, bidirectional=True).double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    out, h_n = net(x, lengths=LENGTHS)
    h = h_n[0] if isinstance(h_n, tuple) else h_n  # (2, N, H)
    pooled = Pooling("final", 10, 2)(out, length_mask(LENGTHS, 5))
    torch.testing.assert_close(pooled, torch.cat([h[0], h[1]], dim=1))


def test_pooling_refuses_bad_arguments():
    with pytest.raises(ValueError, match="pooling: expected one of"):
        Pooling("sum", 4)
    with pytest.raises(ValueError, match="directions"):
        Pooling("final", 5, 2)


@pytest.mark.parametrize("how", POOLINGS)
@pytest.mark.parametrize("tokens", [True, False])
def test_classifier_padded_batch_equals_each_sequence_alone(how, tokens):
    torch.manual_seed(3)
    cfg = ModelConfig(cell="gru", hidden_size=8, bidirectional=True, pooling=how,
                      embedding_size=6)
    if tokens:
        model = SequenceClassifier(cfg, 3, vocab_size=20).double().eval()
        x = torch.randint(1, 20, (4, 5))
        x[length_mask(LENGTHS, 5).logical_not()] = 0
    else:
        model = SequenceClassifier(cfg, 3, input_size=2).double().eval()
        x = torch.randn(4, 5, 2, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    out = model(x, LENGTHS, labels)
    for n, L in enumerate(LENGTHS.tolist()):
        alone = model(x[n:n + 1, :L], torch.tensor([L]))["scores"][0]
        torch.testing.assert_close(out["scores"][n], alone, rtol=1e-10, atol=1e-10)
    want = F.cross_entropy(out["scores"], labels, reduction="sum")
    torch.testing.assert_close(out["loss"], want)
    assert model.predict(x, LENGTHS) == out["scores"].argmax(-1).tolist()


def test_classifier_needs_exactly_one_input_kind():
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifier(ModelConfig(), 2)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifier(ModelConfig(), 2, vocab_size=5, input_size=3)


def test_word_dropout_replaces_real_words_only_and_only_in_training():
    from rnnkit.heads.words import drop_words

    torch.manual_seed(4)
    tokens = torch.randint(2, 50, (200, 30))
    tokens[:, 20:] = 0  # padding
    dropped = drop_words(tokens, 0.25)
    assert (dropped[:, 20:] == 0).all()
    changed = dropped[:, :20] != tokens[:, :20]
    assert (dropped[:, :20][changed] == 1).all()
    assert abs(changed.float().mean().item() - 0.25) < 0.02
    assert torch.equal(drop_words(tokens, 0.0), tokens)

    cfg = ModelConfig(cell="gru", hidden_size=8, embedding_size=6, word_dropout=0.5)
    model = SequenceClassifier(cfg, 3, vocab_size=50).eval()
    x, lengths = tokens[:4, :20], torch.full((4,), 20)
    torch.testing.assert_close(model(x, lengths)["scores"], model(x, lengths)["scores"])
    model.train()
    assert not torch.equal(model(x, lengths)["scores"], model(x, lengths)["scores"])
