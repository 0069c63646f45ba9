"""Decoding a sequence from any autoregressive decoder: greedy, beam search and sampling.

Nothing here knows about models. A decoder is given as a step function

    step(tokens: LongTensor (B,), state) -> (log_probs: Tensor (B, V), new_state)

that reads the previous token of each of B rows and returns the log-probabilities of the next
token and the state after it. ``state`` is any nesting of tuples, NamedTuples, lists and dicts
of tensors whose dim 0 indexes the B rows (None leaves are allowed); beam search reorders its
rows with :func:`select_rows`. All decoders start from ``bos`` (one token per source, or one int
for every source) and stop a row at ``eos``, which is never part of the returned tokens.
``max_len`` bounds the number of step calls, so a result has at most ``max_len`` tokens: one
int for every source, or a LongTensor ``(N,)`` of each source's own limit (a batch then decodes
each source exactly as it would alone).

The decoders run under ``torch.no_grad()``; they return Python lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .._checks import check_positive_int

Step = Callable[[Tensor, Any], tuple[Tensor, Any]]


class Hypothesis(NamedTuple):
    """One finished beam-search result: the tokens (eos left out), the score it was ranked by
    (``log_prob / len**length_penalty``, ``len`` counting eos) and its total log-probability."""

    tokens: list[int]
    score: float
    log_prob: float


# ----------------------------------------------------------------------------- state helpers


def map_state(fn: Callable[[Tensor], Tensor], state: Any) -> Any:
    """Apply ``fn`` to every tensor of a nested state, keeping its structure: tuples,
    NamedTuples (same type), lists and dicts are rebuilt; None leaves pass through."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple):
        items = [map_state(fn, s) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if isinstance(state, list):
        return [map_state(fn, s) for s in state]
    if isinstance(state, dict):
        out = {k: map_state(fn, v) for k, v in state.items()}
        return out if type(state) is dict else type(state)(out)
    raise TypeError(
        "state: expected tensors, None, or tuples / lists / dicts of them, "
        f"got {type(state).__name__}"
    )


def select_rows(state: Any, index: Tensor) -> Any:
    """The rows ``index`` (LongTensor (M,)) of every tensor of ``state``: (B, ...) -> (M, ...)."""
    return map_state(lambda t: t.index_select(0, index.to(t.device)), state)


def _check_state_rows(state: Any, rows: int) -> None:
    """Every tensor of ``state`` must have dim 0 of size ``rows`` (one row per source)."""

    def check(t: Tensor) -> Tensor:
        if t.dim() == 0 or t.shape[0] != rows:
            raise ValueError(
                f"state: expected every tensor to have dim 0 of size {rows} (one row per "
                f"source), got a tensor of shape {tuple(t.shape)}"
            )
        return t

    map_state(check, state)


def _first_tensor(state: Any) -> Tensor | None:
    """The first tensor of ``state`` with at least one dim, or None if it has none."""
    found: list[Tensor] = []

    def look(t: Tensor) -> Tensor:
        if not found and t.dim() > 0:
            found.append(t)
        return t

    map_state(look, state)
    return found[0] if found else None


# ----------------------------------------------------------------------------- argument checks


def _check_bos(bos: Tensor | int, state: Any) -> Tensor:
    """``bos`` as a LongTensor (N,); an int is repeated for the N rows of ``state`` (1 if the
    state has no tensor)."""
    if isinstance(bos, int) and not isinstance(bos, bool):
        first = _first_tensor(state)
        rows, device = (1, None) if first is None else (first.shape[0], first.device)
        return torch.full((rows,), bos, dtype=torch.long, device=device)
    if not isinstance(bos, Tensor):
        raise TypeError(f"bos: expected an int or a LongTensor (N,), got {type(bos).__name__}")
    if bos.is_floating_point() or bos.is_complex() or bos.dtype == torch.bool:
        raise TypeError(f"bos: expected an integer tensor, got dtype {bos.dtype}")
    if bos.dim() != 1 or bos.shape[0] == 0:
        raise ValueError(f"bos: expected shape (N,) with N >= 1, got {tuple(bos.shape)}")
    return bos.long()


def _check_eos(eos: int) -> int:
    if isinstance(eos, bool) or not isinstance(eos, int):
        raise TypeError(f"eos: expected an int token id, got {type(eos).__name__} ({eos!r})")
    if eos < 0:
        raise ValueError(f"eos: expected a token id >= 0, got {eos}")
    return eos


def _check_max_len(max_len, rows: int) -> Tensor:
    """``max_len`` as a LongTensor ``(rows,)`` of per-source limits, each >= 1."""
    if isinstance(max_len, Tensor):
        if max_len.is_floating_point() or max_len.dtype == torch.bool or \
                tuple(max_len.shape) != (rows,):
            raise ValueError(f"max_len: expected an int or an integer tensor of shape ({rows},) "
                             f"(one limit per source), got {max_len.dtype} of shape "
                             f"{tuple(max_len.shape)}")
        if rows and int(max_len.min()) < 1:
            raise ValueError(f"max_len: expected every limit >= 1, got {int(max_len.min())}")
        return max_len.long().cpu()
    return torch.full((rows,), check_positive_int("max_len", max_len), dtype=torch.long)


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature: expected a float >= 0, got {type(temperature).__name__}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature: expected a finite float >= 0, got {temperature}")
    return float(temperature)


def _call_step(step: Step, tokens: Tensor, state: Any, eos: int) -> tuple[Tensor, Any]:
    """Run one step and check what came back: log_probs (B, V) floating, V > eos, no NaN."""
    out = step(tokens, state)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"step: expected to return (log_probs, state), got {type(out).__name__}")
    log_probs, new_state = out
    rows = tokens.shape[0]
    if not isinstance(log_probs, Tensor) or not log_probs.is_floating_point():
        raise TypeError(f"step: expected log_probs to be a floating tensor, got {log_probs!r}")
    if log_probs.dim() != 2 or log_probs.shape[0] != rows:
        raise ValueError(
            f"step: expected log_probs of shape ({rows}, V), got {tuple(log_probs.shape)}"
        )
    if eos >= log_probs.shape[1]:
        raise ValueError(
            f"eos: expected a token id < {log_probs.shape[1]} (the vocabulary size of step's "
            f"log_probs), got {eos}"
        )
    if torch.isnan(log_probs).any():
        raise ValueError("step: returned log_probs containing NaN")
    return log_probs, new_state


