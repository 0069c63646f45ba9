"""Greedy, beam search and sampling against brute force and each other, on toy decoders: a tiny
RNN whose log-probs depend on its (reordered) state, and fixed transition tables."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch

from rnnkit.heads.search import (
    Hypothesis,
    beam_search,
    greedy,
    map_state,
    next_token,
    sample,
    select_rows,
)

V, H, EOS, BOS = 4, 3, 3, 0


class RNNState(NamedTuple):
    h: torch.Tensor  # (B, H): the log-probs depend on it, so a wrong reordering shows
    extra: list  # [{"count": (B,) long}, None]: nesting the decoders must keep


def rnn(seed=0, dtype=torch.float64, sources=3):
    """A fixed random Elman decoder and an initial state of ``sources`` different rows."""
    g = torch.Generator().manual_seed(seed)
    E, W, U = (torch.randn(*s, generator=g, dtype=dtype) for s in [(V, H), (H, H), (H, V)])

    def step(tokens, state):
        assert isinstance(state, RNNState) and state.extra[1] is None
        h = torch.tanh(state.h @ W + E[tokens])  # (B, H)
        count = state.extra[0]["count"] + 1
        return torch.log_softmax(2 * h @ U, -1), RNNState(h, [{"count": count}, None])

    h0 = torch.randn(sources, H, generator=g, dtype=dtype)
    return step, RNNState(h0, [{"count": torch.zeros(sources, dtype=torch.long)}, None])


def table(seed=0, sources=3, vocab=V, dtype=torch.float64):
    """A transition table per source, T[src, prev, next] log-probs; the state carries each
    row's source id unchanged, so rows mixed up between sources give the wrong table."""
    g = torch.Generator().manual_seed(seed)
    T = torch.log_softmax(2 * torch.randn(sources, vocab, vocab, generator=g, dtype=dtype), -1)

    def step(tokens, state):
        return T[state["src"], tokens], {"src": state["src"]}

    return step, {"src": torch.arange(sources)}, T


def one(state, n):
    return select_rows(state, torch.tensor([n]))


def brute_force(step, state, max_len, alpha):
    """Every hypothesis of a one-source state, (tokens, score, log_prob), best first."""
    out = []

    def walk(prefix, token, st, lp):
        log_probs, st = step(torch.tensor([token]), st)
        for w in range(V):
            total, L = lp + log_probs[0, w].item(), len(prefix) + 1
            if w == EOS:
                out.append((prefix, total / L**alpha, total))
            elif L == max_len:
                out.append((prefix + [w], total / L**alpha, total))
            else:
                walk(prefix + [w], w, st, total)

    walk([], BOS, state, 0.0)
    return sorted(out, key=lambda h: -h[1])


def assert_same(got, want, tol):
    assert [h.tokens for h in got] == [w[0] for w in want]
    assert [h.score for h in got] == pytest.approx([w[1] for w in want], abs=tol)
    assert [h.log_prob for h in got] == pytest.approx([w[2] for w in want], abs=tol)


def test_map_state_and_select_rows_keep_structure():
    state = RNNState(torch.arange(6.0).view(3, 2), [{"count": torch.tensor([5, 6, 7])}, None])
    picked = select_rows(state, torch.tensor([2, 0, 2]))
    assert type(picked) is RNNState and picked.extra[1] is None
    assert picked.h.tolist() == [[4.0, 5.0], [0.0, 1.0], [4.0, 5.0]]
    assert picked.extra[0]["count"].tolist() == [7, 5, 7]
    doubled = map_state(lambda t: 2 * t, (state.h, [state.h]))
    assert type(doubled) is tuple and type(doubled[1]) is list
    assert torch.equal(doubled[1][0], 2 * state.h)
    with pytest.raises(TypeError, match="state: expected tensors"):
        map_state(lambda t: t, {"h": 3})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
