"""Attention (additive, multiplicative) against a loop over positions written from its
equations, and the attention decoder against stepping it by hand: teacher forcing, scheduled
sampling, the bridge into the first state and every registered cell."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import cell_names
from rnnkit.cells.base import state_leaves
from rnnkit.heads.attention import Attention
from rnnkit.heads.decoder import BOS_INDEX, AttentionDecoder
from rnnkit.heads.pooling import length_mask

KINDS = ("additive", "multiplicative")
LENGTHS = torch.tensor([4, 2, 5])  # real memory positions per row; S = 5
Q, K, V = 6, 5, 12  # query (decoder hidden) size, memory size, target vocabulary


def memory_and_mask(seed=0, garbage=1e3):
    """memory (N, S, K) float64 whose padded rows hold large garbage, and its mask (N, S)."""
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(LENGTHS), int(LENGTHS.max()), K, generator=g, dtype=torch.float64)
    mask = length_mask(LENGTHS, memory.shape[1])
    return memory.masked_fill(~mask[..., None], garbage), mask


def naive_attention(att, s, h):
    """One row: query s (Q,), its real memory rows h (L, K) -> context (K,), weights (L,),
    from the module docstring's equations, one position at a time."""
    e = []
    for h_j in h:
        if att.kind == "additive":
            hidden = att.W_q.weight @ s + att.W_q.bias + att.W_k.weight @ h_j
            e.append(att.v.weight[0] @ torch.tanh(hidden))
        else:
            e.append(s @ (att.W_k.weight @ h_j))
    e = torch.stack(e)
    alpha = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
    c = sum(a_j * h_j for a_j, h_j in zip(alpha, h, strict=True))
    return c, alpha


