"""The cell ops (``torch.ops.rnnkit.{jordan,fully,clockwork,scrn,ctrnn}_sequence``, pure torch):
opcheck, float64 gradcheck and gradgradcheck, outputs equal to ``rnnkit.scan`` of the cell and
to the op's own reference, for the flag combinations that matter; and every network built on
them compiled with ``torch.compile(fullgraph=True, dynamic=True)`` (eager's numbers, no
recompilation for a new length or batch size) and exported with a dynamic T and N."""

import pytest
import torch
from kernel_checks import check_compiles_like_eager
from torch.autograd import gradcheck, gradgradcheck
from torch.export import Dim

import rnnkit
from rnnkit import ops, scan
from rnnkit.cells import (
    ClockworkCell,
    ClockworkState,
    CTRNNCell,
    FullyRecurrentCell,
    FullyState,
    JordanCell,
    SCRNCell,
    SCRNState,
)
from rnnkit.cells.base import state_leaves

F64 = torch.float64
T, N, I = 5, 3, 4
LENGTHS = torch.tensor([5, 2, 4])  # one full sequence
VALID = torch.arange(T).unsqueeze(1) < LENGTHS  # (T, N)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """opcheck's aot_dispatch test leaves Dynamo state behind that makes every later op call
    ~25x slower (measured) until a reset; and the compile tests count graphs from zero."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_()


def _make(cls, seed, **opts):
    torch.manual_seed(seed)
    cell = cls(opts.pop("input_size", I), opts.pop("hidden_size", 4), dtype=F64, **opts)
    with torch.no_grad():  # larger than the init, so nothing is trivially small
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    return cell


def _xs(cell, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(T, N, cell.input_size, dtype=F64, generator=g)
    if getattr(cell, "dt_input", False):  # a positive dt per step in the last channel
        xs[:, :, -1] = torch.rand(T, N, dtype=F64, generator=g) * 0.6 + 0.05
    return xs


def _states(cell, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, n, dtype=F64, generator=g) for n in state_leaves(cell.state_size)]


# Each builder: config -> (cell, xs, the scan state, the op's differentiable inputs, its flags
# after `valid` except `reverse`, last).


def _jordan(cfg):
    act, out, bias, O = cfg
    cell = _make(JordanCell, 0, output_size=O, activation=act, output_activation=out, bias=bias)
    xs = _xs(cell, 1)
    (y0,) = _states(cell, 2)
    args = (cell.precompute(xs), y0, cell.weight_yh, cell.bias_yh, cell.weight_hy, cell.bias_hy)
    return cell, xs, y0, tuple(map(_leaf, args)), (act, out)


def _fully(cfg):
    act, out, bias, O = cfg
    cell = _make(FullyRecurrentCell, 0, output_size=O, activation=act, output_activation=out,
                 bias=bias)
    xs = _xs(cell, 1)
    h0, y0 = _states(cell, 2)
    args = (cell.precompute(xs), h0, y0, cell.weight_mh, cell.weight_hy, cell.weight_my,
            cell.bias_hy)
    return cell, xs, FullyState(h0, y0), tuple(map(_leaf, args)), (act, out)


def _clockwork(cfg):
    periods, H, act, bias, t0 = cfg
    cell = _make(ClockworkCell, 0, hidden_size=H, periods=periods, activation=act, bias=bias)
    xs = _xs(cell, 1)
    h0, _ = _states(cell, 2)
    t0 = torch.tensor(t0, dtype=F64).unsqueeze(1)  # (no half-integers: round has a jump there)
    args = (cell.precompute(xs), h0, t0, cell.weight_hh, cell.bias_hh)
    return (cell, xs, ClockworkState(h0, t0), tuple(map(_leaf, args)),
            (list(periods), act))