def test_huge_beam_equals_brute_force(dtype, alpha):
    step, state = rnn(seed=1, dtype=dtype, sources=2)
    max_len, tol = 3, 1e-9 if dtype == torch.float64 else 1e-4
    got = beam_search(step, state, torch.tensor([BOS, BOS]), EOS, beam_size=V**max_len,
                      max_len=max_len, length_penalty=alpha, n_best=V**max_len)
    for n in range(2):
        want = brute_force(step, one(state, n), max_len, alpha)
        assert len(want) == 1 + 3 + 9 + 27
        assert_same(got[n], want, tol)
        # a smaller n_best (early stop for alpha 0) gives the same top hypotheses
        top = beam_search(step, one(state, n), BOS, EOS, beam_size=V**max_len,
                          max_len=max_len, length_penalty=alpha, n_best=5)
        assert_same(top[0], want[:5], tol)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_size_one_is_greedy(alpha):
    step, state = rnn(seed=2, sources=6)
    state = state._replace(h=3 * state.h)  # spread the sources' first tokens
    bos = torch.full((6,), BOS)
    want = greedy(step, state, bos, EOS, max_len=8)
    got = beam_search(step, state, bos, EOS, beam_size=1, max_len=8, length_penalty=alpha)
    assert [r[0].tokens for r in got] == want
    assert len({tuple(w) for w in want}) > 1 and any(len(w) < 8 for w in want)


@pytest.mark.parametrize("make", [rnn, table])
def test_batched_equals_each_source_alone(make):
    step, state = make(seed=3, sources=4)[:2]
    bos = torch.tensor([BOS, 1, BOS, 2])
    got = beam_search(step, state, bos, EOS, beam_size=3, max_len=6, n_best=3)
    for n in range(4):
        alone = beam_search(step, one(state, n), int(bos[n]), EOS, beam_size=3, max_len=6,
                            n_best=3)[0]
        assert [h.tokens for h in got[n]] == [h.tokens for h in alone]
        assert [h.score for h in got[n]] == pytest.approx([h.score for h in alone], abs=1e-12)
    # the sources' tables differ, and so do their results
    assert len({tuple(r[0].tokens) for r in got}) > 1


@pytest.mark.parametrize("make", [rnn, table])
def test_per_source_max_len_decodes_each_source_as_alone(make):
    """max_len as a tensor: each source stops at its own limit, as it would decoded alone."""
    step, state = make(seed=3, sources=4)[:2]
    bos = torch.tensor([BOS, 1, BOS, 2])
    limits = torch.tensor([2, 6, 1, 4])
    beams = beam_search(step, state, bos, EOS, beam_size=3, max_len=limits, n_best=2)
    greedies = greedy(step, state, bos, EOS, max_len=limits)
    for n in range(4):
        L = int(limits[n])
        alone = beam_search(step, one(state, n), int(bos[n]), EOS, beam_size=3, max_len=L,
                            n_best=2)[0]
        assert [h.tokens for h in beams[n]] == [h.tokens for h in alone]
        assert [h.score for h in beams[n]] == pytest.approx([h.score for h in alone], abs=1e-12)
        assert all(len(h.tokens) <= L for h in beams[n])
        assert greedies[n] == greedy(step, one(state, n), int(bos[n]), EOS, max_len=L)[0]
    with pytest.raises(ValueError, match=r"max_len: expected an int or an integer tensor of "
                                         r"shape \(4,\)"):
        greedy(step, state, bos, EOS, max_len=torch.tensor([2, 3]))
    with pytest.raises(ValueError, match="max_len: expected every limit >= 1, got 0"):
        beam_search(step, state, bos, EOS, max_len=torch.tensor([2, 0, 1, 1]))


