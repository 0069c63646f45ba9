"""Character features of words: a small CNN over each word's letters (Ma & Hovy 2016).

A word embedding learns nothing about a word seen once ("airfares", "capacities") and has
only ``<unk>`` for a word never seen; its spelling still says much. Each word is spelled
``<w> c_1 ... c_m </w>`` (at most ``MAX_CHARS`` letters kept), and

    x_{t,j} = CharEmbedding(c_{t,j})                                 (N, T, L, C)
    z_t     = tanh( max_j ( sum_{i=-1..1} W_i x_{t,j+i} + b ) )      (N, T, F)

(a width-3 convolution with zero padding, max over the word's real positions), and ``z_t`` is
joined to the word's embedding before the recurrent layer. Padding steps get z = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

CHAR_SPECIALS = ("<pad>", "<unk>", "<w>", "</w>")  # ids 0..3
MAX_CHARS = 20  # letters kept per word: the first MAX_CHARS (ATIS's longest word has 18)
CHAR_EMBEDDING = 16


def spell(sentences: Sequence[Sequence[str]], chars) -> Tensor:
    """Character ids (N, T, L) of padded sentences, int16 (int32 past 32,767 letters) to keep
    whole splits small: row ``[n, t]`` is word t of sentence n as ``<w> c_1 .. c_m </w>`` then
    zeros, L = the longest spelled word (at most MAX_CHARS + 2); padding words are all zeros.
    ``chars``: an :class:`rnnkit.data.text.Vocab` with :data:`CHAR_SPECIALS` first (unknown
    letters map to ``<unk>``)."""
    T = max((len(words) for words in sentences), default=0)
    L = 2 + min(MAX_CHARS, max((len(w) for words in sentences for w in words), default=0))
    dtype = torch.int16 if len(chars) <= torch.iinfo(torch.int16).max else torch.int32
    out = torch.zeros(len(sentences), T, L, dtype=dtype)
    begin, end = chars.index("<w>"), chars.index("</w>")
    for n, words in enumerate(sentences):
        for t, word in enumerate(words):
            ids = [begin, *chars.encode(list(word[:MAX_CHARS])), end]
            out[n, t, :len(ids)] = torch.tensor(ids, dtype=dtype)
    return out


class CharFeatures(nn.Module):
    """``CharFeatures(num_chars, filters)(chars) -> (N, T, filters)`` from ids (N, T, L)."""

    def __init__(self, num_chars: int, filters: int, embedding_size: int = CHAR_EMBEDDING) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.conv = nn.Conv1d(embedding_size, filters, kernel_size=3, padding=1)
        self.filters = filters

    def forward(self, chars: Tensor) -> Tensor:
        N, T, L = chars.shape
        out = chars.new_zeros((N, T, self.filters), dtype=self.conv.weight.dtype)
        real = chars[..., 0] != 0  # (N, T): the words (every word starts with <w>)
        spelled = chars[real].long()  # (M, L) only the real words go through the CNN
        if spelled.numel():
            # the batch's longest word sets the width (a split's may be longer): 1.6x faster,
            # the same outputs (past a word's end the convolution reads zeros either way)
            out[real] = self._words(spelled[:, :int((spelled != 0).sum(-1).max())])
        return out

    def _words(self, spelled: Tensor) -> Tensor:
        """(M, L) spelled words -> (M, F): the CNN, max over each word's letters, tanh."""
        h = self.conv(self.embed(spelled).transpose(1, 2))  # (M, F, L)
        return torch.tanh(h.masked_fill((spelled == 0)[:, None, :], float("-inf")).amax(-1))

    def dense(self, chars: Tensor) -> Tensor:
        """``forward``'s numbers without its data-dependent selection of the real words (every
        slot through the CNN, padding slots zeroed after), which ``torch.export`` can trace
        with a dynamic batch, length and word width."""
        N, T, L = chars.shape
        spelled = chars.reshape(N * T, L).long()
        h = self._words(spelled)  # (N T, F); a padding slot's is -1 (tanh(-inf)): zeroed
        real = (spelled[:, 0] != 0).unsqueeze(1)  # (N T, 1)
        return torch.where(real, h, h.new_zeros(())).reshape(N, T, self.filters)
