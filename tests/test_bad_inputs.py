"""Bad input, one case a row: every failure a user can cause is one clear line, never a traceback.

The standard (``rnnkit.cli.main`` and ``_report``, ``rnnkit.errors``, ``ConfigParser.error``):
a failure ends in exactly one ``rnnkit: error: ...`` line on stderr that names the file (with
its line number where there is one), the option or the value at fault; the exit status is 2 for
a bad configuration or argument and 1 otherwise; a traceback appears only with ``--debug`` or
``RNNKIT_DEBUG=1``. Argparse-level errors print the usage, then the one error line, and exit 2.

Four areas: the command line, the data readers (through the command line), damaged checkpoints
(through ``rnnkit evaluate``) and the Python API. The runs the commands need are trained once
per module, tiny (8 hidden units, 3 steps), so the whole file takes seconds.

A case marked xfail(strict=True) is a bug this file found; its reason says what is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import rnnkit
from rnnkit.cli import main
from rnnkit.data.text import Vocab
from rnnkit.metrics import chunk_f1

TINY = ["--model.hidden_size=8", "--model.embedding_size=8", "--train.max_steps=3",
        "--train.eval_every=3", "--data.batch_size=4", "--run.progress=false",
        "--run.plots=false"]
PREFIX = "rnnkit: error: "
NO_CUDA = torch.cuda.is_available()
FEW_GPUS = torch.cuda.device_count() > 3

# ---- data files -------------------------------------------------------------------------------

_WORDS = {"DET": ["the", "a"], "NOUN": ["dog", "cat", "man", "city"],
          "VERB": ["runs", "sees", "likes"], "ADJ": ["big", "red"]}
_PATTERNS = [["DET", "NOUN", "VERB", "DET", "NOUN"], ["DET", "ADJ", "NOUN", "VERB"],
             ["NOUN", "VERB", "ADJ"]]


def _pos_conll(n: int, offset: int) -> str:
    """``n`` space-separated ``word TAG`` sentences, deterministic."""
    out = []
    for s in range(n):
        pattern = _PATTERNS[(s + offset) % len(_PATTERNS)]
        for i, tag in enumerate(pattern):
            words = _WORDS[tag]
            out.append(f"{words[(s + i + offset) % len(words)]} {tag}\n")
        out.append("\n")
    return "".join(out)


_UD1 = "1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n"
_UD2 = "2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n"

# name -> bytes or text; a name ending in "/" is a directory
DATA_FILES: dict[str, str | bytes] = {
    "train.conll": _pos_conll(30, 0),
    "test.conll": _pos_conll(6, 1),
    "lm.txt": "the quick brown fox jumps over the lazy dog. " * 12,
    "short.txt": "abc",
    "t30.txt": "abcdefghijklmnopqrstuvwxyz abcd",
    "t20.txt": "abcdefghijklmnopqrst",
    "afile": "not a directory\n",
    "emptydir/": "",
    "corpus_d/": "",
    "folder.conll/": "",
    "bad.toml": '[model]\ncell = "gru"\nhidden_size = = 3\n',
    "unknown.toml": '[model]\ncell = "gru"\n[train]\nlrr = 0.1\n',
    "wrongtype.toml": '[train]\nlr = "fast"\n',
    # readers
    "cols.conll": "the DET\ndog NOUN\nruns VERB extra\n\n",
    "ud.conll": "# text = the dog\n" + _UD1 + _UD2 + "\n",
    "empty.conll": "",
    "comments.conll": "# a comment\n# another one\n",
    "badutf.conll": b"the DET\ndog NOUN\n\ncaf\xe9 NOUN\n",
    "tabs.conll": "the\tDET\ndog\tNOUN\nruns VERB\n\n",
    "nine.conllu": _UD1 + "2\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\n\n",
    "badid.conllu": _UD1 + "x\tdog\tdog\tNOUN\tNN\t_\t0\troot\t_\t_\n\n",
    "noxpos.conllu": (_UD1 + _UD2).replace("\tDT\t", "\t_\t").replace("\tNN\t", "\t_\t") + "\n",
    "nocolon.slots": "the:O dog:B-animal <=> intent_a\nthe:O cat <=> intent_b\n",
    "twoarrows.slots": "the:O dog:B-animal <=> intent_a\nthe:O cat:B-animal <=> a <=> b\n",
    "notab.tsv": "pos\tgood film\nneg\tbad film\nneg bad again\n",
    "nolabel.tsv": "pos\tgood film\n\tbad film\n",
    "cls.tsv": "pos\tgood film\nneg\tbad film\npos\tnice film\nneg\tawful film\npos\tgreat\n"
               "neg\tpoor\n",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name, content in DATA_FILES.items():
        path = root / name.rstrip("/")
        if name.endswith("/"):
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _train(out: Path, *flags: str) -> Path:
    """A tiny run trained into ``out`` (its output swallowed)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        rc = main(["train", *flags, *TINY, f"--run.out={out}"])
    assert rc == 0, sink.getvalue()
    assert (out / "checkpoints" / "latest").is_file()
    return out


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory, data) -> Path:
    """A POS tagger with a test file."""
    return _train(tmp_path_factory.mktemp("runs") / "tag", "--data.task=tag",
                  f"--data.train_file={data / 'train.conll'}",
                  f"--data.test_file={data / 'test.conll'}")


