"""rnnkit's GPU path: the registered sequence ops (``torch.ops.rnnkit.<cell>_sequence`` and their
backward ops) for CUDA tensors, in Triton kernels and cuBLAS GEMMs.

Same schemas, outputs and saved buffers as the CPU ops (:mod:`rnnkit.ops`; the fakes and the
autograd are shared), and the saved buffers mean the same. Per step: the recurrent product
``h_{t-1} @ W_hh^T`` by cuBLAS (``addmm``) into the step's gate buffer, then one Triton kernel
for the step's pointwise math (gates, c, h, masking, the saved activations); the backward
likewise, a Triton kernel for the step's pointwise gradients then ``dz @ W_hh``; the input
projection and the parameter gradients are single GEMMs over all steps. For small hidden sizes
the LSTM forward is one persistent kernel with ``W_hh`` on chip (:mod:`rnnkit.gpu.persistent`).

- :mod:`rnnkit.gpu.common`: shared Triton functions and small kernels, launch geometry;
- :mod:`rnnkit.gpu.elman`, :mod:`rnnkit.gpu.gru`, :mod:`rnnkit.gpu.lstm`: each op's kernels and
  its ``forward``/``backward`` drivers (the ops' signatures; they run on CPU tensors too under
  ``TRITON_INTERPRET=1``, which is how the tests check them without a GPU);
- :mod:`rnnkit.gpu.persistent`: the persistent LSTM forward.

Importing this package imports neither triton nor the kernels; :func:`register` does, and
``rnnkit.ops`` calls it only where CUDA is available. float32 and float64.
"""

from __future__ import annotations

import importlib.util

_registered: list[bool] = []


def available() -> bool:
    """Whether the GPU path can run here: CUDA is available and triton is installed."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None


def register() -> bool:
    """Register the Triton implementations of the ops for the CUDA dispatch key (once).
    Returns whether they are registered (False where triton does not import)."""
    if _registered:
        return _registered[0]
    try:
        import triton  # noqa: F401
    except ImportError:
        _registered.append(False)
        return False
    from ..ops import LIB
    from ..ops._wiring import unless_masked
    from . import elman, gru, lstm

    for name, module in (("elman_sequence", elman), ("gru_sequence", gru),
                         ("lstm_sequence", lstm)):
        # (calls with regularizer masks compute from the op's reference)
        LIB.impl(name, unless_masked(name, module.forward, 0), "CUDA")
        LIB.impl(f"{name}_backward", unless_masked(name, module.backward, 1), "CUDA")
    _registered.append(True)
    return True


def registered() -> bool:
    """Whether :func:`register` registered the CUDA implementations in this process."""
    return bool(_registered and _registered[0])


__all__ = ["available", "register", "registered"]
