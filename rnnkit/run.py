"""``rnnkit train`` and ``rnnkit evaluate``: a config in, a trained run directory out.

A run directory (``run.out``) holds ``checkpoints/`` (see :mod:`rnnkit.training.checkpoint`),
``metrics.jsonl``, ``curves.png`` and, with ``run.grad_flow_every``, the gradient-flow plots.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from .config import Config, ConfigError, config_from_dict, config_to_dict, diff_fields
from .tasks import make_task
from .training.checkpoint import (
    Checkpoint,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
)
from .training.loop import Trainer

# what a resumed run may not change: the model it trains, the data it trains on, and how its
# parameters are grouped in the optimizer (whose saved state has one entry per group)
FIXED_ON_RESUME = ("model.", "data.", "train.recurrent_lr_scale")


def resumed_config(ckpt: Checkpoint, cfg: Config, given: set[str]) -> Config:
    """The config of a resumed run: the checkpoint's, with the fields the user set now
    (``given``, dotted names) applied over it; the model and data must stay as they were."""
    saved = config_from_dict(ckpt.config, source=f"{ckpt.directory}/state.json")
    now = {section: {key: getattr(getattr(cfg, section), key) for key in keys}
           for section, keys in _by_section(given).items()}
    merged = config_from_dict(now, base=saved, source="the command line")
    changed = [f for f in diff_fields(saved, merged) if f.startswith(FIXED_ON_RESUME)]
    if changed:
        first = changed[0]
        section, key = first.split(".")
        raise ConfigError(
            f"--resume: {first} was {getattr(getattr(saved, section), key)!r} in the checkpoint "
            f"and is {getattr(getattr(merged, section), key)!r} now; a resumed run keeps its "
            f"model, data and parameter groups (changed: {', '.join(changed)})")
    return merged


def _by_section(dotted: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in sorted(dotted):
        section, key = name.split(".", 1)
        out.setdefault(section, []).append(key)
    return out


def run_train(cfg: Config, *, resume: bool = False, given: set[str] = frozenset(),
              callbacks=(), print_fn: Callable[[str], object] = print,
              tables: bool = True) -> dict:
    """Train as ``cfg`` says; with ``resume``, continue the latest checkpoint in ``run.out``.
    ``tables``: print a tagger's per-tag table after the test scores (it is in the test
    record of ``metrics.jsonl`` either way).

    A new run refuses a ``run.out`` that already holds a checkpoint (pass ``resume`` or choose
    another directory), so no run overwrites another's work.
    """
    out = Path(cfg.run.out)
    if out.exists() and not out.is_dir():  # before any data is read
        raise ConfigError(f"run.out: {out} is a file; expected a directory for the run (or a "
                          f"path that does not exist yet)")
    existing = find_checkpoint(out) if out.exists() else None
    ckpt = None
    if resume:
        if existing is None:
            raise CheckpointError(f"--resume: no checkpoint in {out} to resume (expected "
                                  f"{out}/checkpoints/latest, written by `rnnkit train`)")
        ckpt = load_checkpoint(out)
        cfg = resumed_config(ckpt, cfg, set(given))
    elif existing is not None:
        raise ConfigError(f"run.out: {out} already holds a checkpoint ({existing.name}); pass "
                          f"--resume to continue that run, or choose another --run.out")
    callbacks = list(callbacks)
    if cfg.run.grad_flow_every:
        from .training.diagnostics import GradientFlowPlots

        callbacks.append(GradientFlowPlots(cfg.run.grad_flow_every))
    # a resumed run reads its data with the maps it was trained with (a reordered training
    # file must not reattach its embeddings to other words)
    task = _task_of_run(ckpt, cfg) if ckpt is not None else make_task(cfg)
    trainer = Trainer(task, cfg, callbacks=callbacks)
    say = print_fn if trainer.is_main else (lambda _text: None)
    if ckpt is not None:
        trainer.resume(ckpt)
        say(f"resumed {out} at step {trainer.step}")
    elif trainer.log is not None:
        trainer.log.truncate_after(0)  # a run killed before its first checkpoint left these
    with _sigterm_interrupts():
        return _fit(trainer, task, cfg, out, say, tables)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises :class:`rnnkit.errors.Terminated` (a KeyboardInterrupt) in the main
    thread while training, so a terminated run saves its last completed step as Ctrl-C does;
    the previous handler comes back after."""
    import signal
    import threading

    from .errors import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(f"signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit(trainer, task, cfg: Config, out: Path, say, tables: bool) -> dict:
    """Train, test and report: the second half of :func:`run_train`."""
    params = sum(p.numel() for p in trainer.model.parameters())
    say(f"{task.describe()}")
    say(f"model: {trainer.describe_model().split(': ', 1)[1]}, {params:,} parameters; "
        f"{cfg.train.optimizer} lr={cfg.train.lr:g}, {cfg.train.max_steps} steps x batch "
        f"{cfg.data.batch_size}" + (f" on {trainer.world.size} processes"
                                    if trainer.world.size > 1 else ""))
    summary = trainer.fit()
    summary["test"] = trainer.final_test()
    if trainer.is_main:
        if summary["out_of_time"]:
            say(f"train.max_minutes={cfg.train.max_minutes:g} reached at step "
                f"{summary['step']} of {cfg.train.max_steps}; continue with: rnnkit train "
                f"--resume --run.out={out}")
        best = summary["best"]
        say(f"best validation {task.metric} {best:.4g} at step {summary['best_step']}"
            if best is not None else "no validation result")
        figures = []
        if summary["test"]:
            say("test: " + _format(summary["test"]))
            for line in _tables(task, summary["test"]) if tables else ():
                say(line)
            if cfg.run.plots:
                figures = _report(task, trainer.model, "test", out)
        else:
            say("no test split (data.test_file not given)")
        say(f"run directory: {out} (checkpoints/, metrics.jsonl"
            + (", curves.png" if summary.get("curves") else "")
            + "".join(f", {p.name}" for p in figures) + ")")
    return summary


def run_evaluate(path, *, split: str = "test", which: str = "best", device: str | None = None,
                 print_fn: Callable[[str], object] = print, as_json: bool = False) -> dict:
    """Metrics of a saved run's model (``which``: ``best`` or ``latest``) on ``split``."""
    ckpt, cfg = _load_run(path, which)
    if device is not None:
        cfg.train.device = device
    task = _task_of_run(ckpt, cfg)
    model = _saved_model(task, ckpt, cfg.train.device)
    import torch

    if not task.has_split(split):
        raise ConfigError(f"--split: the run has no {split} split (its data.{split}_file was "
                          f"not given)")
    with torch.no_grad():
        metrics = task.evaluate(model, split)
        figures = _report(task, model, split, ckpt.directory.parent.parent)
    if as_json:
        print_fn(json.dumps({"checkpoint": str(ckpt.directory), "step": ckpt.step,
                             "split": split, **metrics}))
    else:
        print_fn(f"{ckpt.directory} (step {ckpt.step}), {split}: {_format(metrics)}")
        for line in _tables(task, metrics):
            print_fn(line)
        for path in figures:
            print_fn(f"wrote {path}")
    return metrics


def _report(task, model, split: str, directory) -> list[Path]:
    """The task's report files of ``split`` (a classifier's confusion matrix, a tagger's
    errors), without gradients. A directory that cannot be written (read-only, full) costs
    the files, not the scores: one warning says which."""
    import warnings

    import torch

    from .errors import DataWarning, os_error_text

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return task.report(model, split, directory)
    except OSError as e:
        warnings.warn(DataWarning(f"could not write the {split} report into {directory} "
                                  f"({os_error_text(e)}); the scores above stand"),
                      stacklevel=2)
        return []
    finally:
        model.train(was_training)


def load_for_prediction(path, which: str = "best", device: str = "cpu", kind: str = "text"):
    """The task (rebuilt from the checkpoint's saved vocabularies, no data read) and the model
    of a saved run, ready to predict. ``kind``: ``"text"`` for a model that reads text (a
    tagger or a text classifier), ``"generator"`` for one that writes it (a language model)."""
    ckpt, cfg = _load_run(path, which)
    from .tasks import TASKS

    task_cls = TASKS.get(cfg.data.task)
    state = _saved_task_state(ckpt)
    serves = task_cls is not None and getattr(task_cls, "kind", "text") == kind and (
        kind != "text" or hasattr(task_cls, "predict_text"))
    if not serves or state is None:
        need = ("`rnnkit predict` needs a tagging, text-classification or sequence-to-sequence "
                "run (e.g. data.task=atis, sms_spam, classify or g2p)") if kind == "text" else \
            "`rnnkit generate` needs a language-model run (data.task=ptb, shakespeare or text)"
        raise CheckpointError(f"{ckpt.directory}: a {cfg.data.task!r} model cannot do this; "
                              f"{need}")
    task = task_cls(cfg, state=state)
    return task, _saved_model(task, ckpt, device)


def _load_run(path, which: str) -> tuple[Checkpoint, Config]:
    """A saved run's checkpoint (``best``, or ``latest`` for a run that never evaluated) and
    its config."""
    if which == "best" and find_checkpoint(path, "best") is None:
        which = "latest"
    ckpt = load_checkpoint(path, which=which)
    return ckpt, config_from_dict(ckpt.config, source=f"{ckpt.directory}/state.json")


def _saved_task_state(ckpt: Checkpoint) -> dict | None:
    """What the run's task saved (vocabularies, tag and label sets, statistics), or None."""
    ts = ckpt.trainer_state
    return ts.get("task") if isinstance(ts, dict) else None


def _task_of_run(ckpt: Checkpoint, cfg: Config):
    """The task of a saved run with its data read (to evaluate or resume it): the maps it was
    trained with, and a DataWarning for each data file that differs from the one it saw."""
    import warnings

    from .errors import DataWarning
    from .tasks.files import changed_files, file_fingerprints

    ts = ckpt.trainer_state if isinstance(ckpt.trainer_state, dict) else {}
    for line in changed_files(ts.get("data_files") or {}, file_fingerprints(cfg.data)):
        warnings.warn(DataWarning(line), stacklevel=3)
    return make_task(cfg, _saved_task_state(ckpt))


def _saved_model(task, ckpt: Checkpoint, device):
    """``task``'s model with the checkpoint's weights, on ``device``, in eval mode."""
    model = task.build_model().to(device)
    load_model_weights(model, ckpt)
    return model.eval()


def run_predict(path, sentences: list[str], *, which: str = "best", device: str = "cpu",
                print_fn: Callable[[str], object] = print) -> list:
    """Tagging runs: print every word of every sentence with its predicted slot (and the
    intent). Text-classification runs: print each text's label and its probability.
    Sequence-to-sequence runs (g2p, translate): print each text's output (beam search)."""
    from .tasks.classify import ClassificationTask
    from .tasks.seq2seq import Seq2SeqTask

    task, model = load_for_prediction(path, which, device)
    for n, text in enumerate(sentences, 1):  # all checked before any is printed
        if not text.strip():
            raise ValueError(f"SENTENCE {n} of {len(sentences)}: expected at least one word, "
                             f"got {text!r}")
    results = []
    for text in sentences:
        if isinstance(task, Seq2SeqTask):
            output = task.predict_text(model, text)
            results.append(output)
            print_fn(f"{text}  ->  {' '.join(output)}")
            continue
        if isinstance(task, ClassificationTask):
            label, probs = task.predict_text(model, text)
            results.append((label, probs))
            print_fn(f"{label}  (p={probs[label]:.3f})  {text}")
            continue
        tagged, intent = task.predict_text(model, text)
        results.append((tagged, intent))
        width = max(len(w) for w, _ in tagged)
        for word, tag in tagged:
            print_fn(f"{word:<{width}}  {tag}")
        if intent is not None:
            print_fn(f"{'intent':<{width}}  {intent}")
        print_fn("")
    return results


def run_predict_stream(path, *, which: str = "best", device: str = "cpu", stream=None,
                       print_fn: Callable[..., object] = print) -> int:
    """Tagging runs with a unidirectional network: read words from ``stream`` (standard
    input) and print ``word<TAB>tag`` for each as soon as it is read, ``intent<TAB>...`` and
    a blank line at each sentence's end (a newline). Returns the number of sentences."""
    import sys

    task, model = load_for_prediction(path, which, device)
    if not hasattr(task, "tag_stream"):
        raise CheckpointError(f"{path}: --stream needs a tagging run (data.task=tag or atis), "
                              f"got data.task={task.config.data.task!r}")
    stream = sys.stdin if stream is None else stream

    def emit(word, tag):
        print_fn("" if word is None else f"{word}\t{tag}", flush=True)

    # read(1) returns as soon as a character is there (a pipe's or a terminal's), so a word is
    # tagged when the whitespace after it arrives, not when a buffer fills
    return task.tag_stream(model, iter(lambda: stream.read(1), ""), emit)


def run_predict_file(path, input_path: str, output: str | None = None, *, which: str = "best",
                     device: str = "cpu", print_fn: Callable[[str], object] = print) -> int:
    """Tagging runs: tag every sentence of ``input_path`` and write it, in its own format with
    the predicted tags, to ``output`` (atomically) or standard output. Returns the number of
    sentences."""
    import io
    import sys

    from .data.corpus import write_atomic

    task, model = load_for_prediction(path, which, device)
    if not hasattr(task, "predict_file"):
        raise CheckpointError(f"{path}: --input needs a tagging run (data.task=tag or atis), "
                              f"got data.task={task.config.data.task!r}")
    if output is None:
        return task.predict_file(model, input_path, sys.stdout)
    buffer = io.StringIO()
    count = task.predict_file(model, input_path, buffer)
    write_atomic(Path(output), buffer.getvalue())
    print_fn(f"tagged {count} sentences of {input_path} -> {output}")
    return count


def _format(metrics: dict) -> str:
    """The scalar metrics on one line (tables such as ``per_tag`` are printed apart)."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items() if not isinstance(v, dict))


def _tables(task, metrics: dict) -> list[str]:
    """A tagger's per-tag table (per chunk type for chunk tags) as lines, else none."""
    from .metrics import per_tag_table

    if not isinstance(metrics.get("per_tag"), dict) or not metrics["per_tag"]:
        return []
    heading = "tag" if getattr(task, "scheme", "none") == "none" else "chunk type"
    return [""] + per_tag_table(metrics["per_tag"], heading)


__all__ = ["run_train", "run_evaluate", "resumed_config", "config_to_dict"]
