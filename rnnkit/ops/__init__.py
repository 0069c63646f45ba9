"""rnnkit's registered ops: ``torch.ops.rnnkit.<cell>_sequence`` and their backward ops.

Each op is defined here (schema), with a fake implementation for shapes (so ``torch.compile``
and ``torch.export`` trace through it) and its hand-derived backward registered as its autograd
(the backward itself an op). The CPU implementation is the compiled C++ loop
(``rnnkit/csrc``, see :mod:`rnnkit.ops.build`) where it built, else a pure-torch one with the
same schema, so every op exists on every machine. ``compiled()`` says which one runs. Where
CUDA is available and triton imports, :func:`rnnkit.gpu.register` adds the CUDA implementation
of the Elman, GRU and LSTM ops; every other op runs its pure-torch implementation on CUDA.

The ops: ``elman_sequence``, ``gru_sequence``, ``lstm_sequence`` (C++, Triton and pure torch);
``clockwork_sequence``, ``ctrnn_sequence``, ``fully_sequence``, ``jordan_sequence``,
``scrn_sequence``, ``indrnn_sequence``, ``minrnn_sequence`` (C++ and pure torch; minGRU's and
minLSTM's pure-torch implementation, which CUDA runs, is the parallel scan over time).
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("rnnkit", "DEF")  # kept alive for the whole process

# the op modules define their ops in LIB as they are imported
from . import (  # noqa: E402
    build,
    clockwork,
    ctrnn,
    elman,
    fully,
    gru,
    indrnn,
    jordan,
    lstm,
    minrnn,
    scrn,
)

# Implementations, most specific first: each op module's register() then fills the CPU and
# CUDA keys still empty with its pure-torch implementation.
_COMPILED = build.load()  # the C++ loops (CPU)
# the Triton kernels (CUDA) where a GPU is present and triton imports; without CUDA neither
# rnnkit.gpu's kernels nor triton are imported
if torch.cuda.is_available():
    from .. import gpu

    gpu.register()
for _op in (elman, gru, lstm, clockwork, ctrnn, fully, jordan, scrn, indrnn, minrnn):
    _op.register()
# torch.compile's on-disk caches are keyed without custom op schemas: key them by ours
from ._wiring import tag_compile_caches  # noqa: E402

tag_compile_caches()


def compiled() -> bool:
    """Whether the ops run rnnkit's compiled CPU implementation (else the pure-torch one)."""
    return _COMPILED


__all__ = ["LIB", "build", "clockwork", "compiled", "ctrnn", "elman", "fully", "gru", "indrnn",
           "jordan", "lstm", "minrnn", "scrn"]
