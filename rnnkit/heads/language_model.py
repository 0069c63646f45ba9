"""A recurrent language model: the next token's distribution given every token so far.

    e_t = E[w_t]                                   (N, T, Emb)
    h_t = recurrent network(dropout(e))_t          (N, T, H), any rnnkit cell, left to right
    p(w_{t+1} | w_1..w_t) = softmax(W_o dropout(h_t) + b_o)        (N, T, V), a full softmax

Tied embeddings (``model.tie_weights``, Press & Wolf 2017; Inan et al. 2017): W_o = E, so the
same vector both reads and writes a word (needs the embedding size to equal the network's
output size). Trained with truncated BPTT over long streams, the state carried from one window
to the next (:attr:`rnnkit.tasks.base.Task.stream`); generation steps the state one token at a
time (:meth:`LanguageModel.step`) and never re-reads the context.
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit.errors import ConfigError
from rnnkit.regularize import SequenceDropout
from rnnkit.tasks.base import recurrent_from_config


class LanguageModel(nn.Module):
    """Embedding -> any unidirectional rnnkit network -> a softmax over the vocabulary.
    ``model_cfg``: an rnnkit.config.ModelConfig."""

    def __init__(self, model_cfg, vocab_size: int) -> None:
        super().__init__()
        if model_cfg.bidirectional:
            raise ConfigError("model.bidirectional: a language model predicts the next token "
                              "from the past only; use model.bidirectional=false")
        self.embed = nn.Embedding(vocab_size, model_cfg.embedding_size)
        self.drop = SequenceDropout(model_cfg.input_dropout, model_cfg.dropout_mode)
        self.rnn = recurrent_from_config(model_cfg, model_cfg.embedding_size)
        self.out = nn.Linear(self.rnn.output_size, vocab_size)
        if model_cfg.tie_weights:
            if self.rnn.output_size != model_cfg.embedding_size:
                raise ConfigError(f"model.tie_weights: the output layer reuses the embeddings, "
                                  f"so model.embedding_size must equal the network's output "
                                  f"size {self.rnn.output_size}, got "
                                  f"{model_cfg.embedding_size}")
            self.out.weight = self.embed.weight  # (V, Emb): one matrix reads and writes words
        if model_cfg.embedding_init == "uniform":
            # Small uniform embeddings and a zero output bias, as Zaremba et al. (2014) and
            # torch's word_language_model: torch's N(0, 1) default gives every word a vector of
            # norm sqrt(Emb), so words seen a few times keep large random vectors that the
            # network learns to read as noise, and plain SGD barely moves them. "normal" keeps
            # torch's defaults: Adam rescales each row's step, and on characters (all frequent)
            # the large vectors let a char model start faster (Shakespeare: validation 1.484
            # nats after 2,500 steps, against 1.53 with the uniform start).
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
            nn.init.zeros_(self.out.bias)

    def forward(self, tokens: Tensor, state=None) -> tuple[Tensor, object]:
        """tokens (N, T) -> logits (N, T, V) and the state after the last step (torch's
        layout: ``(num_layers, N, H)`` per state tensor; None = zeros)."""
        h, state = self.rnn(self.drop(self.embed(tokens)), state)
        return self.out(self.drop(h)), state

    def step(self, tokens: Tensor, state=None) -> tuple[Tensor, object]:
        """One step for generation: tokens (N,) -> log-probabilities (N, V) of the next token
        and the new state (the layout ``forward`` returns, so a prompt read by ``forward``
        continues here). The network's streaming ``step``: its cells' equations once, no
        sequence machinery."""
        h, state = self.rnn.step(self.drop(self.embed(tokens)), state)
        return self.out(self.drop(h)).log_softmax(-1), state