def _scrn(cfg):
    learn, alpha = cfg
    cell = _make(SCRNCell, 0, hidden_size=4, context_size=3, alpha=alpha, learn_alpha=learn)
    xs = _xs(cell, 1)
    h0, s0 = _states(cell, 2)
    learned = cell.alpha if learn else None
    args = (cell.precompute(xs), h0, s0, learned, cell.weight_P, cell.weight_R)
    return (cell, xs, SCRNState(h0, s0), tuple(map(_leaf, args)),
            (0.0 if learn else alpha,))


def _ctrnn(cfg):
    act, dt_input = cfg
    opts = {"dt_input": True} if dt_input else {"dt": 0.4}
    cell = _make(CTRNNCell, 0, input_size=I + dt_input, activation=act, **opts)
    with torch.no_grad():  # time constants around 1, per unit
        cell.log_tau.uniform_(-0.5, 0.5)
    xs = _xs(cell, 1)
    (h0,) = _states(cell, 2)
    args = (cell.precompute(xs), h0, cell.weight_hh, cell.log_tau)
    return cell, xs, h0, tuple(map(_leaf, args)), (cell.dt, dt_input, act)


# op -> (builder, its module, the configurations). Every activation of each cell, biases or not,
# O != H; SCRN's learned and fixed alpha (0 included); CTRNN's constant and per-step dt;
# Clockwork's periods (a prefix of active modules, coprime ones, a single module) and initial
# counters (fresh, per-sequence).
OPS = {
    "jordan": (_jordan, ops.jordan, {
        "tanh-tanh": ("tanh", "tanh", True, None), "relu-softmax": ("relu", "softmax", False, 3),
        "sigmoid-identity": ("sigmoid", "identity", True, 5),
        "tanh-sigmoid": ("tanh", "sigmoid", False, None)}),
    "fully": (_fully, ops.fully, {
        "tanh-tanh": ("tanh", "tanh", True, None), "relu-softmax": ("relu", "softmax", False, 3),
        "sigmoid-identity": ("sigmoid", "identity", True, 5),
        "tanh-sigmoid": ("tanh", "sigmoid", False, None)}),
    "clockwork": (_clockwork, ops.clockwork, {
        "pow2-tanh": ((1, 2, 4), 6, "tanh", True, [0.0] * N),
        "coprime-relu-nobias": ((2, 3), 6, "relu", False, [0.0, 3.2, 1.0]),
        "one-module-identity": ((1,), 3, "identity", True, [2.0] * N),
        "pow2-sigmoid-mixed": ((1, 2), 4, "sigmoid", True, [1.0, 0.0, 5.0])}),
    "scrn": (_scrn, ops.scrn, {
        "learned": (True, 0.6), "fixed": (False, 0.7), "fixed-0": (False, 0.0)}),
    "ctrnn": (_ctrnn, ops.ctrnn, {
        "tanh": ("tanh", False), "tanh-dt": ("tanh", True), "sigmoid-dt": ("sigmoid", True),
        "relu": ("relu", False), "identity": ("identity", False),
        "identity-dt": ("identity", True)}),
}
CASES = [(name, cfg, reverse, masked) for name, (_, _, cfgs) in OPS.items() for cfg in cfgs
         for reverse in (False, True) for masked in (False, True)]
IDS = [f"{n}-{c}-{'rev' if r else 'fwd'}-{'masked' if m else 'full'}" for n, c, r, m in CASES]


