"""CNN + RNN image captioning ("show, attend and tell", Xu et al. 2015).

    F     = CNN(image)                 (N, K, h, w): three 3x3 conv + ReLU blocks, the first two
                                       followed by 2x2 max-pooling (32x32 -> 8x8 cells)
    h_j   = F at cell j                (N, S = h*w, K): the memory, one vector per image region
    m     = mean_j h_j                 (N, K): the summary that starts the decoder
    words = :class:`~rnnkit.heads.decoder.AttentionDecoder` over h and m, until ``<eos>``

Each generated word's attention weights alpha_t (S,) reshape to (h, w): where in the image the
model looked while writing that word.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .decoder import AttentionDecoder


class Captioner(nn.Module):
    """A small CNN encoder and an attention decoder (``model_cfg``: cell, hidden_size,
    embedding_size, attention, input_dropout)."""

    def __init__(self, model_cfg, vocab_size: int, channels: int = 64) -> None:
        super().__init__()
        K = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(3, K // 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(K // 2, K, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(K, K, 3, padding=1), nn.ReLU())
        self.decoder = AttentionDecoder(model_cfg.cell, vocab_size, model_cfg.embedding_size,
                                        model_cfg.hidden_size, K, K, model_cfg.attention,
                                        model_cfg.input_dropout)

    def grid(self, images: Tensor) -> tuple[int, int]:
        """(h, w) of the feature map for ``images`` (N, 3, H, W)."""
        return images.shape[2] // 4, images.shape[3] // 4

    def encode(self, images: Tensor) -> dict:
        """images (N, 3, H, W) in [0, 1] -> the decoder's start state."""
        features = self.cnn(images)  # (N, K, h, w)
        memory = features.flatten(2).transpose(1, 2)  # (N, S, K)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return self.decoder.start(memory, mask, memory.mean(1))

    def forward(self, images: Tensor, inputs: Tensor,
                sampling_rate: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: logits (N, T, V) for inputs (N, T), attention (N, T, S)."""
        return self.decoder(self.encode(images), inputs, sampling_rate)
