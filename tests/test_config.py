"""rnnkit.config: the dataclasses, the flags made from them, TOML files and validation."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

import pytest

from rnnkit import cells
from rnnkit.config import (
    Config,
    ConfigError,
    ConfigParser,
    ModelConfig,
    TrainConfig,
    add_config_flags,
    config_from_args,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    diff_fields,
    given_flags,
    load_config,
    load_toml,
    parse_args_with_suggestions,
    validate,
)

SECTIONS = ("model", "data", "train", "run")
META_KEYS = {"help", "min", "max", "exclusive_min", "exclusive_max", "choices", "off", "check",
             "expects", "metavar"}


def every_field():
    """(section, field) for every field of every section."""
    cfg = Config()
    return [(s, f) for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))]


def parser(**kwargs) -> ConfigParser:
    p = ConfigParser(prog="rnnkit")
    add_config_flags(p, **kwargs)
    return p


def with_subcommand() -> ConfigParser:
    """``rnnkit train [--config FILE] [config flags]``, as the CLI builds it."""
    top = ConfigParser(prog="rnnkit")
    sub = top.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--config")
    add_config_flags(train)
    sub.add_parser("cells")
    return top


def fails(p: argparse.ArgumentParser, argv: list[str], capsys) -> str:
    """Parse ``argv``, expect argparse's usage error (exit 2) and return its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        p.parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def flat(text: str) -> str:
    """Help text with argparse's line wrapping undone."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


# --- the dataclasses ------------------------------------------------------------------------


def test_every_field_has_help_and_known_constraints():
    assert [f.name for f in dataclasses.fields(Config)] == list(SECTIONS)
    for section, f in every_field():
        assert f.metadata.get("help"), f"{section}.{f.name} has no help text"
        assert set(f.metadata) <= META_KEYS, f"{section}.{f.name}: {set(f.metadata) - META_KEYS}"


def test_defaults_are_valid_and_as_specified():
    cfg = validate(Config())
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.data.task, cfg.data.seq_len) == (
        "lstm", 64, "adding", 50)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.clip_norm, cfg.train.device) == (
        "adam", 1e-3, 1.0, "cpu")
    assert (cfg.run.out, cfg.run.keep, cfg.run.progress) == ("runs/latest", 2, True)


# --- --help ---------------------------------------------------------------------------------


def test_help_lists_every_field_with_its_help_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    text = flat(out)
    for section, f in every_field():
        flag = f"--{section}.{f.name}"
        assert flag in text
        after = text[text.index(flag + " "):]  # the help entry, past the usage line
        entry = after[:after.index(" --", 1)] if " --" in after[1:] else after
        default = f.default
        shown = ("true" if default else "false") if isinstance(default, bool) else str(default)
        assert flat(f.metadata["help"]) in entry, flag
        assert f"default: {shown}" in entry, flag
    for section in SECTIONS:
        assert f"\n{section} options:" in out
    # allowed values and what 0 means are in the help too
    assert "one of sgd, adam, rmsprop" in text
    assert "lstm" in text and "gru" in text.split("--model.cell")[-1]
    assert "0 = full BPTT" in text and "> 0" in text


def test_usage_line_folds_the_config_flags(capsys):
    p = parser()
    p.add_argument("path")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-a", action="store_true")
    group.add_argument("-b", action="store_true")
    usage = p.format_usage()
    assert usage.startswith("usage: rnnkit [-h] [-a | -b] ")
    assert "[--{model,data,train,run}.KEY=VALUE ...] path" in usage
    assert "--train.lr" not in usage
    assert "--train.lr LR" in p.format_help()  # the flags themselves are still listed


def test_sections_limit_the_flags(capsys):
    p = parser(sections=["model", "train"])
    args = p.parse_args(["--model.hidden_size=8", "--train.lr=0.5"])
    assert given_flags(args) == {"model.hidden_size": 8, "train.lr": 0.5}
    assert "unrecognized argument --run.out" in fails(p, ["--run.out=x"], capsys)
    with pytest.raises(ValueError, match="unknown section.*'modle'"):
        add_config_flags(ConfigParser(), sections=["modle"])


# --- flags ----------------------------------------------------------------------------------


def test_flags_parse_to_typed_values_in_both_forms():
    args = parser().parse_args([
        "--model.cell=gru", "--model.hidden_size", "32", "--train.lr=1e-2",
        "--train.momentum", "0", "--data.task", "copy", "--train.device=cuda:1",
        "--run.out", "runs/x y",
    ])
    assert given_flags(args) == {
        "model.cell": "gru", "model.hidden_size": 32, "train.lr": 0.01,
        "train.momentum": 0.0, "data.task": "copy", "train.device": "cuda:1",
        "run.out": "runs/x y",
    }
    assert type(args.__dict__["train.momentum"]) is float
    assert type(args.__dict__["model.hidden_size"]) is int
    cfg = config_from_args(args)
    assert cfg.model.cell == "gru" and cfg.model.hidden_size == 32 and cfg.train.lr == 0.01
    assert cfg.model.num_layers == 1 and cfg.train.optimizer == "adam"  # not given: defaults


def test_only_the_given_flags_are_in_the_namespace():
    args = parser().parse_args(["--train.max_steps=5"])
    assert given_flags(args) == {"train.max_steps": 5}
    # a flag given with its default value is still "given": it overrides a TOML file
    args = parser().parse_args(["--train.lr=0.001"])
    base = config_from_dict({"train": {"lr": 0.5}})
    assert config_from_args(args, base=base).train.lr == 0.001


@pytest.mark.parametrize("argv, expected", [
    (["--run.progress"], True),
    (["--run.progress=true"], True),
    (["--run.progress=YES"], True),
    (["--run.progress=1"], True),
    (["--run.progress=false"], False),
    (["--run.progress=No"], False),
    (["--run.progress=0"], False),
    (["--run.progress", "false"], False),
])
def test_bool_flags(argv, expected):
    args = parser().parse_args(argv)
    assert args.__dict__["run.progress"] is expected
    assert config_from_args(args).run.progress is expected


@pytest.mark.parametrize("argv, message", [
    (["--train.lr=abc"], "argument --train.lr: expected a float, got 'abc'"),
    (["--train.lr", "-1"], "argument --train.lr: expected a number > 0, got -1.0"),
    (["--train.lr=0"], "argument --train.lr: expected a number > 0, got 0.0"),
    (["--train.lr=nan"], "argument --train.lr: expected a finite number, got nan"),
    (["--model.hidden_size=2.5"], "argument --model.hidden_size: expected an integer, got '2.5'"),
    (["--model.hidden_size=0"], "argument --model.hidden_size: expected an integer >= 1, got 0"),
    (["--data.seq_len=1"], "argument --data.seq_len: expected an integer >= 2, got 1"),
    (["--train.clip_norm=-0.5"], "argument --train.clip_norm: expected a number >= 0, got -0.5"),
    (["--model.dropout=1.5"], "argument --model.dropout: expected a number in [0, 1], got 1.5"),
    (["--model.cell=lsmt"], "argument --model.cell: expected one of clockwork, ctrnn, elman"),
    (["--model.cell=lsmt"], "got 'lsmt' (did you mean 'lstm'?)"),
    (["--train.optimizer=adamw"], "argument --train.optimizer: expected one of sgd, adam, "
                                  "rmsprop, got 'adamw'"),
    (["--data.task=addding"], "argument --data.task: expected one of adding"),
    (["--train.device=gpu"], "argument --train.device: expected cpu, cuda or cuda:N"),
    (["--train.device=cuda:x"], "got 'cuda:x'"),
    (["--run.progress=maybe"], "argument --run.progress: expected true/false, yes/no or 1/0, "
                               "got 'maybe'"),
])
def test_bad_values_exit_2_naming_the_flag(argv, message, capsys):
    err = fails(parser(), argv, capsys)
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_forms(device):
    assert config_from_args(parser().parse_args([f"--train.device={device}"])).train.device == (
        device)


def test_cell_choices_are_read_when_checked(monkeypatch):
    p = parser()  # built before the cell exists
    monkeypatch.setitem(cells._REGISTRY, "mycell", cells.ElmanCell)
    assert config_from_args(p.parse_args(["--model.cell=mycell"])).model.cell == "mycell"


def test_missing_task_registry_skips_the_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "rnnkit.tasks", None)  # `from .tasks import` now fails
    args = parser().parse_args(["--data.task=anything"])
    assert config_from_args(args).data.task == "anything"


# --- unknown flags --------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--model.cel=gru"], "unrecognized argument --model.cel (did you mean --model.cell?)"),
    (["--model.cel", "gru"], "unrecognized argument --model.cel (did you mean --model.cell?)"),
    (["--model.hidden-size=3"],
     "unrecognized argument --model.hidden-size (did you mean --model.hidden_size?)"),
    (["--zzz"], "unrecognized argument --zzz"),
])
def test_unknown_flag_suggests_the_closest(argv, message, capsys):
    err = fails(parser(), argv, capsys)
    assert message in err
    assert "'gru'" not in err  # the value of the unknown flag is not a second complaint


def test_unknown_flag_in_a_subcommand(capsys):
    err = fails(with_subcommand(), ["train", "--model.cel=gru"], capsys)
    assert ("rnnkit: error: unrecognized argument --model.cel "
            "(did you mean --model.cell?) (see 'rnnkit train --help')") in err
    args = with_subcommand().parse_args(["train", "--model.cell=gru", "--config", "a.toml"])
    assert args.command == "train" and args.config == "a.toml"
    assert config_from_args(args).model.cell == "gru"
    assert not hasattr(args, "_config_unrecognized_by")


def test_prefixes_of_flags_are_not_accepted(capsys):
    # argparse would take --train.max for --train.max_steps: with dotted flags that is a trap
    assert "unrecognized argument --train.max" in fails(parser(), ["--train.max=3"], capsys)


def test_parse_args_with_suggestions_on_a_plain_parser(capsys):
    top = argparse.ArgumentParser(prog="rnnkit", allow_abbrev=False)
    sub = top.add_subparsers(dest="command", required=True)
    add_config_flags(sub.add_parser("train"))
    with pytest.raises(SystemExit) as exit_info:
        parse_args_with_suggestions(top, ["train", "--train.lrr=1"])
    assert exit_info.value.code == 2
    assert "unrecognized argument --train.lrr (did you mean --train.lr?)" in (
        capsys.readouterr().err)
    args = parse_args_with_suggestions(top, ["train", "--train.lr=1"])
    assert config_from_args(args).train.lr == 1.0


# --- TOML -----------------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "run.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_sections_and_keys_load(tmp_path):
    path = write(tmp_path, """
