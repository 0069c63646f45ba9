"""Checkpoints: exact round trips, pruning, atomicity under a kill at any point, and a clear
CheckpointError naming the file for every kind of damage; nothing is ever unpickled."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.training import checkpoint as ck
from rnnkit.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    clean_partial,
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)

CONFIG = {"model": {"cell": "lstm", "hidden_size": 5}, "train": {"lr": 0.01, "periods": [1, 2]}}


def assert_same(a, b, where="state"):
    """Same structure, same Python types (tuple stays tuple, int keys stay int), tensors with
    the same dtype, shape and bytes (NaN payloads included)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert_bytes = [t.contiguous().reshape(-1).view(torch.uint8).tolist() for t in (a, b)]
        assert assert_bytes[0] == assert_bytes[1], where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and repr(a) == repr(b), where  # repr: -0.0 stays -0.0


def small_save(ckdir, step, *, value=0.0, best=False, keep=2):
    model = {"w": torch.full((2, 3), float(value)), "b": torch.arange(3.0)}
    state = {"step": step, "opt": {0: {"m": torch.full((2,), float(step))}}}
    return save_checkpoint(ckdir, step, model, state, CONFIG, keep=keep, best=best)


# ---- round trips ---------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnnkit.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 1)


def make_training():
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.9)
    return net, opt, step_lr, plateau


def train(net, opt, step_lr, plateau, carry, steps):
    """Truncated BPTT over random chunks drawn from the global RNG; returns the carried state."""
    for _ in range(steps):
        x = torch.randn(2, 4, 3)
        out, carry = net.lstm(x, carry)
        loss = net.head(out).pow(2).mean() + torch.rand(()) * 1e-3
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_lr.step()
        plateau.step(loss.item())
        carry = tuple(s.detach() for s in carry)
    return carry


def test_resumed_training_is_bitwise_identical_to_uninterrupted(tmp_path):
    torch.manual_seed(0)
    net, opt, step_lr, plateau = make_training()
    carry = train(net, opt, step_lr, plateau, None, 3)
    assert plateau.best == plateau.best and opt.state_dict()["state"]  # Adam has state now
    trainer_state = {"optimizer": opt.state_dict(), "step_lr": step_lr.state_dict(),
                     "plateau": plateau.state_dict(), "rng": {"torch": torch.get_rng_state()},
                     "carry": carry, "step": 3, "best": math.inf}
    path = save_checkpoint(tmp_path / "run" / "checkpoints", 3, net.state_dict(), trainer_state,
                           CONFIG)
    train(net, opt, step_lr, plateau, carry, 3)  # the uninterrupted run goes on
    expected = {k: v.clone() for k, v in net.state_dict().items()}

    torch.manual_seed(123)  # a different process: other weights, other RNG
    net2, opt2, step_lr2, plateau2 = make_training()
    ckpt = load_checkpoint(tmp_path / "run")
    assert (ckpt.directory, ckpt.step, ckpt.config) == (path, 3, CONFIG)
    ts = ckpt.trainer_state
    assert ts["best"] == math.inf and isinstance(ts["carry"], tuple)
    assert ts["optimizer"]["state"][0]["step"].dim() == 0  # Adam's step: 0-dim, as saved
    load_model_weights(net2, ckpt)
    opt2.load_state_dict(ts["optimizer"])
    step_lr2.load_state_dict(ts["step_lr"])
    plateau2.load_state_dict(ts["plateau"])
    torch.set_rng_state(ts["rng"]["torch"])
    train(net2, opt2, step_lr2, plateau2, ts["carry"], 3)
    for k, v in net2.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_trainer_state_round_trips_types_keys_and_dtypes(tmp_path):
    nan_payload = torch.tensor([0x7FC00123, 0x7F800001], dtype=torch.int32).view(torch.float32)
    state = {
        "int_keys": {0: "a", 7: {"deep": (1, 2.5, None)}},
        "mixed_keys": {None: 1, 2.5: 2, (1, "x"): 3, "s": 4, -3: 5},
        "tuple": (1, (2, [3, (4,)]), ()),
        "floats": [math.inf, -math.inf, math.nan, -0.0, 1e-310, 0.1],
        "scalars": [None, True, False, 2**70, -1, "ünï"],
        "marker_lookalike": {"__tensor__": "not a reference"},
        "zero_dim": [torch.tensor(3.0), torch.tensor(7), torch.tensor(True)],
        "dtypes": {str(dt): torch.arange(6).reshape(2, 3).to(dt)
                   for dt in (torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool)},
        "nan_payloads": nan_payload,
        "empty": torch.zeros(0, 4, dtype=torch.float64),
        "same_name": {0: torch.ones(1), "0": torch.zeros(1)},  # both want the key same_name.0
        "view": torch.arange(10.0)[::3],  # non-contiguous view
        "empty_containers": [{}, [], ()],
    }
    save_checkpoint(tmp_path, 5, {}, state, {})
    loaded = load_checkpoint(tmp_path).trainer_state
    assert_same(state, loaded)
    with open(tmp_path / "step-00000005" / "state.json") as f:
        json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))


