"""Sequence to sequence: read one sequence, then write another of a different length.

    e_i   = E_src[x_i]                                   (N, S, Emb)
    h_i   = recurrent network(dropout(e))_i              (N, S, D*H), any rnnkit cell, stacked,
                                                         bidirectional allowed
    m     = the final state: [h^fwd_{S-1} ; h^bwd_0]     (N, D*H)
    y_1.. = :class:`~rnnkit.heads.decoder.AttentionDecoder` over the memory h and summary m,
            until it writes ``<eos>``

(Sutskever et al. 2014; with attention, Bahdanau et al. 2015 and Luong et al. 2015.)
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit.tasks.base import recurrent_from_config

from .decoder import AttentionDecoder
from .pooling import Pooling, length_mask


class Seq2Seq(nn.Module):
    """Encoder (``model_cfg``'s network over source embeddings) and attention decoder (one
    ``model_cfg.cell`` of ``model_cfg.hidden_size``, ``model_cfg.attention``)."""

    def __init__(self, model_cfg, source_vocab: int, target_vocab: int) -> None:
        super().__init__()
        E, H = model_cfg.embedding_size, model_cfg.hidden_size
        self.embed = nn.Embedding(source_vocab, E, padding_idx=0)
        self.drop = nn.Dropout(model_cfg.input_dropout)
        self.rnn = recurrent_from_config(model_cfg, E)
        directions = 2 if model_cfg.bidirectional else 1
        self.summary = Pooling("final", self.rnn.output_size, directions)
        self.decoder = AttentionDecoder(model_cfg.cell, target_vocab, E, H, self.rnn.output_size,
                                        self.rnn.output_size, model_cfg.attention,
                                        model_cfg.input_dropout)

    def encode(self, source: Tensor, lengths: Tensor) -> dict:
        """source (N, S) token ids, lengths (N,) -> the decoder's start state."""
        S = int(lengths.max())
        source = source[:, :S]
        mask = length_mask(lengths, S)  # (N, S)
        h, _ = self.rnn(self.drop(self.embed(source)), lengths=lengths.cpu())  # (N, S, D*H)
        h = self.drop(h)
        return self.decoder.start(h, mask, self.summary(h, mask))

    def forward(self, source: Tensor, lengths: Tensor, inputs: Tensor,
                sampling_rate: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: logits (N, T, V) for inputs (N, T) (``<bos>`` + reference), and
        the attention weights (N, T, S)."""
        return self.decoder(self.encode(source, lengths), inputs, sampling_rate)
