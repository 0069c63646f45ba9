"""The fit loop: repeatable seeds, optimizers and schedules, early stopping, clipping records,
NaN stop, metrics.jsonl and curves, and an exact resume in-process."""

import json
import math

import pytest
import torch
from training_tasks import ToyTask, toy_config

from rnnkit.config import Config, ConfigError
from rnnkit.training import Trainer, TrainingStopped
from rnnkit.training.checkpoint import find_checkpoint
from rnnkit.training.clipping import clip_gradients
from rnnkit.training.optim import parameter_groups
from rnnkit.training.records import read_records


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def fit(tmp_path, task_options=None, **train):
    cfg = toy_config(tmp_path, **train)
    trainer = Trainer(ToyTask(cfg, **(task_options or {})), cfg)
    return trainer, trainer.fit()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, _ = fit(tmp_path / "a", train__max_steps=6, train__seed=3, train__tbptt=5)
    b, _ = fit(tmp_path / "b", train__max_steps=6, train__seed=3, train__tbptt=5)
    c, _ = fit(tmp_path / "c", train__max_steps=6, train__seed=4, train__tbptt=5)
    for key, value in weights(a.model).items():
        assert torch.equal(value, b.model.state_dict()[key])
    assert any(not torch.equal(v, c.model.state_dict()[k]) for k, v in weights(a.model).items())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_each_optimizer_lowers_the_loss(tmp_path, optimizer):
    trainer, summary = fit(tmp_path, train__optimizer=optimizer, train__lr=0.02,
                           train__max_steps=40, train__eval_every=40)
    records = read_records(trainer.log.path)
    first = [r["loss"] for r in records if r["kind"] == "train"][0]
    assert summary["best"] < first
    assert type(trainer.optimizer).__name__.lower() == optimizer


def lrs(trainer):
    return [r["lr"] for r in read_records(trainer.log.path) if r["kind"] == "train"]


def test_step_and_cosine_schedules(tmp_path):
    trainer, _ = fit(tmp_path / "s", train__schedule="step", train__step_size=3,
                     train__gamma=0.5, train__lr=0.1, train__max_steps=7, run__log_every=1)
    assert lrs(trainer)[-1] == pytest.approx(0.1 * 0.5 ** 2)
    cfg = toy_config(tmp_path / "c", train__schedule="cosine", train__lr=0.1,
                     train__max_steps=10, run__log_every=1)
    trainer = Trainer(ToyTask(cfg), cfg)
    trainer.fit()
    expected = [0.1 * (1 + math.cos(math.pi * s / 10)) / 2 for s in range(10)]
    assert lrs(trainer) == pytest.approx(expected)


def test_plateau_schedule_cuts_the_rate_when_validation_stalls(tmp_path):
    # every evaluation after the first is a bad one: with patience 1, the rate is cut after
    # evaluations 3 and 5 (ReduceLROnPlateau resets its count after a cut)
    cfg = toy_config(tmp_path, train__schedule="plateau", train__lr=0.1, train__gamma=0.1,
                     train__eval_every=1, train__max_steps=6, train__plateau_patience=1)
    trainer = Trainer(ToyTask(cfg, frozen_metric=True), cfg)
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 2)


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    trainer, summary = fit(tmp_path, train__lr=1e-30, train__eval_every=2, train__patience=3,
                           train__max_steps=100)
    # lr 1e-30: every validation ties the first, so none improves: 4, 6, 8 are bad and it
    # stops at 8; a tie moves the best checkpoint to the later weights
    assert summary["stopped_early"] and summary["step"] == 8
    assert summary["best_step"] == 8
    assert find_checkpoint(trainer.ckdir, "best").name == "step-00000008"


def test_a_worse_validation_keeps_the_best_checkpoint(tmp_path):
    # lr 5: the validation loss jumps about (34, 10.2, 19.6, 9.5, 10.1, 15.2 at steps 2..12)
    trainer, summary = fit(tmp_path, train__lr=5.0, train__optimizer="sgd", train__momentum=0.0,
                           train__eval_every=2, train__max_steps=12)
    evals = [r for r in read_records(trainer.log.path) if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r[trainer.task.metric])
    assert best["step"] not in (2, 12) and summary["best_step"] == best["step"]
    assert find_checkpoint(trainer.ckdir, "best").name == f"step-{best['step']:08d}"


