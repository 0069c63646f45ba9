"""Gradient-flow diagnostics: g_t against backpropagation through time written out by hand,
the callback's hooks, the loss sweep, ``run_diagnose`` and its command-line flags."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rnnkit.diagnose import add_diagnose_arguments, flow_verdict, main_diagnose, run_diagnose
from rnnkit.networks import RecurrentNetwork
from rnnkit.training.diagnostics import (
    GradientFlow,
    grad_norms_over_time,
    loss_along_weight,
    plot_gradient_curve,
    plot_gradient_heatmap,
    plot_loss_surface,
)

PNG = b"\x89PNG\r\n\x1a\n"
F64 = torch.float64


class Tiny(nn.Module):
    """A recurrent network and a read-out of its last step, in float64."""

    def __init__(self, cell="elman", batch_first=True, bidirectional=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = RecurrentNetwork(cell, 3, 5, batch_first=batch_first,
                                    bidirectional=bidirectional, dtype=F64)
        self.head = nn.Linear(self.rnn.output_size, 1, dtype=F64)

    def forward(self, x, state=None):
        out, state = self.rnn(x, state)
        last = out[:, -1] if self.rnn.batch_first else out[-1]
        return self.head(last).squeeze(-1), state


def elman_loop(cell, x, reverse=False):
    """h_t = tanh(W x_t + b_ih + U h_{t-1} + b_hh) over x (N, T, I), each h_t retaining its
    gradient; returns the list of h_t in time order."""
    W, U, b = cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh
    N, T, _ = x.shape
    h = x.new_zeros(N, U.shape[0])
    hs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = torch.tanh(x[:, t] @ W.T + h @ U.T + b)
        h.retain_grad()
        hs[t] = h
    return hs


def fake_trainer(model, tmp_path):
    return SimpleNamespace(model=model, out_dir=tmp_path, is_main=True)


def measure(model, flow, step, run, tmp_path):
    """One optimizer-less step of the callback protocol; ``run()`` returns the loss."""
    trainer = fake_trainer(model, tmp_path)
    flow.on_step_begin(trainer, step)
    run().backward()
    record = {"step": step}
    flow.on_step_end(trainer, step, record)
    return record


# ---- grad_norms_over_time ------------------------------------------------------------------


def test_grad_norms_over_time_is_hand_bptt():
    """δ_t = ∂L/∂h_t|direct + Uᵀ((1 - h²_{t+1}) ⊙ δ_{t+1}), from the Elman equations."""
    torch.manual_seed(1)
    N, T, I, H = 4, 7, 3, 5
    W, U, b = (torch.randn(H, I, dtype=F64), 0.8 * torch.randn(H, H, dtype=F64),
               torch.randn(H, dtype=F64))
    x, v = torch.randn(N, T, I, dtype=F64), torch.randn(H, dtype=F64)
    W.requires_grad_()
    hs, h = [], torch.zeros(N, H, dtype=F64)
    for t in range(T):
        h = torch.tanh(x[:, t] @ W.T + h @ U.T + b)
        hs.append(h)
    # a loss at the last step plus a small one at every step: both paths of δ_t are exercised
    loss = (hs[-1] @ v).pow(2).mean() + 0.1 * sum(h.sum() for h in hs) / N

    with torch.no_grad():
        delta = [None] * T
        direct = [torch.full((N, H), 0.1 / N, dtype=F64) for _ in range(T)]
        direct[-1] = direct[-1] + 2 * (hs[-1] @ v).unsqueeze(1) * v / N
        delta[-1] = direct[-1]
        for t in range(T - 2, -1, -1):
            delta[t] = direct[t] + ((1 - hs[t + 1] ** 2) * delta[t + 1]) @ U
        expected = torch.stack([d.norm(dim=1).mean() for d in delta])

    g = grad_norms_over_time(hs, loss)
    assert g.shape == (T,)
    torch.testing.assert_close(g.double(), expected, rtol=1e-6, atol=0)
    assert g[0] < g[-1]  # not a constant: the recurrence shrinks it here
    loss.backward()  # retain_graph=True: the graph is still usable


def test_grad_norms_of_a_stacked_output_are_direct_only():
    """A tensor stacked from the h_t only sees how the loss reads it: a loss at the last step
    gives zeros before it (which is why GradientFlow holds on to the per-step states)."""
    torch.manual_seed(2)
    net = RecurrentNetwork("elman", 3, 5, batch_first=True, dtype=F64)
    x = torch.randn(2, 6, 3, dtype=F64)
    out, _ = net(x)
    loss = out[:, -1].pow(2).sum()
    g = grad_norms_over_time(out, loss, batch_first=True)
    assert g.shape == (6,)
    assert (g[:-1] == 0).all() and g[-1] > 0
    torch.testing.assert_close(g[-1].double(), (2 * out[:, -1]).norm(dim=1).mean().detach(),
                               rtol=1e-6, atol=0)
    time_major = out.transpose(0, 1)
    g_tm = grad_norms_over_time(time_major, time_major[-1].pow(2).sum(), batch_first=False)
    torch.testing.assert_close(g_tm, g)


def test_grad_norms_over_time_rejects_bad_input():
    x = torch.randn(2, 3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="loss: expected a scalar"):
        grad_norms_over_time(x, x.sum(dim=0))
    with pytest.raises(ValueError, match="loss: expected a tensor that requires grad"):
        grad_norms_over_time(x, torch.tensor(1.0))
    with pytest.raises(ValueError, match="output: expected"):
        grad_norms_over_time(torch.randn(2), x.sum())


# ---- GradientFlow ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
def test_gradient_flow_equals_the_unrolled_loop(tmp_path, batch_first):
    model = Tiny(batch_first=batch_first)
    torch.manual_seed(3)
    x = torch.randn(4, 9, 3, dtype=F64)  # (N, T, I)
    y = torch.randn(4, dtype=F64)
    flow = GradientFlow(every=1)
    flow.on_train_begin(fake_trainer(model, tmp_path))
    xin = x if batch_first else x.transpose(0, 1)
    record = measure(model, flow, 1, lambda: (model(xin)[0] - y).pow(2).mean(), tmp_path)

    def loop_loss():
        hs = elman_loop(model.rnn.stack.layers[0].cell, x)
        return hs, (model.head(hs[-1]).squeeze(-1) - y).pow(2).mean()

    expected = grad_norms_over_time(*loop_loss())
    hs, loss = loop_loss()  # afresh: autograd.grad also fills the retained .grad
    loss.backward()
    by_hand = torch.stack([h.grad.norm(dim=1).mean() for h in hs])

    assert len(record["grad_flow"]) == 9
    got = torch.tensor(record["grad_flow"], dtype=F64)
    torch.testing.assert_close(got, expected.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(got, by_hand, rtol=1e-6, atol=0)
    assert got[0] < 0.5 * got[-1]  # an error signal that shrinks back in time
    assert flow.history == [(1, record["grad_flow"])]


def test_gradient_flow_concatenates_calls_within_a_step(tmp_path):
    """Truncated BPTT's way: two calls on the two time halves, the state carried along."""
    model = Tiny()
    torch.manual_seed(4)
    x, y = torch.randn(3, 10, 3, dtype=F64), torch.randn(3, dtype=F64)
    flow = GradientFlow(every=5)
    flow.on_train_begin(fake_trainer(model, tmp_path))
    whole = measure(model, flow, 5, lambda: (model(x)[0] - y).pow(2).mean(), tmp_path)

    def halves():
        _, state = model(x[:, :4])
        return (model(x[:, 4:], state)[0] - y).pow(2).mean()

    split = measure(model, flow, 10, halves, tmp_path)
    assert len(split["grad_flow"]) == 10
    torch.testing.assert_close(torch.tensor(split["grad_flow"]),
                               torch.tensor(whole["grad_flow"]), rtol=1e-9, atol=0)

    def detached():  # a truncation: nothing flows from the second half into the first
        _, state = model(x[:, :4])
        return (model(x[:, 4:], state.detach())[0] - y).pow(2).mean()

    cut = measure(model, flow, 15, detached, tmp_path)["grad_flow"]
    assert cut[:4] == [0.0] * 4 and min(cut[4:]) > 0
    assert [s for s, _ in flow.history] == [5, 10, 15]


