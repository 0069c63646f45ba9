"""Checkpoints: weights in safetensors, the rest in JSON, written atomically, never unpickled.

One checkpoint is one directory; a run's checkpoints directory holds several and two pointers::

    <ckdir>/
      step-00000500/
        model.safetensors   the model's state_dict
        state.safetensors   every tensor found inside the trainer state
        state.json          {"format": "rnnkit-checkpoint", "version": 1, "step": 500,
                             "config": {...}, "state": <trainer state, tensors by reference>,
                             "files": {"model.safetensors": "<sha256>", ...}, ...}
      latest                {"step": 500, "dir": "step-00000500"}
      best                  same shape, optional

A save writes the three files into ``step-XXXXXXXX.tmp-<pid>-<random>/``, fsyncs them and the
directory, renames it to its final name, and only then moves the pointers (temp file, fsync,
``os.replace``): a process killed at any instant leaves ``latest`` naming a complete checkpoint,
plus at most some ``*.tmp-*`` leftovers that :func:`clean_partial` removes.

A load checks every file against the SHA-256 recorded at save time before parsing it, and turns
every problem into a :class:`CheckpointError` that names the file. Nothing is ever unpickled:
tensors go through ``safetensors``, the rest through ``json``.

>>> import torch
>>> path = save_checkpoint("runs/x/checkpoints", 500, model.state_dict(),
...                        {"optimizer": opt.state_dict(), "rng": torch.get_rng_state()},
...                        {"model": {"cell": "lstm"}})                  # doctest: +SKIP
>>> ckpt = load_checkpoint("runs/x")                                       # doctest: +SKIP
>>> load_model_weights(model, ckpt)                                        # doctest: +SKIP
>>> opt.load_state_dict(ckpt.trainer_state["optimizer"])                   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import types
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load  # parses bytes; never pickle
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from .._checks import check_positive_int
from ..errors import CheckpointError  # noqa: F401 (importable here too)

FORMAT, VERSION = "rnnkit-checkpoint", 1
MODEL_FILE, TENSORS_FILE, STATE_FILE = "model.safetensors", "state.safetensors", "state.json"
POINTERS = ("latest", "best")
_STEP_DIR = re.compile(r"step-(\d{8,})")  # 8 digits, more past step 99,999,999
_PARTIAL = re.compile(r"(step-\d{8,}|latest|best)\.tmp-.*")

# Markers of the JSON encoding of the trainer state: a dict with exactly one of these keys.
_TENSOR, _TUPLE, _ITEMS, _FLOAT = "__tensor__", "__tuple__", "__items__", "__float__"
_MARKERS = (_TENSOR, _TUPLE, _ITEMS, _FLOAT)


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``trainer_state`` has the structure it was saved with (dicts with
    their key types, lists, tuples, tensors, scalars); its tensors are on the CPU."""

    directory: Path
    step: int
    config: dict
    model_state: dict[str, Tensor]
    trainer_state: Any


# ---- saving ----------------------------------------------------------------------------------


