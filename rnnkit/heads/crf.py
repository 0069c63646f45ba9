"""A linear-chain conditional random field over per-step scores (Lafferty et al. 2001), the
output layer of a BiLSTM-CRF tagger (Huang, Xu & Yu 2015; Lample et al. 2016).

The network gives emission scores E (N, T, K) over K tags; the CRF scores a whole tag sequence
y_1..y_L of a sentence of L words as

    s(x, y) = start[y_1] + sum_{t=1..L} E[t, y_t] + sum_{t=2..L} A[y_{t-1}, y_t] + end[y_L]

and p(y | x) = exp s(x, y) / Z(x), Z(x) the sum of exp s(x, y') over all K^L sequences, which
the forward algorithm computes in log space:

    alpha_1(k) = start[k] + E[1, k]
    alpha_t(k) = E[t, k] + logsumexp_j (alpha_{t-1}(j) + A[j, k])
    log Z      = logsumexp_k (alpha_L(k) + end[k])

Viterbi decoding is the same recursion with max for logsumexp, and back-pointers. Transitions
that a tagging scheme forbids (BIO: ``I-x`` only after ``B-x`` or ``I-x``) can be fixed to a
score of -10^4 (:func:`scheme_allowed`), so neither training nor decoding ever uses them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1e4  # the score of a forbidden transition: exp(-1e4) is 0 in any float type


def bio_allowed(tags: list[str]) -> tuple[Tensor, Tensor]:
    """``(transitions (K, K), starts (K,))`` bool masks of what BIO allows: ``I-x`` may follow
    only ``B-x`` or ``I-x`` and may not start a sentence; everything else is allowed."""
    return scheme_allowed(tags, "bio")


def scheme_allowed(tags: list[str], scheme: str) -> tuple[Tensor, Tensor] | None:
    """The transitions a tag scheme allows, as ``(transitions (K, K), starts (K,))`` bool
    masks, ``transitions[i, j]``: may tag j follow tag i; None for ``none`` (every tag may
    follow every tag).

    - ``bio``: ``I-x`` only after ``B-x`` or ``I-x``, never first.
    - ``bioes``: ``I-x`` and ``E-x`` only after ``B-x`` or ``I-x``, never first; after ``B-x``
      or ``I-x`` only ``I-x`` or ``E-x`` (a chunk that began must end with ``E-x``).
    """
    if scheme == "none":
        return None
    if scheme not in ("bio", "bioes"):
        raise ValueError(f"scheme: expected bio, bioes or none, got {scheme!r}")
    K = len(tags)
    transitions = torch.ones(K, K, dtype=torch.bool)
    starts = torch.ones(K, dtype=torch.bool)
    inside = ("I-", "E-") if scheme == "bioes" else ("I-",)
    for j, tag in enumerate(tags):
        if tag.startswith(inside):
            kind = tag[2:]
            starts[j] = False
            for i, prev in enumerate(tags):
                transitions[i, j] = prev in (f"B-{kind}", f"I-{kind}")
    if scheme == "bioes":  # an open chunk (after B-x or I-x) must go on as I-x or end as E-x
        for i, prev in enumerate(tags):
            if prev.startswith(("B-", "I-")):
                kind = prev[2:]
                for j, tag in enumerate(tags):
                    transitions[i, j] &= tag in (f"I-{kind}", f"E-{kind}")
    return transitions, starts


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags; inputs batch first ``(N, T, K)``.

    Parameters: ``start`` (K,), ``end`` (K,), ``transitions`` (K, K) with A[i, j] the score of
    tag j following tag i. ``allowed``: optional ``(transitions, starts)`` bool masks (see
    :func:`bio_allowed`); forbidden entries are held at -10^4.

    ``mask`` (N, T) bool marks each sentence's words; it must be a prefix (a sentence starts at
    step 0 and has no gaps). ``forward`` returns the log-likelihood log p(tags | x) (the loss is
    its negative), as pytorch-crf does.
    """

    def __init__(self, num_tags: int, *, allowed: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags: expected >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        trans_ok = torch.ones(num_tags, num_tags, dtype=torch.bool)
        start_ok = torch.ones(num_tags, dtype=torch.bool)
        if allowed is not None:
            trans_ok, start_ok = allowed
            if tuple(trans_ok.shape) != (num_tags, num_tags) or \
                    tuple(start_ok.shape) != (num_tags,):
                raise ValueError(f"allowed: expected masks of shapes ({num_tags}, {num_tags}) "
                                 f"and ({num_tags},), got {tuple(trans_ok.shape)} and "
                                 f"{tuple(start_ok.shape)}")
        self.register_buffer("trans_ok", trans_ok.bool().clone(), persistent=False)
        self.register_buffer("start_ok", start_ok.bool().clone(), persistent=False)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """start, transitions and end with the forbidden entries at -10^4."""
        start = self.start.masked_fill(~self.start_ok, FORBIDDEN)
        trans = self.transitions.masked_fill(~self.trans_ok, FORBIDDEN)
        return start, trans, self.end

    def _check(self, emissions: Tensor, mask: Tensor | None, tags: Tensor | None = None):
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions: expected (N, T, num_tags={self.num_tags}), got "
                             f"{tuple(emissions.shape)}")
        N, T, _ = emissions.shape
        if mask is None:
            mask = torch.ones(N, T, dtype=torch.bool, device=emissions.device)
        if tuple(mask.shape) != (N, T):
            raise ValueError(f"mask: expected shape {(N, T)} like the emissions, got "
                             f"{tuple(mask.shape)}")
        mask = mask.bool()
        if T and not mask[:, 0].all():
            raise ValueError("mask: the first step of every sentence must be a word (True)")
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("mask: expected each row to be a prefix of Trues (no gaps)")
        if tags is not None:
            if tuple(tags.shape) != (N, T):
                raise ValueError(f"tags: expected shape {(N, T)}, got {tuple(tags.shape)}")
            real = tags[mask]
            if real.numel() and (real.min() < 0 or real.max() >= self.num_tags):
                raise ValueError(f"tags: expected values in [0, {self.num_tags}), got "
                                 f"{int(real.min())}..{int(real.max())}")
        return mask

    def sequence_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """s(x, y) of the given tag sequences, (N,)."""
        start, trans, end = self.scores()
        m = mask.to(emissions.dtype)
        tags = tags.masked_fill(~mask, 0)
        emit = emissions.gather(2, tags[..., None]).squeeze(2)  # (N, T) E[t, y_t]
        score = start[tags[:, 0]] + (emit * m).sum(1)
        score = score + (trans[tags[:, :-1], tags[:, 1:]] * m[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1)[:, None]).squeeze(1)  # y_L
        return score + end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """log Z(x), (N,), by the forward algorithm."""
        mask = self._check(emissions, mask)
        start, trans, end = self.scores()
        # logsumexp_j (alpha_j + A_jk) = m + a + log sum_j exp(alpha_j - m) exp(A_jk - a), with
        # m = max_j alpha_j and a = max A: one (N, K) x (K, K) product per step instead of an
        # (N, K, K) temporary. A sum below the dtype's smallest normal number (a tag whose
        # paths all have probability < e^-87 in float32 against the best) is held there.
        a = trans.detach().max()
        exp_trans = (trans - a).exp()  # forbidden transitions: exactly 0
        tiny = torch.finfo(emissions.dtype).tiny
        alpha = start + emissions[:, 0]  # (N, K)
        for t in range(1, emissions.shape[1]):
            m = alpha.detach().amax(1, keepdim=True)  # (N, 1)
            total = ((alpha - m).exp() @ exp_trans).clamp_min(tiny)
            step = m + a + total.log() + emissions[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)  # padding carries alpha on
        return torch.logsumexp(alpha + end, dim=1)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None,
                reduction: str = "sum") -> Tensor:
        """log p(tags | emissions): ``none`` (N,), ``sum``, ``mean`` over sentences, or
        ``token_mean`` (the sum over the number of words)."""
        mask = self._check(emissions, mask, tags)
        llh = self.sequence_score(emissions, tags, mask) - self.log_partition(emissions, mask)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        if reduction == "token_mean":
            return llh.sum() / mask.sum()
        raise ValueError(f"reduction: expected none, sum, mean or token_mean, got {reduction!r}")

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> list[list[int]]:
        """The highest-scoring tag sequence of every sentence (Viterbi), each as long as its
        sentence."""
        mask = self._check(emissions, mask)
        start, trans, end = self.scores()
        N, T, K = emissions.shape
        score = start + emissions[:, 0]  # (N, K) best score of a path ending in k
        pointers = []
        for t in range(1, T):
            best, arg = (score[:, :, None] + trans).max(dim=1)  # over the previous tag
            pointers.append(arg)
            score = torch.where(mask[:, t, None], best + emissions[:, t], score)
        last = (score + end).argmax(1).tolist()
        lengths = mask.sum(1).tolist()
        pointers = torch.stack(pointers, 1).tolist() if pointers else []  # (N, T-1, K)
        paths = []
        for n in range(N):
            path = [last[n]]
            for t in range(lengths[n] - 1, 0, -1):
                path.append(pointers[n][t - 1][path[-1]])
            paths.append(path[::-1])
        return paths
