"""Typed run configuration: four dataclass sections, and the flags and TOML files made from them.

A run is one :class:`Config` of four sections, ``model``, ``data``, ``train`` and ``run``, each a
dataclass of plain values (int, float, bool, str). Each field's ``metadata`` says how it is
documented and checked:

- ``help``: the one-line help text;
- ``min`` / ``max``: inclusive bounds (``exclusive_min=True`` / ``exclusive_max=True`` make
  them strict);
- ``choices``: a tuple of allowed strings, or a zero-argument function returning them, called
  only when a value is checked or help is printed (so the cell registry is read then, not at
  import); if that function cannot import its module, any string is accepted;
- ``off``: what 0 means, e.g. ``"0 = off"``;
- ``check`` / ``expects``: a predicate on a string's form, and the words naming that form;
- ``metavar``: the placeholder shown in ``--help``.

From those fields come the command-line flags (``--train.lr=3e-4``, :func:`add_config_flags`),
TOML files (``[train]`` then ``lr = 3e-4``; :func:`load_config`) and the validation of both
(:func:`validate`). Precedence is defaults < TOML file < flags:

>>> import argparse
>>> parser = ConfigParser(prog="rnnkit")
>>> add_config_flags(parser)
>>> args = parser.parse_args(["--model.cell=gru", "--train.lr", "3e-4"])
>>> base = config_from_dict({"model": {"hidden_size": 128}})   # in practice load_config(path)
>>> cfg = config_from_args(args, base=base)
>>> cfg.model.cell, cfg.model.hidden_size, cfg.train.lr
('gru', 128, 0.0003)
>>> diff_fields(Config(), cfg)
['model.cell', 'model.hidden_size', 'train.lr']
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError  # noqa: F401  (also importable from here, its old home)


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field: its default, its help line and its constraints (see the module doc)."""
    return field(default=default, metadata={"help": help, **meta})


def _cell_names() -> list[str]:
    from .cells import cell_names  # the registry, read when needed: cells may be added later

    return cell_names()


def _task_names() -> list[str]:
    from .tasks import task_names  # may be missing in a partial install: then no check

    return task_names()


DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")  # the devices a run names (its form only)


def _is_device(value: str) -> bool:
    return DEVICE.fullmatch(value) is not None


def _is_forget_bias(value: str) -> bool:
    if value in ("", "chrono"):
        return True
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _is_column(value: str) -> bool:
    from .data.conllu_io import TAG_COLUMNS

    return value == "" or re.fullmatch(r"-?\d+", value) is not None or value in TAG_COLUMNS


# ---------------------------------------------------------------------------------------------
# The config