def _leaves(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("name, cfg, reverse, masked", CASES, ids=IDS)
def test_op(name, cfg, reverse, masked):
    build, module, cfgs = OPS[name]
    cell, xs, state, args, flags = build(cfgs[cfg])
    op = getattr(torch.ops.rnnkit, f"{name}_sequence")
    tail = (VALID if masked else None, *flags, reverse)
    S = len(_leaves(state))
    # the forward equals scan of the cell, and the op's reference (what a recorded backward
    # differentiates) equals both
    with torch.no_grad():
        got = op(*args, *tail)[: 1 + S]
        ref = module.reference(*args, *tail)
        ys, final = scan(cell, xs, state, reverse=reverse, lengths=LENGTHS if masked else None)
    for a, b, c in zip(got, ref, [ys, *_leaves(final)], strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-12)

    def f(*a):
        return op(*a, *tail)[: 1 + S]

    assert gradcheck(f, args)
    # the full check on each op's first configuration, reversed and padded; a random
    # projection elsewhere (the full one costs ~1 s a case here)
    full = cfg == next(iter(cfgs)) and reverse and masked
    assert gradgradcheck(f, args, fast_mode=not full)
    torch.library.opcheck(op.default, (*args, *tail))


def test_kernels_run_the_ops():
    """Every fused kernel of these cells runs its op, recording or not (under no_grad too)."""
    from kernel_checks import graph_names

    from rnnkit.kernels import fused_scan

    for name, (build, _, cfgs) in OPS.items():
        cell, xs, state, _, _ = build(next(iter(cfgs.values())))
        xs.requires_grad_()
        ys, _ = fused_scan(cell)(cell, xs, state)
        assert any(f"rnnkit_{name}_sequence" in n for n in graph_names(ys)), name
        with torch.no_grad():
            ys2, _ = fused_scan(cell)(cell, xs, state)
        assert ys2.grad_fn is None
        torch.testing.assert_close(ys2, ys, rtol=0, atol=0)


# ---- the networks: torch.compile(fullgraph=True, dynamic=True) and torch.export ------------

H = 6
NETS = {
    "jordan": lambda: rnnkit.Jordan(I, H, num_layers=2, bidirectional=True, output_size=3,
                                    output_activation="softmax"),
    "fully": lambda: rnnkit.FullyRecurrent(I, H, num_layers=2, bidirectional=True,
                                           output_size=3),
    "clockwork": lambda: rnnkit.Clockwork(I, H, num_layers=2, bidirectional=True,
                                          periods=(1, 2, 4)),
    "scrn": lambda: rnnkit.SCRN(I, H, num_layers=2, bidirectional=True, context_size=2,
                                learn_alpha=True),
    "ctrnn": lambda: rnnkit.CTRNN(I, H, num_layers=2, bidirectional=True, dt=0.5),
    "ctrnn-dt": lambda: rnnkit.CTRNN(I, H, num_layers=2, bidirectional=True, dt=None),
    "indrnn": lambda: rnnkit.IndRNN(I, H, num_layers=2, bidirectional=True,
                                    max_recurrent_weight=1.0),
    "mingru": lambda: rnnkit.MinGRU(I, H, num_layers=2, bidirectional=True),
    "minlstm": lambda: rnnkit.MinLSTM(I, H, num_layers=2, bidirectional=True),
}


def _dt(x):  # a per-step dt for the ctrnn-dt network, laid out like its input
    return {"dt": torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(5)) + 0.1}


@pytest.mark.parametrize("kind", list(NETS))
def test_compiles_fullgraph_with_eagers_numbers(kind):
    """Forward, backward, lengths, and no recompilation for a new length or batch size."""
    torch.manual_seed(0)
    net = NETS[kind]()
    extra = _dt if kind == "ctrnn-dt" else (lambda x: {})
    x = torch.randn(T, N, I, requires_grad=True)
    check_compiles_like_eager(net, x, LENGTHS, extra)