# ----------------------------------------------------------------------------- greedy / sampling


def next_token(
    log_probs: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One next token per row from ``log_probs`` (B, V) -> LongTensor (B,).

    Draws from softmax(log_probs / temperature) over the ``top_k`` most likely tokens of each
    row (all tokens if None; a top_k above V means all). ``temperature`` 0 is the argmax.
    """
    temperature = _check_temperature(temperature)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if not isinstance(log_probs, Tensor) or not log_probs.is_floating_point():
        raise TypeError(f"log_probs: expected a floating tensor (B, V), got {log_probs!r}")
    if log_probs.dim() != 2 or log_probs.shape[1] == 0:
        raise ValueError(f"log_probs: expected shape (B, V) with V >= 1, got "
                         f"{tuple(log_probs.shape)}")
    if temperature == 0 or top_k == 1:
        return log_probs.argmax(-1)
    # the row's best score subtracted first: a tiny temperature sends the others to -inf
    # instead of overflowing every score (the draw is then the argmax, as at temperature 0)
    logits = (log_probs - log_probs.max(-1, keepdim=True).values) / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[1]:
        keep = logits.topk(top_k, dim=-1).indices  # (B, k)
        masked = torch.full_like(logits, -math.inf)
        logits = masked.scatter(-1, keep, logits.gather(-1, keep))
    if not torch.isfinite(logits).any(-1).all():
        raise ValueError("log_probs: expected every row to have a finite entry, got a row of -inf")
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode(step: Step, state: Any, bos: Tensor | int, eos: int, max_len: int,
            choose: Callable[[Tensor], Tensor]) -> list[list[int]]:
    """The loop shared by greedy and sampling: ``choose`` maps log_probs (N, V) to tokens (N,).
    Rows that emitted eos are fed eos from then on and their outputs stay as they were."""
    eos = _check_eos(eos)
    tokens = _check_bos(bos, state)  # (N,)
    limit = _check_max_len(max_len, tokens.shape[0]).to(tokens.device)  # (N,)
    _check_state_rows(state, tokens.shape[0])
    done = torch.zeros_like(tokens, dtype=torch.bool)  # (N,)
    emitted = []  # max_len x (N,), eos where a row has ended
    for t in range(1, int(limit.max()) + 1):
        log_probs, state = _call_step(step, tokens, state, eos)
        tokens = choose(log_probs).masked_fill(done, eos)  # (N,)
        emitted.append(tokens)
        done = done | (tokens == eos) | (limit <= t)  # a row at its limit has written it all
        if bool(done.all()):
            break
    out = []
    for row in torch.stack(emitted, 1).tolist():  # (N, steps)
        out.append(row[: row.index(eos)] if eos in row else row)
    return out


@torch.no_grad()
def greedy(step: Step, state: Any, bos: Tensor | int, eos: int,
           max_len: int | Tensor) -> list[list[int]]:
    """The argmax token at each step, for a batch of N sources (``bos`` LongTensor (N,) or an
    int); a row stops at ``eos`` (left out) or after ``max_len`` tokens."""
    return _decode(step, state, bos, eos, max_len, lambda lp: lp.argmax(-1))


@torch.no_grad()
def sample(
    step: Step,
    state: Any,
    bos: Tensor | int,
    eos: int,
    max_len: int | Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Ancestral sampling: each next token drawn by :func:`next_token` (softmax of
    log_probs / temperature over the top_k tokens; temperature 0 is greedy). Rows stop at
    ``eos`` (left out) or after ``max_len`` tokens. ``generator`` makes draws repeatable."""
    _check_temperature(temperature)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    return _decode(step, state, bos, eos, max_len,
                   lambda lp: next_token(lp, temperature, top_k, generator))


# ----------------------------------------------------------------------------- beam search


@torch.no_grad()
def beam_search(
    step: Step,
    state: Any,
    bos: Tensor | int,
    eos: int,
    *,
    beam_size: int = 5,
    max_len: int | Tensor = 50,
    length_penalty: float = 1.0,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """Beam search over N sources at once; returns, per source, the ``n_best`` best finished
    hypotheses, best first (fewer only if fewer than n_best finite-probability ones exist).

    The N sources are expanded to N*K rows (K = beam_size; state rows repeated with
    repeat_interleave), one step call per time step for all. At the start only one beam per
    source is live (the others at -inf), so the first step does not pick K copies of a token.

    Each step, a source with m live beams keeps the m best extensions of them; those ending in
    ``eos`` are finished and take a beam slot with them, so a source holds m = K - (number
    finished) live beams and is done when all K have finished (with beam_size 1 this is greedy).
    At ``max_len`` (each source's own, for a tensor) the remaining live beams are finished as
    they are. A finished hypothesis
    scores ``log_prob / len**length_penalty``, ``len`` counting its tokens and eos (0: the raw
    log-prob).

    Early stop, for any length_penalty: a source stops once it has n_best finished hypotheses
    and no live beam can beat the n_best-th: log-probs only fall, so a beam with log-prob
    lp <= 0 can at best score lp / L**length_penalty for some length L up to max_len (for
    length_penalty 0: its log-prob now). This assumes ``step`` returns log-probabilities
    (<= 0); it does not change the result.
    """
    eos = _check_eos(eos)
    K = check_positive_int("beam_size", beam_size)
    check_positive_int("n_best", n_best)
    if n_best > K:
        raise ValueError(f"n_best: expected an int <= beam_size ({K}), got {n_best}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
            or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty: expected a finite float, got {length_penalty!r}")
    alpha = float(length_penalty)
    bos = _check_bos(bos, state)  # (N,)
    N = bos.shape[0]
    limits = _check_max_len(max_len, N).tolist()  # each source's max_len
    _check_state_rows(state, N)
    device = bos.device

    tokens = bos.repeat_interleave(K)  # (N*K,)
    state = map_state(lambda t: t.repeat_interleave(K, dim=0), state)
    rows = torch.arange(N, device=device)[:, None] * K  # (N, 1): first row of each source
    live = torch.full((N,), K, dtype=torch.long, device=device)  # live beams per source
    slot = torch.arange(K, device=device)  # (K,)
    history = torch.zeros(N, K, 0, dtype=torch.long, device=device)  # tokens of each beam
    finished: list[list[Hypothesis]] = [[] for _ in range(N)]
    scores = None  # (N, K) log-probs of the live beams; -inf for dead slots

    def finish(n: int, toks: list[int], log_prob: float, length: int) -> None:
        finished[n].append(Hypothesis(toks, log_prob / length**alpha, log_prob))

    for t in range(1, max(limits) + 1):
        log_probs, state = _call_step(step, tokens, state, eos)  # (N*K, V)
        V = log_probs.shape[1]
        if scores is None:
            scores = torch.full((N, K), -math.inf, dtype=log_probs.dtype, device=device)
            scores[:, 0] = 0.0
        cand = (scores[:, :, None] + log_probs.view(N, K, V)).view(N, K * V)
        best, index = cand.topk(K, dim=-1)  # (N, K), best first
        best = best.masked_fill(slot >= live[:, None], -math.inf)  # only m = live[n] taken
        parent, word = index // V, index % V  # (N, K) each
        ended = (word == eos) & torch.isfinite(best)  # (N, K)
        if bool(ended.any()):
            hist, lps, par = history.tolist(), best.tolist(), parent.tolist()
            for n, j in ended.nonzero().tolist():
                finish(n, hist[n][par[n][j]], lps[n][j], t)
            live = live - ended.sum(1)
        scores = best.masked_fill(word == eos, -math.inf)
        history = torch.cat(
            [history.gather(1, parent[:, :, None].expand(N, K, t - 1)), word[:, :, None]], 2
        )  # (N, K, t)
        state = select_rows(state, (rows + parent).view(-1))
        tokens = word.view(-1)

        # early stop: drop the live beams of sources whose n_best-th hypothesis cannot be beaten
        top_live = scores.max(1).values.tolist()  # (N,)
        at_limit = [n for n in range(N) if limits[n] == t and math.isfinite(top_live[n])]
        if at_limit:  # a source's max_len reached: its live beams finish as they are
            hist, lps = history.tolist(), scores.tolist()
            for n in at_limit:
                for j in range(K):
                    if math.isfinite(lps[n][j]):
                        finish(n, hist[n][j], lps[n][j], t)
                scores[n] = -math.inf
                live[n] = 0
        for n in range(N):
            if limits[n] <= t or len(finished[n]) < n_best or not math.isfinite(top_live[n]):
                continue
            # a live beam finishes with a length in [t + 1, its max_len]; lp / L**alpha with
            # lp <= 0 is largest at the longest L if alpha >= 0, else the shortest
            length = limits[n] if alpha >= 0 else t + 1
            kth = sorted(h.score for h in finished[n])[-n_best]
            if top_live[n] / length**alpha < kth:
                scores[n] = -math.inf
                live[n] = 0
        if not bool(torch.isfinite(scores).any()):
            break

    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]