def test_the_saved_values_are_frozen_at_save_time(tmp_path):
    t = torch.zeros(3)
    save_checkpoint(tmp_path, 1, {"w": t}, {"t": t}, {})
    t += 1  # training goes on, in place
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.model_state["w"].sum() == 0 and ckpt.trainer_state["t"].sum() == 0


@pytest.mark.parametrize("state, message", [
    ({"scheduler": {"fn": lambda x: x}}, r"trainer_state\['scheduler'\]\['fn'\]: cannot save a "
                                         "function"),
    ({"a": [1, {2, 3}]}, r"trainer_state\['a'\]\[1\]: cannot save a value of type set"),
    ({"d": torch.float32}, r"trainer_state\['d'\]: cannot save a value of type torch.dtype"),
    ({"k": {torch.zeros(1): 1}}, r"trainer_state\['k'\]: cannot save a dict key of type Tensor"),
])
def test_unsupported_values_raise_type_error_naming_the_path(tmp_path, state, message):
    with pytest.raises(TypeError, match=message):
        save_checkpoint(tmp_path / "ck", 1, {}, state, {})
    assert not (tmp_path / "ck").exists()  # nothing written


def test_bad_arguments_to_save_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"model_state\['w'\]: expected a tensor"):
        save_checkpoint(tmp_path, 1, {"w": 1.0}, {}, {})
    with pytest.raises(TypeError, match=r"config\['run'\]\['out'\]: cannot save"):
        save_checkpoint(tmp_path, 1, {}, {}, {"run": {"out": tmp_path}})
    with pytest.raises(ValueError, match="keep: expected an int >= 1, got 0"):
        save_checkpoint(tmp_path, 1, {}, {}, {}, keep=0)
    with pytest.raises(ValueError, match="step: expected an int >= 0"):
        save_checkpoint(tmp_path, -1, {}, {}, {})
    assert list(tmp_path.iterdir()) == []


# ---- finding, pointers, pruning ------------------------------------------------------------


def test_load_from_a_run_dir_a_checkpoints_dir_or_a_step_dir(tmp_path):
    ckdir = tmp_path / "run" / "checkpoints"
    small_save(ckdir, 1, best=True)
    step2 = small_save(ckdir, 2)
    assert json.loads((ckdir / "latest").read_text()) == {"step": 2, "dir": "step-00000002"}
    for path in (tmp_path / "run", ckdir, step2):
        assert load_checkpoint(path).step == 2
    assert find_checkpoint(tmp_path / "run", "best") == ckdir / "step-00000001"
    assert load_checkpoint(ckdir, which="best").step == 1
    doc = json.loads((step2 / "state.json").read_text())
    assert doc["format"] == "rnnkit-checkpoint" and doc["version"] == 1
    assert doc["rnnkit"] == rnnkit.__version__ and doc["config"] == CONFIG
    with pytest.raises(ValueError, match="which: expected 'latest' or 'best'"):
        find_checkpoint(ckdir, "newest")


def test_nothing_saved_yet(tmp_path):
    assert find_checkpoint(tmp_path) is None
    assert find_checkpoint(tmp_path / "missing") is None
    with pytest.raises(CheckpointError, match=r"no checkpoint found in .*x: expected .*x"
                                              r"/checkpoints/latest \(written by `rnnkit train`\)"):
        (tmp_path / "x").mkdir()
        load_checkpoint(tmp_path / "x")
    small_save(tmp_path / "x" / "checkpoints", 1)
    assert find_checkpoint(tmp_path / "x", "best") is None
    with pytest.raises(CheckpointError, match=r"no best checkpoint in .*checkpoints/best"):
        load_checkpoint(tmp_path / "x", which="best")


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    for step in range(1, 7):
        small_save(tmp_path, step, best=step == 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best", "latest", "step-00000002", "step-00000005", "step-00000006"]
    assert find_checkpoint(tmp_path, "best").name == "step-00000002"
    small_save(tmp_path, 7, best=True, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "latest", "step-00000007"]
    assert load_checkpoint(tmp_path, which="best").step == load_checkpoint(tmp_path).step == 7


def test_resaving_an_older_step_keeps_what_latest_names(tmp_path):
    for step in (10, 20, 30):
        small_save(tmp_path, step)
    small_save(tmp_path, 15, keep=1)  # e.g. resumed from an earlier checkpoint
    assert find_checkpoint(tmp_path).name == "step-00000015"
    assert {p.name for p in tmp_path.glob("step-*")} == {"step-00000015", "step-00000030"}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "move-aside"])
