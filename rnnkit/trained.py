"""A run trained by the CLI as a Python object: :func:`rnnkit.load`.

>>> model = rnnkit.load("runs/atis")                       # doctest: +SKIP
>>> model.predict("show me flights from boston to denver")  # doctest: +SKIP
([('show', 'O'), ..., ('boston', 'B-fromloc.city_name'), ...], 'atis_flight')

``load`` reads a run directory's checkpoint (``best``, or ``latest`` for a run that never
evaluated) the way ``rnnkit predict`` does: the weights, the config and the vocabularies and
tag/label maps the task saved, with no training data read and nothing unpickled (checkpoints
hold tensors and JSON only; every file is checked against the SHA-256 recorded when it was
saved). What ``predict`` takes and returns follows the run's task:

=======================================  ====================================================
task                                     ``predict(x)``
=======================================  ====================================================
tagging (``atis``, ``tag``, ``pos_*``)   a sentence -> ``([(word, tag), ...], intent)``
                                         (``intent`` None without an intent head)
text classification (``sms_spam``, ...)  a text -> ``(label, {label: probability})``
series classification (``vowels``, ...)  a float tensor ``(T, C)`` -> ``(label, {...})``
sequence to sequence (``g2p``, ...)      a text -> the output tokens (beam search)
language model (``ptb``, ``text``, ...)  a priming text -> the generated text (``length=``,
                                         ``temperature=``, ``top_k=``, ``seed=``)
captioning (``scenes``)                  images ``(N, 3, H, W)`` in [0, 1] -> captions
=======================================  ====================================================

A list of inputs gives a list of results (a batch, where the task batches). The long-memory
tasks (``adding``, ``copy``) have no predict: call the network itself (the model is an
``nn.Module`` whose ``forward`` is the trained network's).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .errors import CheckpointError

# the task attributes that hold a vocabulary or a label map, as :attr:`Trained.vocabularies`
# names them
_MAPS = ("words", "chars", "tags", "intents", "labels", "source", "target", "vocab")


class Trained(nn.Module):
    """A trained run: ``network`` (the task's model with the checkpoint's weights, in eval
    mode), the run's ``config``, ``vocabularies`` and ``predict``. ``forward`` is the
    network's."""

    def __init__(self, task, network: nn.Module, checkpoint: Path, step: int) -> None:
        super().__init__()
        self.network = network
        self.task = task
        self.config = task.config
        self.checkpoint, self.step = checkpoint, step

    def forward(self, *args, **kwargs):
        return self.network(*args, **kwargs)

    @property
    def kind(self) -> str:
        """What the run's task does: ``tagging``, ``text classification``, ``series
        classification``, ``sequence to sequence``, ``language model``, ``captioning`` or
        ``other``."""
        from .tasks.captions import CaptionsTask
        from .tasks.classify import ClassificationTask
        from .tasks.language import LanguageModelTask
        from .tasks.seq2seq import Seq2SeqTask
        from .tasks.tagging import TaggingTask

        if isinstance(self.task, TaggingTask):
            return "tagging"
        if isinstance(self.task, ClassificationTask):
            return f"{self.task.kind} classification"
        if isinstance(self.task, CaptionsTask):  # (a Seq2SeqTask too)
            return "captioning"
        if isinstance(self.task, Seq2SeqTask):
            return "sequence to sequence"
        if isinstance(self.task, LanguageModelTask):
            return "language model"
        return "other"

    @property
    def vocabularies(self) -> dict[str, list[str]]:
        """Every vocabulary and tag/label map of the run, index order: ``words``, ``tags``,
        ``intents``, ``labels``, ``source``, ``target``, ``vocab``, ``chars`` (those the task
        has)."""
        out = {}
        for name in _MAPS:
            m = getattr(self.task, name, None)
            if m is not None:
                out[name] = list(m) if isinstance(m, list) else m.to_list()
        return out

    def predict(self, x, **options):
        """The run's prediction for ``x`` (one input or a list of them): see the module's
        table. ``options`` are the language model's generation settings."""
        kind = self.kind
        if options and kind != "language model":
            raise TypeError(f"predict: options ({', '.join(options)}) are for a language "
                            f"model; this run is {kind}")
        if kind == "captioning":
            return self._captions(x)
        many = isinstance(x, list)
        items = x if many else [x]
        for n, item in enumerate(items):
            self._check_item(kind, item, n if many else None)
        if kind == "tagging":
            words = [_words(t) for t in items]
            tags, intents = self.task.tag_words(self.network, words)
            out = [(list(zip(w, g, strict=True)), i)
                   for w, g, i in zip(words, tags, intents, strict=True)]
        elif kind.endswith("classification"):
            out = self.task.classify(self.network, items)
        elif kind == "sequence to sequence":
            out = [self.task.predict_text(self.network, t) for t in items]
        elif kind == "language model":
            from .generate import generate

            out = [generate(self.task, self.network, t, **options) for t in items]
        else:
            raise TypeError(f"predict: a {self.config.data.task!r} run has no predict (it serves "
                            "tagging, classification, sequence-to-sequence, language-model and "
                            "captioning runs); call the network itself: model(x)")
        return out if many else out[0]

    def _check_item(self, kind: str, item, n: int | None) -> None:
        name = "x" if n is None else f"x[{n}]"
        if kind == "series classification":
            if not isinstance(item, Tensor):
                raise TypeError(f"{name}: expected a float tensor (T, C), got "
                                f"{type(item).__name__}")
            return
        if kind in ("tagging", "text classification", "sequence to sequence") and (
                not isinstance(item, str) or not item.strip()):
            raise ValueError(f"{name}: expected a text with at least one word, got {item!r}")
        if kind == "language model" and not isinstance(item, str):
            raise TypeError(f"{name}: expected a priming text (a str, '' for none), got "
                            f"{type(item).__name__}")

    def _captions(self, images):
        if not isinstance(images, Tensor) or images.dim() not in (3, 4) or \
                images.shape[-3] != 3:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"x: expected images (N, 3, H, W) or one (3, H, W) in [0, 1], got "
                             f"{got}")
        one = images.dim() == 3
        captions = self.task.decode_images(self.network, images[None] if one else images)
        return captions[0] if one else captions

    def extra_repr(self) -> str:
        return f"task={self.config.data.task!r}, checkpoint={str(self.checkpoint)!r}"