@pytest.mark.parametrize("kind", KINDS)
def test_attention_equals_a_loop_over_positions(kind):
    torch.manual_seed(0)
    att = Attention(kind, Q, K, attention_size=7 if kind == "additive" else None).double()
    memory, mask = memory_and_mask()
    query = torch.randn(len(LENGTHS), Q, dtype=torch.float64)
    context, alpha = att(query, memory, att.keys(memory), mask)
    assert context.shape == (3, K) and alpha.shape == (3, 5)
    for n, L in enumerate(LENGTHS.tolist()):
        c, a = naive_attention(att, query[n], memory[n, :L])
        torch.testing.assert_close(context[n], c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alpha[n, :L], a, rtol=1e-12, atol=1e-12)
        assert (alpha[n, L:] == 0).all()  # exactly 0, not merely small
    torch.testing.assert_close(alpha.sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_padded_memory_rows_do_not_change_the_context(kind):
    torch.manual_seed(1)
    att = Attention(kind, Q, K).double()
    query = torch.randn(len(LENGTHS), Q, dtype=torch.float64)
    a, mask = memory_and_mask(garbage=0.0)
    b, _ = memory_and_mask(garbage=-5e3)
    ca, wa = att(query, a, att.keys(a), mask)
    cb, wb = att(query, b, att.keys(b), mask)
    assert torch.equal(wa, wb)
    torch.testing.assert_close(ca, cb, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_gradcheck_wrt_query_and_memory(kind):
    torch.manual_seed(2)
    att = Attention(kind, 3, 4, attention_size=3).double()
    g = torch.Generator().manual_seed(3)
    query = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mask = length_mask(torch.tensor([3, 2]), 3)

    def fn(q, m):
        return att(q, m, att.keys(m), mask)  # keys depend on the memory too

    assert torch.autograd.gradcheck(fn, (query, memory))


def test_attention_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"kind: expected 'additive' or 'multiplicative', "
                                         r"got 'none'"):
        Attention("none", 4, 4)


# ---- the decoder -----------------------------------------------------------------------------


def decoder(cell="gru", attention="additive", seed=0):
    """A seeded float64 decoder (hidden Q, memory and summary K) in eval mode."""
    torch.manual_seed(seed)
    return AttentionDecoder(cell, V, 4, Q, K, K, attention).double().eval()


def start(dec, seed=0):
    """``dec``'s start state over the padded memory, its mean over real rows as summary."""
    memory, mask = memory_and_mask(seed, garbage=0.0)
    summary = memory.sum(1) / LENGTHS[:, None]  # (N, K)
    return dec.start(memory, mask, summary)


def inputs(T=6, seed=0):
    """<bos> then random target tokens: (N, T)."""
    g = torch.Generator().manual_seed(seed)
    rest = torch.randint(4, V, (len(LENGTHS), T - 1), generator=g)
    return torch.cat([torch.full((len(LENGTHS), 1), BOS_INDEX), rest], 1)


def hand_loop(dec, state, tokens_at):
    """Step ``dec._step`` by hand; ``tokens_at(t, previous_logits)`` gives step t's input."""
    logits, weights, previous = [], [], None
    for t in range(6):
        step_logits, state, alpha = dec._step(tokens_at(t, previous), state)
        logits.append(step_logits)
        weights.append(alpha)
        previous = step_logits
    return torch.stack(logits, 1), weights


@pytest.mark.parametrize("attention", ["additive", "multiplicative", "none"])
def test_teacher_forcing_equals_stepping_by_hand(attention):
    dec = decoder(attention=attention)
    x = inputs()
    rng = torch.get_rng_state()
    got, weights = dec(start(dec), x, sampling_rate=0.0)
    assert torch.equal(torch.get_rng_state(), rng)  # rate 0 draws no random numbers
    want, want_weights = hand_loop(dec, start(dec), lambda t, _: x[:, t])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert torch.equal(dec(start(dec), x)[0], got)  # the default rate is 0
    if attention == "none":
        assert weights is None
    else:
        torch.testing.assert_close(weights, torch.stack(want_weights, 1), rtol=0, atol=0)


def test_step_is_the_log_softmax_of_the_logits():
    dec = decoder()
    tokens = torch.tensor([BOS_INDEX] * 3)
    logits, _, _ = dec._step(tokens, start(dec))
    log_probs, state = dec.step(tokens, start(dec))
    torch.testing.assert_close(log_probs, logits.log_softmax(-1), rtol=0, atol=0)
    assert set(state) == {"memory", "mask", "feed", "cell", "keys"}


def test_sampling_rate_one_reads_the_previous_argmax_after_the_first_step():
    dec = decoder()
    x = inputs()
    got, _ = dec(start(dec), x, sampling_rate=1.0)
    want, _ = hand_loop(dec, start(dec),
                        lambda t, prev: x[:, 0] if t == 0 else prev.argmax(-1))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    teacher, _ = dec(start(dec), x)
    assert not torch.equal(got[:, 1:], teacher[:, 1:])  # the inputs really changed


def test_a_partial_sampling_rate_mixes_by_the_generator_draws():
    dec = decoder()
    x = inputs()
    rate = 0.5
    got, _ = dec(start(dec), x, sampling_rate=rate, generator=torch.Generator().manual_seed(9))
    again, _ = dec(start(dec), x, sampling_rate=rate,
                   generator=torch.Generator().manual_seed(9))
    assert torch.equal(got, again)
    g = torch.Generator().manual_seed(9)
    chose_own = []

    def tokens_at(t, prev):
        if t == 0:
            return x[:, 0]
        own = torch.rand(x[:, t].shape, generator=g) < rate  # (N,)
        chose_own.append(own)
        return torch.where(own, prev.argmax(-1), x[:, t])

    want, _ = hand_loop(dec, start(dec), tokens_at)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    mixed = torch.stack(chose_own)
    assert mixed.any() and not mixed.all()  # both kinds of input occurred


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_decoder_attention_rows_sum_to_one_over_real_positions(attention):
    dec = decoder(attention=attention)
    _, weights = dec(start(dec), inputs())  # (N, T, S)
    mask = length_mask(LENGTHS, 5)[:, None, :].expand_as(weights)
    assert (weights[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6, dtype=torch.float64))
    one = {k: (v[1:2] if torch.is_tensor(v) else tuple(leaf[1:2] for leaf in v))
           for k, v in start(dec).items()}
    tokens = [5, 6, 7]
    attn = dec.attention_map(one, tokens)  # (T + 1, S): tokens then <eos>
    assert attn.shape == (4, 5)
    torch.testing.assert_close(attn.sum(-1), torch.ones(4, dtype=torch.float64))


def test_attention_none_has_no_weights_and_no_attention_map():
    dec = decoder(attention="none")
    assert dec.attention is None
    state = start(dec)
    assert "keys" not in state
    logits, weights = dec(state, inputs())
    assert logits.shape == (3, 6, V) and weights is None
    with pytest.raises(ValueError, match="attention_map: this decoder has no attention"):
        dec.attention_map(state, [5, 6])


@pytest.mark.parametrize("cell", cell_names())  # scrn: output wider than hidden
def test_every_cell_builds_a_decoder_with_the_bridge_in_its_first_state(cell):
    torch.manual_seed(4)
    dec = AttentionDecoder(cell, V, 4, 8, K, 3, "additive").double()
    memory, mask = memory_and_mask(garbage=0.0)
    summary = torch.randn(3, 3, dtype=torch.float64)
    state = dec.start(memory, mask, summary)
    leaves = list(state["cell"])
    zero = dec.cell.init_state(3, memory.device, memory.dtype)
    assert [leaf.shape for leaf in leaves] == [leaf.shape for leaf in state_leaves(zero)]
    bridge = torch.tanh(summary @ dec.bridge.weight.T + dec.bridge.bias)  # (N, H)
    torch.testing.assert_close(leaves[0], bridge, rtol=1e-12, atol=1e-12)
    for leaf in leaves[1:]:
        assert (leaf == 0).all()
    assert (state["feed"] == 0).all() and state["feed"].shape == (3, 8)
    logits, weights = dec(state, inputs(T=3))
    assert logits.shape == (3, 3, V) and weights.shape == (3, 3, 5)
    assert torch.isfinite(logits).all()