@dataclass
class ModelConfig:
    """The network: which cell, how wide, how deep."""

    cell: str = _opt("lstm", "the recurrent cell", choices=_cell_names)
    hidden_size: int = _opt(64, "hidden units per layer and direction", min=1, metavar="N")
    num_layers: int = _opt(1, "stacked recurrent layers", min=1, metavar="N")
    bidirectional: bool = _opt(False, "also run every layer backwards in time and concatenate")
    dropout: float = _opt(0.0, "dropout probability on the outputs of every layer but the last",
                          min=0.0, max=1.0, metavar="P")
    dropout_mode: str = _opt("standard", "how model.dropout and model.input_dropout draw "
                             "their masks: a new one every step (standard) or one per sequence "
                             "for all its steps (variational, Gal & Ghahramani 2016)",
                             choices=("standard", "variational"))
    recurrent_dropout: float = _opt(0.0, "variational dropout of the state entering each "
                                    "layer's recurrent product, one mask per sequence",
                                    min=0.0, max=1.0, exclusive_max=True, metavar="P")
    weight_drop: float = _opt(0.0, "DropConnect on the recurrent weights, one mask per forward "
                              "(Merity et al. 2018)", min=0.0, max=1.0, exclusive_max=True,
                              metavar="P")
    zoneout: float = _opt(0.0, "zoneout: each state unit keeps its previous value with this "
                          "probability at each step (Krueger et al. 2017)", min=0.0, max=1.0,
                          exclusive_max=True, metavar="P")
    zoneout_cell: float = _opt(-1.0, "LSTM: the memory cell's own zoneout probability",
                               min=-1.0, max=1.0, exclusive_max=True,
                               off="-1 = model.zoneout", metavar="P")
    layer_norm: bool = _opt(False, "layer normalization of each layer's input and recurrent "
                            "products (and of the LSTM's cell), Ba et al. 2016")
    forget_bias: str = _opt("", "the forget gate's initial bias (LSTM; GRU: its update gate): "
                            "a number, or chrono (Tallec & Ollivier 2018, with model.max_lag; "
                            "for a CTRNN: its time constants)", off="empty = the cell's "
                            "default", check=_is_forget_bias, expects="a number or chrono",
                            metavar="B|chrono")
    max_lag: int = _opt(0, "the longest time lag to expect, for model.forget_bias=chrono",
                        min=0, off="0 = none", metavar="T")
    max_recurrent_weight: float = _opt(-1.0, "IndRNN: the bound on each unit's recurrent weight "
                                       "|u|, kept after every optimizer step (2^(1/T) keeps a "
                                       "ReLU unit's gradient within 2x over T steps, Li et al. "
                                       "2018)", min=-1.0, off="-1 = unbounded", metavar="G")
    residual: bool = _opt(False, "residual connections: every layer after the first adds its "
                          "input to its output (the residual IndRNN of Li et al. 2018; any cell)")
    embedding_size: int = _opt(100, "token embedding size (text tasks)", min=1, metavar="E")
    input_dropout: float = _opt(0.0, "dropout probability on the inputs (embeddings) and on the "
                                "last layer's outputs (text tasks)", min=0.0, max=1.0, metavar="P")
    word_dropout: float = _opt(0.0, "while training, replace each word by the unknown word with "
                               "this probability (text tasks), so the model learns what to do "
                               "with words it never saw", min=0.0, max=1.0, metavar="P")
    char_filters: int = _opt(0, "tagging: character features, a CNN over each word's letters "
                             "with this many filters, joined to the word embedding (helps "
                             "rare and unseen words)", min=0, off="0 = none", metavar="F")
    head: str = _opt("softmax", "tagging output layer: per-step softmax, or a linear-chain CRF "
                     "scoring whole tag sequences", choices=("softmax", "crf"))
    intent: bool = _opt(False, "tagging: also predict the sentence's intent from the same encoder")
    pooling: str = _opt("max", "how a sequence becomes one vector for a classifier or the intent "
                        "head: the final state, or mean, max or attention pooling over its steps",
                        choices=("final", "mean", "max", "attention"))
    attention: str = _opt("additive", "sequence-to-sequence and captioning: how the decoder "
                          "looks at the input: additive (Bahdanau), multiplicative (Luong) or "
                          "none", choices=("none", "additive", "multiplicative"))
    beam_size: int = _opt(5, "sequence-to-sequence and captioning: beam width on the test split "
                          "(validation decodes greedily); 1 = greedy", min=1, metavar="K")
    length_penalty: float = _opt(1.0, "beam search ranks a finished output by log p / "
                                 "length^alpha; 0 = raw log-probability", min=0.0,
                                 metavar="ALPHA")
    max_length: int = _opt(0, "sequence-to-sequence: the longest output the decoder may write",
                           min=0, off="0 = twice the source's length plus 10", metavar="N")
    tie_weights: bool = _opt(False, "language models: the output layer reuses the embedding "
                             "matrix (needs model.embedding_size = model.hidden_size)")
    embedding_init: str = _opt("uniform", "language models: how the embeddings start: small "
                               "uniform U(-0.1, 0.1) with a zero output bias (suits SGD on "
                               "words), or torch's N(0, 1) and default bias (suits Adam on "
                               "characters)", choices=("uniform", "normal"))


