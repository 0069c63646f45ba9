"""rnnkit.gpu's kernels run by triton's interpreter on CPU tensors, against the CPU ops.

``tests/test_gpu_triton.py`` runs this file in a subprocess with ``TRITON_INTERPRET=1`` (triton
reads it when its kernels are defined, so it must be set before ``rnnkit.gpu`` is imported, and
the pytest process may have imported triton already): ``python tests/gpu_interpret.py [ID...]``
prints one JSON line per case, ``{"id", "ok", "error", "forward", "backward"}`` (the last two:
the largest absolute differences seen). Importing this module (for :data:`CASES`) imports
neither triton nor rnnkit.gpu.

A case calls a driver (``rnnkit.gpu.<op>.forward``) on small CPU tensors and compares every
output, the saved buffers included (they mean what the CPU op's do), with
``torch.ops.rnnkit.<op>`` on the same tensors; then it calls the backward driver with the
driver's own saved buffers and compares the gradients with ``torch.autograd.grad`` through the
CPU op (an absent input's gradient is a ``(0,)`` tensor in both).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch

T, N, I = 5, 3, 3
LENGTHS = [T, 2, 1]  # a full sequence, a short one and a length-1 one
# (atol, rtol). float32: the kernels' arithmetic differs from the CPU op's in the last bits
# (tanh from one exp, other summation orders; seen: at most 6e-7 apart); float64: to rounding.
TOL = {torch.float32: dict(forward=(1e-5, 1e-5), backward=(1e-5, 1e-5)),
       torch.float64: dict(forward=(1e-12, 1e-12), backward=(1e-11, 1e-11))}


def _case(op, H, masked, reverse, dtype=torch.float32, bias=True, **opts):
    parts = [op, f"H{H}", "rev" if reverse else "fwd", "masked" if masked else "full"]
    parts += [("persistent" if v else "per-step") if k == "persistent" else f"{k}={v}"
              for k, v in opts.items()]
    if not bias:
        parts.append("nobias")
    if dtype != torch.float32:
        parts.append(str(dtype).split(".")[1])
    return dict(id="-".join(parts), op=op, H=H, masked=masked, reverse=reverse, dtype=dtype,
                bias=bias, opts=opts)


def _lstm_cases(persistent: bool) -> list[dict]:
    p = dict(persistent=persistent)
    return [
        _case("lstm", 8, False, False, peephole="none", **p),
        _case("lstm", 4, True, True, peephole="none", **p),
        _case("lstm", 8, True, False, peephole="diagonal", **p),
        _case("lstm", 8, True, True, peephole="full", **p),
        _case("lstm", 8, True, False, peephole="full", proj=4, **p),
        _case("lstm", 4, False, True, peephole="none", proj=2, **p),
        _case("lstm", 4, True, True, peephole="diagonal", tanh_g=False, tanh_phi=False, **p),
        _case("lstm", 8, True, False, bias=False, peephole="none", proj=4, tanh_g=False, **p),
        _case("lstm", 8, False, False, peephole="full", tanh_phi=False, **p),
    ]


CASES = [
    _case("elman", 4, False, False, relu=False),
    _case("elman", 8, True, True, relu=False),
    _case("elman", 8, True, False, relu=True),
    _case("elman", 4, False, True, bias=False, relu=True),
    _case("gru", 4, False, False),
    _case("gru", 8, True, True),
    _case("gru", 8, True, False, bias=False),
    *_lstm_cases(persistent=False),
    *_lstm_cases(persistent=True),
    _case("elman", 8, True, True, dtype=torch.float64, relu=False),
    _case("gru", 8, True, False, dtype=torch.float64),
    _case("lstm", 8, True, True, dtype=torch.float64, peephole="full", proj=4, persistent=False),
]
IDS = [c["id"] for c in CASES]

# rnnkit's networks (native=False, so every layer runs the op) with the drivers registered as
# the ops' CPU implementation (replacing the compiled one in that process), against the same
# networks on the CPU ops first: the whole path a CUDA tensor takes (autograd, the backward op
# with the forward's saved buffers, packed sequences as masks, both directions, stacking).
NETS = {
    "rnn": lambda rnnkit: rnnkit.RNN(3, 5, num_layers=2, bidirectional=True, native=False),
    "rnn-relu": lambda rnnkit: rnnkit.RNN(3, 4, nonlinearity="relu", native=False),
    "gru": lambda rnnkit: rnnkit.GRU(3, 5, num_layers=2, bidirectional=True, native=False),
    "lstm": lambda rnnkit: rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, native=False),
    "lstm-proj": lambda rnnkit: rnnkit.LSTM(3, 6, bidirectional=True, proj_size=3,
                                            native=False),
    "peephole-diagonal": lambda rnnkit: rnnkit.LSTM(3, 4, peephole="diagonal", native=False),
    "peephole-full": lambda rnnkit: rnnkit.LSTM(3, 4, bidirectional=True, peephole="full",
                                                native=False),
}
# id -> (network, whether the LSTM forward runs the persistent kernel)
NET_CASES = {f"net-{kind}-{'persistent' if p else 'per-step'}": (kind, p) for kind in NETS
             for p in ((False, True) if "lstm" in kind or "peephole" in kind else (False,))}
NET_IDS = list(NET_CASES)


def make(case: dict, seed: int = 0):
    """``(inputs, flags, valid)`` of the case's op: CPU tensors, weights scaled so that every
    activation stays in its sensitive range (identity activations included)."""
    g = torch.Generator().manual_seed(seed)
    dtype, H, opts = case["dtype"], case["H"], case["opts"]

    def rand(*shape, scale=1.0):
        return scale * torch.randn(*shape, dtype=dtype, generator=g)

    valid = (torch.arange(T).unsqueeze(1) < torch.tensor(LENGTHS)) if case["masked"] else None
    op, rev = case["op"], case["reverse"]
    if op in ("elman", "gru"):
        G = 1 if op == "elman" else 3
        b = (rand(G * H, scale=0.5), rand(G * H, scale=0.5)) if case["bias"] else (None, None)
        inputs = (rand(T, N, I), rand(N, H), rand(G * H, I, scale=0.6),
                  rand(G * H, H, scale=0.4), *b)
        flags = (opts["relu"], rev) if op == "elman" else (rev,)
        return inputs, flags, valid
    R = opts.get("proj", H)
    peep = opts["peephole"]
    b = (rand(4 * H, scale=0.5), rand(4 * H, scale=0.5)) if case["bias"] else (None, None)
    w_peep = {"none": None, "diagonal": rand(3 * H, scale=0.5),
              "full": rand(3 * H, H, scale=0.3)}[peep]
    inputs = (rand(T, N, I), rand(N, R), rand(N, H), rand(4 * H, I, scale=0.6),
              rand(4 * H, R, scale=0.4), *b, rand(R, H, scale=0.5) if "proj" in opts else None,
              w_peep)
    flags = (peep, opts.get("tanh_g", True), opts.get("tanh_phi", True), rev)
    return inputs, flags, valid


def _close(got, want, tol, what, worst):
    if want.numel() == 0:
        assert got.numel() == 0, f"{what}: expected a (0,) tensor, got {tuple(got.shape)}"
        return
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{what}: {got.dtype} {tuple(got.shape)} vs the CPU op's {want.dtype} {tuple(want.shape)}"
    worst[0] = max(worst[0], (got - want).abs().max().item())
    torch.testing.assert_close(got, want, atol=tol[0], rtol=tol[1], msg=lambda m: f"{what}: {m}")


def check(case: dict) -> dict:
    """Run one case (module docstring); raises AssertionError on a difference."""
    from rnnkit import gpu  # noqa: F401  (imports triton: only in the interpreter's process)
    from rnnkit.gpu import elman, gru, lstm

    module = {"elman": elman, "gru": gru, "lstm": lstm}[case["op"]]
    name = f"{case['op']}_sequence"
    n_states = 2 if case["op"] == "lstm" else 1
    inputs, flags, valid = make(case)
    tol = TOL[case["dtype"]]
    kw = {"persistent_kernel": case["opts"]["persistent"]} if case["op"] == "lstm" else {}
    worst_f, worst_b = [0.0], [0.0]

    cpu_in = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    want = getattr(torch.ops.rnnkit, name)(*cpu_in, valid, *flags)
    with torch.no_grad():
        got = module.forward(*inputs, valid, *flags, **kw)
    # (the CPU op's outputs end with the layer normalization's saved buffers, empty here)
    assert all(o.numel() == 0 for o in want[len(got) :]), "the CPU op's extra outputs"
    want = want[: len(got)]
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        _close(a, b.detach(), tol["forward"], f"forward output {k}", worst_f)

    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(o.shape, dtype=o.dtype, generator=g) for o in want[: 1 + n_states]]
    present = [t for t in cpu_in if t is not None]
    ref = iter(torch.autograd.grad(want[: 1 + n_states], present, grads))
    with torch.no_grad():
        back = module.backward(*grads, *inputs, *got[1 + n_states :], valid, *flags)
    assert len(back) == len(inputs), f"{len(back)} gradients for {len(inputs)} inputs"
    for k, (a, t) in enumerate(zip(back, cpu_in, strict=True)):
        want_k = next(ref) if t is not None else a.new_empty(0)
        _close(a, want_k, tol["backward"], f"gradient of input {k}", worst_b)
    return {"forward": worst_f[0], "backward": worst_b[0]}


def _net_run(kind: str) -> list:
    """Outputs, final states and every parameter's gradient of network ``kind`` on a packed
    batch of lengths LENGTHS (the same seeds every call)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    import rnnkit

    torch.manual_seed(0)
    net = NETS[kind](rnnkit)
    x = pack_padded_sequence(torch.randn(T, N, 3), torch.tensor(LENGTHS))
    out, state = net(x)
    leaves = list(state) if isinstance(state, tuple) else [state]
    loss = out.data.square().sum() + sum((s * s).sum() for s in leaves)
    return [out.data, *leaves, *torch.autograd.grad(loss, list(net.parameters()))]