@pytest.fixture(scope="module")
def notest_run(tmp_path_factory, data) -> Path:
    """A POS tagger without a test file."""
    return _train(tmp_path_factory.mktemp("runs") / "notest", "--data.task=tag",
                  f"--data.train_file={data / 'train.conll'}")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, data) -> Path:
    """A character-level language model of a few hundred characters."""
    return _train(tmp_path_factory.mktemp("runs") / "lm", "--data.task=text",
                  f"--data.train_file={data / 'lm.txt'}", "--data.level=char")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test writes into the repository (runs/latest is relative), and no outside
    RNNKIT_DEBUG turns the tracebacks on."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RNNKIT_DEBUG", raising=False)


class _Paths(dict):
    """``{tmp}``, ``{data}``, ``{tag}``, ``{notest}``, ``{lm}`` for the argv templates; a run is
    trained only when a case names it."""

    FIXTURES = {"data": "data", "tag": "tag_run", "notest": "notest_run", "lm": "lm_run"}

    def __init__(self, request, tmp_path: Path):
        super().__init__(tmp=str(tmp_path))
        self.request = request

    def __missing__(self, key):
        value = str(self.request.getfixturevalue(self.FIXTURES[key]))
        self[key] = value
        return value


@pytest.fixture
def paths(request, tmp_path) -> _Paths:
    return _Paths(request, tmp_path)


def fill(templates, paths: _Paths) -> list[str]:
    return [t.format_map(paths) for t in templates]


# ---- what a failure must look like -------------------------------------------------------------


def error_message(err: str, *, usage: bool = False, debug: bool = False) -> str:
    """The message of the one ``rnnkit: error:`` line of ``err``, after checking the rest of
    stderr: a usage (argparse errors) or nothing but warnings before it, a traceback only with
    ``debug``."""
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith(PREFIX)]
    assert len(errors) == 1, f"expected exactly one {PREFIX!r} line, got:\n{err}"
    if debug:
        assert "Traceback (most recent call last)" in err, err
    else:
        assert "Traceback" not in err, err
        if usage:
            assert lines[0].startswith("usage: rnnkit"), err
            assert lines[-1] == errors[0], err
        else:
            others = [ln for ln in lines if ln != errors[0]
                      and not ln.startswith("rnnkit: warning: ")]
            assert others == [], err
    message = errors[0][len(PREFIX):]
    assert message.strip(), err
    return message


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)``'s exit code, stdout and stderr (for errors past argument parsing)."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_names(message: str, needles) -> None:
    for needle in needles:
        assert needle in message, f"{needle!r} not in the message: {message}"


# ---- 1. the command line: argparse-level errors (usage + one line, exit 2) ---------------------

