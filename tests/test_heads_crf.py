"""The CRF against brute force: log Z, the sequence score, the best path, over every K^L tag
sequence; gradcheck; BIO constraints; errors."""

import itertools

import pytest
import torch

from rnnkit.heads.crf import CRF, bio_allowed


def brute_force(crf, emissions, lengths):
    """Every sentence's log Z, and its best path, by enumerating all tag sequences."""
    start, trans, end = crf.scores()
    log_z, best = [], []
    for n, L in enumerate(lengths):
        scores = {}
        for path in itertools.product(range(crf.num_tags), repeat=L):
            s = start[path[0]] + emissions[n, 0, path[0]] + end[path[-1]]
            for t in range(1, L):
                s = s + trans[path[t - 1], path[t]] + emissions[n, t, path[t]]
            scores[path] = s
        stacked = torch.stack(list(scores.values()))
        log_z.append(torch.logsumexp(stacked, 0))
        best.append(list(max(scores, key=lambda p: scores[p].item())))
    return torch.stack(log_z), best, scores


def setup(K=3, lengths=(4, 2, 3, 1), seed=0, allowed=None):
    torch.manual_seed(seed)
    crf = CRF(K, allowed=allowed).double()
    with torch.no_grad():  # larger scores than the init, so paths really differ
        for p in crf.parameters():
            p.normal_()
    T = max(lengths)
    emissions = torch.randn(len(lengths), T, K, dtype=torch.float64)
    mask = torch.arange(T) < torch.tensor(lengths)[:, None]
    return crf, emissions, mask


def test_log_partition_and_decode_match_brute_force():
    crf, emissions, mask = setup()
    lengths = mask.sum(1).tolist()
    log_z, best, _ = brute_force(crf, emissions, lengths)
    torch.testing.assert_close(crf.log_partition(emissions, mask), log_z, rtol=1e-12, atol=1e-12)
    assert crf.decode(emissions, mask) == best


def test_likelihoods_of_all_sequences_sum_to_one():
    crf, emissions, mask = setup(K=3, lengths=(3,))
    total = torch.zeros((), dtype=torch.float64)
    for path in itertools.product(range(3), repeat=3):
        tags = torch.tensor([path])
        total = total + crf(emissions, tags, mask, reduction="sum").exp()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_sequence_score_matches_brute_force_with_padding():
    crf, emissions, mask = setup(K=4, lengths=(4, 2))
    tags = torch.tensor([[1, 3, 0, 2], [2, 1, 3, 3]])  # row 1's last two are padding
    _, _, scores = brute_force(crf, emissions[1:], [2])
    want = scores[(2, 1)]
    got = crf.sequence_score(emissions, tags, mask)[1]
    torch.testing.assert_close(got, want)


def test_gradcheck_float64():
    crf, emissions, mask = setup(K=3, lengths=(3, 2))
    tags = torch.tensor([[0, 2, 1], [1, 1, 0]])
    names = ["start", "end", "transitions"]

    def nll(e, *params):
        values = dict(zip(names, params, strict=True))
        return -torch.func.functional_call(crf, values, (e, tags, mask))

    inputs = [emissions.requires_grad_(True)] + \
        [getattr(crf, n).detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(nll, tuple(inputs))


def test_bio_constraints_are_never_broken():
    tags = ["O", "B-a", "I-a", "B-b", "I-b"]
    transitions, starts = bio_allowed(tags)
    assert not starts[2] and not starts[4] and starts[1]
    assert transitions[1, 2] and transitions[2, 2] and not transitions[0, 2]
    assert not transitions[3, 2] and transitions[0, 3]
    crf, emissions, mask = setup(K=5, lengths=(6, 5, 3), allowed=(transitions, starts))
    emissions[..., 2] += 3  # push towards I-a everywhere
    emissions[..., 4] += 3
    for path in crf.decode(emissions, mask):
        assert tags[path[0]][:2] != "I-"
        for a, b in zip(path, path[1:], strict=False):
            assert transitions[a, b], (tags[a], tags[b])
    log_z, best, _ = brute_force(crf, emissions, mask.sum(1).tolist())
    assert crf.decode(emissions, mask) == best


def test_reductions_and_errors():
    crf, emissions, mask = setup(K=3, lengths=(3, 2))
    tags = torch.zeros(2, 3, dtype=torch.long)
    each = crf(emissions, tags, mask, reduction="none")
    assert each.shape == (2,)
    assert crf(emissions, tags, mask, "mean").item() == pytest.approx(each.mean().item())
    assert crf(emissions, tags, mask, "token_mean").item() == pytest.approx(each.sum().item() / 5)
    with pytest.raises(ValueError, match=r"emissions: expected \(N, T, num_tags=3\)"):
        crf(emissions[..., :2], tags, mask)
    with pytest.raises(ValueError, match="mask: the first step"):
        crf(emissions, tags, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no gaps"):
        crf(emissions, tags, torch.tensor([[True, False, True], [True, True, False]]))
    with pytest.raises(ValueError, match=r"tags: expected values in \[0, 3\)"):
        crf(emissions, tags + 3, mask)
    with pytest.raises(ValueError, match="reduction"):
        crf(emissions, tags, mask, "max")
