"""ONNX export (``rnnkit.export.to_onnx``, ``rnnkit export RUN_DIR --format onnx``): LSTM
(diagonal peepholes too), GRU and Elman networks become ONNX's own LSTM/GRU/RNN operators,
bidirectional, stacked, with ``sequence_lens``; onnxruntime gives PyTorch's outputs and final
states to 1e-5 at two batch sizes and two lengths; an exported ATIS tagger reproduces its test
F1; configurations ONNX cannot express are refused by name."""

import json

import numpy as np
import pytest
import torch

import rnnkit
from rnnkit.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from rnnkit.export import to_onnx  # noqa: E402
from rnnkit.onnx_ops import UnsupportedForOnnx  # noqa: E402

I, H = 4, 8
NETS = {
    "lstm": lambda: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True),
    "lstm-peephole": lambda: rnnkit.LSTM(I, H, peephole="diagonal", bidirectional=True),
    "lstm-no-bias": lambda: rnnkit.LSTM(I, H, bias=False),
    "gru": lambda: rnnkit.GRU(I, H, num_layers=2, bidirectional=True),
    "rnn-tanh": lambda: rnnkit.RNN(I, H, num_layers=2, bidirectional=True),
    "rnn-relu": lambda: rnnkit.RNN(I, H, nonlinearity="relu"),
    # the cells without an ONNX operator: torch's scan over the cell's step, an ONNX Scan
    **{c: (lambda c=c: rnnkit.RecurrentNetwork(c, I, H, num_layers=2, bidirectional=True))
       for c in ("jordan", "fully", "clockwork", "ctrnn", "scrn", "indrnn", "mingru")},
    # layer normalization and zoneout (its evaluation mix): a Scan over the cell's step too
    "lstm-scan-layer-norm": lambda: rnnkit.LSTM(I, H, num_layers=2, bidirectional=True,
                                                layer_norm=True),
    "gru-scan-zoneout": lambda: rnnkit.GRU(I, H, bidirectional=True, zoneout=0.2),
    "jordan-layer-norm-zoneout": lambda: rnnkit.Jordan(I, H, layer_norm=True, zoneout=0.3),
}
NATIVE = {"LSTM", "GRU", "RNN"}


class WithLengths(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, lengths):
        out, h = self.net(x, lengths=lengths)
        return (out, *h) if isinstance(h, tuple) else (out, h)


@pytest.mark.parametrize("name", list(NETS))
def test_networks_run_in_onnxruntime_with_pytorchs_numbers(name, tmp_path):
    torch.manual_seed(0)
    model = WithLengths(NETS[name]()).eval()
    x, lengths = torch.randn(6, 3, I), torch.tensor([6, 2, 4])
    path = to_onnx(model, (x, lengths), tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path))
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    # ONNX's own recurrent operator where it has one, else a Scan over the cell's step
    native = name.split("-")[0] in ("lstm", "gru", "rnn") and "scan" not in name
    assert ops & (NATIVE if native else {"Scan"}), ops
    g = torch.Generator().manual_seed(1)
    for T, N in [(6, 3), (11, 5)]:
        xx = torch.randn(T, N, I, generator=g)
        ll = torch.randint(1, T + 1, (N,), generator=g)
        ll[0] = T
        got = session.run(None, {"x": xx.numpy(), "lengths": ll.numpy()})
        with torch.no_grad():
            want = model(xx, ll)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-5)


def test_configurations_onnx_cannot_express_are_named(tmp_path):
    x, lengths = torch.randn(5, 2, I), torch.tensor([5, 3])
    for net, what in [(rnnkit.LSTM(I, H, proj_size=3), "proj_size"),
                      (rnnkit.LSTM(I, H, peephole="full"), "peephole='full'")]:
        with pytest.raises(UnsupportedForOnnx, match=what):
            to_onnx(WithLengths(net), (x, lengths), tmp_path / "m.onnx")


def test_exported_atis_tagger_reproduces_its_test_f1(tmp_path):
    """A small unidirectional softmax tagger with character features and an intent head: the
    ONNX model's argmax tags over the whole test split score the F1 rnnkit reports."""
    from rnnkit.metrics import chunk_f1

    run = tmp_path / "atis"
    assert main(["train", "--data.task=atis", "--model.intent", "--model.char_filters=8",
                 "--model.hidden_size=16", "--model.embedding_size=16", "--train.max_steps=60",
                 "--data.batch_size=32", "--run.progress=false", "--run.plots=false",
                 "--train.eval_every=60", f"--run.out={run}"]) == 0
    assert main(["export", str(run), "--format", "onnx"]) == 0
    about = json.loads((run / "model.json").read_text())
    assert about["inputs"] == ["tokens", "lengths", "chars"]
    session = ort.InferenceSession(str(run / "model.onnx"))
    saved = rnnkit.load(run).task
    task = type(saved)(saved.config, state=saved.state(), data=True)  # the maps, and the data
    want_f1 = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["f1"]
    # the ONNX model over the test split, 128 sentences at a time
    from rnnkit.data.text import pad_batch
    from rnnkit.heads.chars import spell

    sentences = [s.words for s in task.splits["test"]]
    gold = [s.tags for s in task.splits["test"]]
    predicted = []
    for start in range(0, len(sentences), 128):
        part = sentences[start:start + 128]
        tokens, lengths = pad_batch([task.words.encode(w) for w in part])
        chars = spell(part, task.chars).long()
        emissions, _ = session.run(None, {"tokens": tokens.numpy(), "lengths": lengths.numpy(),
                                          "chars": chars.numpy()})
        best = emissions.argmax(-1)
        predicted += [task.tags.decode(row[:n].tolist())
                      for row, n in zip(best, lengths.tolist(), strict=True)]
    f1 = chunk_f1(gold, predicted)["f1"]
    assert f1 == pytest.approx(want_f1, abs=1e-6)