def test_eos_stops_a_hypothesis_and_is_left_out():
    step, state, T = table(seed=4, sources=1)
    T[0, BOS] = torch.log(torch.tensor([0.01, 0.97, 0.01, 0.01], dtype=T.dtype))
    T[0, 1] = torch.log(torch.tensor([0.02, 0.02, 0.01, 0.95], dtype=T.dtype))
    assert greedy(step, state, BOS, EOS, max_len=10) == [[1]]
    best = beam_search(step, state, BOS, EOS, beam_size=4, max_len=10, length_penalty=1.0,
                       n_best=4)[0]
    assert best[0].tokens == [1]
    log_prob = (T[0, BOS, 1] + T[0, 1, EOS]).item()
    assert best[0].log_prob == pytest.approx(log_prob)
    assert best[0].score == pytest.approx(log_prob / 2)  # len counts eos
    assert all(EOS not in h.tokens for h in best)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_n_best_sorted_distinct_and_scored(alpha):
    step, state = rnn(seed=5, sources=2)
    max_len = 5
    got = beam_search(step, state, BOS, EOS, beam_size=6, max_len=max_len, length_penalty=alpha,
                      n_best=4)
    for hyps in got:
        assert len(hyps) == 4 and all(isinstance(h, Hypothesis) for h in hyps)
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4
        for h in hyps:  # ended by eos unless max_len tokens long
            length = min(len(h.tokens) + 1, max_len)
            assert h.score == pytest.approx(h.log_prob / length**alpha)


def test_early_stop_and_length_penalty():
    """bos -> eos 0.6, bos -> 1 0.4, 1 -> 1 0.99: with raw log-probs nothing can beat the empty
    output after one step; dividing by the length, the long run of 1s wins."""
    calls = []
    probs = torch.tensor([[0.0, 0.4, 0.0, 0.6], [0.0, 0.99, 0.0, 0.01]]).clamp(min=1e-9)
    T = torch.log(probs / probs.sum(-1, keepdim=True))

    def step(tokens, state):
        calls.append(1)
        return T[tokens.clamp(max=1)], state

    got = beam_search(step, None, BOS, EOS, beam_size=2, max_len=50, length_penalty=0.0)
    assert got[0][0].tokens == [] and len(calls) == 1
    calls.clear()
    got = beam_search(step, None, BOS, EOS, beam_size=2, max_len=50, length_penalty=1.0)
    assert got[0][0].tokens == [1] * 50 and len(calls) == 50
    # a finished hypothesis takes its beam slot: after [] finishes, one beam is left, so the
    # runners-up [1] * k + eos are never finished
    got = beam_search(step, None, BOS, EOS, beam_size=2, max_len=50, length_penalty=1.0,
                      n_best=2)
    assert [h.tokens for h in got[0]] == [[1] * 50, []]


def test_early_stop_bound_lets_a_long_likely_hypothesis_win():
    """With length_penalty > 0 a live beam's best possible score is its log-prob over the
    *longest* length it can reach: bos -> eos 0.7 finishes first (score log 0.7 = -0.36), but
    1 (0.3) then five steps of 1 at 0.99 and eos at 0.99 scores about -1.26 / 7 = -0.18. A bound
    over the next length (-1.20 / 2 = -0.60 < -0.36) would stop after the first step."""
    p_eos = {1: 0.7, 7: 0.99}  # P(eos) at each step call (else 0.01)

    def step(tokens, calls):
        calls = calls + 1
        p = p_eos.get(int(calls[0]), 0.01)
        lp = torch.log(torch.tensor([[p if v == EOS else (1 - p if v == 1 else 1e-9)
                                      for v in range(4)]] * tokens.shape[0]))
        return lp, calls

    got = beam_search(step, torch.zeros(1), BOS, EOS, beam_size=2, max_len=10,
                      length_penalty=1.0)
    best = got[0][0]
    assert best.tokens == [1] * 6
    assert best.score == pytest.approx((math.log(0.3) + 5 * math.log(0.99) + math.log(0.99)) / 7)


def test_ended_rows_are_fed_eos():
    inner, state = rnn(seed=2, sources=6)
    state = state._replace(h=3 * state.h)
    fed = []

    def step(tokens, state):
        fed.append(tokens.tolist())
        return inner(tokens, state)

    out = greedy(step, state, BOS, EOS, max_len=8)
    for n, row in enumerate(out):
        assert [f[n] for f in fed[1 : len(row) + 1]] == row
        assert all(f[n] == EOS for f in fed[len(row) + 1 :])
    assert any(len(row) < len(fed) - 1 for row in out)  # some row really ended early


