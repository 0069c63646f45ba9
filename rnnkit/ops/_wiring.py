"""What every registered sequence op shares: its fake (shapes), its autograd (the backward op,
or, when autograd records the backward, the derivative of a differentiable reference), and the
pure-torch implementation registered where the compiled one did not load.

Every op has the same frame. With ``inputs`` its differentiable inputs (``x`` ``(T, N, I)``
first, then the initial states, then the weights, some optional) and ``S`` carried states:

- ``<name>(*inputs, Tensor? valid, <flags>) -> (ys, *finals, *saved)``: ``valid`` a ``(T, N)``
  bool mask of the steps inside each sequence (None: all); ``finals`` the S states after the
  last step; ``saved`` the buffers its backward reads (an unused one is a ``(0,)`` tensor).
- ``<name>_backward(grad_ys, *grad_finals, *inputs, *saved, Tensor? valid, <flags>)`` -> the
  gradients of ``inputs``, in order (a ``(0,)`` tensor for an absent optional input).
- ``<name>_inference(*inputs, Tensor? valid, <flags>) -> (ys, *finals)``: the forward with
  nothing kept for a backward, for calls that autograd does not record (see :func:`call`).

An op defined with ``masks=True`` takes two more trailing arguments, in all three:
``Tensor? drop=None, Tensor? zone=None``, a forward's regularizer masks (recurrent dropout
``(N, R)`` and zoneout weights ``(T, N, S)``, :mod:`rnnkit.regularize`; the compiled loops apply
them, ``Regularize`` in ``csrc/recurrence.h``). Where they are given, the pure-torch and Triton
implementations compute the op from its differentiable reference (which takes them too).

An op defined with ``norms=("ih", "hh", ...)`` takes, after those, one more optional
*differentiable* input per site, ``Tensor? ln_<site>=None``: the layer normalization's gain and
bias stacked ``(2, width)`` (Ba et al. 2016; ``rnnkit.cells.base``): ``ih`` normalizes the input
product ``W_ih x_t`` (the LSTM, GRU and Elman ops, which take ``x``; the other cells' ops take
the input product precomputed, ``cell.precompute``, normalized there), ``hh`` the recurrent one,
``c`` the LSTM's cell. Its forward then returns four more saved buffers, ``xn`` (the normalized
input product), ``rn`` (the normalized recurrent product), ``cn`` (the LSTM's normalized cell)
and ``rstd`` ``(3, T, N)`` (their rows' ``1/sigma``, in that order), each a ``(0,)`` tensor where
its site is off, and its backward the sites' gradients after the inputs'. The compiled loops
normalize inside (``csrc/layer_norm.h``); the pure-torch and Triton implementations compute such
calls from the reference.

An implementation registered for a device before :func:`register` runs (the compiled C++ on
the CPU, rnnkit.gpu's Triton kernels on CUDA) is kept; the pure-torch one fills every op and
device key (CPU, CUDA) still empty.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..kernels._common import differentiate, recording
from . import LIB

# name -> (number of inputs, states, flags, masks: 2 trailing mask arguments or 0)
_specs: dict[str, tuple[int, int, int, int]] = {}
_MASKS = ", Tensor? drop=None, Tensor? zone=None"
# name -> the layer normalization sites its op takes (after the masks), for ops defined with them
_norms: dict[str, tuple[str, ...]] = {}
NORM_SAVED = ["xn", "rn", "cn", "rstd"]  # the saved buffers they add, after the op's own
_n_saved: dict[str, int] = {}  # name -> number of saved buffers
# the ops whose CPU implementation was registered before register() (the compiled C++ loop)
_compiled_cpu: set[str] = set()
_schemas: list[str] = []  # every schema defined, in order (see schema_fingerprint)


def _names(schema: str) -> list[str]:
    return [arg.split()[-1] for arg in schema.split(",")]


def define(name: str, inputs: str, states: int, flags: str, saved: list[str],
           masks: bool = False, norms: tuple[str, ...] = ()) -> None:
    """Define the op ``name`` and ``name_backward`` with the frame above: ``inputs`` the schema of
    the differentiable inputs (``"Tensor x, Tensor h0, Tensor w_ih, Tensor? b_ih"``), ``states``
    how many of them (after ``x``) are initial states, ``flags`` the schema of the trailing
    arguments (``"bool relu, bool reverse"``), ``saved`` the names of the saved buffers,
    ``masks`` whether the op takes the regularizer masks ``drop, zone``, ``norms`` its layer
    normalization sites (see above; they need ``masks``)."""
    assert masks or not norms
    n_in = len(_names(inputs))
    saved = saved + (NORM_SAVED if norms else [])
    outs = ", ".join(["Tensor"] * (1 + states + len(saved)))
    tail = flags + (_MASKS if masks else "") + "".join(f", Tensor? ln_{s}=None" for s in norms)
    finals = "".join(f", Tensor grad_final{i}" for i in range(states))
    saved_args = "".join(f", Tensor {s}" for s in saved)
    grads = ", ".join(["Tensor"] * (n_in + len(norms)))
    for schema in (f"{name}({inputs}, Tensor? valid, {tail}) -> ({outs})",
                   f"{name}_backward(Tensor grad_ys{finals}, {inputs}{saved_args}, "
                   f"Tensor? valid, {tail}) -> ({grads})",
                   f"{name}_inference({inputs}, Tensor? valid, {tail}) -> "
                   f"({', '.join(['Tensor'] * (1 + states))})"):
        LIB.define(schema)
        _schemas.append(schema)
    _specs[name] = (n_in, states, len(_names(flags)), 2 if masks else 0)
    _n_saved[name] = len(saved)
    _norms[name] = tuple(norms)


def schema_fingerprint() -> str:
    """12 hex digits of a hash of every rnnkit op schema: what a compiled graph's calls to the
    ops depend on."""
    import hashlib

    return hashlib.sha256("\n".join(_schemas).encode()).hexdigest()[:12]


def tag_compile_caches() -> None:
    """Add the ops' schema fingerprint to ``torch.compiler.config.cache_key_tag``, which every
    torch.compile cache (Inductor's FX graph cache, AOTAutograd's) puts in its keys.

    Those keys do not include a custom op's schema: a graph compiled against an older rnnkit
    whose op took other arguments (a saved buffer more or less) would be read back from the
    on-disk cache and call the op with the old ones ("Expected a value of type
    'Optional[Tensor]' for argument 'valid'"). With the tag, another rnnkit's schemas compile
    anew; the same rnnkit keeps its cache. The tag is appended to (never replaces) a user's
    own, once per process."""
    import torch.compiler.config as cconfig

    mark = f"rnnkit-ops-{schema_fingerprint()}"
    if mark not in cconfig.cache_key_tag.split("+"):
        cconfig.cache_key_tag = "+".join(t for t in (cconfig.cache_key_tag, mark) if t)


def norm_fakes(x: torch.Tensor, G: int, Hc: int, ln_ih, ln_hh, ln_c=None) -> tuple:
    """The layer normalization's saved buffers ``(xn, rn, cn, rstd)`` as empty tensors of their
    shapes, for an op's fake (``G`` the gates' width, ``Hc`` the third site's)."""
    T, N = x.shape[0], x.shape[1]
    if ln_ih is None and ln_hh is None and ln_c is None:
        return tuple(absent(x) for _ in range(4))  # (outputs may not alias)
    return (x.new_empty(T, N, G) if ln_ih is not None else absent(x),
            x.new_empty(T, N, G) if ln_hh is not None else absent(x),
            x.new_empty(T, N, Hc) if ln_c is not None else absent(x),
            x.new_empty(3, T, N))


def layer_norm(z: torch.Tensor, ln: torch.Tensor | None) -> torch.Tensor:
    """``z`` normalized over its last dimension with gain ``ln[0]`` and bias ``ln[1]`` (a
    reference's site; ``z`` itself where ``ln`` is None)."""
    if ln is None:
        return z
    from ..cells.base import LN_EPS

    return torch.nn.functional.layer_norm(z, z.shape[-1:], ln[0], ln[1], eps=LN_EPS)


def project(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            ln: torch.Tensor | None) -> torch.Tensor:
    """A reference's ``x W^T + b``; with the site's layer normalization ``ln``,
    ``LN(x W^T) + b`` (``rnnkit.cells.base.Cell.project``)."""
    if ln is None:
        return torch.nn.functional.linear(x, w, b)
    z = layer_norm(torch.nn.functional.linear(x, w), ln)
    return z if b is None else z + b


def absent(like: torch.Tensor) -> torch.Tensor:
    """The ``(0,)`` tensor an op returns in place of an unused buffer or an absent gradient."""
    return like.new_empty(0)


def register(name: str, *, fake: Callable, reference: Callable, python_forward: Callable,
             python_backward: Callable, python_inference: Callable | None = None) -> None:
    """Fakes, autograd and (where no compiled kernel is registered) the pure-torch CPU
    implementation of ``name``, ``name_backward`` and ``name_inference``.

    ``fake(*inputs, valid, *flags)`` -> the op's outputs as empty tensors of their shapes;
    ``reference(*inputs, valid, *flags) -> (ys, *finals)`` in differentiable torch ops (what a
    recorded backward differentiates); ``python_forward``/``python_backward`` (and
    ``python_inference``, by default the forward's first outputs) have the ops' signatures and
    returns.
    """
    n_in, n_states, n_flags, n_masks = _specs[name]
    n_norms = len(_norms[name])
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkit::{name}", "CPU"):
        _compiled_cpu.add(name)
    after_flags = n_in + 1 + n_flags  # where the masks start among a forward's arguments

    def fake_backward(*args):
        inputs = args[1 + n_states : 1 + n_states + n_in]
        norms = _tail(args, 1 + n_states + n_in + _n_saved[name] + 1 + n_flags + n_masks,
                      n_norms)
        return tuple(torch.empty_like(t) if t is not None else absent(args[0])
                     for t in (*inputs, *norms))

    def setup_context(ctx, inputs, output):
        # No zero-filled gradients for the outputs nothing used (the saved buffers, as large
        # as the sequence): backward takes None for them (it fills the states' and ys' itself)
        ctx.set_materialize_grads(False)
        # (a call may leave the masks and norms to their defaults)
        extra = _tail(inputs, after_flags, n_masks + n_norms)
        ctx.save_for_backward(*inputs[: n_in + 1], *extra, *output[1 + n_states :])
        ctx.flags = tuple(inputs[n_in + 1 : after_flags])
        ctx.ys_shape = output[0].shape

    def backward(ctx, grad_ys, *grads):
        saved_tensors = ctx.saved_tensors
        inputs, valid = saved_tensors[:n_in], saved_tensors[n_in]
        masks = saved_tensors[n_in + 1 : n_in + 1 + n_masks]
        norms = saved_tensors[n_in + 1 + n_masks : n_in + 1 + n_masks + n_norms]
        saved = saved_tensors[n_in + 1 + n_masks + n_norms :]
        finals = [g if g is not None else torch.zeros_like(s)
                  for g, s in zip(grads[:n_states], inputs[1 : 1 + n_states], strict=True)]
        if grad_ys is None:
            grad_ys = inputs[0].new_zeros(ctx.ys_shape)
        tail = (None,) * (1 + len(ctx.flags) + n_masks)  # valid, the flags and the masks
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
            args = (*inputs, valid, *ctx.flags, *masks, *norms)
            wrt = [i for i, t in enumerate(args) if isinstance(t, torch.Tensor)
                   and t.requires_grad and (i < n_in or i >= len(args) - n_norms)]
            got = differentiate(reference, args, wrt, (grad_ys, *finals))
            return (*got[:n_in], *tail, *got[len(args) - n_norms :])
        op = getattr(torch.ops.rnnkit, f"{name}_backward")
        got = op(grad_ys, *finals, *inputs, *saved, valid, *ctx.flags, *masks, *norms)
        got = [g if t is not None else None
               for g, t in zip(got, (*inputs, *norms), strict=True)]
        return (*got[:n_in], *tail, *got[n_in:])

    torch.library.register_fake(f"rnnkit::{name}", fake, lib=LIB)
    torch.library.register_fake(f"rnnkit::{name}_backward", fake_backward, lib=LIB)
    _register_autograd(name, setup_context, backward)
    torch.library.register_fake(f"rnnkit::{name}_inference",
                                lambda *args: fake(*args)[: 1 + n_states], lib=LIB)
    if python_inference is None:
        def python_inference(*args):  # the device's own forward (C++, Triton or pure torch)
            return tuple(getattr(torch.ops.rnnkit, name)(*args)[: 1 + n_states])
    if n_masks:
        _by_reference[name] = _reference_implementations(name, reference, fake)
        python_forward = unless_masked(name, python_forward, 0)
        python_backward = unless_masked(name, python_backward, 1)
    # The pure-torch loops are device-generic: they fill every key no compiled kernel took.
    for key in ("CPU", "CUDA"):
        for op, fn in ((name, python_forward), (f"{name}_backward", python_backward),
                       (f"{name}_inference", python_inference)):
            if not torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkit::{op}", key):
                LIB.impl(op, fn, key)


def _register_autograd(name: str, setup_context: Callable, backward: Callable) -> None:
    """Register ``setup_context`` and ``backward`` as op ``name``'s autograd: what
    ``torch.library.register_autograd`` does, less its per-call cost. Its kernel re-adds the
    arguments the dispatcher dropped for equalling their defaults by walking the schema (39 us a
    call here, 2% of an Elman train step at H = 128, T = 50); ``setup_context`` reads the missing
    trailing arguments as None itself (``_tail``)."""
    op = getattr(torch.ops.rnnkit, name).default
    below_autograd = torch._C._after_autograd_keyset

    def forward(ctx, keyset, *args):
        with torch._C._AutoDispatchBelowAutograd():
            output = op.redispatch(keyset & below_autograd, *args)
        setup_context(ctx, args, output)
        return output

    def function_backward(ctx, *grads):
        return (None, *backward(ctx, *grads))  # (no gradient for the keyset)

    function = type(f"rnnkit_{name}", (torch.autograd.Function,),
                    {"forward": staticmethod(forward),
                     "backward": staticmethod(function_backward)})

    def kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return function.apply(keyset, *args)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & below_autograd, *args)

    LIB.impl(name, kernel, "Autograd", with_keyset=True)