# a run
[model]
cell = "gru"
hidden_size = 128
bidirectional = true

[train]
lr = 1          # an int is a fine float
max_steps = 300
device = "cuda:0"

[run]
progress = false
""")
    assert load_toml(path)["model"]["cell"] == "gru"
    cfg = load_config(path)
    assert (cfg.model.cell, cfg.model.hidden_size, cfg.model.bidirectional) == ("gru", 128, True)
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert (cfg.train.max_steps, cfg.train.device, cfg.run.progress) == (300, "cuda:0", False)
    assert cfg.data == Config().data  # sections left out keep the defaults


@pytest.mark.parametrize("text, message", [
    ("[train]\nlrr = 0.1\n", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    ("[model]\nlr = 0.1\n", "unknown key 'model.lr' (did you mean 'train.lr'?)"),
    ("[trian]\nlr = 0.1\n", "unknown section 'trian' (did you mean 'train'?)"),
    ("lr = 0.1\n", "unknown key 'lr' outside any section (did you mean 'train.lr'?)"),
    ("train = 3\n", "train: expected a table of keys ([train]), got int 3"),
    ('[train]\nlr = "fast"\n', "train.lr: expected a float, got str 'fast'"),
    ("[train]\nmax_steps = true\n", "train.max_steps: expected an integer, got bool True"),
    ("[train]\nmax_steps = 2.0\n", "train.max_steps: expected an integer, got float 2.0"),
    ("[train]\nlr = true\n", "train.lr: expected a float, got bool True"),
    ('[run]\nprogress = "no"\n', "run.progress: expected true or false, got str 'no'"),
    ("[model]\ncell = 3\n", "model.cell: expected a string, got int 3"),
    ("[train]\nlr = -1.0\n", "train.lr: expected a number > 0, got -1.0"),
    ("[train]\nlr = inf\n", "train.lr: expected a finite number, got inf"),
    ('[model]\ncell = "lsmt"\n', "model.cell: expected one of"),
    ('[train]\ndevice = "gpu"\n', "train.device: expected cpu, cuda or cuda:N"),
])
def test_toml_errors_name_the_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_toml_reports_every_problem_at_once(tmp_path):
    path = write(tmp_path, "[train]\nlr = -1.0\nmax_step = 3\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "train.lr: expected" in message and "unknown key 'train.max_step'" in message


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "[model]\ncell = \"gru\"\nhidden_size 32\n")
    with pytest.raises(ConfigError, match=r"run\.toml: TOML syntax error: .*line 3"):
        load_toml(path)


def test_missing_unreadable_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[model]\ncell = \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: expected UTF-8 text"):
        load_toml(path)


def test_precedence_defaults_then_toml_then_flags(tmp_path):
    path = write(tmp_path, "[model]\nhidden_size = 128\n[train]\nlr = 0.01\nmax_steps = 7\n")
    p = with_subcommand()
    args = p.parse_args(["train", "--config", str(path), "--train.lr=0.1"])
    base = load_config(args.config)
    cfg = config_from_args(args, base=base)
    assert cfg.train.lr == 0.1  # flag over file
    assert cfg.model.hidden_size == 128 and cfg.train.max_steps == 7  # file over defaults
    assert cfg.train.optimizer == "adam" and cfg.data == Config().data  # defaults
    assert base.train.lr == 0.01  # the base is not changed
    assert diff_fields(Config(), cfg) == ["model.hidden_size", "train.lr", "train.max_steps"]


# --- dicts, validation, diffs ---------------------------------------------------------------


def test_dict_round_trip_through_json():
    cfg = config_from_dict({"model": {"cell": "gru", "dropout": 0.25, "num_layers": 2},
                            "train": {"lr": 3e-4, "schedule": "cosine"},
                            "run": {"out": "runs/ü \"q\"", "plots": False}})
    data = config_to_dict(cfg)
    assert data["model"] == {**config_to_dict(Config())["model"], "cell": "gru",
                             "dropout": 0.25, "num_layers": 2}
    assert config_from_dict(json.loads(json.dumps(data))) == cfg
    assert config_from_dict(config_to_dict(Config())) == Config()


def test_toml_round_trip(tmp_path):
    cfg = config_from_dict({"train": {"lr": 1e-5, "gamma": 0.1, "device": "cuda:3"},
                            "run": {"out": "C:\\runs\\ü \"q\"\t", "progress": False}})
    path = write(tmp_path, config_to_toml(cfg), "saved.toml")
    assert load_config(path) == cfg


def test_config_from_dict_over_a_base():
    base = config_from_dict({"model": {"cell": "gru"}})
    cfg = config_from_dict({"model": {"hidden_size": 9}}, base, source="x.toml")
    assert (cfg.model.cell, cfg.model.hidden_size) == ("gru", 9)
    with pytest.raises(ConfigError, match=r"^x\.toml: expected a table of sections, got list"):
        config_from_dict([1], source="x.toml")


def test_validate_names_the_key_the_bound_and_the_value():
    bad = Config(train=TrainConfig(lr=-1.0))
    with pytest.raises(ConfigError, match=r"^train\.lr: expected a number > 0, got -1\.0$"):
        validate(bad)
    bad = Config(model=ModelConfig(hidden_size="64", num_layers=0))
    message = str(pytest.raises(ConfigError, validate, bad).value)
    assert "model.hidden_size: expected an integer, got str '64'" in message
    assert "model.num_layers: expected an integer >= 1, got 0" in message
    with pytest.raises(ConfigError, match="train.seed: expected an integer in"):
        validate(Config(train=TrainConfig(seed=-1)))
    with pytest.raises(ConfigError, match="train.lr: expected a number > 0"):
        config_from_args(argparse.Namespace(), base=bad.__class__(train=TrainConfig(lr=0.0)))


def test_diff_fields():
    a = Config()
    assert diff_fields(a, Config()) == []
    b = config_from_dict({"model": {"bidirectional": True}, "run": {"keep": 5}})
    assert diff_fields(a, b) == ["model.bidirectional", "run.keep"]
    assert diff_fields(b, a) == ["model.bidirectional", "run.keep"]
