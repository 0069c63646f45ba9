"""Ship a trained run: ``rnnkit export RUN_DIR --format pt2`` / :func:`export_run`.

The run's network becomes a ``torch.export`` ExportedProgram (``torch.export.save``), with a
dynamic batch and time dimension, beside a small JSON of what it reads and writes and of the
run's vocabularies and tag/label maps. ``torch.export.load(path).module()`` runs it with no
rnnkit task or model class (its recurrent layers are rnnkit's registered ops, so ``import
rnnkit`` first, which registers them). What the program computes, per task:

- tagging: ``tokens`` (N, T) int64 word ids and ``lengths`` (N,) int64 (and ``chars``
  (N, T, L) int64 with character features) -> ``emissions`` (N, T, tags) (and
  ``intent_scores`` (N, intents) with an intent head);
- text classification: ``tokens`` (N, T), ``lengths`` (N,) -> ``scores`` (N, labels);
- series classification: ``series`` (N, T, C) float32, ``lengths`` -> ``scores``;
- language model: ``tokens`` (N, T) -> ``logits`` (N, T, vocab).

Decoding stays with the caller: the argmax of each word's emissions, or with a CRF head the
Viterbi path over them and the transition scores the JSON holds. Sequence-to-sequence and
captioning runs decode with a search loop whose length depends on what it writes, which
``torch.export`` cannot express with a dynamic length: exporting one is an error that says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from .data.corpus import write_atomic
from .errors import CheckpointError
from .heads.pooling import length_mask

FORMATS = ("pt2", "onnx")


class _Tagger(nn.Module):
    def __init__(self, tagger):
        super().__init__()
        self.tagger = tagger

    def forward(self, tokens: Tensor, lengths: Tensor, chars: Tensor | None = None):
        t = self.tagger
        x = t.embed(tokens)
        if t.chars is not None:
            x = torch.cat([x, t.chars.dense(chars)], dim=-1)  # (N, T, E + F)
        out, _ = t.rnn(x, lengths=lengths)  # (N, T, D*H), zeros past each length
        emissions = t.emit(out)
        if t.intent is None:
            return emissions
        return emissions, t.intent(t.pool(out, length_mask(lengths, tokens.shape[1])))


class _Classifier(nn.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor, lengths: Tensor):
        c = self.classifier
        inputs = c.embed(x) if c.embed is not None else x
        out, _ = c.rnn(inputs, lengths=lengths)
        return c.out(c.pool(out, length_mask(lengths, x.shape[1])))


class _LanguageModel(nn.Module):
    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: Tensor):
        h, _ = self.lm.rnn(self.lm.embed(tokens))
        return self.lm.out(h)


def program(trained) -> tuple[nn.Module, tuple, dict, dict]:
    """``(module, example inputs, dynamic shapes, description)`` of a loaded run
    (:func:`rnnkit.load`) for ``torch.export``."""
    kind, net = trained.kind, trained.network
    N, T = Dim("N", min=1, max=65536), Dim("T", min=2, max=65536)
    tokens = torch.randint(1, 3, (2, 5))
    lengths = torch.tensor([5, 3])
    if kind == "tagging":
        inputs, shapes = (tokens, lengths), {"tokens": {0: N, 1: T}, "lengths": {0: N}}
        names = ["tokens", "lengths"]
        if net.chars is not None:
            L = Dim("L", min=3, max=4096)
            inputs += (torch.randint(1, 3, (2, 5, 6)),)
            shapes["chars"] = {0: N, 1: T, 2: L}
            names.append("chars")
        outputs = ["emissions"] + (["intent_scores"] if net.intent is not None else [])
        extra = {}
        if net.crf is not None:
            start, trans, end = (t.detach().tolist() for t in net.crf.scores())
            extra["crf"] = {"start": start, "transitions": trans, "end": end}
        return _Tagger(net), inputs, shapes, {"inputs": names, "outputs": outputs, **extra}
    if kind in ("text classification", "series classification"):
        text = kind == "text classification"
        x = tokens if text else torch.randn(2, 5, net.rnn.input_size)
        shapes = {"x": {0: N, 1: T}, "lengths": {0: N}}
        return _Classifier(net), (x, lengths), shapes, {
            "inputs": ["x", "lengths"], "outputs": ["scores"],
            "x": "token ids (N, T) int64" if text else "a series (N, T, C) float32"}
    if kind == "language model":
        return _LanguageModel(net), (tokens,), {"tokens": {0: N, 1: T}}, {
            "inputs": ["tokens"], "outputs": ["logits"]}
    raise ValueError(f"export: a {kind} run cannot be exported yet: its decoder searches for its "
                     "output step by step (greedy or beam), a loop whose length depends on what "
                     "it writes, which torch.export cannot express with a dynamic length. "
                     "Exportable: tagging, classification and language-model runs")


def to_onnx(model: nn.Module, args: tuple, path, *, dynamic_shapes=None) -> Path:
    """Write ``model`` (an rnnkit network, or a module built on them) called on ``args`` as an
    ONNX model at ``path``, through torch.export and torch's dynamo ONNX exporter with
    :mod:`rnnkit.onnx_ops`' translations (LSTM, GRU and Elman layers become ONNX's LSTM, GRU
    and RNN operators). ``dynamic_shapes``: as ``torch.export.export``'s; by default every
    tensor argument's first two dimensions (batch and time, or time and batch) are dynamic.
    Needs the ``onnx`` extra (``pip install rnnkit[onnx]``)."""
    try:
        from . import onnx_ops
    except ImportError as e:
        raise ImportError(f"to_onnx needs onnx and onnxscript ({e}): pip install "
                          "'rnnkit[onnx]'") from e
    if dynamic_shapes is None:
        dynamic_shapes = tuple(
            {d: Dim.DYNAMIC for d in range(min(2, a.dim()))} if isinstance(a, Tensor) else None
            for a in args)
    from .cells import (
        ClockworkCell,
        CTRNNCell,
        FullyRecurrentCell,
        IndRNNCell,
        JordanCell,
        MinGRUCell,
        MinLSTMCell,
        SCRNCell,
    )
    from .functional import traced_loops

    was_training = model.training
    model.eval()
    try:
        # the cells whose ops have no ONNX translation run torch's scan over their step,
        # which becomes an ONNX Scan
        with torch.no_grad(), traced_loops(
                {ClockworkCell, CTRNNCell, FullyRecurrentCell, IndRNNCell, JordanCell,
                 MinGRUCell, MinLSTMCell, SCRNCell}):
            exported = torch.export.export(model, args, dynamic_shapes=dynamic_shapes)
    finally:
        model.train(was_training)
    try:
        onnx_program = torch.onnx.export(exported, dynamo=True, verbose=False,
                                         custom_translation_table=onnx_ops.table())
    except Exception as e:  # the exporter wraps a translation's refusal: give that back
        cause = e
        while cause is not None and not isinstance(cause, onnx_ops.UnsupportedForOnnx):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise onnx_ops.UnsupportedForOnnx(str(cause)) from e
        raise
    return _save_atomic(Path(path), lambda tmp: onnx_program.save(str(tmp)))


def _save_atomic(path: Path, save) -> Path:
    """``save(tmp)`` to a temporary file beside ``path`` (its suffix kept: the savers check
    it), then move it over ``path``: a reader never sees half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    save(tmp)
    tmp.replace(path)
    return path