def _tail(args: tuple, start: int, n: int) -> tuple:
    """``args[start : start + n]``, None for those a call left to their default (None)."""
    got = tuple(args[start : start + n])
    return got + (None,) * (n - len(got))


# name -> (forward, backward) computed from the op's reference, for calls with masks or norms
_by_reference: dict[str, tuple[Callable, Callable]] = {}


def _reference_implementations(name: str, reference: Callable, fake: Callable) -> tuple:
    """The op's forward and backward from its differentiable reference: the outputs (the saved
    buffers, which this backward does not read, zeros of the fake's shapes), and the
    reference's vector-Jacobian product."""
    n_in, n_states, n_flags, n_masks = _specs[name]
    n_norms = len(_norms[name])

    def forward(*args):
        with torch.no_grad():
            outs = reference(*args)
        return (*(o.clone() for o in outs), *(t.zero_() for t in fake(*args)[1 + n_states :]))

    def backward(*args):  # (grad_ys, *grad_finals, *inputs, *saved, valid, *flags, *masks, *norms)
        grads = args[: 1 + n_states]
        start = 1 + n_states + n_in + _n_saved[name]  # valid
        tail = _tail(args, start, 1 + n_flags + n_masks + n_norms)
        inputs = (*args[1 + n_states : 1 + n_states + n_in], *tail[len(tail) - n_norms :])
        wrt = [i for i, t in enumerate(inputs) if t is not None]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() if t is not None else None for t in inputs]
            outs = reference(*leaves[:n_in], *tail[: len(tail) - n_norms], *leaves[n_in:])
            pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if o.requires_grad]
            got = torch.autograd.grad([o for o, _ in pairs], [leaves[i] for i in wrt],
                                      [g for _, g in pairs], allow_unused=True)
        result = [absent(args[0])] * len(inputs)
        for i, g in zip(wrt, got, strict=True):
            result[i] = g if g is not None else torch.zeros_like(inputs[i])
        return tuple(result)

    return forward, backward