@pytest.mark.parametrize("kind", list(NETS))
def test_exports_with_dynamic_time_and_batch(kind):
    """Exported once, the program runs any length and batch size with eager's numbers."""
    torch.manual_seed(0)
    net = NETS[kind]().eval()
    extra = _dt if kind == "ctrnn-dt" else (lambda x: {})
    x = torch.randn(T, N, I)
    dims = {0: Dim("T", min=2, max=4096), 1: Dim("N", min=2, max=1024)}
    shapes = {"input": dims, **({"dt": dims} if kind == "ctrnn-dt" else {})}
    program = torch.export.export(net, (x,), extra(x), dynamic_shapes=shapes)
    assert any(str(node.target).startswith("rnnkit.") for node in program.graph.nodes)
    for shape in [(T, N, I), (9, 5, I), (2, 7, I)]:
        xx = torch.randn(*shape)
        got, want = program.module()(xx, **extra(xx)), net(xx, **extra(xx))
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("name", list(OPS))
def test_both_implementations_agree(name):
    """Where the op has a compiled C++ loop on the CPU, it and the pure-torch implementation
    (called directly) give the same outputs, final states and gradients, each backward reading
    its own forward's saved buffers; the inference op gives the forward's outputs."""
    from rnnkit.ops import _wiring

    if not _wiring.compiled_on_cpu(f"{name}_sequence"):
        pytest.skip(f"{name}_sequence has no compiled CPU loop here")
    build, module, cfgs = OPS[name]
    op = getattr(torch.ops.rnnkit, f"{name}_sequence")
    backward = getattr(torch.ops.rnnkit, f"{name}_sequence_backward")
    inference = getattr(torch.ops.rnnkit, f"{name}_sequence_inference")
    with torch.no_grad():
        for cfg in cfgs.values():
            _, _, state, args, flags = build(cfg)
            S = len(_leaves(state))
            for reverse in (False, True):
                for valid in (None, VALID):
                    tail = (valid, *flags, reverse)
                    fwd = op(*args, *tail)
                    py = module._python_forward(*args, *tail)
                    # (after the pure-torch loop's outputs, the layer normalization's: none here)
                    assert all(o.numel() == 0 for o in fwd[len(py) :])
                    for a, b in zip(fwd[: 1 + S], py[: 1 + S], strict=True):
                        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
                    for a, b in zip(inference(*args, *tail), fwd[: 1 + S], strict=True):
                        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
                    g = torch.Generator().manual_seed(1)
                    grads = [torch.randn(o.shape, dtype=F64, generator=g) for o in fwd[: 1 + S]]
                    got = backward(*grads, *args, *fwd[1 + S :], *tail)
                    want = module._python_backward(*grads, *args, *py[1 + S :], *tail)
                    # (after the pure-torch loop's gradients, the layer normalization's: none here)
                    assert all(o.numel() == 0 for o in got[len(want) :])
                    for a, b in zip(got[: len(want)], want, strict=True):
                        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- the regularizer masks in the Clockwork, SCRN and CTRNN ops (rnnkit.regularize) ----------
# (recurrent dropout drop (N, H), zoneout weights zone (T, N, Z): Z = H, SCRN's H + S; the
# Clockwork's counter is not zoned)

from rnnkit.ops import _wiring  # noqa: E402
from rnnkit.regularize import Masks  # noqa: E402

MASKED_OPS = {"clockwork": ["pow2-tanh", "coprime-relu-nobias"],
              "scrn": ["learned", "fixed"],
              "ctrnn": ["tanh-dt", "identity", "sigmoid-dt"]}
MASKED_CASES = [(name, cfg) for name, cfgs in MASKED_OPS.items() for cfg in cfgs]
MASKED_IDS = [f"{n}-{c}" for n, c in MASKED_CASES]


def _op_masks(name, args, which, seed=1, p=None):
    """A scaled recurrent dropout mask and 0/1 zoneout weights (``p``: the evaluation weights,
    p everywhere, no drop) for op ``name``'s state (None, by ``which``: "drop", "zone",
    "both")."""
    g = torch.Generator().manual_seed(seed)
    H = args[1].shape[1]
    Z = H + (args[2].shape[1] if name == "scrn" else 0)
    if p is not None:
        return None, torch.full((T, N, Z), p, dtype=F64)
    drop = (torch.rand(N, H, generator=g, dtype=F64) > 0.3).to(F64) / 0.7
    zone = (torch.rand(T, N, Z, generator=g, dtype=F64) < 0.4).to(F64)
    return (drop if which != "zone" else None), (zone if which != "drop" else None)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("which", ["drop", "zone", "both"])
