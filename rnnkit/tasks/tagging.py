"""Slot filling as a training task: ATIS, a label for every word and an intent per sentence.

"i want to leave from boston and arrive in denver": the same kind of word (a city) gets
``B-fromloc.city_name`` after "from" and ``B-toloc.city_name`` after "arrive in"; only the
context tells which, and a recurrent network reads it. Metric: chunk-level F1 with conlleval's
semantics (a slot counts when its type and its exact span are right), plus intent accuracy:
a sentence counts when its whole set of intents is right (ATIS joins several with ``;``, in
either order; the model predicts each intent independently, so it can give a combination the
training data never had).

The vocabularies (words, tags, intents) are built from the training split and saved with every
checkpoint (:meth:`TaggingTask.state`), so ``rnnkit predict`` needs the checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from rnnkit.config import ConfigError
from rnnkit.data.text import Vocab, pad_batch, tokenize
from rnnkit.heads.chars import CHAR_SPECIALS, spell
from rnnkit.metrics import chunk_f1

from .base import Task, in_chunks
from .files import file_format, read_splits


def intent_set(label: str | None) -> list[str]:
    """The intents of a sentence: ``"atis_flight;atis_airfare"`` -> both; none -> ``["none"]``.
    A sentence with several intents has them as a set: order does not matter."""
    return sorted(set(label.split(";"))) if label else ["none"]


class TaggingTask(Task):
    """Tag every word (softmax or CRF head), optionally classify the intent. As ``tag``, it
    reads your own files (``data.train_file`` ...: CoNLL columns or ``word:tag ... <=> intent``
    lines); :class:`AtisTask` reads ATIS."""

    name = "tag"
    title = "tagging"  # how describe() names the data
    metric = "f1"
    mode = "max"
    time_keys = ("tokens", "tags", "chars")
    item_name = "sent"

    def __init__(self, config, *, state: dict | None = None) -> None:
        super().__init__(config)
        if config.train.tbptt:
            raise ConfigError("train.tbptt: a tagging task trains on whole sentences; use "
                             "train.tbptt=0")
        self.splits = {} if state is not None else self.load()
        if state is None:
            train = self.splits["train"]
            state = {"words": Vocab.build(s.words for s in train).to_list(),
                     "tags": self.tag_names(),
                     "intents": Vocab.build((intent_set(s.intent) for s in train),
                                            specials=("<unk>",)).to_list()}
            if config.model.char_filters:  # the letters of the training words
                state["chars"] = Vocab.build((list(w) for s in train for w in s.words),
                                             specials=CHAR_SPECIALS).to_list()
        self.words = Vocab.from_list(state["words"])
        self.tags = Vocab.from_list(state["tags"], specials=())
        self.intents = Vocab.from_list(state["intents"], specials=("<unk>",))
        self.chars = (Vocab.from_list(state["chars"], specials=CHAR_SPECIALS)
                      if "chars" in state else None)
        self.sets = {split: self.tensors(sentences) for split, sentences in self.splits.items()}

    def load(self) -> dict:
        from rnnkit.data.text import read_conll, read_slot_lines

        data = self.config.data

        def read(path):
            fmt = file_format(path, data.format, ("conll", "slots"))
            return read_conll(path) if fmt == "conll" else read_slot_lines(path)

        splits = read_splits(data, self.name, read)
        if self.config.model.intent and not any(s.intent for s in splits["train"]):
            raise ConfigError(f"model.intent: {data.train_file} has no intents (they come with "
                             f"the slots format's `<=> intent`); set model.intent=false")
        return splits

    def tag_names(self) -> list[str]:
        """The tag set: a schema, not something learned, so every tag of every split ("O"
        first, then sorted)."""
        tags = {t for sentences in self.splits.values() for s in sentences for t in s.tags}
        return ["O"] + sorted(tags - {"O"})

    def has_split(self, split: str) -> bool:
        return split in self.sets

    def state(self) -> dict:
        """What predicting needs besides the weights: the vocabularies, as lists."""
        state = {"words": self.words.to_list(), "tags": self.tags.to_list(),
                 "intents": self.intents.to_list()}
        if self.chars is not None:
            state["chars"] = self.chars.to_list()
        return state

    def tensors(self, sentences) -> dict[str, Tensor]:
        tokens, lengths = pad_batch([self.words.encode(s.words) for s in sentences])
        tags, _ = pad_batch([self.tags.encode(s.tags) for s in sentences])
        # multi-hot (N, K): column k is 1 when the sentence has intent k; an intent the
        # training data never had sets the <unk> column, which the model never predicts
        intents = torch.zeros(len(sentences), len(self.intents))
        for n, s in enumerate(sentences):
            intents[n, self.intents.encode(intent_set(s.intent))] = 1.0
        out = {"tokens": tokens, "tags": tags, "lengths": lengths, "intents": intents}
        if self.chars is not None:
            out["chars"] = spell([s.words for s in sentences], self.chars)  # (N, T, L)
        return out

    def train_set(self):
        return self.sets["train"]

    def build_model(self):
        from rnnkit.heads.tagger import SequenceTagger

        model_cfg = self.config.model
        allowed = None
        if model_cfg.head == "crf":
            from rnnkit.heads.crf import bio_allowed

            allowed = bio_allowed(self.tags.to_list())
        intents = len(self.intents) if model_cfg.intent else 0
        chars = len(self.chars) if self.chars is not None else 0
        return SequenceTagger(model_cfg, len(self.words), len(self.tags), intents, allowed,
                              num_chars=chars)

    def loss(self, model, chunk, state, final):
        out = model(chunk["tokens"], chunk["lengths"], chunk["tags"], chunk["intents"],
                    chunk.get("chars"))
        return out["loss"], None

    def items(self, batch):
        return len(batch["lengths"])

    def predictions(self, model, split):
        """Every sentence of ``split``: gold and predicted tag names, and (with an intent head)
        the gold and predicted intent indices as sets (None without a head)."""
        def tag(rows):
            paths, intents = model.predict(rows["tokens"], rows["lengths"], rows.get("chars"))
            lengths = rows["lengths"].tolist()
            gold = [self.tags.decode(rows["tags"][n, :L].tolist()) for n, L in enumerate(lengths)]
            gold_intents = [set(row.nonzero().flatten().tolist()) for row in rows["intents"]]
            pred_intents = [None] * len(lengths) if intents is None else [set(p) for p in intents]
            return list(zip(gold, [self.tags.decode(p) for p in paths], gold_intents,
                            pred_intents, strict=True))

        return [row for part in in_chunks(tag, self.sets[split], model, size=256) for row in part]

    def evaluate(self, model, split):
        rows = self.predictions(model, split)
        scores = chunk_f1([gold for gold, *_ in rows], [pred for _, pred, *_ in rows])
        metrics = {"f1": scores["f1"], "precision": scores["precision"],
                   "recall": scores["recall"]}
        if self.config.model.intent:  # a sentence counts when its whole set is right
            hits = sum(gold == pred for _, _, gold, pred in rows)
            metrics["intent_accuracy"] = 100.0 * hits / len(rows)
        return metrics

    def report(self, model, split: str, directory) -> list[Path]:
        """``errors-<split>.txt`` in ``directory``: every sentence with a wrong intent (gold
        and predicted) and every sentence with a wrong tag (each differing word with its gold
        and predicted tag), for reading what the model gets wrong."""
        rows = self.predictions(model, split)
        sentences = self.splits[split]
        wrong_intent = [n for n, (*_, gold, pred) in enumerate(rows) if pred is not None
                        and gold != pred]
        wrong_tags = [n for n, (gold, pred, *_) in enumerate(rows) if gold != pred]

        lines = [f"# {self.title}, {split}: {len(rows)} sentences, {len(wrong_intent)} with "
                 f"wrong intents, {len(wrong_tags)} with a wrong tag"]
        if wrong_intent:
            lines += ["", "## wrong intents: gold -> predicted | sentence"]
            for n in wrong_intent:  # the gold names from the file: an unseen intent shows too
                gold = ";".join(intent_set(sentences[n].intent))
                pred = ";".join(sorted(self.intents.decode(rows[n][3])))
                lines.append(f"{gold} -> {pred} | {' '.join(sentences[n].words)}")
        if wrong_tags:
            lines += ["", "## wrong tags: word[gold -> predicted] where they differ"]
            for n in wrong_tags:
                gold, pred = rows[n][:2]
                lines.append(" ".join(w if g == p else f"{w}[{g} -> {p}]"
                                      for w, g, p in zip(sentences[n].words, gold, pred,
                                                         strict=True)))
        path = Path(directory) / f"errors-{split}.txt"
        path.write_text("\n".join(lines) + "\n")
        return [path]

    def predict_text(self, model, text: str) -> tuple[list[tuple[str, str]], str | None]:
        """Tag one sentence: ``[(word, slot), ...]`` and the intent (None without a head).
        Words the training data never had map to the unknown token (with character
        features they still have their letters)."""
        words = tokenize(text)
        if not words:
            raise ValueError("text: expected at least one word, got an empty sentence")
        device = next(model.parameters()).device
        tokens = torch.tensor([self.words.encode(words)], device=device)
        chars = spell([words], self.chars).to(device) if self.chars is not None else None
        paths, intents = model.predict(tokens, torch.tensor([len(words)], device=device), chars)
        intent = ";".join(self.intents.decode(intents[0])) if intents is not None else None
        return list(zip(words, self.tags.decode(paths[0]), strict=True)), intent

    def describe(self):
        sizes = ", ".join(f"{len(sentences)} {split}" for split, sentences in self.splits.items())
        return (f"{self.title}: {sizes} sentences; {len(self.words)} words, "
                f"{len(self.tags)} tags, {len(self.intents)} intents")


class AtisTask(TaggingTask):
    """ATIS slot filling: 4,478 train / 500 val (fixed seed) / 893 test utterances."""

    name = "atis"
    title = "ATIS slot filling"

    def load(self) -> dict:
        from rnnkit.data.atis import load_atis

        return load_atis(val_size=500, seed=0)

    def tag_names(self) -> list[str]:
        """ATIS's official 130 tags (some occur in validation or test only)."""
        from rnnkit.data.atis import atis_labels

        return atis_labels()["slots"]
