"""A sequence classifier (many-to-one): one label for a whole variable-length sequence.

    x_t = Embedding(w_t) for token sequences, or the real-valued features x_t    (N, T, I)
          (training: w_t -> <unk> with probability model.word_dropout)
    h_t = recurrent network(dropout(x))_t                                        (N, T, D*H)
    u   = pool(h_{0..L-1})             final state, mean, max or attention       (N, D*H)
    p(y | x) = softmax(W_c dropout(u) + b_c)                                     (N, C)

loss = sum over sequences of -log p(y | x). Padded steps past each length never reach u
(:class:`rnnkit.heads.pooling.Pooling`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.regularize import SequenceDropout
from rnnkit.tasks.base import recurrent_from_config

from .pooling import Pooling, length_mask
from .words import drop_words


class SequenceClassifier(nn.Module):
    """Tokens (``vocab_size``) or features (``input_size``) -> rnnkit network -> pooling ->
    class scores. ``model_cfg``: an rnnkit.config.ModelConfig (cell, sizes, ``pooling``,
    ``input_dropout``, ``embedding_size`` for tokens)."""

    def __init__(self, model_cfg, num_classes: int, *, vocab_size: int | None = None,
                 input_size: int | None = None) -> None:
        super().__init__()
        if (vocab_size is None) == (input_size is None):
            raise ValueError("SequenceClassifier: give exactly one of vocab_size (token "
                             "sequences) and input_size (real-valued features)")
        self.embed = None
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, model_cfg.embedding_size, padding_idx=0)
            input_size = model_cfg.embedding_size
        self.drop = SequenceDropout(model_cfg.input_dropout, model_cfg.dropout_mode)
        self.word_dropout = model_cfg.word_dropout
        self.rnn = recurrent_from_config(model_cfg, input_size)
        directions = 2 if model_cfg.bidirectional else 1
        self.pool = Pooling(model_cfg.pooling, self.rnn.output_size, directions)
        self.out = nn.Linear(self.rnn.output_size, num_classes)

    def forward(self, x: Tensor, lengths: Tensor, labels: Tensor | None = None) -> dict:
        """x (N, T) token ids or (N, T, I) features, lengths (N,) -> ``scores`` (N, C); with
        ``labels`` (N,) also ``loss``, the summed cross-entropy."""
        T = int(lengths.max())
        x = x[:, :T]
        if self.embed is not None and self.training:
            x = drop_words(x, self.word_dropout)
        inputs = self.embed(x) if self.embed is not None else x
        out, _ = self.rnn(self.drop(inputs), lengths=lengths.cpu())  # (N, T, D*H)
        pooled = self.pool(out, length_mask(lengths, T))
        result = {"scores": self.out(self.drop(pooled))}
        if labels is not None:
            result["loss"] = F.cross_entropy(result["scores"], labels, reduction="sum")
        return result

    @torch.no_grad()
    def predict(self, x: Tensor, lengths: Tensor) -> list[int]:
        """The most probable class of every sequence."""
        return self.forward(x, lengths)["scores"].argmax(-1).tolist()