@pytest.mark.parametrize("name, cfg", MASKED_CASES, ids=MASKED_IDS)
def test_masked_cell_op_equals_scan_and_its_reference_gradchecks_and_passes_opcheck(
        name, cfg, which, reverse):
    """Recurrent dropout and zoneout inside the op: its outputs (compiled where it built)
    equal ``scan`` of the cell with these masks and the op's reference, its hand-derived
    backward passes float64 gradcheck (and gradgradcheck, which differentiates the reference),
    and opcheck passes."""
    build, module, cfgs = OPS[name]
    cell, xs, state, args, flags = build(cfgs[cfg])
    masks = _op_masks(name, args, which)
    op = getattr(torch.ops.rnnkit, f"{name}_sequence")
    tail = (VALID, *flags, reverse, *masks)
    S = len(_leaves(state))
    with torch.no_grad():
        got = op(*args, *tail)[: 1 + S]
        ref = module.reference(*args, *tail)
        ys, final = scan(cell, xs, state, reverse=reverse, lengths=LENGTHS,
                         masks=Masks(*masks, True))
    for a, b, c in zip(got, ref, [ys, *_leaves(final)], strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-12)
    present = tuple(a for a in args if a is not None)

    def f(*a):
        it = iter(a)
        full = [next(it) if t is not None else None for t in args]
        return op(*full, *tail)[: 1 + S]

    assert gradcheck(f, present)
    if which == "both":
        assert gradgradcheck(f, present, fast_mode=True)
    torch.library.opcheck(op.default, (*args, *tail))


@pytest.mark.parametrize("name, cfg", MASKED_CASES, ids=MASKED_IDS)
def test_cell_op_zoneout_expectation_in_the_inference_op(name, cfg):
    """At evaluation zoneout mixes old and new states by p (fractional weights): the inference
    op (compiled where it built) computes the reference's and ``scan``'s numbers, and the
    pure-torch implementation (from the reference) too."""
    build, module, cfgs = OPS[name]
    cell, xs, state, args, flags = build(cfgs[cfg])
    args = tuple(a.detach() if a is not None else None for a in args)
    for reverse in (False, True):
        tail = (VALID, *flags, reverse, *_op_masks(name, args, "zone", p=0.3))
        want = module.reference(*args, *tail)
        got = getattr(torch.ops.rnnkit, f"{name}_sequence_inference")(*args, *tail)
        by_reference = _wiring._by_reference[f"{name}_sequence"][0](*args, *tail)
        with torch.no_grad():
            ys, final = scan(cell, xs, state, reverse=reverse, lengths=LENGTHS,
                             masks=Masks(None, tail[-1], False))
        for a, b, c, d in zip(got, want, by_reference, [ys, *_leaves(final)], strict=False):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(c, b, rtol=0, atol=0)
            torch.testing.assert_close(b, d, rtol=1e-12, atol=1e-12)


# ---- the regularizer masks (rnnkit.regularize) in the Jordan and fully recurrent ops --------

MASKED_OPS = ("jordan", "fully")
MASK_CASES = [(name, cfg, i % 2 == 1) for name in MASKED_OPS
              for i, cfg in enumerate(OPS[name][2])]
MASK_IDS = [f"{n}-{c}-{'rev' if r else 'fwd'}" for n, c, r in MASK_CASES]


def _masks(state, which, seed=1):
    """A scaled recurrent dropout mask (N, R) and 0/1 zoneout weights (T, N, S) for a state of
    these leaves (R = S: every leaf enters the product and is zoned), or None, by ``which``:
    "drop", "zone" or "both"."""
    g = torch.Generator().manual_seed(seed)
    S = sum(s.shape[1] for s in _leaves(state))
    drop = (torch.rand(N, S, generator=g, dtype=F64) > 0.3).to(F64) / 0.7
    zone = (torch.rand(T, N, S, generator=g, dtype=F64) < 0.4).to(F64)
    return (drop if which != "zone" else None), (zone if which != "drop" else None)