def save_checkpoint(ckdir, step: int, model_state: dict[str, Tensor], trainer_state,
                    config: dict, *, keep: int = 2, best: bool = False) -> Path:
    """Save ``step-XXXXXXXX/`` in ``ckdir`` atomically, point ``latest`` (and, with ``best``,
    ``best``) at it, then delete all but the ``keep`` newest checkpoints and the best one.

    ``trainer_state`` may nest dicts (any of str/int/float/bool/None/tuple keys), lists,
    tuples, tensors, None, bool, int, float (inf and nan too) and str; anything else raises
    TypeError naming where it is, before anything is written. ``config`` must be plain JSON.
    Re-saving a step that exists replaces it. Returns the checkpoint's directory.
    """
    check_positive_int("step", step, minimum=0)
    check_positive_int("keep", keep)
    model_tensors = _model_tensors(model_state)
    state_tensors: dict[str, Tensor] = {}
    state = _encode(trainer_state, (), state_tensors, set())
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    _check_plain_json(config, "config")
    model_bytes = _serialize(model_tensors, "model_state")
    state_bytes = _serialize(state_tensors, "trainer_state")
    from rnnkit import __version__  # here, not at import: rnnkit/__init__ may import us one day

    doc = {"format": FORMAT, "version": VERSION, "step": step, "config": config,
           "state": state,
           "files": {MODEL_FILE: _sha256(model_bytes), TENSORS_FILE: _sha256(state_bytes)},
           "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "rnnkit": __version__}
    doc_bytes = json.dumps(doc, indent=1).encode()

    ckdir = Path(ckdir)
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final, tmp = ckdir / name, ckdir / f"{name}.tmp-{_tag()}"
    tmp.mkdir()
    try:
        _write_synced(tmp / MODEL_FILE, model_bytes)
        _write_synced(tmp / TENSORS_FILE, state_bytes)
        _write_synced(tmp / STATE_FILE, doc_bytes)
        _fsync_dir(tmp)
        _install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(ckdir)  # the rename is on disk before a pointer names it
    pointer = json.dumps({"step": step, "dir": name}).encode()
    for which in ("latest", "best") if best else ("latest",):
        tmp_pointer = ckdir / f"{which}.tmp-{_tag()}"
        _write_synced(tmp_pointer, pointer)
        os.replace(tmp_pointer, ckdir / which)
    _fsync_dir(ckdir)
    _prune(ckdir, keep)
    return final


def clean_partial(ckdir) -> list[Path]:
    """Remove what interrupted saves left in ``ckdir`` (``*.tmp-*`` directories and pointer
    temp files); returns what was removed. Call it when no save is running."""
    ckdir = Path(ckdir)
    if not ckdir.is_dir():
        return []
    named = _pointed_names(ckdir)
    removed = []
    for p in sorted(ckdir.iterdir()):
        if _PARTIAL.fullmatch(p.name) and p.name not in named:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _install(tmp: Path, final: Path) -> None:
    """Rename the complete checkpoint ``tmp`` to ``final``, replacing any ``final`` there."""
    if not final.exists():
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):  # one atomic swap: a pointer naming ``final`` never dangles
        _remove_dir(tmp)       # ``tmp`` now holds the old checkpoint
        return
    # No atomic swap on this system: move the old one aside first. A pointer naming ``final``
    # dangles between the two renames.
    aside = final.with_name(f"{final.name}.tmp-{_tag()}-old")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)
        raise
    _remove_dir(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or the file system cannot."""
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _prune(ckdir: Path, keep: int) -> None:
    """Delete all step directories but the ``keep`` newest and those a pointer names."""
    named = _pointed_names(ckdir)
    for _, path in _step_dirs(ckdir)[:-keep]:
        if path.name not in named:
            _remove_dir(path)


def _remove_dir(path: Path) -> None:
    # Renamed first, so a kill half-way through leaves a ``.tmp-`` leftover, not a step
    # directory with files missing.
    doomed = path.with_name(f"{path.name.split('.tmp-')[0]}.tmp-{_tag()}-del")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def _step_dirs(ckdir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in ckdir.iterdir()
             if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return sorted(found)


def _pointed_names(ckdir: Path) -> set[str]:
    """The directory names the pointers in ``ckdir`` hold (unreadable pointers name nothing)."""
    names = set()
    for which in POINTERS:
        try:
            names.add(json.loads((ckdir / which).read_bytes())["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return names


def _model_tensors(model_state) -> dict[str, Tensor]:
    if not isinstance(model_state, dict):
        raise TypeError(f"model_state: expected a dict of tensors (a state_dict), got "
                        f"{type(model_state).__name__}")
    out = {}
    for key, value in model_state.items():
        if not isinstance(key, str):
            raise TypeError(f"model_state: keys must be str, got {key!r}")
        if not isinstance(value, Tensor):
            raise TypeError(f"model_state[{key!r}]: expected a tensor, got "
                            f"{type(value).__name__}")
        out[key] = _snapshot(value, f"model_state[{key!r}]")
    return out


def _snapshot(t: Tensor, where: str) -> Tensor:
    if t.layout != torch.strided or t.is_quantized:
        raise TypeError(f"{where}: cannot save a {t.layout} tensor, only dense ones")
    # safetensors refuses shared storage and views; a copy also freezes the value now.
    return t.detach().cpu().contiguous().clone()


def _serialize(tensors: dict[str, Tensor], what: str) -> bytes:
    try:
        return safetensors_save(tensors, metadata={"format": "pt"})
    except Exception as e:  # e.g. a dtype safetensors has no code for
        raise TypeError(f"{what}: safetensors cannot store these tensors: {e}") from None


def _encode(obj, path: tuple, tensors: dict[str, Tensor], active: set[int]):
    """``obj`` as JSON; its tensors go into ``tensors`` under keys like
    ``optimizer.state.0.exp_avg`` and are replaced by ``{"__tensor__": key}``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {_FLOAT: repr(obj)}  # 'inf', '-inf', 'nan'
    if isinstance(obj, Tensor):
        key = ".".join(str(k) for k in path) or "tensor"
        unique, n = key, 1
        while unique in tensors:  # e.g. keys 0 and "0" side by side
            n += 1
            unique = f"{key}#{n}"
        tensors[unique] = _snapshot(obj, _where(path))
        return {_TENSOR: unique}
    if not isinstance(obj, (dict, list, tuple)):
        raise TypeError(f"{_where(path)}: cannot save {_kind(obj)} (a checkpoint holds tensors, "
                        "dicts, lists, tuples, str, int, float, bool and None)")
    if id(obj) in active:
        raise TypeError(f"{_where(path)}: cannot save a container that contains itself")
    active.add(id(obj))
    try:
        if isinstance(obj, list):
            return [_encode(v, (*path, i), tensors, active) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):  # NamedTuples too; they come back as plain tuples
            return {_TUPLE: [_encode(v, (*path, i), tensors, active) for i, v in enumerate(obj)]}
        plain = all(isinstance(k, str) for k in obj) and not (len(obj) == 1 and
                                                              next(iter(obj)) in _MARKERS)
        if plain:
            return {k: _encode(v, (*path, k), tensors, active) for k, v in obj.items()}
        for k in obj:
            if not _plain_key(k):
                raise TypeError(f"{_where(path)}: cannot save a dict key of type "
                                f"{type(k).__name__} ({k!r}); keys may be str, int, float, "
                                "bool, None or tuples of these")
        return {_ITEMS: [[_encode(k, path, {}, active), _encode(v, (*path, k), tensors, active)]
                         for k, v in obj.items()]}
    finally:
        active.discard(id(obj))


def _plain_key(k) -> bool:
    if k is None or isinstance(k, (bool, int, float, str)):
        return True
    return isinstance(k, tuple) and all(_plain_key(x) for x in k)


def _where(path: tuple) -> str:
    return "trainer_state" + "".join(f"[{k!r}]" for k in path)


def _kind(obj) -> str:
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                        partial)):
        return "a function"
    cls = type(obj)
    name = cls.__qualname__ if cls.__module__ == "builtins" else \
        f"{cls.__module__}.{cls.__qualname__}"
    return f"a value of type {name}"