@dataclass
class DataConfig:
    """The task and its data: what is learned, from how many samples."""

    task: str = _opt("adding", "the training task", choices=_task_names)
    seq_len: int = _opt(50, "sequence length T in time steps", min=2, metavar="T")
    batch_size: int = _opt(64, "sequences per optimizer step", min=1, metavar="N")
    train_size: int = _opt(10000, "training sequences", min=1, metavar="N")
    val_size: int = _opt(1000, "validation sequences", min=1, metavar="N")
    test_size: int = _opt(1000, "test sequences", min=1, metavar="N")
    seed: int = _opt(1234, "seed of the data: the train, validation and test sets drawn from it",
                     min=0, max=2**32 - 1, metavar="N")
    level: str = _opt("word", "language models (tasks ptb and text): word or character tokens",
                      choices=("word", "char"))
    train_file: str = _opt("", "your own training data (tasks tag, classify and text)",
                           off="empty = none", metavar="PATH")
    val_file: str = _opt("", "your own validation data", off="empty = a fixed 10% of the "
                         "training file", metavar="PATH")
    test_file: str = _opt("", "your own test data", off="empty = none", metavar="PATH")
    format: str = _opt("auto", "the files' format: conll (word ... tag columns), conllu "
                       "(Universal Dependencies' 10 columns), slots (word:tag ... <=> intent "
                       "lines), tsv or csv (label, text); auto = by the file's extension "
                       "(.conllu, .conll/.txt, .slots, .tsv, .csv) and, for CoNLL files, by "
                       "their content", choices=("auto", "conll", "conllu", "slots", "tsv", "csv"))
    column: str = _opt("", "tagging: the column that holds the tags: a CoNLL-U field name "
                       "(upos, xpos, deprel, ...) or a CoNLL column index (0 = the first, -1 = "
                       "the last)", off="empty = upos for CoNLL-U, the last column for CoNLL",
                       check=_is_column, expects="a CoNLL-U field name (lemma, upos, xpos, "
                       "feats, head, deprel, deps, misc) or a column index like 1 or -1",
                       metavar="NAME|N")
    tag_scheme: str = _opt("auto", "tagging: how the tags are read: bio or bioes chunk tags "
                           "(B-x I-x ...; scored by chunk F1 as conlleval does) or none (each "
                           "tag on its own, e.g. part-of-speech tags; scored by accuracy); "
                           "auto = bio/bioes when every training tag is O or a chunk tag, "
                           "else none", choices=("auto", "bio", "bioes", "none"))


@dataclass
class TrainConfig:
    """The optimisation: optimizer, schedule, stopping, clipping, BPTT, seed and device."""

    optimizer: str = _opt("adam", "the optimizer", choices=("sgd", "adam", "rmsprop"))
    lr: float = _opt(1e-3, "learning rate", min=0.0, exclusive_min=True, metavar="LR")
    momentum: float = _opt(0.9, "momentum of sgd and rmsprop", min=0.0, metavar="M")
    weight_decay: float = _opt(0.0, "L2 weight decay", min=0.0, metavar="W")
    recurrent_lr_scale: float = _opt(1.0, "the recurrent layers learn at train.lr times this, "
                                     "the rest (embeddings, output layers) at train.lr; below "
                                     "1 keeps a tanh Elman network from saturating under the "
                                     "high rates of SGD language models", min=0.0,
                                     exclusive_min=True, metavar="S")
    schedule: str = _opt("none", "learning-rate schedule",
                         choices=("none", "step", "cosine", "plateau"))
    step_size: int = _opt(1000, "steps between decays of the step schedule", min=1, metavar="N")
    gamma: float = _opt(0.5, "decay factor of the step and plateau schedules", min=0.0,
                        metavar="G")
    plateau_patience: int = _opt(2, "validations without improvement before the plateau "
                                 "schedule decays the rate", min=0, metavar="N")
    max_steps: int = _opt(2000, "optimizer steps in total", min=1, metavar="N")
    max_minutes: float = _opt(0.0, "stop after the first step that ends this many minutes "
                              "into training (this invocation's), validating, saving and "
                              "testing as at max_steps; a resumed run goes on toward max_steps",
                              min=0.0, off="0 = no time limit", metavar="MIN")
    eval_every: int = _opt(200, "steps between validations", min=1, metavar="N")
    patience: int = _opt(0, "stop early after this many validations without improvement",
                         min=0, off="0 = never stop early", metavar="N")
    clip_norm: float = _opt(1.0, "clip the global gradient norm to this", min=0.0,
                            off="0 = off", metavar="C")
    clip_value: float = _opt(0.0, "clip each gradient entry to [-v, v]", min=0.0,
                             off="0 = off", metavar="V")
    tbptt: int = _opt(0, "truncated BPTT: backpropagate through chunks of k steps", min=0,
                      off="0 = full BPTT", metavar="K")
    sampling_rate: float = _opt(0.0, "scheduled sampling: each decoder step reads its own "
                                "previous prediction instead of the reference with this "
                                "probability (sequence-to-sequence and captioning)", min=0.0,
                                max=1.0, metavar="P")
    seed: int = _opt(0, "seed of the initialisation, the batch order and dropout",
                     min=0, max=2**32 - 1, metavar="N")
    device: str = _opt("cpu", "device to train on: cpu, cuda or cuda:N", check=_is_device,
                       expects="cpu, cuda or cuda:N (N a GPU index)")
    threads: int = _opt(0, "torch CPU threads", min=0, off="0 = torch's default", metavar="N")


