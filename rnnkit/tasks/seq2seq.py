"""Sequence to sequence as a training task: grapheme-to-phoneme (CMUdict) and English to
Spanish (Bible verses).

Training: teacher forcing (``train.sampling_rate`` for scheduled sampling), the loss the sum of
the target tokens' cross-entropy (``<eos>`` included). Validation decodes greedily; the test split
with a beam (``model.beam_size``, ``model.length_penalty``). Outputs may be at most twice the
source's length plus 10 tokens.

- ``g2p``: "word" -> its phonemes (no stress marks). A word may have several pronunciations:
  each is a training pair, and an output counts as right when it equals any of them. Metrics:
  word error rate (``wer``, the share of words not exactly right) and phoneme error rate
  (``per``: edit distance to the closest pronunciation / its length), in percent.
- ``translate``: English verse -> Spanish verse, corpus BLEU (``bleu``).

The vocabularies come from the training split and are saved with every checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.text import Vocab, pad_batch
from rnnkit.errors import ConfigError
from rnnkit.heads.decoder import BOS_INDEX, EOS_INDEX, SPECIALS

from .base import Task, in_chunks

SPLITS = {"train": "train", "val": "valid", "test": "test"}


def max_output(source_length, limit: int = 0, longest: int | None = None):
    """The longest output allowed for a source of this length (an int, or a tensor of lengths):
    ``limit`` (``model.max_length``) if set, else twice the source's length plus 10, and at
    most one past ``longest``, the longest target of the training split (a trained model writes
    no longer; a barely trained one that never writes ``<eos>`` stops there instead of at twice
    the source: it halved a 30-step translate run's test decoding)."""
    if limit:
        return limit
    cap = 2 * source_length + 10
    if longest is None:
        return cap
    return cap.clamp(max=longest + 1) if isinstance(cap, Tensor) else min(cap, longest + 1)


class Seq2SeqTask(Task):
    """Pairs (source tokens, [reference token lists]); subclasses load them."""

    metric = "loss"
    mode = "min"
    time_keys = ("source", "inputs", "targets")
    item_name = "pair"

    def __init__(self, config, *, state: dict | None = None, data: bool | None = None) -> None:
        super().__init__(config, state=state, data=data)
        if config.train.tbptt:
            raise ConfigError("train.tbptt: a sequence-to-sequence task trains on whole pairs; "
                              "use train.tbptt=0")
        self.splits = self.load() if self.with_data else {}
        if state is None:
            train = self.splits["train"]
            state = {"source": Vocab.build(src for src, _ in train).to_list(),
                     "target": Vocab.build((ref for _, refs in train for ref in refs),
                                           specials=SPECIALS).to_list(),
                     "longest_target": max(len(ref) for _, refs in train for ref in refs)}
        self.source = Vocab.from_list(state["source"])
        self.target = Vocab.from_list(state["target"], specials=SPECIALS)
        # (runs saved before it was kept: None, the source-relative limit alone)
        self.longest_target = state.get("longest_target")
        self.sets = {split: self.tensors(pairs, split == "train")
                     for split, pairs in self.splits.items()}

    def load(self) -> dict[str, list]:
        raise NotImplementedError

    def state(self):
        return {"source": self.source.to_list(), "target": self.target.to_list(),
                "longest_target": self.longest_target}

    def tensors(self, pairs: list, train: bool) -> dict[str, Tensor]:
        """Training: one row per (source, reference). Evaluation: one row per source, its
        first reference as the teacher-forced target (the scores use all of them)."""
        rows = [(src, ref) for src, refs in pairs for ref in (refs if train else refs[:1])]
        source, lengths = pad_batch([self.source.encode(s) for s, _ in rows])
        inputs, _ = pad_batch([[BOS_INDEX, *self.target.encode(r)] for _, r in rows])
        targets, _ = pad_batch([[*self.target.encode(r), EOS_INDEX] for _, r in rows])
        return {"source": source, "lengths": lengths, "inputs": inputs, "targets": targets,
                "index": torch.arange(len(rows))}

    def train_set(self):
        return self.sets["train"]

    def has_split(self, split: str) -> bool:
        return SPLITS[split] in self.sets

    def loss(self, model, chunk, state, final):
        T = int((chunk["targets"] != 0).sum(1).max())
        logits, _ = model(chunk["source"], chunk["lengths"], chunk["inputs"][:, :T],
                          self.config.train.sampling_rate)
        targets = chunk["targets"][:, :T]
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0,
                               reduction="sum"), None

    def count(self, batch):
        return int((batch["targets"] != 0).sum())

    def items(self, batch):
        return len(batch["lengths"])

    # ---- decoding and scores --------------------------------------------------------------

    input_keys = ("source", "lengths")  # what the model reads to start decoding

    def start(self, model, rows: dict) -> tuple[dict, Tensor | int]:
        """The decoder's start state for a chunk of rows, and the longest output each row may
        write (``(N,)``: each source's own limit, so a row decodes as it would alone)."""
        state = model.encode(rows["source"], rows["lengths"])
        return state, max_output(rows["lengths"], self.config.model.max_length,
                                 self.longest_target)

    def outputs(self, model, rows: dict, beam_size: int) -> list[list[str]]:
        """The output tokens of every row of ``rows`` (on the model's device)."""
        state, longest = self.start(model, rows)
        ids = model.decoder.generate(state, max_len=longest, beam_size=beam_size,
                                     length_penalty=self.config.model.length_penalty)
        return [self.target.decode(i) for i in ids]

    def decode(self, model, split: str, beam_size: int | None = None) -> list[list[str]]:
        """The model's output tokens for every source of ``split`` (greedy on validation,
        ``model.beam_size`` on test, unless ``beam_size`` is given)."""
        if beam_size is None:
            beam_size = self.config.model.beam_size if split == "test" else 1
        model.eval()
        data = {k: self.sets[SPLITS[split]][k] for k in self.input_keys}
        # longest sources first: a chunk decodes up to its longest source's output limit, so
        # chunks of similar lengths stop early (an untrained model writes every output to it)
        n = len(next(iter(data.values())))
        order = (torch.argsort(data["lengths"], descending=True, stable=True)
                 if "lengths" in data else torch.arange(n))
        data = {k: v[order] for k, v in data.items()}
        parts = in_chunks(lambda rows: self.outputs(model, rows, beam_size), data, model, 256)
        outputs = [tokens for part in parts for tokens in part]
        result: list = [None] * len(outputs)
        for i, tokens in zip(order.tolist(), outputs, strict=True):
            result[i] = tokens
        return result

    def references(self, split: str) -> list[list[list[str]]]:
        return [refs for _, refs in self.splits[SPLITS[split]]]

    def evaluate(self, model, split):
        """Teacher-forced loss per target token, and the task's scores of decoded outputs."""
        was_training = model.training
        model.eval()

        def nll(rows):
            total, _ = self.loss(model, rows, None, True)
            return total.item(), self.count(rows)

        parts = in_chunks(nll, self.sets[SPLITS[split]], model, size=256)
        scores = {"loss": sum(t for t, _ in parts) / sum(n for _, n in parts)}
        scores.update(self.scores(self.references(split), self.decode(model, split)))
        model.train(was_training)
        return scores

    def scores(self, refs, hyps) -> dict[str, float]:
        raise NotImplementedError

    def report(self, model, split, directory):
        """Attention maps (PNG) of the first three sources of ``split``."""
        if self.config.model.attention == "none":
            return []
        from pathlib import Path

        from rnnkit.scores import plot_attention

        model.eval()
        data = self.sets[SPLITS[split]]
        device = next(model.parameters()).device
        paths = []
        outputs = self.decode(model, split, beam_size=1)
        with torch.no_grad():
            for n in range(min(3, len(outputs))):
                L = int(data["lengths"][n])
                state = model.encode(data["source"][n:n + 1, :L].to(device),
                                     data["lengths"][n:n + 1].to(device))
                tokens = self.target.encode(outputs[n])
                weights = model.decoder.attention_map(state, tokens)  # (T+1, L)
                source = self.source.decode(data["source"][n, :L])
                path = Path(directory) / f"attention-{split}-{n}.png"
                paths.append(plot_attention(weights.cpu(), source, [*outputs[n], "<eos>"], path,
                                            title=f"{self.name}: {' '.join(source)}"))
        return paths

    def build_model(self):
        from rnnkit.heads.seq2seq import Seq2Seq

        return Seq2Seq(self.config.model, len(self.source), len(self.target))

    def source_tokens(self, text: str) -> list[str]:
        """How ``rnnkit predict`` cuts a user's text into source tokens."""
        return text.split()

    def predict_text(self, model, text: str) -> list[str]:
        """``rnnkit predict``: a text -> the model's output tokens (beam search)."""
        tokens = self.source_tokens(text)
        if not tokens:
            raise ValueError(f"text: expected something to read, got {text!r}")
        return self.translate_text(model, tokens)

    def translate_text(self, model, tokens: list[str]) -> list[str]:
        """One source (a token list) -> the model's output tokens (beam search)."""
        device = next(model.parameters()).device
        rows = {"source": torch.tensor([self.source.encode(tokens)], device=device),
                "lengths": torch.tensor([len(tokens)], device=device)}
        return self.outputs(model, rows, self.config.model.beam_size)[0]

    def describe(self):
        sizes = ", ".join(f"{len(pairs):,} {split}" for split, pairs in self.splits.items())
        return (f"{self.title}: {sizes}; {len(self.source)} source and {len(self.target)} "
                f"target tokens")