def test_value_then_norm_clipping_measures_the_norm_again():
    """Both on: entries are clamped first, and the norm clip scales by the clamped gradient's
    norm (the pre-clamp norm would over-shrink it)."""
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([10.0, -10.0, 0.5, 0.1])
    result = clip_gradients([p], max_norm=1.0, max_value=1.0)
    assert result.by_value and result.by_norm
    assert result.norm == pytest.approx(torch.tensor([10.0, -10.0, 0.5, 0.1]).norm().item())
    clamped = torch.tensor([1.0, -1.0, 0.5, 0.1])
    torch.testing.assert_close(p.grad, clamped / (clamped.norm() + 1e-6))
    # clamped below the norm limit: no norm clip at all
    p.grad = torch.tensor([10.0, 0.0, 0.0, 0.0])
    result = clip_gradients([p], max_norm=2.0, max_value=1.0)
    assert result.by_value and not result.by_norm
    torch.testing.assert_close(p.grad, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_clipping_is_recorded_before_it_acts(tmp_path):
    model = torch.nn.Linear(3, 2)
    model(torch.randn(4, 3)).pow(2).sum().backward()
    want = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    before = [p.grad.clone() for p in model.parameters()]
    result = clip_gradients(model.parameters(), max_norm=want / 4)
    assert result.norm == pytest.approx(want) and result.by_norm and not result.by_value
    for g, b in zip((p.grad for p in model.parameters()), before, strict=True):
        torch.testing.assert_close(g, b * (want / 4) / (want + 1e-6))
    result = clip_gradients(model.parameters(), max_value=1e-3)
    assert result.by_value and max(p.grad.abs().max() for p in model.parameters()) <= 1e-3
    assert not clip_gradients(model.parameters()).by_norm  # both off: measured only

    trainer, summary = fit(tmp_path / "tiny", train__clip_norm=1e-6, train__max_steps=5)
    assert summary["clip_counts"]["norm"] == summary["clip_counts"]["steps"] == 5
    trainer, summary = fit(tmp_path / "off", train__clip_norm=0.0, train__max_steps=5,
                           run__log_every=1)
    assert summary["clip_counts"] == {"norm": 0, "value": 0, "steps": 0}
    record = [r for r in read_records(trainer.log.path) if r["kind"] == "train"][-1]
    assert record["grad_norm"] > 0 and record["clip_fraction"] == 0


def test_nan_loss_stops_naming_the_step_and_leaves_the_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, train__max_steps=20)
    cfg.run.checkpoint_every = 2
    trainer = Trainer(ToyTask(cfg, nan_at_step=5), cfg)
    before = None
    with pytest.raises(TrainingStopped, match=r"step 5: the loss is nan") as e:
        for step in range(1, 21):
            trainer.train_step(step)
            if step % 2 == 0:
                trainer.save()
                latest = find_checkpoint(trainer.ckdir)
                before = {p.name: p.read_bytes() for p in latest.iterdir()}
    assert "step-00000004" in str(e.value) and "left as it was" in str(e.value)
    latest = find_checkpoint(trainer.ckdir)
    assert latest.name == "step-00000004"
    assert {p.name: p.read_bytes() for p in latest.iterdir()} == before
    assert read_records(trainer.log.path)[-1]["kind"] == "stopped"


def test_nan_stop_through_fit(tmp_path):
    cfg = toy_config(tmp_path, train__max_steps=20)
    trainer = Trainer(ToyTask(cfg, nan_at_step=3), cfg)
    with pytest.raises(TrainingStopped, match="no checkpoint had been saved yet") as e:
        trainer.fit()
    assert f"a lower train.clip_norm (now {cfg.train.clip_norm:g})" in str(e.value)
    # with clipping off, the advice is to turn it on, not to lower it
    cfg = toy_config(tmp_path / "off", train__max_steps=20, train__clip_norm=0.0)
    with pytest.raises(TrainingStopped, match=r"gradient clipping \(train.clip_norm=1, off"):
        Trainer(ToyTask(cfg, nan_at_step=3), cfg).fit()
    assert find_checkpoint(trainer.ckdir) is None if trainer.ckdir.exists() else True


