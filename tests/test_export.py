"""``rnnkit export RUN_DIR --format pt2``: the run's network as a torch.export program with a
dynamic batch and time dimension, which ``torch.export.load`` runs with the model's numbers at
other batch sizes and lengths, and a JSON of its inputs, outputs and vocabularies; clear errors
for a run it cannot export and for a missing or corrupt program."""

import json

import pytest
import torch
from small_runs import text_files, train

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.export import load_program


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    texts, lines = text_files(root)
    return {
        "atis": train(root / "atis", "--data.task=atis", "--model.intent",
                      "--model.char_filters=4", "--model.bidirectional=true",
                      "--model.num_layers=2"),
        "crf": train(root / "crf", "--data.task=atis", "--model.head=crf", "--model.cell=gru"),
        "classify": train(root / "classify", "--data.task=classify",
                          f"--data.train_file={texts}"),
        "vowels": train(root / "vowels", "--data.task=vowels", "--model.cell=peephole_lstm",
                        "--model.layer_norm=true", "--model.zoneout=0.1"),
        "text": train(root / "text", "--data.task=text", f"--data.train_file={lines}",
                      "--data.seq_len=8", "--model.cell=scrn"),
    }


def _export(run, tmp_path, name):
    out = tmp_path / f"{name}.pt2"
    assert main(["export", str(run), "--format", "pt2", "--out", str(out)]) == 0
    about = json.loads(out.with_suffix(".json").read_text())
    return load_program(out).module(), about


def _batches(seed, n_words, *shape_extra):
    g = torch.Generator().manual_seed(seed)
    for N, T in [(3, 7), (5, 12)]:
        tokens = torch.randint(1, n_words, (N, T, *shape_extra), generator=g)
        lengths = torch.randint(1, T + 1, (N,), generator=g)
        lengths[0] = T
        yield tokens, lengths


def test_tagger_exports_emissions_and_intents(runs, tmp_path):
    program, about = _export(runs["atis"], tmp_path, "atis")
    model = rnnkit.load(runs["atis"]).network
    assert about["inputs"] == ["tokens", "lengths", "chars"]
    assert about["outputs"] == ["emissions", "intent_scores"]
    assert about["kind"] == "tagging" and "O" in about["vocabularies"]["tags"]
    for tokens, lengths in _batches(0, len(about["vocabularies"]["words"])):
        chars = torch.randint(1, 10, (*tokens.shape, 6))
        got_e, got_i = program(tokens, lengths, chars)
        with torch.no_grad():
            want = model(tokens, lengths, chars=chars)
        mask = want["mask"]
        torch.testing.assert_close(got_e[:, : mask.shape[1]][mask], want["emissions"][mask])
        torch.testing.assert_close(got_i, want["intent_scores"])


def test_crf_tagger_exports_its_transitions(runs, tmp_path):
    program, about = _export(runs["crf"], tmp_path, "crf")
    crf = rnnkit.load(runs["crf"]).network.crf
    K = len(about["vocabularies"]["tags"])
    assert len(about["crf"]["transitions"]) == K and len(about["crf"]["start"]) == K
    start, _, _ = crf.scores()
    assert about["crf"]["start"] == pytest.approx(start.tolist())
    tokens, lengths = next(_batches(1, 50))
    assert program(tokens, lengths).shape == (*tokens.shape, K)


@pytest.mark.parametrize("name", ["classify", "vowels", "text"])
def test_classifiers_and_language_models_export(runs, tmp_path, name):
    program, about = _export(runs[name], tmp_path, name)
    model = rnnkit.load(runs[name]).network
    for tokens, lengths in _batches(2, 4):
        if name == "vowels":
            x = torch.randn(*tokens.shape, model.rnn.input_size)
            got = program(x, lengths)
            with torch.no_grad():
                want = model(x, lengths)["scores"]
        elif name == "classify":
            got = program(tokens, lengths)
            with torch.no_grad():
                want = model(tokens, lengths)["scores"]
        else:
            got = program(tokens)
            with torch.no_grad():
                want = model(tokens)[0]
        torch.testing.assert_close(got, want)


def test_unexportable_runs_and_bad_programs_are_named(runs, tmp_path, capsys):
    from rnnkit.export import program

    class Seq2seq:
        kind, network = "sequence to sequence", None

    with pytest.raises(ValueError, match="sequence to sequence run cannot be exported"):
        program(Seq2seq())
    with pytest.raises(CheckpointError, match="no exported program"):
        load_program(tmp_path / "nothing.pt2")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable exported program"):
        load_program(bad)
    assert main(["export", str(tmp_path / "no-run")]) == 1
    assert "no-run" in capsys.readouterr().err