@dataclass
class RunConfig:
    """The output: where the run is written and what is recorded along the way."""

    out: str = _opt("runs/latest", "output directory: checkpoints, metrics.jsonl, PNG plots",
                    metavar="DIR")
    checkpoint_every: int = _opt(200, "steps between checkpoints", min=0,
                                 off="0 = only at the end", metavar="N")
    keep: int = _opt(2, "checkpoints kept besides the best", min=1, metavar="N")
    log_every: int = _opt(10, "steps between metrics.jsonl records", min=1, metavar="N")
    progress: bool = _opt(True, "show a progress bar")
    grad_flow_every: int = _opt(0, "record the gradient norm at every time step every N steps",
                                min=0, off="0 = off", metavar="N")
    plots: bool = _opt(True, "draw the curves as PNG files at the end (and write "
                          "the task's report: confusion matrix, errors)")


@dataclass
class Config:
    """A whole run: the sections ``model``, ``data``, ``train`` and ``run``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------
# Walking the sections and their fields

_KINDS = (bool, int, float, str)
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a float", str: "a string"}


def _sections(cls: type) -> list[tuple[str, type]]:
    """``[(section name, section dataclass), ...]`` of a config class, in field order."""
    hints = get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def _leaves(section_cls: type) -> list[tuple[dataclasses.Field, type]]:
    """``[(field, its kind), ...]`` of a section; the kind is one of bool, int, float, str."""
    hints = get_type_hints(section_cls)
    out = []
    for f in dataclasses.fields(section_cls):
        kind = hints[f.name]
        if kind not in _KINDS:
            raise TypeError(f"{section_cls.__name__}.{f.name}: config fields must be bool, int, "
                            f"float or str, got {kind}")
        out.append((f, kind))
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _choices(f: dataclasses.Field) -> list[str] | None:
    """The allowed strings of ``f``, or None when anything goes (or the registry is missing)."""
    choices = f.metadata.get("choices")
    if callable(choices):
        try:
            choices = choices()
        except ImportError:
            return None
    return None if choices is None else list(choices)


def _show(value: Any) -> str:
    """A value as TOML and the command line spell it: ``true``, ``0.001``, ``lstm``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _num(x: float) -> str:
    """A bound as people write it: 0 for 0.0, 0.5, 4294967295."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _range_words(f: dataclasses.Field, kind: type) -> str:
    """The numbers ``f`` allows, e.g. ``>= 1``, ``> 0``, ``in [0, 1]``; '' if any."""
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    lo = None if lo is None else _num(lo)
    hi = None if hi is None else _num(hi)
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}{')' if f.metadata.get('exclusive_max') else ']'}"
    if lo is not None:
        return f"{'>' if f.metadata.get('exclusive_min') else '>='} {lo}"
    if hi is not None:
        return f"<= {hi}"
    return ""


def _suggest(word: str, candidates: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _value_problem(f: dataclasses.Field, kind: type, value: Any) -> str | None:
    """What is wrong with ``value`` for ``f`` beyond its type ("expected ..., got ..."), or None.

    Assumes ``value`` already has the right kind (floats may be ints).
    """
    meta = f.metadata
    if kind in (int, float):
        if kind is float and not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        lo, hi = meta.get("min"), meta.get("max")
        below = lo is not None and (value <= lo if meta.get("exclusive_min") else value < lo)
        above = hi is not None and (value >= hi if meta.get("exclusive_max") else value > hi)
        if below or above:
            noun = "an integer" if kind is int else "a number"
            return f"expected {noun} {_range_words(f, kind)}, got {value!r}"
    if kind is str:
        choices = _choices(f)
        if choices is not None and value not in choices:
            return f"expected one of {', '.join(choices)}, got {value!r}{_suggest(value, choices)}"
        check = meta.get("check")
        if check is not None and not check(value):
            return f"expected {meta.get('expects', 'a valid value')}, got {value!r}"
    return None


def _type_problem(kind: type, value: Any) -> str | None:
    """What is wrong with the Python type of ``value`` for a field of ``kind``, or None.

    An int is a float (TOML writes ``lr = 1``), but a bool is not a number.
    """
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:
        number = (int,) if kind is int else (int, float)
        ok = isinstance(value, number) and not isinstance(value, bool)
    if ok:
        return None
    return f"expected {_TYPE_WORDS[kind]}, got {type(value).__name__} {value!r}"


def _problems(cfg: Any) -> list[str]:
    """Every ``"section.key: expected ..., got ..."`` that is wrong in ``cfg``."""
    problems = []
    for section, section_cls in _sections(type(cfg)):
        values = getattr(cfg, section)
        if not isinstance(values, section_cls):
            problems.append(f"{section}: expected a {section_cls.__name__}, "
                            f"got {type(values).__name__}")
            continue
        for f, kind in _leaves(section_cls):
            value = getattr(values, f.name)
            problem = _type_problem(kind, value) or _value_problem(f, kind, value)
            if problem:
                problems.append(f"{section}.{f.name}: {problem}")
    return problems


def validate(cfg: Config) -> Config:
    """Check every value of ``cfg`` against its field's type, bounds, choices and form.

    Returns ``cfg``; raises :class:`ConfigError` listing every problem, e.g.
    ``"train.lr: expected a number > 0, got -1.0"``.
    """
    problems = _problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


# ---------------------------------------------------------------------------------------------
# Dicts and TOML files


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{"model": {"cell": "lstm", ...}, ...}``, plain and JSON-able.

    :func:`config_from_dict` inverts it.
    """
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, base: Config | None = None, *, source: str = "config") -> Config:
    """The values of the nested dict ``data`` (as a TOML file holds them) applied over ``base``.

    ``data`` is ``{"model": {"cell": "gru"}, "train": {"lr": 0.01}}``; keys left out keep
    ``base``'s values (default: :class:`Config`'s defaults). Unknown sections or keys, wrong
    types and out-of-range values raise :class:`ConfigError` starting with ``source`` (the file
    name), e.g. ``"run.toml: unknown key 'train.lrr' (did you mean 'train.lr'?)"``.
    """
    base = Config() if base is None else base
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of sections, got {type(data).__name__}")
    sections = dict(_sections(type(base)))
    every_key = [f"{s}.{f.name}" for s, cls in sections.items() for f, _ in _leaves(cls)]
    problems: list[str] = []
    updates: dict[str, dict[str, Any]] = {}
    for section, values in data.items():
        if section not in sections:
            if isinstance(values, dict):
                problems.append(f"unknown section {section!r}"
                                f"{_suggest(str(section), list(sections))}")
            else:  # a key at the top level: maybe one that belongs in a section
                owners = [k for k in every_key if k.split(".")[1] == section]
                hint = f" (did you mean {owners[0]!r}?)" if owners else ""
                problems.append(f"unknown key {section!r} outside any section{hint}")
            continue
        if not isinstance(values, dict):
            problems.append(f"{section}: expected a table of keys ([{section}]), "
                            f"got {type(values).__name__} {values!r}")
            continue
        leaves = {f.name: (f, kind) for f, kind in _leaves(sections[section])}
        for key, value in values.items():
            if key not in leaves:
                name = f"{section}.{key}"
                elsewhere = [k for k in every_key if k.split(".")[1] == key]
                hint = (f" (did you mean {elsewhere[0]!r}?)" if elsewhere
                        else _suggest(name, every_key))
                problems.append(f"unknown key {name!r}{hint}")
                continue
            f, kind = leaves[key]
            problem = _type_problem(kind, value) or _value_problem(f, kind, value)
            if problem:
                problems.append(f"{section}.{key}: {problem}")
                continue
            updates.setdefault(section, {})[key] = float(value) if kind is float else value
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    cfg = _replace(base, updates)
    try:
        return validate(cfg)
    except ConfigError as e:  # a bad value in base itself
        raise ConfigError(f"{source}: {e}") from None


