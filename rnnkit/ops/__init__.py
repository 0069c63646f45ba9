"""rnnkit's registered ops: ``torch.ops.rnnkit.<cell>_sequence`` and their backward ops.

Each op is defined here (schema), with a fake implementation for shapes (so ``torch.compile``
and ``torch.export`` trace through it) and its hand-derived backward registered as its autograd
(the backward itself an op). The CPU implementation is the compiled C++ loop
(``rnnkit/csrc``, see :mod:`rnnkit.ops.build`) where it built, else a pure-torch one with the
same schema, so every op exists on every machine. ``compiled()`` says which one runs. Where CUDA
is available and triton imports, :func:`rnnkit.gpu.register` adds the CUDA implementation.

So far: ``elman_sequence``, ``gru_sequence``, ``lstm_sequence``.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("rnnkit", "DEF")  # kept alive for the whole process

from . import build, elman, gru, lstm  # noqa: E402  (they define their ops in LIB)

_COMPILED = build.load()
elman.register()
gru.register()
lstm.register()

# The CUDA implementations (rnnkit.gpu: Triton kernels and cuBLAS) where a GPU is present and
# triton imports; without CUDA neither rnnkit.gpu's kernels nor triton are imported.
if torch.cuda.is_available():
    from .. import gpu

    gpu.register()


def compiled() -> bool:
    """Whether the ops run rnnkit's compiled CPU implementation (else the pure-torch one)."""
    return _COMPILED


__all__ = ["LIB", "build", "compiled", "elman", "gru", "lstm"]