def _check_plain_json(obj, where: str) -> None:
    """Raise TypeError naming where ``obj`` holds something JSON cannot (tuples become lists)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain_json(v, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str (plain JSON), got {k!r}")
            _check_plain_json(v, f"{where}[{k!r}]")
    else:
        raise TypeError(f"{where}: cannot save {_kind(obj)} in the config (plain JSON only)")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; there a rename is as durable as it gets
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tag() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- finding -------------------------------------------------------------------------------


def find_checkpoint(path, which: str = "latest") -> Path | None:
    """The step directory ``which`` (``"latest"`` or ``"best"``) names, or None if none was
    saved yet. ``path`` is a run directory (holding ``checkpoints/``), a checkpoints directory
    (holding ``latest``) or one step directory (returned as it is). A pointer that cannot be
    read or names a missing directory raises CheckpointError."""
    if which not in POINTERS:
        raise ValueError(f"which: expected 'latest' or 'best', got {which!r}")
    path = Path(path)
    if _is_step_dir(path):
        return path
    ckdir = _checkpoints_dir(path)
    if ckdir is None or not (ckdir / which).exists():
        return None
    return ckdir / _read_pointer(ckdir / which)[1]


def _is_step_dir(path: Path) -> bool:
    return (path / STATE_FILE).is_file() or (_STEP_DIR.fullmatch(path.name) is not None
                                             and path.is_dir())


def _checkpoints_dir(path: Path) -> Path | None:
    if any((path / w).exists() for w in POINTERS):
        return path
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    return None


def _read_pointer(pointer: Path) -> tuple[int, str]:
    """``(step, dir)`` of a pointer file, checked: the directory exists next to it."""
    try:
        data = json.loads(pointer.read_bytes())
    except OSError as e:
        raise CheckpointError(f"cannot read {pointer}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{pointer} is not a valid checkpoint pointer: it is not JSON "
                              f"({e}); expected {{\"step\": N, \"dir\": \"step-...\"}}") from None
    name = data.get("dir") if isinstance(data, dict) else None
    step = data.get("step") if isinstance(data, dict) else None
    if (not isinstance(name, str) or not _STEP_DIR.fullmatch(name)
            or not isinstance(step, int) or isinstance(step, bool)):
        raise CheckpointError(f"{pointer} is not a valid checkpoint pointer: expected "
                              f"{{\"step\": N, \"dir\": \"step-...\"}}, found {data!r:.200}")
    if not (pointer.parent / name).is_dir():
        raise CheckpointError(f"{pointer} names {name}, but {pointer.parent / name} does not "
                              "exist (deleted by hand?)")
    return step, name


# ---- loading -------------------------------------------------------------------------------


def load_checkpoint(path, *, which: str = "latest", map_location="cpu") -> Checkpoint:
    """Load and verify the checkpoint ``path`` leads to (see :func:`find_checkpoint`).

    Every file is checked against the SHA-256 recorded at save time; any problem raises
    CheckpointError naming the file. ``map_location`` is where ``model_state`` goes; the
    trainer state stays on the CPU (RNG states must, and ``optimizer.load_state_dict`` moves
    its tensors to the parameters' device itself).
    """
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError):
        raise ValueError(f"map_location: expected a device such as 'cpu' or 'cuda:0', got "
                         f"{map_location!r}") from None
    path = Path(path)
    directory = find_checkpoint(path, which)
    if directory is None:
        raise CheckpointError(_nothing_found(path, which))
    doc = _read_state_json(directory / STATE_FILE)
    if not _is_step_dir(path):  # reached through a pointer: both must name the same step
        pointer = _checkpoints_dir(path) / which
        step = _read_pointer(pointer)[0]
        if step != doc["step"]:
            raise CheckpointError(f"{pointer} says step {step}, but {directory / STATE_FILE} "
                                  f"says step {doc['step']}")
    model_state = _read_tensors(directory / MODEL_FILE, doc["files"][MODEL_FILE])
    state_tensors = _read_tensors(directory / TENSORS_FILE, doc["files"][TENSORS_FILE])
    if device.type != "cpu":
        model_state = {k: v.to(device) for k, v in model_state.items()}
    trainer_state = _decode(doc["state"], state_tensors, directory)
    return Checkpoint(directory=directory, step=doc["step"], config=doc["config"],
                      model_state=model_state, trainer_state=trainer_state)


def load_model_weights(model: nn.Module, ckpt: Checkpoint) -> None:
    """Copy ``ckpt``'s weights into ``model``; the keys and shapes must match exactly."""
    if not isinstance(ckpt, Checkpoint):
        raise TypeError(f"ckpt: expected a Checkpoint (from load_checkpoint), got "
                        f"{type(ckpt).__name__}")
    where = ckpt.directory / MODEL_FILE
    expected, found = model.state_dict(), ckpt.model_state
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): " + _listing(
            [f"{k} (the model has {_shape(expected[k])})" for k in missing]))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): " + _listing(
            [f"{k} (the file has {_shape(found[k])})" for k in unexpected]))
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): " + _listing(
            [f"{k} (the model has {_shape(expected[k])}, the file has {_shape(found[k])})"
             for k in wrong]))
    if problems:
        raise CheckpointError(f"{where} does not fit this model: " + "; ".join(problems))
    try:
        model.load_state_dict(found, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where} does not fit this model: {e}") from None


