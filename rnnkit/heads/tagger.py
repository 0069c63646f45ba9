"""A sequence tagger: a label for every word, optionally an intent for the sentence.

    e_t   = Embedding(w_t)                                   (N, T, E)
            (training: w_t -> <unk> with probability model.word_dropout)
            with ``model.char_filters`` > 0: e_t = [Embedding(w_t) ; z_t], z_t the word's
            character features (:mod:`rnnkit.heads.chars`, kept when w_t is dropped, as
            for a word never seen)
    h_t   = recurrent network(dropout(e))_t                  (N, T, D*H), any rnnkit cell
    s_t   = W_o dropout(h_t) + b_o                           (N, T, K) emission scores

Softmax head: p(y_t = k | x) = softmax(s_t)_k, loss = sum_t -log p(y_t | x) per sentence.
CRF head (:class:`rnnkit.heads.crf.CRF`): p(y | x) ∝ exp(sum_t s_t[y_t] + sum_t A[y_{t-1}, y_t]
+ start/end scores), loss = -log p(y | x) per sentence, Viterbi decoding: the network learns the
features and the CRF scores whole tag sequences (the course's "deep structured model").

Intent head (``model.intent``): the encoder's outputs pooled over the sentence's real words
(``model.pooling``: final, mean, max or attention; :mod:`rnnkit.heads.pooling`) into u, and each
intent k predicted on its own (a sentence may have several): p(k | x) = sigmoid(w_k . u + b_k),
loss = sum_k binary cross-entropy, added to the sentence's loss. Predicted intents: every k
with p(k | x) > 1/2, or the most probable one if none is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.regularize import SequenceDropout
from rnnkit.tasks.base import recurrent_from_config

from .chars import CHAR_SPECIALS, CharFeatures
from .pooling import Pooling, length_mask
from .words import drop_words


class SequenceTagger(nn.Module):
    """Embedding -> any rnnkit recurrent network -> per-step scores -> softmax or CRF
    (+ an optional intent classifier). ``model_cfg``: an rnnkit.config.ModelConfig."""

    def __init__(self, model_cfg, vocab_size: int, num_tags: int, num_intents: int = 0,
                 allowed: tuple[Tensor, Tensor] | None = None, num_chars: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, model_cfg.embedding_size, padding_idx=0)
        self.drop = SequenceDropout(model_cfg.input_dropout, model_cfg.dropout_mode)
        self.word_dropout = model_cfg.word_dropout
        self.chars = None
        inputs = model_cfg.embedding_size
        if model_cfg.char_filters:
            if num_chars < len(CHAR_SPECIALS):
                raise ValueError(f"num_chars: model.char_filters={model_cfg.char_filters} needs "
                                 f"a character vocabulary, got num_chars={num_chars}")
            self.chars = CharFeatures(num_chars, model_cfg.char_filters)
            inputs += model_cfg.char_filters
        self.rnn = recurrent_from_config(model_cfg, inputs)
        self.emit = nn.Linear(self.rnn.output_size, num_tags)
        self.crf = None
        if model_cfg.head == "crf":
            from .crf import CRF

            self.crf = CRF(num_tags, allowed=allowed)
        self.intent = self.pool = None
        if num_intents:
            directions = 2 if model_cfg.bidirectional else 1
            self.pool = Pooling(model_cfg.pooling, self.rnn.output_size, directions)
            self.intent = nn.Linear(self.rnn.output_size, num_intents)

    def encode(self, tokens: Tensor, lengths: Tensor, chars: Tensor | None = None):
        """tokens (N, T), lengths (N,), chars (N, T, L) with character features ->
        emissions (N, T, K), pooled (N, F), mask (N, T)."""
        T = int(lengths.max())
        tokens = tokens[:, :T]
        mask = length_mask(lengths, T)
        if self.training:
            tokens = drop_words(tokens, self.word_dropout)
        x = self.embed(tokens)  # (N, T, E)
        if self.chars is not None:
            if (chars is None or chars.ndim != 3 or chars.shape[0] != tokens.shape[0]
                    or chars.shape[1] < T):
                got = "None" if chars is None else tuple(chars.shape)
                raise ValueError(f"chars: this model reads character ids (N, T, L) with "
                                 f"N={tokens.shape[0]}, T>={T}, got {got}")
            x = torch.cat([x, self.chars(chars[:, :T])], dim=-1)  # (N, T, E + F)
        out, _ = self.rnn(self.drop(x), lengths=lengths.cpu())
        out = self.drop(out)  # (N, T, D*H), zeros past each length
        pooled = self.pool(out, mask) if self.pool is not None else None  # (N, D*H)
        return self.emit(out), pooled, mask

    @torch.no_grad()
    def step(self, token: Tensor, state=None, chars: Tensor | None = None,
             previous: Tensor | None = None):
        """Streaming, one word at a time (a unidirectional network only): ``token`` (N,) word
        ids, ``chars`` (N, L) their character ids with character features, ``previous`` (N,)
        the tags given to the words before (None at a sentence's first word) ->
        ``(tags (N,), features (N, H), state)``. The tag is the argmax of the word's scores;
        with a CRF head, of its scores plus the transition from ``previous`` (the start score
        at the first word): a decision made before the next word is read, so it can differ from
        the Viterbi path of the whole sentence. ``features``: the network's output, for
        :meth:`stream_intents` at the sentence's end."""
        x = self.embed(token)  # (N, E)
        if self.chars is not None:
            if chars is None or chars.ndim != 2 or chars.shape[0] != token.shape[0]:
                got = "None" if chars is None else tuple(chars.shape)
                raise ValueError(f"chars: this model reads each word's character ids (N, L) "
                                 f"with N={token.shape[0]}, got {got}")
            x = torch.cat([x, self.chars(chars.unsqueeze(1))[:, 0]], dim=-1)  # (N, E + F)
        h, state = self.rnn.step(self.drop(x), state)
        scores = self.emit(self.drop(h))  # (N, K)
        if self.crf is not None:
            start, trans, _ = self.crf.scores()
            scores = scores + (start if previous is None else trans[previous])
        return scores.argmax(-1), h, state

    @torch.no_grad()
    def stream_intents(self, features: list[Tensor]) -> list[list[int]] | None:
        """At a streamed sentence's end: its intents from the features :meth:`step` returned
        for each word (as :meth:`predict`), or None without an intent head."""
        if self.intent is None:
            return None
        out = torch.stack(features, dim=1)  # (N, T, H)
        mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        return _intents(self.intent(self.pool(out, mask)))

    def forward(self, tokens: Tensor, lengths: Tensor, tags: Tensor | None = None,
                intents: Tensor | None = None, chars: Tensor | None = None) -> dict[str, Tensor]:
        """Scores; with ``tags`` (and ``intents``) also ``loss``: the sum over sentences of
        each sentence's tag loss (+ intent cross-entropy). ``chars``: the words' character
        ids (N, T, L), needed with character features."""
        emissions, pooled, mask = self.encode(tokens, lengths, chars)
        out = {"emissions": emissions, "mask": mask}
        if self.intent is not None:
            out["intent_scores"] = self.intent(pooled)
        if tags is not None:
            tags = tags[:, :mask.shape[1]]
            if self.crf is not None:
                loss = -self.crf(emissions, tags, mask, reduction="sum")
            else:
                loss = F.cross_entropy(emissions[mask], tags[mask], reduction="sum")
            if self.intent is not None and intents is not None:  # intents: (N, K) multi-hot
                loss = loss + F.binary_cross_entropy_with_logits(
                    out["intent_scores"], intents.to(emissions.dtype), reduction="sum")
            out["loss"] = loss
        return out

    @torch.no_grad()
    def predict(self, tokens: Tensor, lengths: Tensor, chars: Tensor | None = None
                ) -> tuple[list[list[int]], list[int] | None]:
        """The best tag sequence of every sentence (Viterbi with a CRF, the per-step argmax
        without) and, with an intent head, each sentence's intents (a list of indices)."""
        out = self.forward(tokens, lengths, chars=chars)
        emissions, mask = out["emissions"], out["mask"]
        if self.crf is not None:
            paths = self.crf.decode(emissions, mask)
        else:
            best = emissions.argmax(-1).tolist()
            paths = [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]
        intents = None
        if "intent_scores" in out:
            intents = _intents(out["intent_scores"])
        return paths, intents


def _intents(scores: Tensor) -> list[list[int]]:
    """Each sentence's intents from their scores (N, K): every k with p(k | x) > 1/2, or the
    most probable one if none is."""
    best = scores == scores.amax(-1, keepdim=True)
    on = torch.where((scores > 0).any(-1, keepdim=True), scores > 0, best)
    return [row.nonzero().flatten().tolist() for row in on]
