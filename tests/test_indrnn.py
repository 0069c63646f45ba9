"""IndRNN (Li et al. 2018): the network and its op against a loop written from the paper's
equation, gradchecks, the recurrent-weight bound and its errors."""

import pytest
import torch

import rnnkit
from rnnkit.cells import IndRNNCell
from rnnkit.ops import indrnn as op_module

F64 = torch.float64


def naive(x, h0, w, u, b, relu=True, lengths=None, reverse=False):
    """h_t = phi(W x_t + b + u * h_{t-1}), one sequence and one step at a time; a reverse pass
    starts at each sequence's own last step; outputs past a length are zero."""
    T, N, _ = x.shape
    phi = torch.relu if relu else torch.tanh
    ys = torch.zeros(T, N, u.shape[0], dtype=x.dtype)
    hs = []
    for n in range(N):
        L = T if lengths is None else int(lengths[n])
        h = h0[n]
        order = range(L - 1, -1, -1) if reverse else range(L)
        for t in order:
            h = phi(w @ x[t, n] + (0 if b is None else b) + u * h)
            ys[t, n] = h
        hs.append(h)
    return ys, torch.stack(hs)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_the_op_equals_the_papers_equation(relu, reverse, masked):
    torch.manual_seed(0)
    T, N, I, H = 7, 4, 3, 5
    x, h0 = torch.randn(T, N, I, dtype=F64), torch.randn(N, H, dtype=F64)
    w, b = torch.randn(H, I, dtype=F64), torch.randn(H, dtype=F64)
    u = torch.rand(H, dtype=F64) * 1.2
    lengths = torch.tensor([7, 3, 1, 5]) if masked else None
    valid = (torch.arange(T).unsqueeze(1) < lengths) if masked else None
    ys, h_T = op_module.indrnn_sequence(x, h0, w, u, b, valid, relu, reverse)
    want_ys, want_h = naive(x, h0, w, u, b, relu, lengths, reverse)
    torch.testing.assert_close(ys, want_ys, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_T, want_h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_the_op_gradchecks_and_passes_opcheck(masked):
    torch.manual_seed(1)
    T, N, I, H = 5, 3, 2, 4
    args = [torch.randn(T, N, I, dtype=F64), torch.randn(N, H, dtype=F64),
            torch.randn(H, I, dtype=F64), torch.rand(H, dtype=F64), torch.randn(H, dtype=F64)]
    args = [a.requires_grad_() for a in args]
    valid = (torch.arange(T).unsqueeze(1) < torch.tensor([5, 2, 4])) if masked else None
    for relu in (True, False):
        def f(*a, relu=relu):
            return torch.ops.rnnkit.indrnn_sequence(*a, valid, relu, False)[:2]
        assert torch.autograd.gradcheck(f, args)
        assert torch.autograd.gradgradcheck(f, args)
        torch.library.opcheck(torch.ops.rnnkit.indrnn_sequence.default,
                              (*args, valid, relu, True))


def test_a_stacked_bidirectional_network_matches_the_loop_layer_by_layer():
    torch.manual_seed(2)
    net = rnnkit.IndRNN(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    x, lengths = torch.randn(6, 3, 3, dtype=F64), torch.tensor([6, 2, 4])
    out, h_n = net(x, lengths=lengths)
    layer_in = x
    for l in range(2):
        outs = []
        for d, sfx in enumerate(("", "_reverse")):
            p = {k: getattr(net, f"{k}_l{l}{sfx}") for k in ("weight_ih", "weight_hh", "bias_ih")}
            ys, h = naive(layer_in, torch.zeros(3, 4, dtype=F64), p["weight_ih"],
                          p["weight_hh"], p["bias_ih"], True, lengths, reverse=d == 1)
            torch.testing.assert_close(h_n[2 * l + d], h)
            outs.append(ys)
        layer_in = torch.cat(outs, -1)
    torch.testing.assert_close(out, layer_in)


def test_the_bound_holds_at_initialisation_and_after_constrain():
    torch.manual_seed(3)
    gamma = 2 ** (1 / 1000)
    net = rnnkit.IndRNN(3, 64, num_layers=2, max_recurrent_weight=gamma,
                        recurrent_init=(-2.0, 2.0))
    for name in ("weight_hh_l0", "weight_hh_l1"):
        u = getattr(net, name)
        assert u.shape == (64,) and u.abs().max() <= gamma and u.min() < 0
    with torch.no_grad():
        net.weight_hh_l1.mul_(10)
    assert net.weight_hh_l1.abs().max() > gamma
    net.constrain_()
    assert net.weight_hh_l1.abs().max() <= gamma
    unbounded = rnnkit.IndRNN(3, 8)
    with torch.no_grad():
        unbounded.weight_hh_l0.fill_(5.0)
    unbounded.constrain_()  # no bound, no change
    assert bool((unbounded.weight_hh_l0 == 5.0).all())


def test_rnnkit_train_projects_after_every_optimizer_step(tmp_path, monkeypatch):
    """The training loop calls every network's constrain_ after each optimizer step."""
    from small_runs import train

    from rnnkit.networks import RecurrentNetwork

    calls = []
    original = RecurrentNetwork.constrain_
    monkeypatch.setattr(RecurrentNetwork, "constrain_",
                        lambda self: (calls.append(1), original(self)))
    train(tmp_path / "run", "--data.task=vowels", "--model.cell=indrnn")
    assert len(calls) == 3  # small_runs' 3 steps


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_recurrent_weight": -1.0}, ValueError, r"max_recurrent_weight: expected a finite "
                                                 r"number >= 0 .* got -1.0"),
    ({"max_recurrent_weight": float("nan")}, ValueError, "max_recurrent_weight"),
    ({"max_recurrent_weight": "2"}, TypeError, r"max_recurrent_weight: expected a real number"),
    ({"recurrent_init": (1.0, 0.0)}, ValueError, r"recurrent_init: expected \(a, b\)"),
    ({"nonlinearity": "sigmoid"}, ValueError, r"nonlinearity: Unknown nonlinearity 'sigmoid'"),
])
def test_bad_options_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        IndRNNCell(3, 4, **kwargs)
    with pytest.raises(error, match=match):
        rnnkit.IndRNN(3, 4, **kwargs)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_residual_layers_add_their_input(bidirectional):
    """Li et al.'s residual IndRNN: layer l >= 1 outputs layer_l(x) + x; the first layer has
    no skip. Against the same layers run one by one, masked, with the streaming steps too."""
    torch.manual_seed(0)
    D = 2 if bidirectional else 1
    net = rnnkit.IndRNN(3, 4, num_layers=3, residual=True, bidirectional=bidirectional,
                        dtype=F64)
    plain = rnnkit.IndRNN(3, 4, num_layers=3, bidirectional=bidirectional, dtype=F64)
    plain.load_state_dict(net.state_dict())
    x, lengths = torch.randn(6, 2, 3, dtype=F64), torch.tensor([6, 4])
    y, h = net(x, lengths=lengths)
    xs = x
    for l, layer in enumerate(plain.stack.layers):
        out, _ = layer(xs, None, lengths)
        xs = out + xs if l > 0 else out
    torch.testing.assert_close(y, xs, rtol=1e-12, atol=1e-12)
    assert (y[4:, 1] == 0).all()  # past a length: zero, skip included
    assert net.residual and "residual=True" in repr(net)
    if not bidirectional:
        state, outs = None, []
        with torch.no_grad():
            for t in range(6):
                o, state = net.step(x[t], state)
                outs.append(o)
        torch.testing.assert_close(torch.stack(outs)[:, 0], y[:, 0].detach(), rtol=1e-12,
                                   atol=1e-12)
    assert h.shape == (3 * D, 2, 4)


def test_residual_stacks_of_torchs_own_cells_leave_its_kernel():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(4, 4, num_layers=2, residual=True, dtype=F64)
    ref = rnnkit.LSTM(4, 4, num_layers=2, residual=True, dtype=F64, native=False,
                      fused=False)
    ref.load_state_dict(lstm.state_dict())
    x = torch.randn(5, 3, 4, dtype=F64)
    torch.testing.assert_close(lstm(x)[0], ref(x)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match=r"^residual: expected a bool, got str"):
        rnnkit.LSTM(4, 4, residual="yes")


def test_config_residual_builds_the_skips():
    from rnnkit.config import Config
    from rnnkit.tasks.base import recurrent_from_config

    cfg = Config()
    cfg.model.cell, cfg.model.num_layers, cfg.model.residual = "indrnn", 2, True
    assert recurrent_from_config(cfg.model, 5).residual