def test_metrics_jsonl_and_curves(tmp_path):
    cfg = toy_config(tmp_path, train__max_steps=12, train__eval_every=4)
    cfg.run.log_every = 3
    cfg.run.plots = True
    trainer = Trainer(ToyTask(cfg), cfg)
    summary = trainer.fit()
    lines = trainer.log.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if r["kind"] == "train"] == [3, 6, 9, 12]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4, 8, 12]
    for key in ("loss", "lr", "grad_norm", "clipped", "clip_fraction", "items_per_s"):
        assert key in records[0]
    png = summary["curves"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize("schedule, dropout", [("step", 0.0), ("plateau", 0.0),
                                               ("step", 0.3)])
def test_resume_in_process_gives_identical_weights(tmp_path, schedule, dropout):
    """Train 10 steps straight; train 6 (checkpoint at 6), resume in a new Trainer, train to
    10: the same weights, bit for bit, with Adam, a schedule, float64; with dropout the model
    draws random numbers after the resume, so this holds only if the RNG state is restored."""
    opts = dict(train__max_steps=10, train__schedule=schedule, train__step_size=3,
                train__eval_every=2, train__tbptt=5, train__plateau_patience=0)
    task = {"resets": True, "dropout": dropout}
    straight, _ = fit(tmp_path / "straight", task_options=task, **opts)
    cfg = toy_config(tmp_path / "split", **opts)
    cfg.train.max_steps = 6
    first = Trainer(ToyTask(cfg, **task), cfg)
    first.fit()
    torch.manual_seed(999)  # as a new process would: another RNG state
    cfg.train.max_steps = 10
    second = Trainer(ToyTask(cfg, **task), cfg)
    assert second.resume() == 6
    second.fit()
    for key, value in weights(straight.model).items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    steps = [r["step"] for r in read_records(second.log.path) if r["kind"] == "eval"]
    assert steps == [2, 4, 6, 8, 10]  # nothing logged twice


def resumed(tmp_path, first: dict, then: dict):
    """Train with the settings ``first`` (a checkpoint at the end), then resume that run in a
    new Trainer with ``then`` applied over them, as ``rnnkit train --resume --train.X=...``."""
    cfg = toy_config(tmp_path, run__log_every=1, train__eval_every=2, **first)
    Trainer(ToyTask(cfg), cfg).fit()
    for key, value in then.items():
        setattr(cfg.train, key, value)
    trainer = Trainer(ToyTask(cfg), cfg)
    trainer.resume()
    return trainer


def test_a_resume_with_a_longer_cosine_follows_the_new_one(tmp_path):
    trainer = resumed(tmp_path, dict(train__schedule="cosine", train__lr=0.1,
                                     train__max_steps=6), {"max_steps": 10})
    trainer.fit()
    expected = [0.1 * (1 + math.cos(math.pi * s / 10)) / 2 for s in range(6, 10)]
    assert lrs(trainer)[6:] == pytest.approx(expected)  # not back up past the old end


@pytest.mark.parametrize("schedule", ["none", "plateau", "step"])
def test_a_resume_with_a_new_rate_uses_it(tmp_path, schedule):
    trainer = resumed(tmp_path, dict(train__schedule=schedule, train__step_size=100,
                                     train__optimizer="sgd", train__lr=0.1,
                                     train__max_steps=4), {"lr": 0.02, "momentum": 0.5,
                                                           "max_steps": 6})
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.02, 0.5)
    trainer.fit()
    assert lrs(trainer)[4:] == pytest.approx([0.02, 0.02])