class G2pTask(Seq2SeqTask):
    """CMUdict grapheme-to-phoneme: a fixed 90/5/5 split of the words."""

    name = "g2p"
    title = "CMUdict grapheme-to-phoneme"
    metric, mode = "wer", "min"

    def load(self):
        from rnnkit.data.pairs import load_cmudict

        return load_cmudict()

    def source_tokens(self, text):
        return list(text.strip().lower())  # a word's letters

    def scores(self, refs, hyps):
        from rnnkit.scores import error_rate, sequence_error_rate

        return {"wer": sequence_error_rate(refs, hyps, multi_refs=True),
                "per": error_rate(refs, hyps, multi_refs=True)}


class TranslateTask(Seq2SeqTask):
    """English -> Spanish Bible verses (World English Bible, Reina-Valera)."""

    name = "translate"
    title = "English-Spanish verses"
    metric, mode = "bleu", "max"

    def load(self):
        from rnnkit.data.pairs import load_verse_pairs

        return {split: [(en, [es]) for en, es in pairs]
                for split, pairs in load_verse_pairs(max_words=self.config.data.seq_len).items()}

    def scores(self, refs, hyps):
        from rnnkit.scores import bleu

        return {"bleu": bleu(refs, hyps)}

    def source_tokens(self, text):
        from rnnkit.data.pairs import tokenize_verse

        return tokenize_verse(text)
