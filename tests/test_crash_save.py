"""A crash never loses the training done: validation runs after the checkpoint of its step, an
exception, Ctrl-C or SIGTERM writes the last completed step, a resumed run goes on from it
exactly, and a finished run resumed does not log its test twice."""

import os
import signal

import pytest
import torch
import torch.nn.functional as F
from test_run_state import sentences, write
from training_tasks import ToyTask, toy_config

from rnnkit.cli import main
from rnnkit.errors import Terminated
from rnnkit.training import Trainer
from rnnkit.training.checkpoint import find_checkpoint, load_checkpoint
from rnnkit.training.records import read_records


class NoisyTask(ToyTask):
    """ToyTask whose inputs go through dropout (so the global RNG matters for an exact resume)
    and whose loss or validation can fail at a chosen call."""

    def __init__(self, config, *, fail_at_call=None, fail_eval_at=None, **kw):
        super().__init__(config, **kw)
        self.fail_at_call, self.fail_eval_at, self.evals = fail_at_call, fail_eval_at, 0

    def loss(self, model, chunk, state, final):
        x = F.dropout(chunk["x"], 0.3, training=model.training)  # draws from the RNG
        pred, state = model(x, state)
        self.calls += final
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise RuntimeError("the disk went away")  # after the RNG moved on
        return ((pred - chunk["y"]) ** 2).sum(), state

    def evaluate(self, model, split):
        self.evals += 1
        if self.fail_eval_at is not None and self.evals == self.fail_eval_at:
            raise MemoryError("validation ran out of memory")
        return super().evaluate(model, split)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_an_exception_mid_step_saves_the_last_step_and_a_resume_is_exact(tmp_path, capsys):
    opts = dict(train__max_steps=10, train__eval_every=5)
    cfg = toy_config(tmp_path / "straight", **opts)
    straight = Trainer(NoisyTask(cfg), cfg)
    straight.fit()

    cfg = toy_config(tmp_path / "crash", **opts)
    crashing = Trainer(NoisyTask(cfg, fail_at_call=7), cfg)
    with pytest.raises(RuntimeError, match="the disk went away"):
        crashing.fit()
    err = capsys.readouterr().err
    assert "stopped by RuntimeError after step 6; saved" in err and "--resume" in err
    assert load_checkpoint(cfg.run.out).step == 6
    again = Trainer(NoisyTask(cfg), cfg)
    assert again.resume() == 6
    again.fit()
    for key, value in weights(straight.model).items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_a_crash_in_validation_keeps_the_checkpoint_of_that_step(tmp_path, capsys):
    cfg = toy_config(tmp_path, train__max_steps=10, train__eval_every=4,
                     run__checkpoint_every=4)
    trainer = Trainer(NoisyTask(cfg, fail_eval_at=2), cfg)  # the validation of step 8
    with pytest.raises(MemoryError):
        trainer.fit()
    assert load_checkpoint(cfg.run.out).step == 8  # written before validation began
    assert "saved" in capsys.readouterr().err


def test_ctrl_c_saves_and_says_where(tmp_path, capsys):
    cfg = toy_config(tmp_path, train__max_steps=10, train__eval_every=100)

    class CtrlC:
        def on_step_end(self, trainer, step, record):
            if step == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(NoisyTask(cfg), cfg, callbacks=[CtrlC()]).fit()
    err = capsys.readouterr().err
    path = find_checkpoint(cfg.run.out)
    assert load_checkpoint(cfg.run.out).step == 3
    assert f"interrupted after step 3; saved {cfg.run.out}/checkpoints/step-00000003" in err
    assert path is not None


def tag_config(tmp_path, max_steps=6):
    from rnnkit.config import Config

    cfg = Config()
    cfg.data.task, cfg.data.batch_size = "tag", 4
    cfg.data.train_file = write(tmp_path / "train.conll", sentences(30, 0))
    cfg.data.test_file = write(tmp_path / "test.conll", sentences(9, 1))
    cfg.model.hidden_size = cfg.model.embedding_size = 8
    cfg.train.max_steps, cfg.train.eval_every = max_steps, 3
    cfg.run.out, cfg.run.progress, cfg.run.plots = str(tmp_path / "run"), False, False
    cfg.run.checkpoint_every = 0
    return cfg