def test_resaving_a_step_replaces_it(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(ck, "_exchange", lambda a, b: False)
    small_save(tmp_path, 5, value=1.0, best=True)
    small_save(tmp_path, 5, value=2.0)
    ckpt = load_checkpoint(tmp_path, which="best")
    assert ckpt.step == 5 and torch.equal(ckpt.model_state["w"], torch.full((2, 3), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "latest", "step-00000005"]


# ---- atomicity -----------------------------------------------------------------------------


class Killed(BaseException):
    """The process died: nothing after this point runs, not even cleanup."""


def kill_at(monkeypatch, n):
    """From the ``n``-th call on, every fsync/rename/replace/rmtree 'kills' the process."""
    calls = [0]
    real = {name: getattr(os, name) for name in ("fsync", "rename", "replace")}
    real["rmtree"] = shutil.rmtree

    def wrap(name):
        def fn(*args, **kwargs):
            calls[0] += 1
            if calls[0] >= n:
                raise Killed(name)
            return real[name](*args, **kwargs)
        return fn

    for name in ("fsync", "rename", "replace"):
        monkeypatch.setattr(os, name, wrap(name))
    monkeypatch.setattr(shutil, "rmtree", wrap("rmtree"))
    return calls


@pytest.mark.parametrize("resave", [False, True], ids=["new-step", "resave-latest"])
def test_a_kill_at_any_point_leaves_latest_complete(tmp_path, monkeypatch, resave):
    """Kill the save at each of its fsyncs/renames in turn: ``latest`` always loads (the old
    or the new checkpoint, never a missing one) and clean_partial leaves a tidy directory."""
    points = 0
    for n in range(1, 100):
        ckdir = tmp_path / str(n)
        small_save(ckdir, 1, value=1.0)
        small_save(ckdir, 2, value=2.0, best=True)
        with monkeypatch.context() as m:
            calls = kill_at(m, n)
            try:
                small_save(ckdir, 2 if resave else 3, value=3.0, keep=1)
                finished = True
            except Killed:
                finished = False
        ckpt = load_checkpoint(ckdir)
        assert ckpt.step in ((2,) if resave else (2, 3))
        assert ckpt.model_state["w"][0, 0].item() in (2.0, 3.0)
        assert load_checkpoint(ckdir, which="best").step == 2
        clean_partial(ckdir)
        assert not [p for p in ckdir.iterdir() if ".tmp-" in p.name]
        small_save(ckdir, 4)  # and the next save works
        if finished:
            points = calls[0]
            break
    assert points >= 8  # the loop did reach the end of a save, through every kill point


def test_a_failed_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    small_save(tmp_path, 10, value=1.0)

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(OSError, match="No space left"):
        small_save(tmp_path, 20)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000010"]


def test_clean_partial_removes_only_leftovers(tmp_path):
    small_save(tmp_path, 10)
    leftovers = [tmp_path / "step-00000020.tmp-123-abcd", tmp_path / "step-00000010.tmp-9-ff-old"]
    for d in leftovers:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    (tmp_path / "latest.tmp-123-abcd").write_text('{"step": 2')
    (tmp_path / "notes.txt").write_text("mine")
    assert find_checkpoint(tmp_path).name == "step-00000010"
    removed = clean_partial(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        [d.name for d in leftovers] + ["latest.tmp-123-abcd"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "notes.txt", "step-00000010"]
    assert clean_partial(tmp_path / "missing") == []


# ---- damage --------------------------------------------------------------------------------


class Payload:
    """Unpickling this creates ``path``: the proof that something unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def set_json(path, **changes):
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


DAMAGE = {
    "truncated model": (lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:100]), "model.safetensors",
        "is corrupt or truncated: its SHA-256 differs from the one recorded at save time"),
    "flipped byte in state tensors": (lambda d: flip_byte(d / "state.safetensors"),
                                      "state.safetensors", "is corrupt or truncated"),
    "garbage state.json": (lambda d: (d / "state.json").write_text("{not json"), "state.json",
                           r"is not valid JSON \(Expecting property name"),
    "empty model": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors",
                    "is empty"),
    "empty state.json": (lambda d: (d / "state.json").write_bytes(b""), "state.json", "is empty"),
    "missing state tensors": (lambda d: (d / "state.safetensors").unlink(), "state.safetensors",
                              "is missing"),
    "missing state.json": (lambda d: (d / "state.json").unlink(), "state.json", "is missing"),
    "not a checkpoint": (lambda d: (d / "state.json").write_text('{"hello": 1}'), "state.json",
                         "is not an rnnkit checkpoint"),
    "newer version": (lambda d: set_json(d / "state.json", version=99), "state.json",
                      "newer rnnkit .*version 99"),
    "missing field": (lambda d: set_json(d / "state.json", files={}), "state.json",
                      'the field "files" is malformed'),
    "dangling tensor reference": (lambda d: set_json(d / "state.json",
                                                     state={"x": {"__tensor__": "nope"}}),
                                  "state.safetensors", "has no tensor 'nope'"),
    "pointer to a missing dir": (lambda d: shutil.rmtree(d), "latest",
                                 "names step-00000003, but .*step-00000003 does not exist"),
    "garbage pointer": (lambda d: (d.parent / "latest").write_text("step 3"), "latest",
                        "is not a valid checkpoint pointer"),
    "pointer and state disagree": (lambda d: set_json(d / "state.json", step=4), "latest",
                                   "says step 3, but .*state.json says step 4"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damage_raises_checkpoint_error_naming_the_file(tmp_path, name):
    damage, filename, message = DAMAGE[name]
    small_save(tmp_path, 3)
    damage(tmp_path / "step-00000003")
    with pytest.raises(CheckpointError, match=f"{filename}.* {message}") as info:
        load_checkpoint(tmp_path)
    assert info.value.__cause__ is None  # a plain message, no chained traceback


@pytest.fixture
def no_unpickling(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


@pytest.mark.parametrize("fix_sha", [False, True], ids=["sha-mismatch", "sha-rewritten"])
def test_pickle_bytes_as_weights_are_refused_unopened(tmp_path, no_unpickling, fix_sha):
    marker = tmp_path / "unpickled"
    step = small_save(tmp_path / "ck", 3)
    data = pickle.dumps(Payload(marker))
    (step / "model.safetensors").write_bytes(data)
    if fix_sha:  # even with a matching checksum, it is parsed as safetensors, not unpickled
        doc = json.loads((step / "state.json").read_text())
        doc["files"]["model.safetensors"] = ck._sha256(data)
        (step / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="model.safetensors is (corrupt|not a valid "
                                              "safetensors file)"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_loading_never_unpickles(tmp_path, no_unpickling):
    torch.manual_seed(0)
    net, opt, step_lr, plateau = make_training()
    train(net, opt, step_lr, plateau, None, 1)
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path, 1, net.state_dict(), {"optimizer": opt.state_dict(), "rng": rng},
                    CONFIG)
    ckpt = load_checkpoint(tmp_path)
    load_model_weights(Net(), ckpt)
    assert torch.equal(ckpt.trainer_state["rng"], rng)
    assert torch.equal(ckpt.model_state["head.weight"], net.head.weight)


def test_load_model_weights_names_missing_unexpected_and_mismatched_keys(tmp_path):
    net = Net()
    save_checkpoint(tmp_path, 1, net.state_dict(), {}, {})
    ckpt = load_checkpoint(tmp_path)
    load_model_weights(Net(), ckpt)  # a fitting model loads

    wider = nn.Module()
    wider.lstm, wider.head = rnnkit.LSTM(3, 6, batch_first=True), nn.Linear(6, 1)
    with pytest.raises(CheckpointError, match=r"model.safetensors does not fit this model: .*"
                                              r"shape mismatch.*weight_ih_l0 \(the model has "
                                              r"\(24, 3\), the file has \(20, 3\)\)"):
        load_model_weights(wider, ckpt)

    extra = Net()
    extra.extra = nn.Linear(2, 2)
    del extra.head
    with pytest.raises(CheckpointError, match=r"2 missing key\(s\): extra.weight \(the model has "
                                              r"\(2, 2\)\), extra.bias.*2 unexpected key\(s\): .*"
                                              r"head.weight \(the file has \(1, 5\)\)"):
        load_model_weights(extra, ckpt)
    with pytest.raises(TypeError, match="ckpt: expected a Checkpoint"):
        load_model_weights(net, net.state_dict())
    assert isinstance(ckpt, Checkpoint)
