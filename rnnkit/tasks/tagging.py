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

from rnnkit.data.text import Vocab, pad_batch, tokenize
from rnnkit.errors import ConfigError, DataFormatError
from rnnkit.heads.chars import CHAR_SPECIALS, spell
from rnnkit.metrics import chunk_f1, tag_scores

from .base import Task, in_chunks
from .files import read_splits, read_tagged, tagged_format


def intent_set(label: str | None) -> list[str]:
    """The intents of a sentence: ``"atis_flight;atis_airfare"`` -> both; none -> ``["none"]``.
    A sentence with several intents has them as a set: order does not matter."""
    return sorted(set(label.split(";"))) if label else ["none"]


def _sentence_key(s) -> str:
    """A tagged sentence's content as text: its words, tags and intent."""
    return "\x1f".join(s.words) + "\x1e" + "\x1f".join(s.tags) + "\x1e" + (s.intent or "")


class TaggingTask(Task):
    """Tag every word (softmax or CRF head), optionally classify the intent. As ``tag``, it
    reads your own files (``data.train_file`` ...: CoNLL columns, CoNLL-U, or ``word:tag ...
    <=> intent`` lines) with any tag set: chunk tags (``data.tag_scheme`` bio or bioes, scored
    by chunk F1) or plain classes such as part-of-speech tags (``none``, scored by accuracy);
    :class:`AtisTask` reads ATIS."""

    name = "tag"
    title = "tagging"  # how describe() names the data
    metric = "f1"  # "accuracy" for a tag set without chunks (set per run in __init__)
    mode = "max"
    time_keys = ("tokens", "tags", "chars")
    item_name = "sent"

    def __init__(self, config, *, state: dict | None = None, data: bool | None = None) -> None:
        super().__init__(config, state=state, data=data)
        if config.train.tbptt:
            raise ConfigError("train.tbptt: a tagging task trains on whole sentences; use "
                             "train.tbptt=0")
        self.splits = self.load() if self.with_data else {}
        self.scheme_note = ""
        saved = state is not None  # a run's maps: today's files may hold tags they lack
        if state is None:
            train = self.splits["train"]
            scheme = self.choose_scheme()
            state = {"words": Vocab.build(s.words for s in train).to_list(),
                     "tags": self.tag_names(scheme),
                     "intents": Vocab.build((intent_set(s.intent) for s in train),
                                            specials=("<unk>",)).to_list(),
                     "scheme": scheme}
            if config.model.char_filters:  # the letters of the training words
                state["chars"] = Vocab.build((list(w) for s in train for w in s.words),
                                             specials=CHAR_SPECIALS).to_list()
        self.warn_unseen({split: [t for s in sentences for t in s.tags]
                          for split, sentences in self.splits.items()}, "word", "tag")
        # a checkpoint from before tag schemes had BIO tags (the only set then read)
        self.scheme = state.get("scheme", "bio")
        self.metric = "accuracy" if self.scheme == "none" else "f1"
        self.words = Vocab.from_list(state["words"])
        self.tags = Vocab.from_list(state["tags"], specials=())
        self.intents = Vocab.from_list(state["intents"], specials=("<unk>",))
        self.chars = (Vocab.from_list(state["chars"], specials=CHAR_SPECIALS)
                      if "chars" in state else None)
        if saved:
            self.check_tags()
        self.order = None  # your own files: the saved order of the examples (tasks/order.py)
        if self.name == "tag" and self.splits:
            from .order import keep_order

            self.order = keep_order(self.splits, state.get("order"), _sentence_key)
        self.sets = {split: self.tensors(sentences) for split, sentences in self.splits.items()}

    def check_tags(self) -> None:
        """Every tag of the data is in the tag set (a saved run's: the files may have changed
        since it was trained), else a DataFormatError at the tag's file and line."""
        known = set(self.tags.to_list())
        for split, sentences in self.splits.items():
            for s in sentences:
                for i, tag in enumerate(s.tags):
                    if tag not in known:
                        where = f"{s.source[0]}:{s.source[1][i]}" if s.source else \
                            f"the {split} split"
                        raise DataFormatError(
                            f"{where}: tag {tag!r} (word {s.words[i]!r}) is not one of the "
                            f"{len(known)} tags this run was trained with; a saved model can "
                            f"only tag with its own tag set")

    def load(self) -> dict:
        data = self.config.data
        splits = read_splits(data, self.name, lambda path: read_tagged(path, data))
        if self.config.model.intent and not any(s.intent for s in splits["train"]):
            raise ConfigError(f"model.intent: {data.train_file} has no intents (they come with "
                             f"the slots format's `<=> intent`); set model.intent=false")
        return splits

    def choose_scheme(self) -> str:
        """``data.tag_scheme``, or with ``auto`` the scheme of the training tags (noted in
        :meth:`describe`); a forced chunk scheme must fit every tag of every split."""
        from rnnkit.data.schemes import check_scheme, detect_scheme

        scheme = self.config.data.tag_scheme
        if scheme == "auto":
            scheme, why = detect_scheme(t for s in self.splits["train"] for t in s.tags)
            self.scheme_note = f" (data.tag_scheme=auto: {why})"
        for split, sentences in self.splits.items():
            check_scheme(sentences, scheme, f"the {split} split",
                         auto=self.config.data.tag_scheme == "auto")
        return scheme

    def split_file(self, split: str) -> str:
        """As :meth:`Task.split_file`, or the file its sentences came from (built-in data)."""
        sentences = self.splits.get(split) or []
        name = super().split_file(split)
        if name.endswith(" split") and sentences and sentences[0].source:
            return f"{name} ({sentences[0].source[0]})"
        return name

    def tag_names(self, scheme: str = "bio") -> list[str]:
        """The tag set: a schema, not something learned, so every tag of every split, sorted;
        with a chunk scheme "O" first."""
        tags = {t for sentences in self.splits.values() for s in sentences for t in s.tags}
        if scheme == "none":
            return sorted(tags)
        return ["O"] + sorted(tags - {"O"})

    def has_split(self, split: str) -> bool:
        return split in self.sets

    def state(self) -> dict:
        """What predicting needs besides the weights: the vocabularies, as lists."""
        state = {"words": self.words.to_list(), "tags": self.tags.to_list(),
                 "intents": self.intents.to_list(), "scheme": self.scheme}
        if self.order is not None:
            state["order"] = self.order
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
        if model_cfg.head == "crf":  # the scheme's constraints; none without chunks
            from rnnkit.heads.crf import scheme_allowed

            allowed = scheme_allowed(self.tags.to_list(), self.scheme)
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
        """Chunk schemes: conlleval's chunk precision, recall and F1, and token accuracy; no
        scheme: token accuracy and macro-F1 over tags. Both: ``per_tag``, a score table (per
        chunk type, or per tag), and with an intent head the intent accuracy."""
        rows = self.predictions(model, split)
        gold, pred = [g for g, *_ in rows], [p for _, p, *_ in rows]
        if self.scheme == "none":
            scores = tag_scores(gold, pred)
            metrics = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
            per_tag = scores["per_tag"]
        else:
            scores = chunk_f1(gold, pred)
            metrics = {"f1": scores["f1"], "precision": scores["precision"],
                       "recall": scores["recall"], "accuracy": scores["accuracy"]}
            per_tag = {kind: {k: v[k] for k in ("precision", "recall", "f1", "support")}
                       for kind, v in scores["per_type"].items()}
        if self.config.model.intent:  # a sentence counts when its whole set is right
            hits = sum(gold == pred for _, _, gold, pred in rows)
            metrics["intent_accuracy"] = 100.0 * hits / len(rows)
        metrics["per_tag"] = per_tag
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
        (tags,), (intent,) = self.tag_words(model, [words])
        return list(zip(words, tags, strict=True)), intent

    def tag_stream(self, model, chunks, emit) -> int:
        """Tag words as they arrive (``rnnkit predict --stream``): ``chunks`` yields pieces of
        text (words, whitespace), a newline ends a sentence. Each word is tagged by one step of
        the network (:meth:`SequenceTagger.step`) before the next is read, and ``emit(word,
        tag)`` gets it at once; at a sentence's end ``emit("intent", intents)`` with an intent
        head, then ``emit(None, None)``. Needs a unidirectional network. Returns the number of
        sentences."""
        if getattr(model.rnn, "bidirectional", False):
            raise ValueError("--stream: this run's network is bidirectional: its reverse "
                             "direction needs the whole sentence before it tags the first word; "
                             "train with model.bidirectional=false to tag while reading")
        device = next(model.parameters()).device
        model.eval()
        sentences, state, previous, features = 0, None, None, []

        def end():
            nonlocal state, previous, features, sentences
            if features:
                intents = model.stream_intents(features)
                if intents is not None:
                    emit("intent", ";".join(self.intents.decode(intents[0])))
                emit(None, None)
                sentences += 1
            state, previous, features = None, None, []

        def tag(piece: str):  # a whitespace-free piece of text: its words (tokenize's)
            nonlocal state, previous
            for word in tokenize(piece):
                token = torch.tensor(self.words.encode([word]), device=device)
                chars = (spell([[word]], self.chars)[0].to(device)
                         if self.chars is not None else None)  # (1, L)
                previous, h, state = model.step(token, state, chars, previous)
                features.append(h)
                emit(word, self.tags.decode([int(previous)])[0])

        pending = ""
        for chunk in chunks:
            for ch in chunk:
                if not ch.isspace():
                    pending += ch
                    continue
                tag(pending)
                pending = ""
                if ch == "\n":
                    end()
        tag(pending)  # the last word, without a newline after it
        end()
        return sentences

    def tag_words(self, model, sentences: list[list[str]], size: int = 256):
        """Tags of tokenized sentences, 256 at a time: ``(tags per sentence, intents)``, an
        intent a ``;``-joined string (None without an intent head)."""
        device = next(model.parameters()).device
        all_tags, all_intents = [], []
        for start in range(0, len(sentences), size):
            part = sentences[start:start + size]
            tokens, lengths = pad_batch([self.words.encode(w) for w in part])
            chars = spell(part, self.chars).to(device) if self.chars is not None else None
            with torch.no_grad():
                paths, intents = model.predict(tokens.to(device), lengths.to(device), chars)
            all_tags += [self.tags.decode(p) for p in paths]
            all_intents += ([None] * len(part) if intents is None else
                            [";".join(self.intents.decode(i)) for i in intents])
        return all_tags, all_intents

    def predict_file(self, model, path: str, out) -> int:
        """Tag every sentence of ``path`` and write the file to the stream ``out`` in its own
        format with the predicted tags: CoNLL-U with ``data.column`` filled in (comments,
        multiword tokens, other columns kept), a CoNLL file with its tag column replaced (or
        added to a file of words alone), slot lines as ``word:tag ... <=> intent``. Returns
        the number of sentences."""
        from rnnkit.data.conllu_io import write_conllu
        from rnnkit.data.text import _lines, split_columns

        data = self.config.data
        fmt = tagged_format(path, data.format)
        sentences = read_tagged(path, data, allow_empty=True)
        tags, intents = self.tag_words(model, [s.words for s in sentences])
        if fmt == "conllu":
            return write_conllu(path, tags, data.column or "upos", out)
        if fmt == "slots":
            for s, predicted, intent in zip(sentences, tags, intents, strict=True):
                out.write(" ".join(f"{w}:{t}" for w, t in zip(s.words, predicted, strict=True))
                          + (f" <=> {intent}" if intent is not None else "") + "\n")
            return len(sentences)
        _, lines = _lines(path)
        column = int(data.column or -1)
        for s, predicted in zip(sentences, tags, strict=True):
            for number, tag in zip(s.source[1], predicted, strict=True):
                line = lines[number - 1]
                sep = "\t" if "\t" in line else " "
                columns = split_columns(line, sep == "\t")
                if len(columns) == 1:
                    columns.append(tag)
                else:
                    columns[column] = tag
                lines[number - 1] = sep.join(columns)
        out.write("\n".join(lines) + "\n")
        return len(sentences)

    def describe(self):
        sizes = ", ".join(f"{len(sentences)} {split}" for split, sentences in self.splits.items())
        return (f"{self.title}: {sizes} sentences; {len(self.words)} words, "
                f"{len(self.tags)} tags, tag scheme {self.scheme}{self.scheme_note}"
                + (f", {len(self.intents) - 1} intents" if self.config.model.intent else ""))


class AtisTask(TaggingTask):
    """ATIS slot filling: 4,478 train / 500 val (fixed seed) / 893 test utterances."""

    name = "atis"
    title = "ATIS slot filling"

    def load(self) -> dict:
        from rnnkit.data.atis import load_atis

        return load_atis(val_size=500, seed=0)

    def tag_names(self, scheme: str = "bio") -> list[str]:
        """ATIS's official 130 tags (some occur in validation or test only)."""
        from rnnkit.data.atis import atis_labels

        return atis_labels()["slots"]


class TurkishPosTask(TaggingTask):
    """Part-of-speech tagging on the Turkish Web Treebank: 3,881 train / 485 val / 485 test
    sentences, the package's split; UPOS tags, or XPOS with ``data.column=xpos``."""

    name = "turkish_pos"
    title = "Turkish Web Treebank POS tagging"

    def load(self) -> dict:
        from rnnkit.data.turkish import load_twt

        column = self.config.data.column or "upos"
        if column not in ("upos", "xpos"):
            raise ConfigError(f"data.column: the Turkish Web Treebank is tagged in upos and "
                              f"xpos, got {column!r}")
        return load_twt(column)
