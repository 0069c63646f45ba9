"""Truncated BPTT in the engine: k = T is full BPTT; k < T cuts exactly the paths across chunk
boundaries; a reset zeroes the carried state of one sample; stream tasks carry state across
batches. Checked against a step-by-step reference (tests/training_tasks.py) in float64."""

import pytest
import torch
from training_tasks import ToyTask, reference_gradients, toy_config

from rnnkit.training import Trainer
from rnnkit.training.tbptt import detach_state, reset_state, spans

CELLS = ["elman", "gru", "lstm", "scrn", "jordan"]


def engine_gradients(tmp_path, k, cell, **task_options):
    cfg = toy_config(tmp_path, train__tbptt=k)
    task = ToyTask(cfg, cell=cell, **task_options)
    trainer = Trainer(task, cfg)
    batch = trainer.batch(1)
    loss, _ = trainer.forward_backward(batch)
    return trainer.model, batch, loss, [p.grad.clone() for p in trainer.model.parameters()]


def assert_close(got, want, tol=1e-12):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("cell", CELLS)
def test_k_equal_to_T_gives_exactly_full_bptt(tmp_path, cell):
    model, batch, loss_T, grads_T = engine_gradients(tmp_path / "a", 12, cell)
    _, _, loss_0, grads_0 = engine_gradients(tmp_path / "b", 0, cell)
    ref_loss, ref = reference_gradients(model, batch["x"], batch["y"], k=0)
    assert loss_T == pytest.approx(ref_loss, rel=1e-13)
    assert_close(grads_T, ref)
    assert_close(grads_0, ref)
    # and truncation really changes them (the test could fail)
    _, cut = reference_gradients(model, batch["x"], batch["y"], k=3)
    assert not torch.allclose(cut[1], ref[1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k", [1, 5, 7])
def test_truncated_gradients_cut_exactly_the_paths_across_chunks(tmp_path, cell, k):
    model, batch, loss, grads = engine_gradients(tmp_path, k, cell)
    ref_loss, ref = reference_gradients(model, batch["x"], batch["y"], k=k)
    full_loss, _ = reference_gradients(model, batch["x"], batch["y"], k=0)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert loss == pytest.approx(full_loss, rel=1e-13)  # the forward pass is the full one
    assert_close(grads, ref)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("k", [0, 4])
def test_reset_mask_zeroes_the_state_of_those_samples(tmp_path, cell, k):
    model, batch, loss, grads = engine_gradients(tmp_path, k, cell, resets=True)
    reset = batch["reset"]
    assert reset[:, 1:].any() and not reset[:, 1:].all()
    ref_loss, ref = reference_gradients(model, batch["x"], batch["y"], k=k, reset=reset)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert_close(grads, ref)
    _, no_reset = reference_gradients(model, batch["x"], batch["y"], k=k)
    assert not torch.allclose(no_reset[0], ref[0], rtol=1e-6, atol=1e-9)


def test_a_reset_sample_continues_as_a_fresh_sequence(tmp_path):
    """Independently of the reference: after a reset at step r, sample i's outputs are those
    of the model run from the zero state on x[i, r:], and no gradient reaches x[i, :r] from
    them."""
    cfg = toy_config(tmp_path)
    model = ToyTask(cfg).build_model()
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    r = 5
    first, state = model(x[:, :r])
    state = reset_state(state, torch.tensor([True, False]))
    after, _ = model(x[:, r:], state)
    fresh, _ = model(x[:1, r:])
    torch.testing.assert_close(after[:1], fresh, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(after[0].sum(), x, retain_graph=True)
    assert grad[0, :r].abs().max() == 0 and grad[0, r:].abs().max() > 0
    (grad,) = torch.autograd.grad(after[1].sum(), x)
    assert grad[1, :r].abs().max() > 0  # the other sample's history still counts


def test_stream_task_carries_state_across_batches(tmp_path):
    """A stream task's consecutive windows, state carried, give the losses of one pass over the
    whole streams; after the last window the state starts again from zero."""
    cfg = toy_config(tmp_path)
    cfg.data.seq_len = 4
    task = ToyTask(cfg, T=12, stream=True)
    trainer = Trainer(task, cfg)
    model = trainer.model
    with torch.no_grad():
        pred, _ = model(task.sets["x"])
        per_window = ((pred - task.sets["y"]) ** 2).reshape(8, 3, 4).mean((0, 2))
        losses = []
        for step in (1, 2, 3, 4):
            batch = trainer.batch(step)
            p, trainer.carry = model(batch["x"], trainer.carry if step != 1 else None)
            losses.append(((p - batch["y"]) ** 2).mean().item())
    assert losses[:3] == pytest.approx(per_window.tolist(), rel=1e-12)
    assert trainer.carry is not None
    trainer.batch(4)  # window 0 again: a new pass
    assert trainer.carry is None
    assert losses[3] == pytest.approx(losses[0], rel=1e-12)


def test_spans_cut_at_multiples_of_k_and_at_resets():
    assert list(spans(10, 0)) == [(0, 10, True)]
    assert list(spans(10, 4)) == [(0, 4, True), (4, 8, True), (8, 10, True)]
    reset = torch.zeros(2, 10, dtype=torch.bool)
    reset[1, 6] = reset[0, 0] = True  # a reset at step 0 needs no cut
    assert list(spans(10, 4, reset)) == [(0, 4, True), (4, 6, False), (6, 8, True),
                                         (8, 10, True)]


def test_detach_and_reset_keep_lstm_state_structure():
    h = torch.randn(1, 3, 2, requires_grad=True)
    c = torch.randn(1, 3, 2, requires_grad=True)
    d = detach_state((h * 2, c * 2))
    assert isinstance(d, tuple) and not d[0].requires_grad and not d[1].requires_grad
    z = reset_state((h, c), torch.tensor([False, True, False]))
    assert z[0][0, 1].abs().max() == 0 and z[1][0, 1].abs().max() == 0
    torch.testing.assert_close(z[0][0, 0], h[0, 0])
    with pytest.raises(ValueError, match="reset: expected state leaves"):
        reset_state(h, torch.tensor([True, False]))