ARGPARSE_CASES = [
    pytest.param(["train", "--model.cel=gru"],
                 ["unrecognized argument --model.cel", "did you mean --model.cell?"],
                 id="unknown-train-flag-suggests"),
    pytest.param(["evaluate", "{tmp}", "--jsn"],
                 ["unrecognized argument --jsn", "did you mean --json?"],
                 id="unknown-evaluate-flag-suggests"),
    pytest.param(["train", "--model.cell=lstmm"],
                 ["--model.cell", "'lstmm'", "did you mean 'lstm'?"], id="bad-choice-cell"),
    pytest.param(["train", "--data.task=nosuch"], ["--data.task", "'nosuch'"],
                 id="bad-choice-task"),
    pytest.param(["train", "--train.lr=0"], ["--train.lr", "> 0", "got 0.0"], id="lr-zero"),
    pytest.param(["train", "--data.batch_size=0"], ["--data.batch_size", ">= 1", "got 0"],
                 id="batch-size-zero"),
    pytest.param(["train", "--model.dropout=1.5"], ["--model.dropout", "[0, 1]", "got 1.5"],
                 id="dropout-above-one"),
    pytest.param(["train", "--run.progress=maybe"], ["--run.progress", "'maybe'"],
                 id="bool-flag-bad-word"),
    pytest.param(["evaluate", "{tmp}", "--device", "foo"], ["--device", "'foo'"],
                 id="evaluate-device-foo"),
    pytest.param(["evaluate", "{tmp}", "--device", "cuda"], ["--device", "'cuda'", "no CUDA"],
                 id="evaluate-device-cuda",
                 marks=pytest.mark.skipif(NO_CUDA, reason="this machine has CUDA")),
    pytest.param(["predict", "--run", "{tmp}", "--device", "foo", "the dog"],
                 ["--device", "'foo'"], id="predict-device-foo"),
    pytest.param(["predict", "--run", "{tmp}", "--device", "cuda", "the dog"],
                 ["--device", "'cuda'", "no CUDA"], id="predict-device-cuda",
                 marks=pytest.mark.skipif(NO_CUDA, reason="this machine has CUDA")),
    pytest.param(["generate", "--run", "{tmp}", "--device", "foo"], ["--device", "'foo'"],
                 id="generate-device-foo"),
    pytest.param(["generate", "--run", "{tmp}", "--device", "cuda"],
                 ["--device", "'cuda'", "no CUDA"], id="generate-device-cuda",
                 marks=pytest.mark.skipif(NO_CUDA, reason="this machine has CUDA")),
    pytest.param(["generate", "--run", "{tmp}", "--temperature", "-1"],
                 ["--temperature", "got -1"], id="generate-negative-temperature"),
    pytest.param(["generate", "--run", "{tmp}", "--length", "0"], ["--length", "got 0"],
                 id="generate-length-zero"),
    pytest.param(["evaluate", "{tmp}", "--split", "train"], ["--split", "'train'"],
                 id="evaluate-bad-split"),
]


