"""The command line: help lists the subcommands; bad flags fail with a message, not a traceback."""

import subprocess
import sys

import pytest

from rnnkit import cell_names
from rnnkit.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "cells", "train", "evaluate", "diagnose"):
        assert command in out


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


def test_cells_lists_the_registry(capsys):
    assert main(["cells"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == cell_names()


@pytest.mark.parametrize("argv, message", [
    (["demo", "adding", "--cells", "elman,nope"], "unknown cell name 'nope'"),
    (["demo", "nope"], "invalid choice: 'nope'"),
    (["demo", "--lengths", "50,x"], "expected comma-separated integers"),
    (["demo", "--lengths", "1"], "expected integers >= 2"),
    (["demo", "--hidden-size", "0"], "expected a positive int"),
    (["demo", "--seconds", "-3"], "expected a positive float"),
    (["demo", "--no-such-flag"], "unrecognized argument --no-such-flag"),
    (["nope"], "invalid choice"),
    (["train", "--model.cel=gru"], "--model.cel (did you mean --model.cell?)"),
    (["train", "--train.lr=abc"], "argument --train.lr: expected a float, got 'abc'"),
    (["train", "--train.lr=-1"], "argument --train.lr: expected a number > 0"),
    (["train", "--model.cell=lsmt"], "did you mean 'lstm'?"),
    (["train", "--data.task=nope"], "expected one of adding, atis, captions, classify, copy"),
    (["train", "--train.optimizer=adagrad"], "expected one of sgd, adam, rmsprop"),
    (["evaluate"], "the following arguments are required: RUN"),
    (["diagnose", "--cell=nope"], "nope"),
])
def test_bad_flags_fail_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_train_help_documents_every_config_flag(capsys):
    from dataclasses import fields

    from rnnkit.config import Config

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for section in fields(Config):
        for f in fields(section.type if isinstance(section.type, type) else
                        type(getattr(Config(), section.name))):
            assert f"--{section.name}.{f.name}" in out


def tiny_train(out, *flags) -> list[str]:
    """``rnnkit train`` argv for a run of a few seconds on the adding problem into ``out``;
    ``flags`` are added after the defaults (and so override them)."""
    return ["train", "--data.seq_len=8", "--data.train_size=64", "--data.val_size=16",
            "--data.test_size=16", "--data.batch_size=16", "--model.hidden_size=8",
            "--train.max_steps=4", "--run.progress=false", "--run.plots=false",
            f"--run.out={out}", *flags]


def test_train_evaluate_resume_round_trip(tmp_path, capsys):
    """A tiny run from the command line, then evaluate it, then extend it with --resume."""
    out = tmp_path / "run"
    argv = tiny_train(out, "--train.max_steps=10", "--train.eval_every=5", "--run.plots=true")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "best validation mse" in printed and "test: mse" in printed
    assert (out / "curves.png").exists() and (out / "metrics.jsonl").exists()

    assert main(["evaluate", str(out), "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["step"] == 10 and "mse" in result

    # the same directory again without --resume is refused: no run overwrites another
    assert main(argv) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    # a resumed run may not change the model
    assert main([*argv, "--resume", "--model.hidden_size=9"]) == 2
    assert "model.hidden_size was 8 in the checkpoint" in capsys.readouterr().err
    # nor how the optimizer groups the parameters (its saved state has one entry per group)
    assert main([*argv, "--resume", "--train.recurrent_lr_scale=0.5"]) == 2
    assert ("train.recurrent_lr_scale was 1.0 in the checkpoint and is 0.5 now"
            in capsys.readouterr().err)
    assert main([*argv, "--resume", "--train.max_steps=15"]) == 0
    assert f"resumed {out} at step 10" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--checkpoint=latest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 15


def test_corrupt_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny_train(out, "--train.max_steps=2")
    assert main(argv) == 0
    capsys.readouterr()
    model = next((out / "checkpoints").glob("step-*")) / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-10])
    assert main([*argv, "--resume", "--train.max_steps=4"]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    assert "no checkpoint found" in capsys.readouterr().err


def test_toml_config_and_flags(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\ncell = "gru"\nhidden_size = 6\n[data]\nseq_len = 6\n'
                    'train_size = 64\nval_size = 16\ntest_size = 16\nbatch_size = 16\n'
                    '[train]\nmax_steps = 3\n[run]\nprogress = false\nplots = false\n')
    out = tmp_path / "run"
    assert main(["train", f"--config={toml}", "--model.hidden_size=5", f"--run.out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "gru, hidden 5" in printed
    toml.write_text("[train]\nlrr = 1\n")
    assert main(["train", f"--config={toml}", f"--run.out={tmp_path / 'x'}"]) == 2
    assert "did you mean 'train.lr'" in capsys.readouterr().err


def test_train_records_gradient_flow_when_asked(tmp_path, capsys):
    import json

    out = tmp_path / "run"
    assert main(tiny_train(out, "--data.seq_len=12", "--model.cell=elman",
                           "--train.max_steps=6", "--run.grad_flow_every=3")) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    flows = [(r["step"], len(r["grad_flow"])) for r in records if "grad_flow" in r]
    assert flows == [(1, 12), (3, 12), (6, 12)]
    for name in ("grad_flow_heatmap.png", "grad_flow_curve.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_train_and_evaluate_on_cuda(tmp_path, capsys):
    out = tmp_path / "run"
    argv = tiny_train(out, "--train.tbptt=4", "--train.device=cuda")
    assert main(argv) == 0
    assert main([*argv, "--resume", "--train.max_steps=6"]) == 0
    assert main(["evaluate", str(out), "--device=cuda"]) == 0
