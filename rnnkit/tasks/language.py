"""Language modelling as a training task: Penn Treebank, Shakespeare, or your own text file.

The training text is cut into ``data.batch_size`` long streams (``batchify``); step i trains on
the window ``[i*W, (i+1)*W)`` of every stream (W = ``data.seq_len``) and the recurrent state is
carried from one window to the next, detached: truncated BPTT as Mikolov (2012) and
pytorch/examples' ``word_language_model`` train. Validation and test read their split as one
stream, carrying the state all the way.

Metric: ``nll``, the mean negative log-likelihood per token in nats; also the perplexity
exp(nll) and, for characters, bits per character nll / ln 2.

The vocabulary (from the training split, ``<unk>`` first) is saved with every checkpoint, so
``rnnkit generate`` needs the checkpoint alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.text import UNK, Vocab
from rnnkit.errors import ConfigError, DataFormatError

from .base import Task

EVAL_WINDOW = 2000  # steps per forward pass when scoring a split (bounded memory)


class LanguageModelTask(Task):
    """Next-token prediction over ``data.train_file`` (``data.level`` word or char; without
    ``data.val_file``/``data.test_file`` the file's last 10% becomes validation and test, 5%
    each). :class:`PtbTask` and :class:`ShakespeareTask` read the standard corpora."""

    name = "text"
    title = "text"  # how describe() names the data
    metric = "nll"
    mode = "min"
    time_keys = ("x", "y")
    item_name = "tok"
    stream = True
    kind = "generator"  # what load_for_prediction serves: a model that writes text

    fixed_level: str | None = None  # a corpus that comes at one level only

    def __init__(self, config, *, state: dict | None = None, data: bool | None = None) -> None:
        super().__init__(config, state=state, data=data)
        if config.train.tbptt:
            raise ConfigError("train.tbptt: a language model is already trained in windows of "
                              "data.seq_len steps with the state carried across; use "
                              "train.tbptt=0 and set data.seq_len")
        self.level = self.fixed_level or config.data.level  # "word" or "char"
        self.splits = self.load() if self.with_data else {}
        if state is None:
            state = {"tokens": Vocab.build([self.splits["train"]], specials=(UNK,)).to_list()}
        self.vocab = Vocab.from_list(state["tokens"], specials=(UNK,))
        self.ids = {split: torch.tensor(self.vocab.encode(tokens), dtype=torch.long)
                    for split, tokens in self.splits.items()}

    def load(self) -> dict[str, list[str]]:
        """train/valid/test token lists."""
        from rnnkit.data.corpus import read_text_file, split_text

        data = self.config.data
        if not data.train_file:
            raise ConfigError("data.train_file: the text task needs your text file "
                              "(--data.train_file=PATH)")
        train = read_text_file(data.train_file, self.level)
        if not data.val_file:
            if data.test_file:
                raise ConfigError("data.test_file: give data.val_file too, or neither (then "
                                  "the file's last 10% is held out)")
            if len(train) < 20:  # 90/5/5% needs 20 tokens for each part to get one
                raise DataFormatError(
                    f"{data.train_file}: {len(train)} {self.level} tokens, too short to hold "
                    f"out 5% for validation and 5% for testing (at least 20 needed); give a "
                    f"longer text, or data.val_file")
            return split_text(train)
        splits = {"train": train, "valid": read_text_file(data.val_file, self.level)}
        if data.test_file:
            splits["test"] = read_text_file(data.test_file, self.level)
        return splits

    # ---- data and loss --------------------------------------------------------------------

    def train_set(self) -> dict[str, Tensor]:
        from rnnkit.data.corpus import batchify

        S, n = self.config.data.batch_size, len(self.ids["train"])
        if S > n // 2:
            raise ConfigError(f"data.batch_size: the training text is cut into that many streams, "
                              f"so expected at most half its {n} tokens, got {S}")
        streams = batchify(self.ids["train"], S)  # (S, L)
        return {"x": streams[:, :-1], "y": streams[:, 1:]}

    def has_split(self, split: str) -> bool:
        return {"val": "valid"}.get(split, split) in self.ids

    def build_model(self):
        from rnnkit.heads.language_model import LanguageModel

        return LanguageModel(self.config.model, len(self.vocab))

    def loss(self, model, chunk, state, final):
        logits, state = model(chunk["x"], state)  # (S, W, V)
        loss = F.cross_entropy(logits.flatten(0, 1), chunk["y"].flatten(), reduction="sum")
        return loss, state

    def count(self, batch):
        return batch["y"].numel()

    def items(self, batch):
        return batch["y"].numel()

    # ---- scores ---------------------------------------------------------------------------

    def evaluate(self, model, split):
        """Mean NLL (nats per token) over ``split`` read as one stream from the zero state."""
        ids = self.ids[{"val": "valid"}.get(split, split)]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total, state = 0.0, None
        with torch.no_grad():
            for start in range(0, len(ids) - 1, EVAL_WINDOW):
                x = ids[start:start + EVAL_WINDOW].to(device)
                y = ids[start + 1:start + EVAL_WINDOW + 1].to(device)
                logits, state = model(x[:len(y)].unsqueeze(0), state)
                total += F.cross_entropy(logits[0], y, reduction="sum").item()
        model.train(was_training)
        from rnnkit.data.corpus import bits_per_char, perplexity

        nll = total / (len(ids) - 1)
        scores = {"nll": nll, "ppl": perplexity(nll)}
        if self.level == "char":
            scores["bpc"] = bits_per_char(nll)
        return scores

    def state(self):
        return {"tokens": self.vocab.to_list()}

    def describe(self):
        sizes = ", ".join(f"{len(v):,} {k}" for k, v in self.ids.items())
        unit = "characters" if self.level == "char" else "words"
        return (f"{self.title} language model ({unit}): {sizes} tokens; vocabulary "
                f"{len(self.vocab):,}")

    # ---- text in, text out ----------------------------------------------------------------

    def encode_text(self, text: str) -> list[int]:
        """A priming text as token ids (unknown tokens -> ``<unk>``)."""
        tokens = list(text) if self.level == "char" else text.split()
        return self.vocab.encode(tokens)

    def start_index(self) -> int:
        """What generation reads when given no priming text: a line end (``<eos>`` or
        ``"\\n"``), so it starts as a new sentence or line would."""
        start = "\n" if self.level == "char" else "<eos>"
        return self.vocab.index(start)  # <unk> if the text never had one

    def token_text(self, index: int) -> str:
        """How token ``index`` prints when generated (words get a space before them)."""
        token = self.vocab.decode([index])[0]
        if self.level == "char":
            return token
        return "\n" if token == "<eos>" else " " + token


class PtbTask(LanguageModelTask):
    """Penn Treebank (Mikolov's split: 10k words with ``<unk>``, ``<eos>`` at each line end;
    ``data.level=char``: its characters, ``_`` for a space)."""

    name = "ptb"
    title = "Penn Treebank"

    def load(self):
        from rnnkit.data.corpus import load_treebank

        return load_treebank(self.level)

    def token_text(self, index: int) -> str:
        text = super().token_text(index)
        return " " if self.level == "char" and text == "_" else text


class ShakespeareTask(LanguageModelTask):
    """Shakespeare's works, always character level (``rnnkit data fetch shakespeare`` first)."""

    name = "shakespeare"
    title = "Shakespeare"
    fixed_level = "char"

    def load(self):
        from rnnkit.data.corpus import load_shakespeare

        return {split: list(text) for split, text in load_shakespeare().items()}