def unless_masked(name: str, implementation: Callable, which: int) -> Callable:
    """``implementation`` (a forward, ``which=0``, or backward, ``1``, of an op defined with
    ``masks=True`` that does not apply the masks itself: the pure-torch loops, the Triton
    kernels; with the op's arguments and returns less the layer normalization's) for calls
    without masks or layer normalization; such a call computes from the op's reference."""
    n_in, n_states, n_flags, n_masks = _specs[name]
    n_norms = len(_norms[name])
    n_own = _n_saved[name] - (len(NORM_SAVED) if n_norms else 0)  # the implementation's saved
    # the arguments before the masks (torch leaves out trailing ones equal to their defaults)
    n_args = n_in + 1 + n_flags
    if which == 1:
        n_args += 1 + n_states + _n_saved[name]

    def run(*args):
        if any(m is not None for m in args[n_args:]):
            args += (None,) * (n_args + n_masks + n_norms - len(args))
            return _by_reference[name][which](*args)
        if not n_norms:
            return implementation(*args[:n_args])
        if which == 0:
            return (*implementation(*args[:n_args]), *(absent(args[0]) for _ in NORM_SAVED))
        saved_at = 1 + n_states + n_in  # drop the layer normalization's saved buffers
        own = args[: saved_at + n_own] + args[saved_at + _n_saved[name] : n_args]
        return (*implementation(*own), *(absent(args[0]) for _ in range(n_norms)))

    return run


def compiled_on_cpu(name: str) -> bool:
    """Whether op ``name`` runs a compiled (C++) loop on the CPU, else its pure-torch one."""
    return name in _compiled_cpu


def call(name: str, *args) -> tuple:
    """``(ys, *finals)`` of op ``name``: the op itself where autograd records the call (some
    input requires a gradient and grad mode is on), else ``name_inference``, which keeps nothing
    for a backward."""
    n_in, n_states, n_flags, n_masks = _specs[name]
    norms = args[n_in + 1 + n_flags + n_masks :]
    if recording(*args[:n_in], *norms):
        return getattr(torch.ops.rnnkit, name)(*args)[: 1 + n_states]
    return tuple(getattr(torch.ops.rnnkit, f"{name}_inference")(*args))