def test_sample_greedy_limits():
    step, state = rnn(seed=6, sources=5)
    want = greedy(step, state, BOS, EOS, max_len=7)
    assert sample(step, state, BOS, EOS, 7, temperature=0.0) == want
    g = torch.Generator().manual_seed(0)
    assert sample(step, state, BOS, EOS, 7, temperature=1.3, top_k=1, generator=g) == want


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.6, None), (2.0, 2)])
def test_first_token_frequencies(dtype, temperature, top_k):
    step, _, T = table(seed=7, sources=1, dtype=dtype)
    draws = 4000
    state = {"src": torch.zeros(draws, dtype=torch.long)}
    g = torch.Generator().manual_seed(1)
    out = sample(step, state, BOS, EOS, 1, temperature=temperature, top_k=top_k, generator=g)
    first = torch.tensor([r[0] if r else EOS for r in out])
    freq = torch.bincount(first, minlength=V).double() / draws
    logits = T[0, BOS].double() / temperature
    if top_k is not None:
        logits[logits.argsort()[: V - top_k]] = -math.inf
        assert (freq[torch.isinf(logits)] == 0).all()
    assert freq.tolist() == pytest.approx(torch.softmax(logits, 0).tolist(), abs=0.03)


def test_top_k_stays_in_the_top_k():
    vocab, k = 8, 3
    step, _, T = table(seed=8, sources=1, vocab=vocab)
    state = {"src": torch.zeros(200, dtype=torch.long)}
    g = torch.Generator().manual_seed(2)
    out = sample(step, state, BOS, EOS, 10, temperature=3.0, top_k=k, generator=g)
    allowed = T[0].topk(k, -1).indices.tolist()  # per previous token
    pairs = [(p, w) for row in out for p, w in zip([BOS] + row, row, strict=False)]
    assert all(w in allowed[p] for p, w in pairs)
    assert len({w for _, w in pairs}) > k  # a hot temperature: the limit is what holds it


def test_next_token_is_repeatable_with_a_generator():
    log_probs = torch.log_softmax(torch.randn(50, 6), -1)
    a = next_token(log_probs, 1.0, None, torch.Generator().manual_seed(3))
    b = next_token(log_probs, 1.0, None, torch.Generator().manual_seed(3))
    assert a.shape == (50,) and a.dtype == torch.long and torch.equal(a, b)


def test_argument_errors():
    step, state = rnn(sources=2)
    bos = torch.tensor([BOS, BOS])
    cases = [
        (lambda: beam_search(step, state, bos, EOS, beam_size=0),
         "beam_size: expected an int >= 1, got 0"),
        (lambda: beam_search(step, state, bos, EOS, max_len=0), "max_len: expected an int >= 1"),
        (lambda: beam_search(step, state, bos, EOS, beam_size=2, n_best=3),
         r"n_best: expected an int <= beam_size \(2\), got 3"),
        (lambda: greedy(step, state, bos, EOS, 0), "max_len"),
        (lambda: sample(step, state, bos, EOS, 5, temperature=-1.0), "temperature"),
        (lambda: sample(step, state, bos, EOS, 5, top_k=0), "top_k: expected an int >= 1"),
        (lambda: greedy(step, state, bos.view(2, 1), EOS, 5), r"bos: expected shape \(N,\)"),
        (lambda: greedy(step, state, torch.tensor([BOS]), EOS, 5),
         "state: expected every tensor to have dim 0 of size 1"),
        (lambda: greedy(step, state, bos, V, 5), "eos: expected a token id < 4"),
        (lambda: greedy(lambda t, s: (torch.zeros(3, V), s), state, bos, EOS, 5),
         r"step: expected log_probs of shape \(2, V\), got \(3, 4\)"),
        (lambda: next_token(torch.zeros(4), 1.0), r"log_probs: expected shape \(B, V\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="bos: expected an integer tensor"):
        greedy(step, state, torch.zeros(2), EOS, 5)