@pytest.mark.parametrize("which", ["drop", "zone", "both"])
@pytest.mark.parametrize("name, cfg, reverse", MASK_CASES, ids=MASK_IDS)
def test_masked_op_equals_its_reference_and_scan_gradchecks_and_passes_opcheck(name, cfg, reverse,
                                                                              which):
    """Recurrent dropout and zoneout inside the op (compiled where it built): its outputs equal
    its differentiable reference's and ``scan``'s with the same masks, its hand-derived backward
    passes float64 gradcheck (and gradgradcheck, which differentiates the reference), and
    opcheck passes; padded sequences throughout."""
    from rnnkit.regularize import Masks

    build, module, cfgs = OPS[name]
    cell, xs, state, args, flags = build(cfgs[cfg])
    drop, zone = _masks(state, which)
    op = getattr(torch.ops.rnnkit, f"{name}_sequence")
    tail = (VALID, *flags, reverse, drop, zone)
    S = len(_leaves(state))
    with torch.no_grad():
        got = op(*args, *tail)[: 1 + S]
        inference = getattr(torch.ops.rnnkit, f"{name}_sequence_inference")(*args, *tail)
        ref = module.reference(*args, *tail)
        ys, final = scan(cell, xs, state, reverse=reverse, lengths=LENGTHS,
                         masks=Masks(drop, zone, True))
    for a, b, c, d in zip(got, inference, ref, [ys, *_leaves(final)], strict=True):
        torch.testing.assert_close(a, d, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, d, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, d, rtol=1e-12, atol=1e-12)

    def f(*a):
        return op(*a, *tail)[: 1 + S]

    assert gradcheck(f, args)
    if which == "both":
        assert gradgradcheck(f, args, fast_mode=True)
    torch.library.opcheck(op.default, (*args, *tail))


def test_fully_zoned_hidden_layer_still_feeds_the_output_layer():
    """Where zoneout keeps h_{t-1} (d^h = 1) but not y (d^y = 0), y~_t still comes from the
    unzoned h~_t: the backward needs h~ though the slot holds h_{t-1} (so it recomputes it)."""
    build, module, cfgs = OPS["fully"]
    for cfg in cfgs.values():
        _, _, state, args, flags = build(cfg)
        Hh = state[0].shape[1]
        zone = torch.zeros(T, N, Hh + state[1].shape[1], dtype=F64)
        zone[..., :Hh] = 1
        zone[1, 0] = 0  # (one step where h moves too)
        for reverse in (False, True):
            tail = (VALID, *flags, reverse, None, zone)

            def f(*a, tail=tail):
                return torch.ops.rnnkit.fully_sequence(*a, *tail)[:3]

            with torch.no_grad():
                for a, b in zip(f(*args), module.reference(*args, *tail), strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            assert gradcheck(f, args)


@pytest.mark.parametrize("name, cfg, reverse", MASK_CASES, ids=MASK_IDS)
def test_zoneout_expectation_in_the_inference_op(name, cfg, reverse):
    """At evaluation zoneout mixes old and new states by p (fractional weights): the inference
    op (compiled where it built) computes the reference's numbers, and the pure-torch
    implementation (from the reference) too."""
    from rnnkit.ops import _wiring

    build, module, cfgs = OPS[name]
    _, _, state, args, flags = build(cfgs[cfg])
    args = tuple(a.detach() if a is not None else None for a in args)
    S = sum(s.shape[1] for s in _leaves(state))
    zone = torch.full((S,), 0.3, dtype=F64).expand(T, N, S)  # (as a network draws it)
    tail = (VALID, *flags, reverse, None, zone)
    want = module.reference(*args, *tail)
    got = getattr(torch.ops.rnnkit, f"{name}_sequence_inference")(*args, *tail)
    by_reference = _wiring._by_reference[f"{name}_sequence"][0](*args, *tail)
    for a, b, c in zip(got, want, by_reference, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c, b, rtol=0, atol=0)