def _listing(items: list[str], first: int = 5) -> str:
    more = f", ... ({len(items) - first} more)" if len(items) > first else ""
    return ", ".join(items[:first]) + more


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _nothing_found(path: Path, which: str) -> str:
    if not path.exists():
        return f"no checkpoint found in {path}: it does not exist"
    if path.is_file():
        return (f"no checkpoint found in {path}: it is a file; expected a run directory "
                f"(--run.out of `rnnkit train`), its checkpoints/ or one step-N directory")
    ckdir = _checkpoints_dir(path)
    expected = (ckdir if ckdir is not None else path / "checkpoints") / which
    if which == "best":
        return (f"no best checkpoint in {path}: expected {expected} (written by `rnnkit train` "
                "when a validation result improves); try which='latest'")
    return f"no checkpoint found in {path}: expected {expected} (written by `rnnkit train`)"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the checkpoint {path.parent} is "
                              "incomplete") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def _read_state_json(path: Path) -> dict:
    data = _read_bytes(path)
    if not data.strip():
        raise CheckpointError(f"{path} is empty (an interrupted copy, or a truncated file)")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnkit checkpoint (it has no "
                              f"\"format\": \"{FORMAT}\")")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: \"version\" should be a positive int, found {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer rnnkit (checkpoint format "
                              f"version {version}; this rnnkit reads version {VERSION} and "
                              "older): upgrade rnnkit to load it")
    checks = {"step": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "config": lambda v: isinstance(v, dict),
              "state": lambda v: True,
              "files": lambda v: isinstance(v, dict) and all(
                  isinstance(v.get(f), str) and re.fullmatch(r"[0-9a-f]{64}", v[f])
                  for f in (MODEL_FILE, TENSORS_FILE))}
    for key, ok in checks.items():
        if key not in doc:
            raise CheckpointError(f"{path} is damaged: the field \"{key}\" is missing")
        if not ok(doc[key]):
            raise CheckpointError(f"{path} is damaged: the field \"{key}\" is malformed "
                                  f"(found {doc[key]!r:.200})")
    return doc