@pytest.mark.parametrize("argv, needles", ARGPARSE_CASES)
def test_argparse_error(argv, needles, paths, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(fill(argv, paths))
    assert exit_info.value.code == 2
    message = error_message(capsys.readouterr().err, usage=True)
    assert_names(message, needles)


# ---- 1. the command line: errors past parsing (one line, exit 2 or 1) ----------------------------

_TEXT = ["train", "--data.task=text", "--data.level=char", "--run.out={tmp}/out"]
_TAG = ["train", "--data.task=tag", "--run.out={tmp}/out"]

CLI_CASES = [
    pytest.param(["train", "--train.device=cuda:3", "--data.task=tag",
                  "--data.train_file={data}/train.conll", "--run.out={tmp}/out", *TINY],
                 2, ["train.device", "'cuda:3'"], id="train-device-cuda3",
                 marks=pytest.mark.skipif(FEW_GPUS, reason="this machine has cuda:3")),
    pytest.param(["predict", "--run", "{tag}", ""], 1, ["SENTENCE 1 of 1", "at least one word"],
                 id="predict-empty-sentence"),
    pytest.param(["predict", "--run", "{tag}", "the dog", "   "], 1,
                 ["SENTENCE 2 of 2", "at least one word", "'   '"], id="predict-blank-sentence"),
    pytest.param(["generate", "--run", "{tag}"], 1,
                 ["{tag}", "'tag' model", "`rnnkit generate` needs a language-model run"],
                 id="generate-on-tagging-run"),
    pytest.param(["predict", "--run", "{lm}", "hello"], 1,
                 ["{lm}", "'text' model", "`rnnkit predict` needs"], id="predict-on-lm-run"),
    pytest.param([*_TEXT, "--data.train_file={data}/short.txt", *TINY], (1, 2),
                 ["short.txt", "too short"], id="text-too-short-to-split"),
    pytest.param([*_TEXT, "--data.train_file={data}/t30.txt", *TINY], 2,
                 ["data.seq_len", "got 50"], id="text-shorter-than-seq-len"),
    pytest.param([*_TEXT, "--data.train_file={data}/t20.txt", *TINY, "--data.batch_size=16"],
                 2, ["data.batch_size", "got 16"], id="text-fewer-tokens-than-streams"),
    pytest.param([*_TEXT, "--data.train_file={data}/emptydir", *TINY], 1,
                 ["{data}/emptydir", "is a directory"], id="text-train-file-is-directory"),
    pytest.param([*_TAG, "--data.train_file={data}/folder.conll", *TINY], 1,
                 ["{data}/folder.conll", "is a directory"], id="tag-train-file-is-directory"),
    pytest.param([*_TAG, "--data.train_file={data}/corpus_d", *TINY], (1, 2),
                 ["{data}/corpus_d", "directory"], id="tag-train-file-is-suffixless-directory"),
    pytest.param([*_TEXT, "--data.train_file={data}/missing.txt", *TINY], 1,
                 ["{data}/missing.txt", "no such file"], id="text-train-file-missing"),
    pytest.param([*_TAG, "--data.train_file={data}/missing.conll", *TINY], 1,
                 ["{data}/missing.conll", "no such file"], id="tag-train-file-missing"),
    pytest.param(["train", "--data.task=tag", "--data.train_file="], 2,
                 ["data.train_file", "--data.train_file=PATH"], id="tag-train-file-not-given"),
    pytest.param(["train", "--data.task=tag", "--data.train_file={data}/train.conll",
                  "--data.column=upos", "--run.out={tmp}/out", *TINY], 2,
                 ["data.column", "'upos'", "train.conll"], id="column-name-on-conll-file"),
    pytest.param(["train", "--data.task=tag", "--data.train_file={data}/train.conll",
                  "--run.out={data}/afile", *TINY], 2, ["run.out", "{data}/afile", "is a file"],
                 id="run-out-is-a-file"),
    pytest.param(["evaluate", "{data}/emptydir"], 1,
                 ["no checkpoint found in {data}/emptydir", "checkpoints/latest"],
                 id="evaluate-directory-without-checkpoint"),
    pytest.param(["evaluate", "{tmp}/nowhere"], 1, ["{tmp}/nowhere", "does not exist"],
                 id="evaluate-missing-directory"),
    pytest.param(["evaluate", "{notest}", "--split", "test"], 2,
                 ["--split", "no test split", "data.test_file"], id="evaluate-split-test-no-file"),
    pytest.param(["train", "--resume", "--data.task=tag",
                  "--data.train_file={data}/train.conll", "--run.out={data}/emptydir", *TINY],
                 1, ["--resume", "no checkpoint in {data}/emptydir"], id="resume-no-checkpoint"),
    pytest.param(["train", "--data.task=tag", "--data.train_file={data}/train.conll",
                  "--run.out={tmp}/taken", *TINY], 2,
                 ["run.out", "{tmp}/taken", "already holds a checkpoint", "--resume"],
                 id="new-run-into-run-with-checkpoint"),
    pytest.param(["predict", "--run", "{tag}"], 2,
                 ["predict", "give sentences, --input FILE or --stream"],
                 id="predict-nothing-to-predict"),
    pytest.param(["predict", "--run", "{tag}", "--input", "{tmp}/nosuch.conll"], 1,
                 ["{tmp}/nosuch.conll", "no such file"], id="predict-input-missing"),
    pytest.param(["train", "--config", "{data}/bad.toml"], 2,
                 ["{data}/bad.toml", "TOML syntax error", "line 3"], id="config-syntax-error"),
    pytest.param(["train", "--config", "{data}/unknown.toml"], 2,
                 ["{data}/unknown.toml", "unknown key 'train.lrr'", "did you mean 'train.lr'?"],
                 id="config-unknown-key"),
    pytest.param(["train", "--config", "{data}/wrongtype.toml"], 2,
                 ["{data}/wrongtype.toml", "train.lr", "'fast'"], id="config-wrong-type"),
    pytest.param(["train", "--config", "{tmp}/none.toml"], 2,
                 ["{tmp}/none.toml", "no such config file"], id="config-missing"),
]


@pytest.mark.parametrize("argv, code, needles", CLI_CASES)
def test_cli_error(argv, code, needles, paths, capsys):
    argv = fill(argv, paths)
    if "--run.out={tmp}/taken".format_map(paths) in argv:
        shutil.copytree(paths["tag"], Path(paths["tmp"]) / "taken")
    rc, _, err = run_cli(argv, capsys)
    assert rc in (code if isinstance(code, tuple) else (code,)), err
    assert_names(error_message(err), fill(needles, paths))


@pytest.mark.parametrize("temperature", [
    "1e-30",
    "1e-40",
])
def test_generate_tiny_temperature(temperature, paths, capsys):
    """Either it writes text (as greedy decoding would) or it is one line naming
    --temperature."""
    rc, out, err = run_cli(["generate", "--run", paths["lm"], "--temperature", temperature,
                            "--length", "5", "--seed", "0"], capsys)
    if rc == 0:
        assert "Traceback" not in err and PREFIX not in err, err
        assert out.endswith("\n") and len(out) > 1, out
    else:
        assert "temperature" in error_message(err)


def test_generate_blank_prime(paths, capsys):
    """A blank priming text is text to a character model: it continues it, cleanly."""
    rc, out, err = run_cli(["generate", "--run", paths["lm"], " ", "--length", "5",
                            "--seed", "0"], capsys)
    assert rc == 0, err
    assert "Traceback" not in err and PREFIX not in err, err
    assert out.startswith(" ") and out.endswith("\n") and len(out) > 2, out


def test_debug_flag_shows_the_traceback(paths, capsys):
    argv = ["train", "--debug", "--data.task=tag", f"--data.train_file={paths['tmp']}/gone.conll",
            f"--run.out={paths['tmp']}/out", *TINY]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1
    assert "gone.conll" in error_message(err, debug=True)


def test_rnnkit_debug_env_shows_the_traceback(paths, capsys, monkeypatch):
    monkeypatch.setenv("RNNKIT_DEBUG", "1")
    rc, _, err = run_cli(["train", "--config", f"{paths['data']}/unknown.toml"], capsys)
    assert rc == 2
    assert "train.lrr" in error_message(err, debug=True)


def test_rnnkit_debug_zero_shows_no_traceback(paths, capsys, monkeypatch):
    monkeypatch.setenv("RNNKIT_DEBUG", "0")
    rc, _, err = run_cli(["evaluate", f"{paths['data']}/emptydir"], capsys)
    assert rc == 1
    assert "no checkpoint found" in error_message(err)


# ---- 2. the readers, through the command line: FILE:LINE:, exit 1 -----------------------------

READER_CASES = [
    pytest.param(["--data.task=tag", "--data.train_file={data}/cols.conll"],
                 "cols.conll:3:",
                 ["expected 2 space-separated columns", "got 3", "'runs VERB extra'"],
                 id="conll-column-count-changes"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/ud.conll", "--data.format=conll"],
                 "ud.conll:2:", ["CoNLL-U file", "data.format=conllu"],
                 id="conllu-file-forced-as-conll"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/empty.conll"],
                 "empty.conll:", ["no sentences"], id="conll-empty-file"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/comments.conll"],
                 "comments.conll:", ["no sentences"], id="conll-only-comments"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/badutf.conll"],
                 "badutf.conll:4:", ["UTF-8"], id="conll-invalid-utf8"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/tabs.conll"],
                 "tabs.conll:3:", ["without a tab", "'runs VERB'"],
                 id="conll-tab-file-line-no-tab"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/nine.conllu"],
                 "nine.conllu:2:", ["expected 10 tab-separated fields", "got 9"],
                 id="conllu-nine-fields"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/badid.conllu"],
                 "badid.conllu:2:", ["ID", "'x'"], id="conllu-non-integer-id"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/noxpos.conllu",
                  "--data.column=xpos"],
                 "noxpos.conllu:1:", ["xpos column is empty", "'_'", "--data.column"],
                 id="conllu-chosen-column-empty"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/nocolon.slots"],
                 "nocolon.slots:2:", ["token 2", "'cat'", "word:TAG"],
                 id="slots-token-without-colon"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/twoarrows.slots"],
                 "twoarrows.slots:2:", ["at most one '<=>'", "got 2"], id="slots-two-arrows"),
    pytest.param(["--data.task=classify", "--data.train_file={data}/notab.tsv"],
                 "notab.tsv:3:", ["no tab"], id="tsv-line-without-tab"),
    pytest.param(["--data.task=classify", "--data.train_file={data}/nolabel.tsv"],
                 "nolabel.tsv:2:", ["empty label"], id="tsv-empty-label"),
    pytest.param(["--data.task=tag", "--data.train_file={data}/train.conll",
                  "--data.test_file={data}/cols.conll"],
                 "cols.conll:3:", ["got 3"], id="bad-test-file"),
]


