"""``rnnkit predict --stream``: a unidirectional tagger reads words from standard input and
prints each one's tag as soon as the word is read (one network step a word, the state carried),
the same tags and intent ``rnnkit predict`` gives the whole sentence (softmax head); a CRF head
decides each tag from the previous one; a bidirectional run gets a clear error."""

import io
import sys

import pytest
from small_runs import train

import rnnkit
from rnnkit.cli import main
from rnnkit.run import run_predict_stream

ATIS = ["--data.task=atis", "--model.num_layers=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {
        "softmax": train(root / "softmax", *ATIS, "--model.intent", "--model.char_filters=4"),
        "crf": train(root / "crf", *ATIS, "--model.head=crf", "--model.cell=gru"),
        "bi": train(root / "bi", *ATIS, "--model.bidirectional=true"),
    }


class Typed:
    """A stream typed one character at a time; ``log`` records each read and each print."""

    def __init__(self, text, log):
        self.text, self.at, self.log = text, 0, log

    def read(self, n):
        assert n == 1
        if self.at == len(self.text):
            return ""
        self.at += 1
        self.log.append(("read", self.at))
        return self.text[self.at - 1]


def test_stream_prints_predicts_tags_word_by_word(runs):
    text = "show me flights from boston to denver\nleave boston\n"
    log, lines = [], []

    def print_fn(line, flush=False):
        assert flush
        lines.append(line)
        log.append(("print", line))

    n = run_predict_stream(runs["softmax"], stream=Typed(text, log), print_fn=print_fn)
    assert n == 2
    model = rnnkit.load(runs["softmax"])
    want = []
    for sentence in text.splitlines():
        tagged, intent = model.predict(sentence)
        want += [f"{w}\t{t}" for w, t in tagged] + [f"intent\t{intent}", ""]
    assert lines == want
    # "boston"'s tag is out as soon as the space after it is read, before "to" is
    first = text.index("boston ") + len("boston ")
    printed_at = next(i for i, e in enumerate(log) if e[0] == "print" and
                      e[1].startswith("boston"))
    reads_before = [e[1] for e in log[:printed_at] if e[0] == "read"]
    assert reads_before[-1] == first


def test_crf_head_streams_valid_tags_and_the_cli_reads_stdin(runs, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("i want to fly to boston"))
    assert main(["predict", "--stream", "--run", str(runs["crf"])]) == 0
    out = capsys.readouterr().out.splitlines()
    tags = rnnkit.load(runs["crf"]).vocabularies["tags"]
    assert [line.split("\t")[0] for line in out[:-1]] == "i want to fly to boston".split()
    assert all(line.split("\t")[1] in tags for line in out[:-1]) and out[-1] == ""


def test_bidirectional_runs_and_mixed_arguments_are_refused(runs, monkeypatch, capsys):
    with pytest.raises(ValueError, match="bidirectional"):
        run_predict_stream(runs["bi"], stream=io.StringIO("leave boston\n"))
    assert main(["predict", "--stream", "leave boston", "--run", str(runs["crf"])]) == 2
    assert "--stream reads standard input" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_stream_quietly(runs, monkeypatch, capsys):
    """`rnnkit predict --stream ... | head -3`: the pipe closes; no error line, exit 141."""

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdin", io.StringIO("leave boston\n"))
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["predict", "--stream", "--run", str(runs["crf"])]) == 141
    assert capsys.readouterr().err == ""