def export_run(run_dir, fmt: str = "pt2", out=None, *, checkpoint: str = "best") -> Path:
    """Export the run in ``run_dir`` (``fmt``: ``"pt2"``) to ``out`` (default
    ``RUN_DIR/model.pt2``) and its description to ``out`` with ``.json``; returns ``out``."""
    from . import load

    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    trained = load(run_dir, checkpoint=checkpoint)
    module, inputs, shapes, about = program(trained)
    # an inference program: its weights need no gradient, so a caller's grad mode (on by
    # default) records nothing through it (the ops traced are the ones that keep nothing for
    # a backward, and some fill preallocated outputs, which autograd refuses to record)
    module.requires_grad_(False)
    out = Path(out) if out is not None else Path(run_dir) / f"model.{fmt}"
    if fmt == "onnx":
        to_onnx(module, inputs, out, dynamic_shapes=shapes)
    else:
        from .functional import traced_loops

        # (layers without a fused kernel, layer-normalized or zoned out, run torch's scan)
        with torch.no_grad(), traced_loops():
            exported = torch.export.export(module.eval(), inputs, dynamic_shapes=shapes)
        _save_atomic(out, lambda tmp: torch.export.save(exported, tmp))
    about = {"format": fmt, "task": trained.config.data.task, "kind": trained.kind,
             "checkpoint_step": trained.step, **about,
             "vocabularies": trained.vocabularies}
    write_atomic(out.with_suffix(".json"), json.dumps(about, indent=1) + "\n")
    return out


def load_program(path):
    """``torch.export.load(path)`` with rnnkit's ops registered; a clear error for a missing
    or corrupt file."""
    from . import ops  # noqa: F401 (registers torch.ops.rnnkit, which the program calls)

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no exported program there (rnnkit export RUN_DIR "
                              "--format pt2 writes one)")
    try:
        return torch.export.load(path)
    except Exception as e:  # noqa: BLE001 (a zip torch cannot read, a truncated file)
        raise CheckpointError(f"{path}: not a readable exported program "
                              f"({type(e).__name__}: {e})") from e