def test_recurrent_lr_scale_gives_the_recurrent_layer_its_own_rate(tmp_path):
    # plain SGD, no clipping: each weight moves by -rate * gradient, the recurrent layer's
    # rate a tenth of the output layer's, at every step of a step schedule
    cfg = toy_config(tmp_path, train__optimizer="sgd", train__momentum=0.0, train__lr=0.1,
                     train__clip_norm=0.0, train__recurrent_lr_scale=0.1,
                     train__schedule="step", train__step_size=1, train__gamma=0.5)
    trainer = Trainer(ToyTask(cfg), cfg)
    model = trainer.model
    rnn, head = set(map(id, model.rnn.parameters())), set(map(id, model.head.parameters()))
    groups = trainer.optimizer.param_groups
    assert [set(map(id, g["params"])) for g in groups] == [head, rnn]
    for expected_lr in (0.1, 0.05):
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        batch = trainer.batch(1)
        trainer.optimizer.zero_grad()
        trainer.forward_backward(batch)
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        trainer.optimizer.step()
        trainer.scheduler.step()
        for key, p in model.named_parameters():
            rate = expected_lr * (0.1 if key.startswith("rnn.") else 1.0)
            assert torch.allclose(p.detach(), before[key] - rate * grads[key]), key


def test_recurrent_lr_scale_of_one_is_one_group(tmp_path):
    cfg = toy_config(tmp_path)
    trainer = Trainer(ToyTask(cfg), cfg)
    (group,) = trainer.optimizer.param_groups
    assert len(group["params"]) == len(list(trainer.model.parameters()))


def test_a_model_without_a_recurrent_layer_refuses_a_recurrent_rate():
    train = Config().train
    train.recurrent_lr_scale = 0.5
    with pytest.raises(ConfigError, match=r"train.recurrent_lr_scale: this model has no "
                                          r"recurrent layer .*expected 1, got 0.5"):
        parameter_groups(torch.nn.Linear(2, 2), train)


def test_a_resume_with_a_recurrent_rate_keeps_the_ratio(tmp_path):
    # bit-for-bit through a resume, and a new train.lr applies to both groups in proportion
    opts = dict(train__max_steps=8, train__schedule="step", train__step_size=3,
                train__eval_every=2, train__tbptt=5, train__recurrent_lr_scale=0.25)
    straight, _ = fit(tmp_path / "straight", **opts)
    cfg = toy_config(tmp_path / "split", **opts)
    cfg.train.max_steps = 4
    Trainer(ToyTask(cfg), cfg).fit()
    cfg.train.max_steps = 8
    second = Trainer(ToyTask(cfg), cfg)
    assert second.resume() == 4
    second.fit()
    for key, value in weights(straight.model).items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    trainer = resumed(tmp_path / "new-rate", dict(train__optimizer="sgd", train__lr=0.1,
                                                  train__max_steps=4,
                                                  train__recurrent_lr_scale=0.25),
                      {"lr": 0.02, "max_steps": 6})
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.02, 0.005])


def test_max_minutes_stops_validates_saves_and_a_resume_goes_on(tmp_path, monkeypatch):
    """A clock that advances a second per reading: the fit starts at 0, step s ends at s;
    max_minutes = 5 s stops after step 5 with a validation and a checkpoint there, and a
    resume without the limit trains on to max_steps with the weights of a run never cut."""
    import itertools

    import rnnkit.training.loop as loop

    opts = dict(train__max_steps=8, train__eval_every=4, train__tbptt=5)
    straight, _ = fit(tmp_path / "straight", **opts)
    ticks = itertools.count()
    monkeypatch.setattr(loop, "_clock", lambda: float(next(ticks)))
    cfg = toy_config(tmp_path / "cut", train__max_minutes=5 / 60, **opts)
    trainer = Trainer(ToyTask(cfg), cfg)
    summary = trainer.fit()
    assert summary["out_of_time"] and not summary["stopped_early"] and summary["step"] == 5
    evals = [r["step"] for r in read_records(trainer.log.path) if r["kind"] == "eval"]
    assert evals == [4, 5]
    assert find_checkpoint(trainer.ckdir).name == "step-00000005"
    cfg.train.max_minutes = 0.0
    again = Trainer(ToyTask(cfg), cfg)
    assert again.resume() == 5
    assert not again.fit()["out_of_time"]
    for key, value in weights(straight.model).items():
        assert torch.equal(value, again.model.state_dict()[key]), key