def _replace(base: Config, updates: dict[str, dict[str, Any]]) -> Config:
    """A new config: ``base`` with ``updates[section][key]`` put in (base is not changed)."""
    sections = {name: dataclasses.replace(getattr(base, name), **updates.get(name, {}))
                for name, _ in _sections(type(base))}
    return dataclasses.replace(base, **sections)


def _toml_module():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:
        raise ConfigError("reading TOML config files needs Python >= 3.11 or the 'tomli' "
                          "package (pip install tomli)") from None
    return tomli


def load_toml(path: str | Path) -> dict:
    """The contents of the TOML file ``path`` as a dict.

    A missing or unreadable file, text that is not UTF-8 and TOML syntax errors (with their line
    and column) raise :class:`ConfigError` naming the file.
    """
    path = Path(path)
    toml = _toml_module()
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a TOML config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: expected UTF-8 text (a TOML file), found byte "
                          f"0x{e.object[e.start]:02x} at offset {e.start}") from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{path}: TOML syntax error: {e}") from None


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """The TOML file ``path`` applied over ``base`` (default: the defaults).

    Errors (see :func:`load_toml`, :func:`config_from_dict`) start with the file's name.
    """
    return config_from_dict(load_toml(path), base, source=str(path))


def config_to_toml(cfg: Config) -> str:
    """``cfg`` as TOML text that :func:`load_config` reads back to an equal config.

    Written into a run's directory, it is the ``--config`` that repeats the run.
    """
    lines = []
    for section, values in config_to_dict(cfg).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, str):
                text = json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML string
            elif isinstance(value, float):
                text = repr(value)  # shortest exact form: 0.001, 1e-05, 1.0
            else:
                text = _show(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def diff_fields(a: Config, b: Config) -> list[str]:
    """Dotted names (``"train.lr"``) of the fields whose values differ between ``a`` and ``b``."""
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{s}.{k}" for s, values in da.items() for k, v in values.items() if db[s][k] != v]


# ---------------------------------------------------------------------------------------------
# Command-line flags

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_SECTION_ATTR = "config_section"  # set on the flags' argparse actions: their section


def _flag_type(f: dataclasses.Field, kind: type) -> Callable[[str], Any]:
    """argparse ``type=``: text to a checked value; ArgumentTypeError says what was expected."""

    def parse(text: str) -> Any:
        if kind is bool:
            word = text.strip().lower()
            if word not in _TRUE + _FALSE:
                raise argparse.ArgumentTypeError(
                    f"expected true/false, yes/no or 1/0, got {text!r}")
            return word in _TRUE
        if kind is str:
            value: Any = text
        else:
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {_TYPE_WORDS[kind]}, got {text!r}") from None
        problem = _value_problem(f, kind, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse's fallback messages name it
    return parse


def _flag_help(flag: str, f: dataclasses.Field, kind: type) -> str:
    """The help line: what the field is, what it allows, what 0 means and its default."""
    default = _default(f)
    notes = []
    if kind is bool:
        notes.append(f"default: {_show(default)}; "
                     + (f"{flag}=false turns it off" if default else f"{flag} turns it on"))
    else:
        choices = _choices(f)
        if choices is not None:
            notes.append("one of " + ", ".join(choices))
        if kind in (int, float) and _range_words(f, kind):
            notes.append(_range_words(f, kind))
        if "off" in f.metadata:
            notes.append(f.metadata["off"])
        notes.append(f"default: {_show(default)}")
    text = f"{f.metadata['help']} ({'; '.join(notes)})"
    return text.replace("%", "%%")  # argparse %-formats help strings


def add_config_flags(parser: argparse.ArgumentParser, cls: type = Config,
                     sections: Sequence[str] | None = None) -> None:
    """Add one flag per config field to ``parser``: ``--model.cell``, ``--train.lr``, ...

    Each section's flags form one group in ``--help``. Flags take ``--train.lr=1e-3`` or
    ``--train.lr 1e-3``; a bool flag alone means true, and takes true/false, yes/no or 1/0
    (any case) after ``=``. A bad value exits with argparse's usage error (status 2) naming the
    flag and what it expected. Flags default to ``argparse.SUPPRESS``: only the flags given
    appear in the namespace (as ``"train.lr"``), so :func:`config_from_args` can lay exactly
    those over a base config. ``sections`` (e.g. ``["model", "train"]``) limits the flags to
    those sections.
    """
    known = _sections(cls)
    names = [name for name, _ in known]
    if sections is not None:
        unknown = [s for s in sections if s not in names]
        if unknown:
            raise ValueError(f"sections: unknown section(s) {', '.join(map(repr, unknown))}; "
                             f"expected some of {', '.join(names)}")
    for section, section_cls in known:
        if sections is not None and section not in sections:
            continue
        summary = (section_cls.__doc__ or "").strip().split("\n")[0]
        group = parser.add_argument_group(
            f"{section} options", f"{summary} (TOML section [{section}])")
        for f, kind in _leaves(section_cls):
            flag = f"--{section}.{f.name}"
            extra: dict[str, Any] = {}
            if kind is bool:
                extra = {"nargs": "?", "const": True, "metavar": "BOOL"}
            else:
                extra = {"metavar": f.metadata.get("metavar", f.name.upper())}
            action = group.add_argument(
                flag, dest=f"{section}.{f.name}", type=_flag_type(f, kind),
                default=argparse.SUPPRESS, help=_flag_help(flag, f, kind), **extra)
            setattr(action, _SECTION_ATTR, section)  # for ConfigParser's short usage line


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train.lr": 0.01, ...}``: the config flags given on the command line."""
    return {k: v for k, v in vars(args).items() if "." in k}


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The config flags that were given in ``args`` applied over ``base``; validated.

    ``base`` defaults to :class:`Config`'s defaults; pass :func:`load_config`'s result to put
    the flags over a TOML file. ``base`` is not changed. Other entries of ``args`` (``config``,
    ``command``, dotted names of sections ``base`` lacks) are ignored.
    """
    base = Config() if base is None else base
    sections = {name: {f.name for f, _ in _leaves(cls)} for name, cls in _sections(type(base))}
    updates: dict[str, dict[str, Any]] = {}
    for dotted, value in given_flags(args).items():
        section, key = dotted.split(".", 1)
        if key in sections.get(section, ()):
            updates.setdefault(section, {})[key] = value
    return validate(_replace(base, updates))


# ---------------------------------------------------------------------------------------------
# Unknown flags, with suggestions

_WHO_SAW = "_config_unrecognized_by"  # namespace attribute: unknown argument -> its parser


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser below it (subcommands, their subcommands, ...)."""
    out = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                out.extend(_subparsers(sub))
    return out


def _unrecognized_message(extras: list[str], candidates: Sequence[str]) -> str:
    """``unrecognized argument --model.cel (did you mean --model.cell?)``, for each unknown."""
    parts = []
    i = 0
    while i < len(extras):
        arg = extras[i]
        if arg.startswith("-") and len(arg) > 1:
            flag = arg.split("=", 1)[0]
            if "=" not in arg and i + 1 < len(extras) and not extras[i + 1].startswith("-"):
                i += 1  # `--model.cel gru`: the word after an unknown flag is its value
            spelled = flag.replace("-", "_")
            spelled = "--" + spelled[2:] if flag.startswith("--") else flag
            close = ([spelled] if spelled != flag and spelled in candidates
                     else difflib.get_close_matches(flag, list(candidates), n=1, cutoff=0.6))
            hint = f" (did you mean {close[0]}?)" if close else ""
            parts.append(f"unrecognized argument {flag}{hint}")
        else:
            parts.append(f"unrecognized argument {arg!r}")
        i += 1
    return "; ".join(parts)


class ConfigParser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown flags fail with a suggestion, in subcommands too.

    ``--model.cel=gru`` exits (status 2) with ``unrecognized argument --model.cel (did you mean
    --model.cell?)``, printed with the usage of the (sub)command that was parsing it.
    Abbreviated flags are off by default (``allow_abbrev=False``): with dozens of dotted flags
    a prefix would silently pick one. Subparsers made by ``add_subparsers`` are ConfigParsers.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _short_usage(self) -> str | None:
        """The usage line with the config flags folded into one ``[--{model,...}.KEY=VALUE ...]``.

        None (argparse's own usage) when a usage was given or there are no config flags.
        """
        sections = [getattr(a, _SECTION_ATTR, None) for a in self._actions]
        folded = list(dict.fromkeys(s for s in sections if s is not None))
        if self.usage is not None or not folded:
            return None
        rest = [a for a, s in zip(self._actions, sections, strict=True) if s is None]

        def usage(actions: list[argparse.Action]) -> str:
            formatter = self._get_formatter()
            formatter.add_usage(None, actions, self._mutually_exclusive_groups, prefix="")
            return " ".join(formatter.format_help().split())  # "prog [-h] ..."

        optionals = usage([a for a in rest if a.option_strings])
        positionals = usage([a for a in rest if not a.option_strings])[len(self.prog):]
        names = folded[0] if len(folded) == 1 else "{" + ",".join(folded) + "}"
        return f"{optionals} [--{names}.KEY=VALUE ...]{positionals}"

    def format_usage(self) -> str:  # noqa: D102 (argparse's)
        return self._with_short_usage(super().format_usage)

    def format_help(self) -> str:  # noqa: D102 (argparse's)
        return self._with_short_usage(super().format_help)

    def _with_short_usage(self, render: Callable[[], str]) -> str:
        short = self._short_usage()
        if short is None:
            return render()
        self.usage = short.replace("%", "%%")
        try:
            return render()
        finally:
            self.usage = None

    def error(self, message: str):  # noqa: D102 (argparse's)
        """The usage, then one ``rnnkit: error:`` line (as every other error the command line
        reports) naming the subcommand whose arguments were wrong; exit status 2."""
        self.print_usage(sys.stderr)
        root, _, sub = self.prog.partition(" ")
        where = f" (see '{self.prog} --help')" if sub else ""
        self.exit(2, f"{root}: error: {message}{where}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 (argparse's)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # a subcommand's parser runs first, so the deepest parser claims its extras
            seen = vars(namespace).setdefault(_WHO_SAW, {})
            for arg in extras:
                seen.setdefault(arg, self)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):  # noqa: D102 (argparse's)
        namespace, extras = self.parse_known_args(args, namespace)
        seen = vars(namespace).pop(_WHO_SAW, {})
        if extras:
            owner = seen.get(extras[0], self)
            owner.error(_unrecognized_message(extras, _long_options(owner)))
        return namespace


def parse_args_with_suggestions(parser: argparse.ArgumentParser,
                                argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but unknown flags fail with the closest known flag.

    For a plain ArgumentParser (a :class:`ConfigParser` does this itself). Suggestions come
    from the flags of ``parser`` and all its subcommands. Note that a plain ArgumentParser
    accepts unique prefixes (``--model.cel`` for ``--model.cell``) unless made with
    ``allow_abbrev=False``.
    """
    if isinstance(parser, ConfigParser):
        return parser.parse_args(argv)
    namespace, extras = parser.parse_known_args(argv)
    if extras:
        candidates = [s for p in _subparsers(parser) for s in _long_options(p)]
        parser.error(_unrecognized_message(extras, candidates))
    return namespace


__all__ = [
    "Config", "ModelConfig", "DataConfig", "TrainConfig", "RunConfig", "ConfigError",
    "ConfigParser", "add_config_flags", "config_from_args", "config_from_dict", "config_to_dict",
    "config_to_toml", "diff_fields", "given_flags", "load_config", "load_toml",
    "parse_args_with_suggestions", "validate",
]