def test_sigterm_saves_the_last_step_and_resume_continues(tmp_path, capsys):
    from rnnkit.run import run_train

    cfg = tag_config(tmp_path, max_steps=8)

    class Term:
        def on_step_end(self, trainer, step, record):
            if step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        run_train(cfg, callbacks=[Term()], print_fn=lambda _: None)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is put back
    assert load_checkpoint(cfg.run.out).step == 5
    assert "interrupted after step 5; saved" in capsys.readouterr().err
    summary = run_train(cfg, resume=True, given=set(), print_fn=lambda _: None)
    assert summary["step"] == 8 and load_checkpoint(cfg.run.out).step == 8


def test_a_finished_run_resumed_logs_its_test_once(tmp_path):
    from rnnkit.run import run_train

    cfg = tag_config(tmp_path)
    first = run_train(cfg, print_fn=lambda _: None)["test"]
    again = run_train(cfg, resume=True, given=set(), print_fn=lambda _: None)["test"]
    assert again == first
    tests = [r for r in read_records(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "test"]
    assert len(tests) == 1


def test_evaluate_on_a_run_it_cannot_write_prints_the_scores_and_warns(tmp_path, capsys):
    from rnnkit.run import run_train

    cfg = tag_config(tmp_path)
    run_train(cfg, print_fn=lambda _: None)
    report = tmp_path / "run" / "errors-test.txt"
    report.unlink(missing_ok=True)
    report.mkdir()  # the report's name taken by a directory: writing it fails, as read-only
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "test: accuracy" in captured.out
    assert "rnnkit: warning: could not write the test report" in captured.err


def test_a_full_disk_is_one_error_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """The disk fills up at the second checkpoint: one error line with the path and the
    system's reason; the first checkpoint is left as it was."""
    import errno

    from rnnkit.training import loop

    real = loop.save_checkpoint
    calls = []

    def fill_up(ckdir, step, *args, **kwargs):
        calls.append(step)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(ckdir))
        return real(ckdir, step, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", fill_up)
    cfg = tag_config(tmp_path, max_steps=6)
    argv = ["train", "--data.task=tag", f"--data.train_file={cfg.data.train_file}",
            "--data.batch_size=4", "--model.hidden_size=8", "--model.embedding_size=8",
            "--train.max_steps=6", "--train.eval_every=100", "--run.checkpoint_every=2",
            "--run.progress=false", "--run.plots=false", f"--run.out={cfg.run.out}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rnnkit: error:")]
    assert lines == [f"rnnkit: error: {cfg.run.out}/checkpoints: No space left on device"]
    assert "could not be written" in err  # the crash save tried, and said so
    assert load_checkpoint(cfg.run.out).step == 2


def test_a_validation_cut_short_after_its_record_is_logged_once(tmp_path):
    """Killed after the eval record of step 4 but before the checkpoint after it: the resumed
    run validates step 4 again and the log has that record once."""
    cfg = toy_config(tmp_path, train__max_steps=8, train__eval_every=4, run__checkpoint_every=4)

    class KillAfterRecord:
        def on_eval(self, trainer, step, metrics):
            if step == 4:
                raise SystemExit("killed")  # not saved by the crash save: like SIGKILL

    trainer = Trainer(NoisyTask(cfg), cfg, callbacks=[KillAfterRecord()])
    trainer.save_after_crash = lambda error: None  # SIGKILL gives no chance to save
    with pytest.raises(SystemExit):
        trainer.fit()
    assert load_checkpoint(cfg.run.out).trainer_state["pending_eval"]
    again = Trainer(NoisyTask(cfg), cfg)
    assert again.resume() == 4
    again.fit()
    steps = [r["step"] for r in read_records(tmp_path / "run" / "metrics.jsonl")
             if r["kind"] == "eval"]
    assert steps == [4, 8]