@pytest.mark.parametrize("flags, where, needles", READER_CASES)
def test_reader_error(flags, where, needles, paths, capsys):
    argv = ["train", *fill(flags, paths), *TINY, f"--run.out={paths['tmp']}/out"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 1, err
    message = error_message(err)
    assert message.startswith(f"{paths['data']}/{where}"), message
    assert_names(message, needles)


def test_predict_input_broken_file(paths, capsys):
    rc, _, err = run_cli(["predict", "--run", paths["tag"], "--input",
                          f"{paths['data']}/cols.conll"], capsys)
    assert rc == 1, err
    assert error_message(err).startswith(f"{paths['data']}/cols.conll:3:")


@pytest.mark.parametrize("task, train, test, changed, needles", [
    pytest.param("tag", "train.conll", "the DET\ndog NOUN\n\n", "the DET\ncat QQQ\n\n",
                 ["'QQQ'", "tag"], id="tag-set"),
    pytest.param("classify", "cls.tsv", "pos\tgood\nneg\tbad\n", "pos\tgood\nzzz\tso so\n",
                 ["'zzz'", "label"], id="label-set"),
])
def test_evaluate_refuses_what_the_run_never_had_at_its_line(task, train, test, changed, needles,
                                                            paths, tmp_path, capsys):
    """The test file gained a tag or label after training: refused at its file and line."""
    test_file = tmp_path / f"test{Path(train).suffix}"
    test_file.write_text(test)
    run = _train(tmp_path / "run", f"--data.task={task}",
                 f"--data.train_file={paths['data']}/{train}", f"--data.test_file={test_file}")
    test_file.write_text(changed)
    rc, _, err = run_cli(["evaluate", str(run)], capsys)
    assert rc == 1, err
    message = error_message(err)
    assert message.startswith(f"{test_file}:2:"), message
    assert_names(message, needles)


# ---- 3. damaged checkpoints, through rnnkit evaluate: exit 1, the file named ------------------


class _Trap:
    """Unpickling this creates ``path``: a pickle that must never be loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_instead(step: Path, trap: Path, *, fix_hash: bool) -> None:
    model = step / "model.safetensors"
    torch.save({"weight": torch.zeros(2), "payload": _Trap(str(trap))}, model)
    if fix_hash:  # as if state.json was written for it: only the parser stands in the way
        doc = json.loads((step / "state.json").read_text())
        doc["files"]["model.safetensors"] = hashlib.sha256(model.read_bytes()).hexdigest()
        (step / "state.json").write_text(json.dumps(doc))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _point_latest_at_missing(step: Path, *, drop_best: bool) -> None:
    ckdir = step.parent
    (ckdir / "latest").write_text(json.dumps({"step": 99, "dir": "step-00000099"}))
    if drop_best:
        (ckdir / "best").unlink()


CHECKPOINT_CASES = [
    pytest.param(lambda s, t: _truncate(s / "model.safetensors"), [],
                 ["{step}/model.safetensors", "corrupt or truncated"], id="truncated-model"),
    pytest.param(lambda s, t: _truncate(s / "state.safetensors"), [],
                 ["{step}/state.safetensors", "corrupt or truncated"], id="truncated-state"),
    pytest.param(lambda s, t: (s / "state.json").write_text("{not json at all"), [],
                 ["{step}/state.json", "not valid JSON"], id="garbage-state-json"),
    pytest.param(lambda s, t: (s / "state.json").write_text(""), [],
                 ["{step}/state.json", "is empty"], id="empty-state-json"),
    pytest.param(lambda s, t: (s / "model.safetensors").unlink(), [],
                 ["{step}/model.safetensors", "is missing", "incomplete"], id="deleted-model"),
    pytest.param(lambda s, t: _pickle_instead(s, t, fix_hash=False), [],
                 ["{step}/model.safetensors", "corrupt or truncated"], id="pickle-as-model"),
    pytest.param(lambda s, t: _pickle_instead(s, t, fix_hash=True), [],
                 ["{step}/model.safetensors", "not a valid safetensors file"],
                 id="pickle-as-model-matching-hash"),
    pytest.param(lambda s, t: _point_latest_at_missing(s, drop_best=False),
                 ["--checkpoint", "latest"],
                 ["{ckdir}/latest", "step-00000099", "does not exist"],
                 id="latest-names-missing-step"),
    pytest.param(lambda s, t: _point_latest_at_missing(s, drop_best=True), [],
                 ["{ckdir}/latest", "step-00000099", "does not exist"],
                 id="latest-names-missing-step-no-best"),
    pytest.param(lambda s, t: (s.parent / "latest").write_text("garbage"),
                 ["--checkpoint", "latest"],
                 ["{ckdir}/latest", "not a valid checkpoint pointer"], id="garbage-pointer"),
]


@pytest.mark.parametrize("damage, flags, needles", CHECKPOINT_CASES)
def test_damaged_checkpoint(damage, flags, needles, tag_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tag_run, run)
    ckdir = run / "checkpoints"
    step = ckdir / json.loads((ckdir / "latest").read_text())["dir"]
    trap = tmp_path / "UNPICKLED"
    damage(step, trap)
    rc, _, err = run_cli(["evaluate", str(run), *flags], capsys)
    assert rc == 1, err
    message = error_message(err)
    assert_names(message, [n.format(step=step, ckdir=ckdir) for n in needles])
    assert not trap.exists(), "the pickle was unpickled"


@pytest.mark.parametrize("which", ["model.safetensors", "latest"])
def test_evaluate_a_file(which, tag_run, capsys):
    path = next(tag_run.rglob(which))
    rc, _, err = run_cli(["evaluate", str(path)], capsys)
    assert rc == 1, err
    assert_names(error_message(err), [str(path), "no checkpoint found"])


# ---- 4. the Python API: the exception names the argument ---------------------------------------


def msg(arg: str, *values: str) -> str:
    """A ``match`` pattern: ``arg`` as a whole word and every value literally, in any order."""
    looks = [rf"(?=.*(?<![\w.]){re.escape(arg)}(?!\w))"]
    looks += [f"(?=.*{re.escape(v)})" for v in values]
    return "(?s)^" + "".join(looks)


def _lstm(x, **kw):
    return rnnkit.LSTM(10, 20)(x, **kw)


def _ctrnn(dt):
    torch.manual_seed(0)
    return rnnkit.CTRNN(2, 4, dt=None)(torch.randn(5, 3, 2), dt=dt)


def _scan(lengths):
    cell = rnnkit.make_cell("elman", 3, 4)
    return rnnkit.scan(cell, torch.randn(5, 2, 3), lengths=lengths)


API_CASES = [
    pytest.param(lambda: _lstm(torch.randn(5, 3, 7)), ValueError,
                 msg("input", "input_size 10", "got 7"), id="lstm-wrong-feature-size"),
    pytest.param(lambda: _lstm(torch.randn(5, 3, 10), lengths=[5, 6, 2]), ValueError,
                 msg("lengths", "[1, 5]", "got 6"), id="lstm-length-above-T"),
    pytest.param(lambda: _lstm(torch.randn(5, 3, 10), lengths=[5, 0, 2]), ValueError,
                 msg("lengths", "[1, 5]", "got 0"), id="lstm-length-zero"),
    pytest.param(lambda: _lstm(torch.randn(5, 3, 10), lengths=[5, 2]), ValueError,
                 msg("lengths", "(3,)", "(2,)"), id="lstm-lengths-count"),
    pytest.param(lambda: rnnkit.RecurrentNetwork("nope", 3, 4), ValueError,
                 msg("cell", "'nope'", "lstm"), id="network-unknown-cell"),
    pytest.param(lambda: _ctrnn(torch.zeros(5, 3)), ValueError, msg("dt", "positive", "0.0"),
                 id="ctrnn-dt-zero"),
    pytest.param(lambda: _ctrnn(-torch.ones(5, 3)), ValueError, msg("dt", "positive", "-1.0"),
                 id="ctrnn-dt-negative"),
    pytest.param(lambda: _ctrnn(torch.full((5, 3), float("nan"))), ValueError,
                 msg("dt", "finite", "nan"), id="ctrnn-dt-nan"),
    pytest.param(lambda: _ctrnn(None), TypeError, msg("dt", "dt=None", "NoneType"),
                 id="ctrnn-dt-missing"),
    pytest.param(lambda: _ctrnn(torch.ones(5, 3, dtype=torch.long)), TypeError,
                 msg("dt", "floating-point", "torch.int64"), id="ctrnn-dt-integer"),
    pytest.param(lambda: _ctrnn(torch.ones(4, 3)), ValueError, msg("dt", "(5, 3)", "got (4, 3)"),
                 id="ctrnn-dt-wrong-shape"),
    pytest.param(lambda: rnnkit.CTRNN(2, 4)(torch.randn(5, 3, 2), dt=torch.ones(5, 3)),
                 ValueError, msg("dt", "expected None", "dt=1.0"), id="ctrnn-constant-dt-given-dt"),
    pytest.param(lambda: rnnkit.CTRNN(2, 4, dt=0.0), ValueError, msg("dt", "> 0", "0.0"),
                 id="ctrnn-constructor-dt-zero"),
    pytest.param(lambda: _scan(torch.tensor([5.0, 2.0])), TypeError,
                 msg("lengths", "integer", "torch.float32"), id="scan-float-lengths"),
    pytest.param(lambda: _scan(torch.tensor([5, 2, 1])), ValueError,
                 msg("lengths", "(2,)", "(3,)"), id="scan-lengths-count"),
    pytest.param(lambda: _scan(torch.tensor([6, 2])), ValueError, msg("lengths", "[1, 5]", "6"),
                 id="scan-length-above-T"),
    pytest.param(lambda: _scan(torch.tensor([0, 2])), ValueError, msg("lengths", "[1, 5]", "0"),
                 id="scan-length-zero"),
    pytest.param(lambda: _scan("52"), TypeError, msg("lengths", "str"), id="scan-lengths-str"),
    pytest.param(lambda: chunk_f1([["B-a", "O"]], [["B-a"]]), ValueError,
                 msg("pred[0]", "2 tags", "got 1"), id="chunk-f1-sentence-lengths-differ"),
    pytest.param(lambda: chunk_f1([["B-a", "O"]], [["B-a", "O"], ["O"]]), ValueError,
                 msg("pred", "1 gold", "2 predicted"), id="chunk-f1-sentence-counts-differ"),
    pytest.param(lambda: Vocab(["a"], min_count=0), ValueError, msg("min_count", ">= 1", "0"),
                 id="vocab-min-count-zero"),
    pytest.param(lambda: Vocab("abc"), TypeError, msg("tokens", "one str"),
                 id="vocab-tokens-a-str"),
    pytest.param(lambda: Vocab(["a"], specials="<pad>"), TypeError,
                 msg("specials", "'<pad>'"), id="vocab-specials-a-str"),
    pytest.param(lambda: Vocab(["a"], specials=("x", "x")), ValueError,
                 msg("specials", "distinct", "('x', 'x')"), id="vocab-specials-repeated"),
    pytest.param(lambda: Vocab.from_list(["a", "b"]), ValueError,
                 msg("tokens", "'<pad>'", "['a', 'b']"), id="vocab-from-list-without-specials"),
    pytest.param(lambda: Vocab(["a"]).token(99), IndexError, msg("index", "< 3", "99"),
                 id="vocab-index-out-of-range"),
    pytest.param(lambda: Vocab(["a"]).encode("a b"), TypeError, msg("tokens", "'a b'"),
                 id="vocab-encode-a-str"),
]


@pytest.mark.parametrize("call, error, pattern", API_CASES)
def test_api_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