def test_gradient_flow_lstm_and_bidirectional(tmp_path):
    """h_t of an LSTM state (h, c); both directions of a bidirectional layer, in time order."""
    torch.manual_seed(5)
    x, y = torch.randn(2, 6, 3, dtype=F64), torch.randn(2, dtype=F64)

    lstm = Tiny("lstm")
    flow = GradientFlow(every=1)
    got = measure(lstm, flow, 1, lambda: (lstm(x)[0] - y).pow(2).mean(), tmp_path)["grad_flow"]
    cell, state, hs = lstm.rnn.stack.layers[0].cell, None, []
    for t in range(6):
        _, state = cell(x[:, t], state)
        state.h.retain_grad()
        hs.append(state.h)
    (lstm.head(hs[-1]).squeeze(-1) - y).pow(2).mean().backward()
    torch.testing.assert_close(torch.tensor(got, dtype=F64),
                               torch.stack([h.grad.norm(dim=1).mean() for h in hs]))

    bi = Tiny(bidirectional=True)
    flow = GradientFlow(every=1)
    got = measure(bi, flow, 1, lambda: (bi(x)[0] - y).pow(2).mean(), tmp_path)["grad_flow"]
    layer = bi.rnn.stack.layers[0]
    fwd, bwd = elman_loop(layer.fwd.cell, x), elman_loop(layer.bwd.cell, x, reverse=True)
    out = torch.cat([fwd[-1], bwd[-1]], dim=1)  # the output at the last step
    (bi.head(out).squeeze(-1) - y).pow(2).mean().backward()
    # the reverse direction's h_t for t < T-1 come after the output read at T-1: no gradient
    assert all(b.grad is None for b in bwd[:-1])
    squares = [f.grad.pow(2).sum(1) for f in fwd]
    squares[-1] = squares[-1] + bwd[-1].grad.pow(2).sum(1)
    expected = torch.stack([q.sqrt().mean() for q in squares])
    torch.testing.assert_close(torch.tensor(got, dtype=F64), expected)
    flow.on_step_end(None, 1, {})  # not armed: nothing happens