def _register_drivers(persistent: bool, calls: list) -> None:
    """The drivers as the ops' CPU implementation (what ``rnnkit.gpu.register`` does for
    CUDA), the LSTM's forward on the path asked for; each call appends its name to ``calls``."""
    from rnnkit.gpu import elman, gru, lstm
    from rnnkit.ops import LIB
    from rnnkit.ops._wiring import unless_masked

    def counted(name, fn, **kw):
        def run(*args):
            calls.append(name)
            return fn(*args, **kw)
        return run

    for name, module in (("elman_sequence", elman), ("gru_sequence", gru),
                         ("lstm_sequence", lstm)):
        kw = {"persistent_kernel": persistent} if module is lstm else {}
        # (as rnnkit.gpu.register wraps them: the ops' masks and layer normalization arguments)
        LIB.impl(name, unless_masked(name, counted(name, module.forward, **kw), 0), "CPU")
        LIB.impl(f"{name}_backward",
                 unless_masked(name, counted(f"{name}_backward", module.backward), 1), "CPU")


def check_networks(ids: list[str]):
    """Yield ``(id, error or None, largest difference)`` for each network case in ``ids``."""
    import warnings

    wanted = [i for i in NET_IDS if not ids or i in ids]
    refs = {NET_CASES[i][0]: _net_run(NET_CASES[i][0]) for i in wanted}  # the CPU ops
    calls: list = []
    for persistent in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            _register_drivers(persistent, calls)
        for i in wanted:
            kind, p = NET_CASES[i]
            if p != persistent:
                continue
            worst = [0.0]
            try:
                calls.clear()
                got = _net_run(kind)
                assert len(calls) >= 2 and all(c.endswith("_sequence") or
                                               c.endswith("_backward") for c in calls), \
                    f"the drivers did not run (calls: {calls})"
                for k, (a, b) in enumerate(zip(got, refs[kind], strict=True)):
                    _close(a, b, TOL[torch.float32]["backward"], f"output {k}", worst)
                yield i, None, worst[0]
            except Exception as e:
                yield i, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", worst[0]


def main(ids: list[str]) -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    torch.set_num_threads(1)
    import rnnkit.ops  # noqa: F401  (the CPU ops)

    for case in CASES:
        if ids and case["id"] not in ids:
            continue
        row = {"id": case["id"], "ok": True, "error": None}
        try:
            row.update(check(case))
        except Exception as e:  # reported to the test, which fails with it
            row.update(ok=False, error=f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        print(json.dumps(row), flush=True)
    if not ids or set(ids) & set(NET_IDS):  # last: it replaces the ops' CPU implementation
        for i, error, worst in check_networks(ids):
            print(json.dumps({"id": i, "ok": error is None, "error": error, "forward": worst,
                              "backward": worst}), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this rnnkit
    sys.exit(main(sys.argv[1:]))