def _words(text: str) -> list[str]:
    from .data.text import tokenize

    return tokenize(text)


def load(run_dir, *, checkpoint: str = "best", device: str = "cpu") -> Trained:
    """The trained run in ``run_dir`` (what ``rnnkit train --run.out=DIR`` wrote) as a
    :class:`Trained` module: its network in eval mode on ``device``, ``.config``,
    ``.vocabularies`` and ``.predict(...)``. ``checkpoint``: ``best`` (falls back to
    ``latest`` for a run that never evaluated) or ``latest``.

    Raises CheckpointError, naming the directory and what is wrong, for a missing directory,
    a run with no checkpoint yet, or a corrupt or incomplete checkpoint."""
    from .run import _load_run, _saved_model, _saved_task_state
    from .tasks import TASKS

    if checkpoint not in ("best", "latest"):
        raise ValueError(f"checkpoint: expected 'best' or 'latest', got {checkpoint!r}")
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory (a run is what `rnnkit train "
                              f"--run.out=DIR` writes)")
    from .tasks.base import Task

    ckpt, cfg = _load_run(path, checkpoint)
    task_cls = TASKS.get(cfg.data.task)
    if task_cls is None:
        raise CheckpointError(f"{ckpt.directory}: data.task={cfg.data.task!r} is not a task "
                              f"this rnnkit knows ({', '.join(sorted(TASKS))})")
    state = _saved_task_state(ckpt)
    if state is not None:
        task = task_cls(cfg, state=state)
    elif task_cls.state is Task.state:  # a task with no vocabulary (adding, copy)
        task = task_cls(cfg)
    else:
        raise CheckpointError(f"{ckpt.directory}: the checkpoint has no saved task state for "
                              f"data.task={cfg.data.task!r}, so its vocabularies are unknown")
    return Trained(task, _saved_model(task, ckpt, device), ckpt.directory, ckpt.step)