def test_gradient_flow_zeros_where_the_loss_does_not_reach(tmp_path):
    model = Tiny()
    x = torch.randn(2, 8, 3, dtype=F64)
    flow = GradientFlow(every=1)
    # the loss reads step 2 only: nothing reaches the steps after it
    g = measure(model, flow, 1, lambda: model.rnn(x)[0][:, 2].sum(), tmp_path)["grad_flow"]
    assert all(v > 0 for v in g[:3]) and g[3:] == [0.0] * 5

    def no_grad_then_grad():  # a call under no_grad still takes its place on the time axis
        with torch.no_grad():
            model.rnn(x[:, :3])
        return model.rnn(x[:, 3:])[0][:, -1].sum()

    g = measure(model, flow, 2, no_grad_then_grad, tmp_path)["grad_flow"]
    assert len(g) == 8 and g[:3] == [0.0] * 3 and g[-1] > 0


def test_gradient_flow_packed_equals_padded(tmp_path):
    """A packed batch is measured like the padded one with lengths; padded steps give 0."""
    net = Tiny("gru").rnn
    x, lengths = torch.randn(3, 6, 3, dtype=F64), [6, 4, 2]
    flow = GradientFlow(every=1, module=net)
    padded = measure(net, flow, 1, lambda: net(x, lengths=lengths)[1].sum(), tmp_path)
    packed_x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
    packed = measure(net, flow, 2, lambda: net(packed_x)[1].sum(), tmp_path)
    torch.testing.assert_close(torch.tensor(packed["grad_flow"]),
                               torch.tensor(padded["grad_flow"]), rtol=1e-9, atol=0)
    # padded steps give 0 but count in the mean: at t = 5 only sequence 0 (of 3) is there, and
    # the loss is a sum over sequences, so its gradient is the one it has alone
    alone = measure(net, flow, 3, lambda: net(x[:1])[1].sum(), tmp_path)["grad_flow"]
    assert padded["grad_flow"][5] == pytest.approx(alone[5] / 3, rel=1e-6)
    assert padded["grad_flow"][5] > 0