def _read_tensors(path: Path, sha256: str) -> dict[str, Tensor]:
    data = _read_bytes(path)
    if not data:
        raise CheckpointError(f"{path} is empty (an interrupted copy, or a truncated file)")
    if _sha256(data) != sha256:
        raise CheckpointError(f"{path} is corrupt or truncated: its SHA-256 differs from the "
                              "one recorded at save time")
    try:  # parse the very bytes that were verified
        return safetensors_load(data)
    except Exception as e:  # safetensors' own error type, or whatever a bad header raises
        raise CheckpointError(f"{path} is not a valid safetensors file ({e})") from None


class _Malformed(Exception):
    pass


def _decode(obj, tensors: dict[str, Tensor], directory: Path):
    """Invert :func:`_encode`."""
    try:
        return _decode_value(obj, tensors, directory)
    except _Malformed as e:
        raise CheckpointError(f"{directory / STATE_FILE} is damaged: {e}") from None


def _decode_value(obj, tensors: dict[str, Tensor], directory: Path):
    if isinstance(obj, list):
        return [_decode_value(v, tensors, directory) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1 and (marker := next(iter(obj))) in _MARKERS:
        value = obj[marker]
        if marker == _TENSOR:
            if not isinstance(value, str):
                raise _Malformed(f"a tensor reference is {value!r:.100}, not a key")
            if value not in tensors:
                raise CheckpointError(f"{directory / TENSORS_FILE} has no tensor {value!r}, "
                                      f"which {STATE_FILE} refers to")
            return tensors[value]
        if marker == _FLOAT:
            if value not in ("inf", "-inf", "nan"):
                raise _Malformed(f"{value!r:.100} is not 'inf', '-inf' or 'nan'")
            return float(value)
        if not isinstance(value, list):
            raise _Malformed(f"{marker} holds {type(value).__name__}, not a list")
        if marker == _TUPLE:
            return tuple(_decode_value(v, tensors, directory) for v in value)
        out = {}
        for pair in value:  # _ITEMS: [[key, value], ...]
            if not (isinstance(pair, list) and len(pair) == 2):
                raise _Malformed(f"{_ITEMS} holds {pair!r:.100}, not a [key, value] pair")
            key = _decode_value(pair[0], tensors, directory)
            if not _plain_key(key):
                raise _Malformed(f"{_ITEMS} has a key {key!r:.100} that cannot be a dict key")
            out[key] = _decode_value(pair[1], tensors, directory)
        return out
    return {k: _decode_value(v, tensors, directory) for k, v in obj.items()}
