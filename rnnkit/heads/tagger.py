"""A sequence tagger: a label for every word, optionally an intent for the sentence.

    e_t   = Embedding(w_t)                                   (N, T, E)
    h_t   = recurrent network(dropout(e))_t                  (N, T, D*H), any rnnkit cell
    s_t   = W_o dropout(h_t) + b_o                           (N, T, K) emission scores

Softmax head: p(y_t = k | x) = softmax(s_t)_k, loss = sum_t -log p(y_t | x) per sentence.
CRF head (:class:`rnnkit.heads.crf.CRF`): p(y | x) ∝ exp(sum_t s_t[y_t] + sum_t A[y_{t-1}, y_t]
+ start/end scores), loss = -log p(y | x) per sentence, Viterbi decoding: the network learns the
features and the CRF scores whole tag sequences (the course's "deep structured model").

Intent head (``model.intent``): the encoder's outputs max-pooled over the sentence's real words,
u = max_t h_t, and p(intent | x) = softmax(W_i u + b_i); its cross-entropy is added to the
sentence's loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.tasks.base import recurrent_from_config


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """(N, T) bool, True at the real steps t < lengths[n]."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


class SequenceTagger(nn.Module):
    """Embedding -> any rnnkit recurrent network -> per-step scores -> softmax or CRF
    (+ an optional intent classifier). ``model_cfg``: an rnnkit.config.ModelConfig."""

    def __init__(self, model_cfg, vocab_size: int, num_tags: int, num_intents: int = 0,
                 allowed: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, model_cfg.embedding_size, padding_idx=0)
        self.drop = nn.Dropout(model_cfg.input_dropout)
        self.rnn = recurrent_from_config(model_cfg, model_cfg.embedding_size)
        self.emit = nn.Linear(self.rnn.output_size, num_tags)
        self.crf = None
        if model_cfg.head == "crf":
            from .crf import CRF

            self.crf = CRF(num_tags, allowed=allowed)
        self.intent = nn.Linear(self.rnn.output_size, num_intents) if num_intents else None

    def encode(self, tokens: Tensor, lengths: Tensor):
        """tokens (N, T), lengths (N,) -> emissions (N, T, K), pooled (N, F), mask (N, T)."""
        T = int(lengths.max())
        tokens = tokens[:, :T]
        mask = length_mask(lengths, T)
        out, _ = self.rnn(self.drop(self.embed(tokens)), lengths=lengths.cpu())
        out = self.drop(out)  # (N, T, D*H), zeros past each length
        pooled = out.masked_fill(~mask[..., None], float("-inf")).amax(1)  # (N, D*H)
        return self.emit(out), pooled, mask

    def forward(self, tokens: Tensor, lengths: Tensor, tags: Tensor | None = None,
                intents: Tensor | None = None) -> dict[str, Tensor]:
        """Scores; with ``tags`` (and ``intents``) also ``loss``: the sum over sentences of
        each sentence's tag loss (+ intent cross-entropy)."""
        emissions, pooled, mask = self.encode(tokens, lengths)
        out = {"emissions": emissions, "mask": mask}
        if self.intent is not None:
            out["intent_scores"] = self.intent(pooled)
        if tags is not None:
            tags = tags[:, :mask.shape[1]]
            if self.crf is not None:
                loss = -self.crf(emissions, tags, mask, reduction="sum")
            else:
                loss = F.cross_entropy(emissions[mask], tags[mask], reduction="sum")
            if self.intent is not None and intents is not None:
                loss = loss + F.cross_entropy(out["intent_scores"], intents, reduction="sum")
            out["loss"] = loss
        return out

    @torch.no_grad()
    def predict(self, tokens: Tensor, lengths: Tensor) -> tuple[list[list[int]], list[int] | None]:
        """The best tag sequence of every sentence (Viterbi with a CRF, the per-step argmax
        without) and, with an intent head, each sentence's intent."""
        out = self.forward(tokens, lengths)
        emissions, mask = out["emissions"], out["mask"]
        if self.crf is not None:
            paths = self.crf.decode(emissions, mask)
        else:
            best = emissions.argmax(-1).tolist()
            paths = [row[:n] for row, n in zip(best, lengths.tolist(), strict=True)]
        intents = out["intent_scores"].argmax(-1).tolist() if "intent_scores" in out else None
        return paths, intents