def test_gradient_flow_off_steps_and_no_leaks(tmp_path):
    model = Tiny()
    rnn, cell = model.rnn, model.rnn.stack.layers[0].cell
    x, y = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, dtype=F64)
    flow = GradientFlow(every=3)
    trainer = fake_trainer(model, tmp_path)
    flow.on_train_begin(trainer)
    assert flow.module is rnn
    records = []
    for s in range(1, 8):
        flow.on_step_begin(trainer, s)
        armed = bool(rnn._forward_hooks) or "step" in vars(cell) or not rnn.native
        assert armed == (s in (1, 3, 6)), s
        (model(x)[0] - y).pow(2).mean().backward()
        record = {"step": s}
        flow.on_step_end(trainer, s, record)
        records.append(record)
        # disarmed after every step: torch's kernel again, no hooks, the class's own step
        assert not rnn._forward_hooks and not rnn._forward_pre_hooks
        assert "step" not in vars(cell) and rnn.native and rnn.fused
    flow.on_eval(trainer, 7, {})
    flow.on_train_end(trainer)
    assert [r["step"] for r in records if "grad_flow" in r] == [1, 3, 6]
    assert [s for s, _ in flow.history] == [1, 3, 6]

    flow.on_step_begin(trainer, 9)  # a run that stops mid-step still cleans up at the end
    flow.on_train_end(trainer)
    assert not rnn._forward_hooks and not rnn._forward_pre_hooks and "step" not in vars(cell)


def test_gradient_flow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every: expected a positive int"):
        GradientFlow(every=0)
    with pytest.raises(TypeError, match="module: expected an rnnkit RecurrentNetwork"):
        GradientFlow(every=1, module=nn.LSTM(2, 3))
    flow = GradientFlow(every=1)
    with pytest.raises(ValueError, match="RecurrentNetwork"):
        flow.on_train_begin(SimpleNamespace(model=nn.Linear(2, 2)))


# ---- the loss along one weight, the plots ------------------------------------------------


def test_loss_along_weight_sweeps_and_restores():
    model = Tiny()
    model.train()
    W = model.rnn.stack.layers[0].cell.weight_hh
    before = W.detach().clone()

    def loss_fn():
        assert not model.training and not torch.is_grad_enabled()
        return (W[1, 1] - 2.0) ** 2 + W[0, 0]

    losses = loss_along_weight(model, loss_fn, W, (1, 1), [0.0, 1.0, 2.0, 3.0])
    w00 = before[0, 0].item()
    assert losses == pytest.approx([4 + w00, 1 + w00, w00, 1 + w00])
    assert torch.equal(W.detach(), before) and model.training

    def failing():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        loss_along_weight(model, failing, W, (2, 3), [7.0])
    assert torch.equal(W.detach(), before) and model.training
    with pytest.raises(ValueError, match="index"):
        loss_along_weight(model, loss_fn, W, (5, 0), [0.0])
    with pytest.raises(ValueError, match="param"):
        loss_along_weight(model, loss_fn, nn.Parameter(torch.zeros(2)), (0,), [0.0])


