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


def make_task(config) -> Task:
    """The task ``config.data.task``, built from the whole config."""
    name = config.data.task
    if name not in TASKS:
        raise ValueError(f"data.task: expected one of {', '.join(task_names())}, got {name!r}")
    return TASKS[name](config)


__all__ = ["Task", "AddingTask", "CopyTask", "AtisTask", "TaggingTask", "TurkishPosTask",
           "ClassificationTask", "SmsSpamTask", "MovieReviewsTask", "VowelsTask",
           "FashionMnistTask", "LanguageModelTask", "PtbTask", "ShakespeareTask",
           "Seq2SeqTask", "G2pTask", "TranslateTask", "CaptionsTask", "TASKS",
           "task_names", "make_task"]
