"""ONNX translations of rnnkit's registered ops, for torch's dynamo ONNX exporter
(``torch.onnx.export(..., dynamo=True, custom_translation_table=TABLE)``).

The LSTM, GRU and Elman ops map onto ONNX's own LSTM, GRU and RNN operators, one direction each
(a bidirectional rnnkit layer is two ops, forward and reverse, and exports as two operators),
with ``sequence_lens`` from the op's padding mask (ONNX, like rnnkit, zeroes the outputs past a
sequence's length, takes its final state at its last step and starts a reverse pass there):

- LSTM: torch's gate order i, f, g, o becomes ONNX's i, o, f, c; a diagonal peephole
  ``(P_i, P_f, P_o)`` becomes ONNX's ``P`` input ``(P_i, P_o, P_f)``;
- GRU: torch's r, z, n becomes ONNX's z, r, h, with ``linear_before_reset=1`` (torch's GRU
  applies the reset gate after the recurrent product: ``r * (W_hn h + b_hn)``);
- Elman: ONNX RNN with Tanh or Relu.

An LSTM with a full (matrix) peephole, a projection (``proj_size``) or identity activations has
no ONNX operator: exporting one raises :class:`UnsupportedForOnnx`, naming the option. The other
cells (Jordan, fully recurrent, Clockwork, SCRN, CTRNN) have no ONNX operator either: for the
export their layers run torch's ``scan`` over the cell's step (:func:`rnnkit.functional.
scan_traced`), which the exporter writes as an ONNX ``Scan`` (see :func:`rnnkit.export.to_onnx`).
"""

from __future__ import annotations

import torch
from onnxscript import opset18 as op

INT32 = 6  # ONNX TensorProto's element type


class UnsupportedForOnnx(ValueError):
    """A configuration ONNX's recurrent operators cannot express."""


def _reorder(w, order):
    """Split ``w`` in equal gate blocks along axis 0 and concatenate them in ``order``."""
    if len(order) == 1:
        return w
    parts = op.Split(w, num_outputs=len(order), axis=0)
    return op.Concat(*[parts[k] for k in order], axis=0)


def _common(w_ih, w_hh, b_ih, b_hh, valid, order):
    W = op.Unsqueeze(_reorder(w_ih, order), [0])
    R = op.Unsqueeze(_reorder(w_hh, order), [0])
    B = None
    if b_ih is not None or b_hh is not None:  # (rnnkit's cells have both biases or neither)
        bi = _reorder(b_ih if b_ih is not None else op.Mul(b_hh, 0.0), order)
        bh = _reorder(b_hh if b_hh is not None else op.Mul(b_ih, 0.0), order)
        B = op.Unsqueeze(op.Concat(bi, bh, axis=0), [0])
    lens = None
    if valid is not None:  # (T, N) bool -> the lengths (N,) int32
        lens = op.Cast(op.ReduceSum(op.Cast(valid, to=INT32), [0], keepdims=0), to=INT32)
    return W, R, B, lens


def _no_masks(drop, zone, *norms) -> None:
    if any(n is not None for n in norms):  # (rnnkit.export traces such layers' loops instead)
        raise UnsupportedForOnnx("layer_norm: ONNX's recurrent operators do not normalize")
    if zone is not None:
        raise UnsupportedForOnnx("zoneout: ONNX's recurrent operators have no zoneout (its "
                                 "evaluation-time mix of old and new states); export the "
                                 "network built with zoneout=0")
    if drop is not None:  # (a traced evaluation-mode program draws no dropout masks)
        raise UnsupportedForOnnx("recurrent_dropout: export a network in eval mode")


def lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, valid, peephole: str = "none",
         tanh_candidate: bool = True, tanh_cell: bool = True, reverse: bool = False, drop=None,
         zone=None, ln_ih=None, ln_hh=None, ln_c=None):
    _no_masks(drop, zone, ln_ih, ln_hh, ln_c)
    if w_hr is not None:
        raise UnsupportedForOnnx("proj_size: ONNX's LSTM operator has no projection of h")
    if peephole == "full":
        raise UnsupportedForOnnx("peephole='full': ONNX's LSTM operator has diagonal "
                                 "peepholes only")
    if not (tanh_candidate and tanh_cell):
        raise UnsupportedForOnnx("an identity candidate or cell activation: exported only with "
                                 "tanh (ONNX's default LSTM activations)")
    W, R, B, lens = _common(w_ih, w_hh, b_ih, b_hh, valid, (0, 3, 1, 2))
    P = None
    if peephole == "diagonal":
        P = op.Unsqueeze(_reorder(w_peep, (0, 2, 1)), [0])
    Y, Y_h, Y_c = op.LSTM(x, W, R, B, lens, op.Unsqueeze(h0, [0]), op.Unsqueeze(c0, [0]), P,
                          direction="reverse" if reverse else "forward",
                          hidden_size=w_hh.shape[1])
    return op.Squeeze(Y, [1]), op.Squeeze(Y_h, [0]), op.Squeeze(Y_c, [0])


def gru(x, h0, w_ih, w_hh, b_ih, b_hh, valid, reverse: bool = False, drop=None, zone=None,
        ln_ih=None, ln_hh=None):
    _no_masks(drop, zone, ln_ih, ln_hh)
    W, R, B, lens = _common(w_ih, w_hh, b_ih, b_hh, valid, (1, 0, 2))
    Y, Y_h = op.GRU(x, W, R, B, lens, op.Unsqueeze(h0, [0]),
                    direction="reverse" if reverse else "forward",
                    hidden_size=w_hh.shape[1], linear_before_reset=1)
    return op.Squeeze(Y, [1]), op.Squeeze(Y_h, [0])


def elman(x, h0, w_ih, w_hh, b_ih, b_hh, valid, relu: bool = False, reverse: bool = False,
          drop=None, zone=None, ln_ih=None, ln_hh=None):
    _no_masks(drop, zone, ln_ih, ln_hh)
    W, R, B, lens = _common(w_ih, w_hh, b_ih, b_hh, valid, (0,))
    Y, Y_h = op.RNN(x, W, R, B, lens, op.Unsqueeze(h0, [0]),
                    direction="reverse" if reverse else "forward",
                    hidden_size=w_hh.shape[1], activations=["Relu" if relu else "Tanh"])
    return op.Squeeze(Y, [1]), op.Squeeze(Y_h, [0])


def table() -> dict:
    """The translation table for ``torch.onnx.export``: each rnnkit op that keeps nothing for a
    backward (what a traced inference program calls) -> its ONNX translation."""
    from . import ops  # noqa: F401 (registers torch.ops.rnnkit)

    r = torch.ops.rnnkit
    return {r.lstm_sequence_inference.default: lstm, r.gru_sequence_inference.default: gru,
            r.elman_sequence_inference.default: elman}