def test_plots_write_pngs(tmp_path):
    history = [(1, [1e-12, 1e-6, 1e-2]), (50, [0.0, 1e-4, 1e-2]), (100, [1e-3, 1e-3, 1e-2])]
    for plot in (plot_gradient_heatmap, plot_gradient_curve):
        path = plot(history, tmp_path / f"{plot.__name__}.png", "title")
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
    path = plot_loss_surface([-1, 0, 1], [0.2, 1e-4, 5.0], tmp_path / "s.png", "t", current=0.0)
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="history"):
        plot_gradient_curve([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="same length"):
        plot_loss_surface([1, 2], [1], tmp_path / "x.png")


# ---- run_diagnose and its command line ----------------------------------------------------

# LSTM at T=30 leaves the predict-the-mean plateau within 400 steps (seed 0) and then carries the
# gradient back to t = 0 (g_0/g_29 ≈ 0.07); Elman's stays ~1e-14 (measured: 13 decades apart).
TINY = dict(steps=400, seq_len=30, hidden_size=16, every=100, seed=0, lr=0.05, progress=False)


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    out = tmp_path_factory.mktemp("diagnose")
    lines: list[str] = []
    results = {c: run_diagnose(c, out / c, print_fn=lines.append, **TINY)
               for c in ("elman", "lstm")}
    return results, lines


def test_run_diagnose_writes_its_files(diagnosed):
    results, lines = diagnosed
    for cell, r in results.items():
        for key in ("heatmap", "curve", "loss_surface"):
            data = r[key].read_bytes()
            assert data[:8] == PNG and len(data) > 10_000, (cell, key)
        records = [json.loads(line) for line in r["jsonl"].read_text().splitlines()]
        assert [rec["step"] for rec in records] == [1, 100, 200, 300, 400]
        assert all(len(rec["grad_flow"]) == 30 and rec["loss"] > 0 for rec in records)
        assert r["first_step"] == 1 and r["last_step"] == 400 and r["steps"] == 400
        assert r["last_ratio"] == pytest.approx(
            records[-1]["grad_flow"][0] / records[-1]["grad_flow"][-1])
    text = "\n".join(lines)
    assert "vanishing" in text and "flowing" in text and "grad_flow_heatmap.png" in text


def test_run_diagnose_elman_vanishes_lstm_flows(diagnosed):
    results, _ = diagnosed
    elman, lstm = results["elman"], results["lstm"]
    assert elman["last_ratio"] < 1e-6 * lstm["last_ratio"]
    assert elman["last_verdict"] == "vanishing" and lstm["last_verdict"] == "flowing"
    assert lstm["final_loss"] < 0.05 < elman["final_loss"]  # it learned what Elman could not


def test_flow_verdict():
    assert [flow_verdict(r) for r in (1e-5, 0.5, 1e5, float("nan"))] == [
        "vanishing", "flowing", "exploding", "no gradient"]


def test_run_diagnose_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown cell name 'nope'.*elman"):
        run_diagnose("nope", tmp_path)
    with pytest.raises(ValueError, match="seq_len: expected an integer >= 2"):
        run_diagnose("elman", tmp_path, seq_len=1)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out: expected a directory"):
        run_diagnose("elman", tmp_path / "file")


def parser():
    return add_diagnose_arguments(argparse.ArgumentParser(prog="rnnkit diagnose"))


@pytest.mark.parametrize("argv, flag", [
    (["--cell", "nope"], "--cell"), (["--steps", "0"], "--steps"), (["--steps", "x"], "--steps"),
    (["--seq-len", "1"], "--seq-len"), (["--hidden-size", "-3"], "--hidden-size"),
    (["--every", "1.5"], "--every"), (["--seed", "-1"], "--seed"), (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
])
def test_flags_reject_bad_values(capsys, argv, flag):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "expected" in err
    if flag == "--cell":
        assert "elman" in err and "lstm" in err and "gru" in err


def test_flags_defaults_and_help():
    args = parser().parse_args([])
    assert (args.cell, args.out, args.seed, args.no_progress) == ("elman", None, 0, False)
    helps = [a.help for a in parser()._actions if a.dest != "help"]
    assert len(helps) == 9 and all(helps)


def test_main_diagnose(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = parser().parse_args(["--cell", "gru", "--steps", "3", "--seq-len", "6",
                                "--hidden-size", "4", "--every", "2", "--no-progress"])
    assert main_diagnose(args) == 0
    assert (tmp_path / "runs" / "diagnose-gru" / "grad_flow_curve.png").exists()
    assert "g_0 / g_5 at step" in capsys.readouterr().out

    (tmp_path / "taken").write_text("")
    args = parser().parse_args(["--out", "taken", "--steps", "1", "--no-progress"])
    assert main_diagnose(args) == 2
    assert "out: expected a directory" in capsys.readouterr().err
