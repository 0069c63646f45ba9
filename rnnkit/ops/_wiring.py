"""What every registered sequence op shares: its fake (shapes), its autograd (the backward op,
or, when autograd records the backward, the derivative of a differentiable reference), and the
pure-torch implementation registered where the compiled one did not load.

Every op has the same frame:

- ``<name>(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh,
  Tensor? valid, <flags>) -> (ys, h_T, *saved)``: ``x`` ``(T, N, I)``, ``h0`` ``(N, H)``,
  ``valid`` a ``(T, N)`` bool mask of the steps inside each sequence (None: all); ``saved`` are
  the buffers its backward reads.
- ``<name>_backward(Tensor grad_ys, Tensor grad_h_T, Tensor x, Tensor w_ih, Tensor w_hh,
  *saved, Tensor? valid, <flags>)`` -> the gradients of ``x, h0, w_ih, w_hh, b_ih, b_hh``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kernels._common import differentiate
from . import LIB

INPUTS = "Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? valid"
GRADS = "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"


def define(name: str, flags: str, saved: list[str]) -> None:
    """Define the op ``name`` and ``name_backward`` with the frame above; ``flags`` is the
    schema of the trailing arguments (``"bool relu, bool reverse"``), ``saved`` names the
    saved buffers."""
    outs = ", ".join(["Tensor"] * (2 + len(saved)))
    LIB.define(f"{name}({INPUTS}, {flags}) -> ({outs})")
    saved_args = "".join(f", Tensor {s}" for s in saved)
    LIB.define(f"{name}_backward(Tensor grad_ys, Tensor grad_h_T, Tensor x, Tensor w_ih, "
               f"Tensor w_hh{saved_args}, Tensor? valid, {flags}) -> {GRADS}")


def register(name: str, *, fake_saved: Callable, reference: Callable,
             python_forward: Callable, python_backward: Callable, compiled: bool) -> None:
    """Fakes, autograd and (unless ``compiled``) the pure-torch CPU implementation of ``name``.

    ``fake_saved(x, h0, w_hh) -> saved buffers`` (empty tensors of their shapes);
    ``reference(x, h0, w_ih, w_hh, b_ih, b_hh, valid, *flags) -> (ys, h_T)`` in differentiable
    torch ops (what a recorded backward differentiates);
    ``python_forward``/``python_backward`` have the ops' signatures and returns.
    """

    def fake(x, h0, w_ih, w_hh, b_ih, b_hh, valid, *flags):
        T, N, H = x.shape[0], x.shape[1], h0.shape[1]
        return (x.new_empty(T, N, H), x.new_empty(N, H), *fake_saved(x, h0, w_hh))

    def fake_backward(grad_ys, grad_h_t, x, w_ih, w_hh, *rest):
        G = w_ih.shape[0]
        return (torch.empty_like(x), torch.empty_like(grad_h_t), torch.empty_like(w_ih),
                torch.empty_like(w_hh), w_ih.new_empty(G), w_ih.new_empty(G))

    def setup_context(ctx, inputs, output):
        x, h0, w_ih, w_hh, b_ih, b_hh, valid, *flags = inputs
        ctx.flags = tuple(flags)
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, valid, *output[2:])

    def backward(ctx, grad_ys, grad_h_t, *_saved_grads):
        x, h0, w_ih, w_hh, b_ih, b_hh, valid, *saved = ctx.saved_tensors
        if grad_ys is None:
            grad_ys = x.new_zeros(x.shape[0], x.shape[1], h0.shape[1])
        if grad_h_t is None:
            grad_h_t = torch.zeros_like(h0)
        tail = (None,) * (1 + len(ctx.flags))  # valid and the flags
        inputs = (x, h0, w_ih, w_hh, b_ih, b_hh)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
            wrt = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
            grads = differentiate(reference, (*inputs, valid, *ctx.flags), wrt,
                                  (grad_ys, grad_h_t))
            return (*grads[:6], *tail)
        op = getattr(torch.ops.rnnkit, f"{name}_backward")
        grads = op(grad_ys, grad_h_t, x, w_ih, w_hh, *saved, valid, *ctx.flags)
        grads = [g if t is not None else None for g, t in zip(grads, inputs, strict=True)]
        return (*grads, *tail)

    torch.library.register_fake(f"rnnkit::{name}", fake, lib=LIB)
    torch.library.register_fake(f"rnnkit::{name}_backward", fake_backward, lib=LIB)
    torch.library.register_autograd(f"rnnkit::{name}", backward, setup_context=setup_context,
                                    lib=LIB)
    if not compiled:
        LIB.impl(name, python_forward, "CPU")
        LIB.impl(f"{name}_backward", python_backward, "CPU")
