"""rnnkit's registered ops: ``torch.ops.rnnkit.<cell>_sequence`` and their backward ops.

Each op is defined here (schema), with a fake implementation for shapes (so ``torch.compile``
and ``torch.export`` trace through it) and its hand-derived backward registered as its autograd
(the backward itself an op). The CPU implementation is the compiled C++ loop
(``rnnkit/csrc``, see :mod:`rnnkit.ops.build`) where it built, else a pure-torch one with the
same schema, so every op exists on every machine. ``compiled()`` says which one runs (for
the ops that have a C++ loop).

So far: ``elman_sequence``, ``gru_sequence`` (C++ and pure torch); ``clockwork_sequence``,
``ctrnn_sequence``, ``fully_sequence``, ``jordan_sequence``, ``scrn_sequence`` (pure torch
only: no C++ loop).
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("rnnkit", "DEF")  # kept alive for the whole process

# the op modules define their ops in LIB as they are imported
from . import build, clockwork, ctrnn, elman, fully, gru, jordan, scrn  # noqa: E402

_COMPILED = build.load()
elman.register(_COMPILED)
gru.register(_COMPILED)
for _op in (clockwork, ctrnn, fully, jordan, scrn):  # no C++ loop: always the pure-torch one
    _op.register()


def compiled() -> bool:
    """Whether the ops run rnnkit's compiled CPU implementation (else the pure-torch one)."""
    return _COMPILED


__all__ = ["LIB", "build", "clockwork", "compiled", "ctrnn", "elman", "fully", "gru", "jordan",
           "scrn"]
