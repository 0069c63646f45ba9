"""A decoder that writes a sequence one token at a time, stepping one rnnkit cell, attending
to a memory (an encoder's outputs, or the cells of a CNN's feature map).

With the memory h_1..h_S (N, S, K), its summary m (N, M) (the encoder's final state, or the
image's mean feature) and the previous token y_{t-1} (``<bos>`` at t = 1):

    s_0   = tanh(W_b m)  in the cell's first state tensor (others zero)      (N, H)
    a_0   = 0                                                                (N, H)
    x_t   = [E[y_{t-1}] ; a_{t-1}]          (input feeding, Luong et al. 2015)
    s_t   = cell(x_t, s_{t-1})   (its output: (N, H), or (N, Y) for a cell whose output is wider)
    c_t, alpha_t = attention(s_t, h)        (:mod:`rnnkit.heads.attention`)  (N, K), (N, S)
    a_t   = tanh(W_c [s_t ; c_t])           (without attention: tanh(W_c s_t))
    p(y_t | y_<t, x) = softmax(W_o dropout(a_t))                              (N, V)

Training feeds the reference tokens (teacher forcing); with a scheduled-sampling rate r
(Bengio et al. 2015) each step's input is instead the model's own previous prediction with
probability r. Generation ends a sequence at ``<eos>`` (:mod:`rnnkit.heads.search`: greedy and
beam search over :meth:`AttentionDecoder.step`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells import make_cell
from rnnkit.cells.base import state_from_leaves, state_leaves

from .attention import Attention

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # every target vocabulary starts with these: <bos> = 2, <eos> = 3
BOS_INDEX, EOS_INDEX = 2, 3


class AttentionDecoder(nn.Module):
    """``cell`` (a registered cell name) of ``hidden_size`` over ``vocab_size`` target tokens;
    ``memory_size`` K, ``summary_size`` M; ``attention`` none, additive or multiplicative."""

    def __init__(self, cell: str, vocab_size: int, embedding_size: int, hidden_size: int,
                 memory_size: int, summary_size: int, attention: str = "additive",
                 dropout: float = 0.0) -> None:
        super().__init__()
        H = hidden_size
        self.embed = nn.Embedding(vocab_size, embedding_size, padding_idx=0)
        self.cell = make_cell(cell, embedding_size + H, H)
        self.bridge = nn.Linear(summary_size, H)
        Y = self.cell.output_size  # H, or more (SCRN's output is [h ; context])
        self.attention = None if attention == "none" else Attention(attention, Y, memory_size)
        self.combine = nn.Linear(Y + (memory_size if self.attention else 0), H)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(H, vocab_size)
        self.hidden_size = H

    def start(self, memory: Tensor, mask: Tensor, summary: Tensor) -> dict:
        """The decoder's state before the first token: a dict of tensors, each with the batch at
        dim 0 (so beam search can reorder its rows)."""
        N = memory.shape[0]
        leaves = state_leaves(self.cell.init_state(N, memory.device, memory.dtype))
        s0 = torch.tanh(self.bridge(summary))  # (N, H)
        leaves = [s0 if i == 0 and leaf.shape == s0.shape else leaf
                  for i, leaf in enumerate(leaves)]
        state = {"memory": memory, "mask": mask, "feed": torch.zeros_like(s0),
                 "cell": tuple(leaves)}
        if self.attention is not None:
            state["keys"] = self.attention.keys(memory)  # once per sequence
        return state

    def _step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict, Tensor | None]:
        """tokens (N,) -> logits (N, V), the new state, attention weights (N, S) or None."""
        x = torch.cat([self.embed(tokens), state["feed"]], -1)  # (N, E + H)
        template = self.cell.state_size
        s, cell_state = self.cell(x, state_from_leaves(template, list(state["cell"])))
        alpha = None
        if self.attention is not None:
            c, alpha = self.attention(s, state["memory"], state["keys"], state["mask"])
            s = torch.cat([s, c], -1)  # (N, H + K)
        a = torch.tanh(self.combine(s))  # (N, H)
        new = dict(state, feed=a, cell=tuple(state_leaves(cell_state)))
        return self.out(self.drop(a)), new, alpha

    def step(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        """For search: tokens (N,) -> log-probabilities (N, V) of the next token, new state."""
        logits, state, _ = self._step(tokens, state)
        return logits.log_softmax(-1), state

    def forward(self, state: dict, inputs: Tensor, sampling_rate: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: inputs (N, T) = ``<bos>`` then the reference tokens -> logits
        (N, T, V) and attention weights (N, T, S) (None without attention). With
        ``sampling_rate`` r > 0, each step after the first reads the model's own previous
        argmax instead of the reference with probability r."""
        logits, weights = [], []
        previous = None
        for t in range(inputs.shape[1]):
            tokens = inputs[:, t]
            if sampling_rate > 0 and previous is not None:
                own = torch.rand(tokens.shape, device=tokens.device, generator=generator)
                tokens = torch.where(own < sampling_rate, previous, tokens)
            step_logits, state, alpha = self._step(tokens, state)
            logits.append(step_logits)
            weights.append(alpha)
            previous = step_logits.detach().argmax(-1)
        alphas = torch.stack(weights, 1) if self.attention is not None else None
        return torch.stack(logits, 1), alphas

    @torch.no_grad()
    def generate(self, state: dict, *, max_len, beam_size: int = 1,
                 length_penalty: float = 1.0) -> list[list[int]]:
        """The output token ids of every row of ``state`` (from :meth:`start`), without
        ``<bos>``/``<eos>``: greedy for ``beam_size`` 1, else beam search; ``max_len`` an int
        or a LongTensor ``(N,)`` of each row's limit."""
        from .search import beam_search, greedy

        N = state["memory"].shape[0]
        bos = torch.full((N,), BOS_INDEX, dtype=torch.long, device=state["memory"].device)
        if beam_size == 1:
            return greedy(self.step, state, bos, EOS_INDEX, max_len)
        found = beam_search(self.step, state, bos, EOS_INDEX, beam_size=beam_size,
                            max_len=max_len, length_penalty=length_penalty)
        return [hyps[0].tokens for hyps in found]

    @torch.no_grad()
    def attention_map(self, state: dict, tokens: list[int]) -> Tensor:
        """The attention weights (T, S) of one row's ``state`` while writing ``tokens`` (then
        ``<eos>``): teacher forcing on the decoder's own output reproduces its steps."""
        if self.attention is None:
            raise ValueError("attention_map: this decoder has no attention (attention='none')")
        device = state["memory"].device
        inputs = torch.tensor([[BOS_INDEX, *tokens]], device=device)
        _, weights = self.forward(state, inputs)
        return weights[0]
