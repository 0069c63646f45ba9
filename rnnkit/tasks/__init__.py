"""Training tasks: what ``rnnkit train --data.task=NAME`` trains (see :mod:`.base`)."""

from __future__ import annotations

from .base import Task
from .captions import CaptionsTask
from .classify import (
    ClassificationTask,
    FashionMnistTask,
    MovieReviewsTask,
    SmsSpamTask,
    VowelsTask,
)
from .language import LanguageModelTask, PtbTask, ShakespeareTask
from .seq2seq import G2pTask, Seq2SeqTask, TranslateTask
from .synthetic import AddingTask, CopyTask
from .tagging import AtisTask, TaggingTask, TurkishPosTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (
    AddingTask, CopyTask, AtisTask, TaggingTask, TurkishPosTask, ClassificationTask, SmsSpamTask,
    MovieReviewsTask, VowelsTask, FashionMnistTask, LanguageModelTask, PtbTask,
    ShakespeareTask, G2pTask, TranslateTask, CaptionsTask)}


def task_names() -> list[str]:
    return sorted(TASKS)


def make_task(config, state: dict | None = None) -> Task:
    """The task ``config.data.task``, built from the whole config; with ``state`` (what a run
    saved: :meth:`Task.state`), its data read but its vocabularies, tag and label sets taken
    from that state, so a saved model reads the inputs it was trained on."""
    name = config.data.task
    if name not in TASKS:
        raise ValueError(f"data.task: expected one of {', '.join(task_names())}, got {name!r}")
    if state is None:
        return TASKS[name](config)
    return TASKS[name](config, state=state, data=True)


__all__ = ["Task", "AddingTask", "CopyTask", "AtisTask", "TaggingTask", "TurkishPosTask",
           "ClassificationTask", "SmsSpamTask", "MovieReviewsTask", "VowelsTask",
           "FashionMnistTask", "LanguageModelTask", "PtbTask", "ShakespeareTask",
           "Seq2SeqTask", "G2pTask", "TranslateTask", "CaptionsTask", "TASKS",
           "task_names", "make_task"]
