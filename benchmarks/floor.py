"""The GEMM floor of a cell: the time of its matrix products alone.

The products are read off the kernel itself: one train step (or inference forward) of the cell's
rnnkit network runs under ``torch.profiler`` with ``record_shapes``, and every matrix product it
issues (``aten::mm``/``addmm``/``addmm_``/``bmm``/``baddbmm``/``mv``/``addmv`` and oneDNN's
packed ``mkldnn::_linear_pointwise``, whether called from Python or from rnnkit's C++ ops; a
product nested in another is counted once) is recorded with its operand shapes. The floor replays
exactly those products, each with the routine the kernel used (a packed oneDNN weight packed once,
outside the timing), on contiguous operands of the same shapes: no pointwise math, no dispatch of
the kernel's other ops, no masking, no allocation of the kernel's buffers. A kernel at 1.0x its
floor would spend all its time in matrix products.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# leaf matrix-product ops -> how to replay one from its recorded operand shapes
_REPLAY: dict[str, Callable] = {
    "aten::mm": lambda a, b: torch.mm(a, b),
    "aten::addmm": lambda c, a, b: torch.addmm(c, a, b),
    "aten::addmm_": lambda c, a, b: c.addmm_(a, b),
    "aten::bmm": lambda a, b: torch.bmm(a, b),
    "aten::baddbmm": lambda c, a, b: torch.baddbmm(c, a, b),
    "aten::mv": lambda a, b: torch.mv(a, b),
    "aten::addmv": lambda c, a, b: torch.addmv(c, a, b),
    "aten::addmv_": lambda c, a, b: c.addmv_(a, b),
}
_PACKED = "mkldnn::_linear_pointwise"


def products(step: Callable[[], None]) -> list[tuple[str, tuple]]:
    """The matrix products ``step()`` issues: ``[(op name, operand shapes)]``, in order."""
    with torch.profiler.profile(record_shapes=True) as prof:
        step()
    wanted = set(_REPLAY) | {_PACKED}
    calls = []
    for e in prof.events():
        if e.name not in wanted:
            continue
        parent = e.cpu_parent
        if parent is not None and parent.name in wanted:  # (an addmm_ inside an addmm_)
            continue
        n = 2 if e.name == _PACKED else (2 if e.name in ("aten::mm", "aten::bmm", "aten::mv")
                                         else 3)
        calls.append((e.name, tuple(tuple(s) for s in e.input_shapes[:n])))
    return calls


class Floor:
    """Replays a list of products (see :func:`products`) on operands made once."""

    def __init__(self, calls: list[tuple[str, tuple]], device="cpu"):
        self.calls = calls
        self._work = []
        cache: dict = {}

        def operand(shape):  # one tensor per shape: the products' inputs, not the kernel's data
            if shape not in cache:
                cache[shape] = torch.randn(*shape, device=device) * 0.01
            return cache[shape]

        for name, shapes in calls:
            if name == _PACKED:
                x, w = operand(shapes[0]), operand(shapes[1])
                packed = torch.ops.mkldnn._reorder_linear_weight(w, x.shape[0])
                self._work.append(lambda x=x, p=packed: torch.ops.mkldnn._linear_pointwise(
                    x, p, None, "none", [], ""))
            elif name.endswith("_"):  # in place: its own output buffer, not a shared operand
                args = [torch.zeros(*shapes[0], device=device), *map(operand, shapes[1:])]
                self._work.append(lambda f=_REPLAY[name], a=args: f(*a))
            else:
                args = [operand(s) for s in shapes]
                self._work.append(lambda f=_REPLAY[name], a=args: f(*a))

    def __call__(self) -> None:
        for w in self._work:
            w()

    def timed(self) -> float:
        t0 = time.perf_counter()
        self()
        return time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self.calls)
