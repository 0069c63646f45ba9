"""Sequence to sequence: a padded batch equals each source alone (teacher forcing, greedy and
beam decoding), beam 1 equals greedy, gradients; a toy reversal task trained end to end with its
attention maps; and the captioning task on a few generated scenes."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import Config, ConfigError
from rnnkit.data.text import pad_batch
from rnnkit.heads.decoder import BOS_INDEX, EOS_INDEX
from rnnkit.heads.search import beam_search, greedy
from rnnkit.heads.seq2seq import Seq2Seq
from rnnkit.scores import sequence_error_rate
from rnnkit.tasks import CaptionsTask, Seq2SeqTask
from rnnkit.tasks.seq2seq import max_output
from rnnkit.training import Trainer

SOURCE_VOCAB, TARGET_VOCAB = 11, 12
PNG = b"\x89PNG\r\n\x1a\n"


def model_config(cell="lstm", attention="additive", **options):
    """A small bidirectional ModelConfig (hidden 8, embedding 6) with ``options`` set."""
    cfg = Config().model
    cfg.cell, cfg.hidden_size, cfg.embedding_size = cell, 8, 6
    cfg.bidirectional, cfg.attention = True, attention
    for key, value in options.items():
        setattr(cfg, key, value)
    return cfg


def seq2seq(cell="lstm", attention="additive", seed=0, scale=None, **options):
    """A seeded float64 Seq2Seq in eval mode; ``scale``: redraw every weight from N(0, scale)."""
    torch.manual_seed(seed)
    model = Seq2Seq(model_config(cell, attention, **options), SOURCE_VOCAB, TARGET_VOCAB)
    model = model.double().eval()
    if scale is not None:  # larger weights than the init: varied greedy outputs
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, scale)
    return model


def batch(seed=0):
    """3 sources of lengths 5, 2, 3 (padded with 0) and decoder inputs (<bos> + 3 tokens)."""
    g = torch.Generator().manual_seed(seed)
    sources = [torch.randint(2, SOURCE_VOCAB, (L,), generator=g).tolist() for L in (5, 2, 3)]
    source, lengths = pad_batch(sources)
    rest = torch.randint(4, TARGET_VOCAB, (3, 3), generator=g)
    inputs = torch.cat([torch.full((3, 1), BOS_INDEX), rest], 1)  # (N, T)
    return source, lengths, inputs


def alone(source, lengths, n):
    """Row n of a padded batch, unpadded, as a batch of one."""
    L = int(lengths[n])
    return source[n:n + 1, :L], lengths[n:n + 1]


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
@pytest.mark.parametrize("cell", ["lstm", "jordan"])
def test_a_padded_batch_gives_the_logits_of_each_source_alone(cell, attention):
    model = seq2seq(cell, attention)
    source, lengths, inputs = batch()
    logits, weights = model(source, lengths, inputs)  # (N, T, V), (N, T, S)
    assert logits.shape == (3, 4, TARGET_VOCAB) and weights.shape == (3, 4, 5)
    for n in range(3):
        src, length = alone(source, lengths, n)
        one, w = model(src, length, inputs[n:n + 1])
        torch.testing.assert_close(logits[n:n + 1], one, rtol=0, atol=1e-10)
        L = int(lengths[n])
        torch.testing.assert_close(weights[n:n + 1, :, :L], w, rtol=0, atol=1e-10)
        assert (weights[n, :, L:] == 0).all()
    garbage = source.clone()
    garbage[source == 0] = 7  # what the padding holds does not matter
    torch.testing.assert_close(model(garbage, lengths, inputs)[0], logits, rtol=0, atol=1e-10)


def test_the_summary_is_the_final_state_of_both_directions():
    model = seq2seq()
    source, lengths, _ = batch()
    state = model.encode(source, lengths)
    h = state["memory"]  # (N, S, 2H)
    for n, L in enumerate(lengths.tolist()):
        m = torch.cat([h[n, L - 1, :8], h[n, 0, 8:]])
        want = torch.tanh(model.decoder.bridge(m))
        torch.testing.assert_close(state["cell"][0][n], want, rtol=1e-12, atol=1e-12)
    assert state["mask"].tolist() == [[True] * 5, [True] * 2 + [False] * 3,
                                      [True] * 3 + [False] * 2]


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_greedy_and_beam_decoding_of_a_batch_equal_each_source_alone(attention):
    model = seq2seq("gru", attention, scale=1.0)
    source, lengths, _ = batch(1)
    state = model.encode(source, lengths)
    found = model.decoder.generate(state, max_len=8)
    beams = model.decoder.generate(model.encode(source, lengths), max_len=8, beam_size=3)
    assert len(found) == 3 and any(found) and len({tuple(f) for f in found}) > 1
    for n in range(3):
        src, length = alone(source, lengths, n)
        assert model.decoder.generate(model.encode(src, length), max_len=8) == [found[n]]
        assert model.decoder.generate(model.encode(src, length), max_len=8,
                                      beam_size=3) == [beams[n]]
        for ids in (found[n], beams[n]):
            assert len(ids) <= 8 and EOS_INDEX not in ids


def test_beam_search_of_width_one_is_greedy():
    model = seq2seq("gru", scale=1.0)
    source, lengths, _ = batch(2)
    bos = torch.full((3,), BOS_INDEX)
    want = greedy(model.decoder.step, model.encode(source, lengths), bos, EOS_INDEX, 8)
    found = beam_search(model.decoder.step, model.encode(source, lengths), bos, EOS_INDEX,
                        beam_size=1, max_len=8)
    assert [hyps[0].tokens for hyps in found] == want
    assert any(want)


def test_greedy_output_is_the_argmax_of_teacher_forcing_on_itself():
    """Feeding the greedy output back with teacher forcing gives logits whose argmax is that
    output then <eos> (or the output itself when it ran to max_len)."""
    model = seq2seq("gru", scale=1.0)
    source, lengths, _ = batch(3)
    for n, ids in enumerate(model.decoder.generate(model.encode(source, lengths), max_len=6)):
        src, length = alone(source, lengths, n)
        logits, _ = model(src, length, torch.tensor([[BOS_INDEX, *ids]]))
        chosen = logits[0].argmax(-1).tolist()
        assert chosen[:len(ids)] == ids
        if len(ids) < 6:
            assert chosen[len(ids)] == EOS_INDEX


def test_gradcheck_of_the_loss_wrt_the_source_embeddings():
    torch.manual_seed(0)
    cfg = model_config("lstm", hidden_size=3, embedding_size=2)
    model = Seq2Seq(cfg, SOURCE_VOCAB, TARGET_VOCAB).double().eval()
    source, lengths = pad_batch([[2, 3, 4], [5, 6]])
    inputs = torch.tensor([[BOS_INDEX, 5, 6], [BOS_INDEX, 7, 0]])
    targets = torch.tensor([[5, 6, EOS_INDEX], [7, EOS_INDEX, 0]])
    emb = model.embed(source).detach().requires_grad_(True)  # (N, S, E)
    mask = torch.arange(3) < lengths[:, None]

    def loss(e):
        h, _ = model.rnn(e, lengths=lengths)  # what encode() does after the embedding
        state = model.decoder.start(h, mask, model.summary(h, mask))
        logits, _ = model.decoder(state, inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)

    assert torch.autograd.gradcheck(loss, (emb,))


# ---- a toy task end to end -------------------------------------------------------------------


def reversal_pairs(n, seed):
    """(letters, [the letters reversed]) for n random words of 2-5 letters from a-f."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        source = [rng.choice("abcdef") for _ in range(rng.randint(2, 5))]
        pairs.append((source, [source[::-1]]))
    return pairs


class ReverseTask(Seq2SeqTask):
    """Write the source's letters backwards; metric: the share of words not exactly right."""

    name = "reverse"
    title = "letter reversal"
    metric, mode = "wer", "min"

    def load(self):
        return {"train": reversal_pairs(400, 1), "valid": reversal_pairs(40, 2),
                "test": reversal_pairs(40, 3)}

    def scores(self, refs, hyps):
        return {"wer": sequence_error_rate(refs, hyps, multi_refs=True)}


def reverse_config(out, attention="additive"):
    """A run of :class:`ReverseTask` that trains in a few seconds (GRU, hidden 24, 120 steps)."""
    cfg = Config()
    cfg.model = model_config("gru", attention, hidden_size=24, embedding_size=8, beam_size=3)
    cfg.data.batch_size = 32
    cfg.train.lr, cfg.train.max_steps, cfg.train.eval_every = 1e-2, 120, 1000
    cfg.run.out, cfg.run.checkpoint_every = str(out), 0
    cfg.run.progress = cfg.run.plots = False
    return cfg


def test_a_toy_reversal_task_trains_to_high_accuracy_and_draws_its_attention(
        tmp_path, monkeypatch, capsys):
    from rnnkit.cli import main
    from rnnkit.tasks import TASKS

    monkeypatch.setitem(TASKS, "reverse", ReverseTask)  # so the saved run can be reloaded
    cfg = reverse_config(tmp_path / "run")
    cfg.data.task = "reverse"
    task = ReverseTask(cfg)
    assert len(task.source) == 2 + 6 and task.target.to_list()[:4] == [
        "<pad>", "<unk>", "<bos>", "<eos>"]
    trainer = Trainer(task, task.config)
    trainer.fit()
    model = trainer.model.eval()
    scores = task.evaluate(model, "test")  # decoded with a beam of 3
    assert scores["wer"] <= 10.0  # at least 90% of the held-out words exactly reversed
    assert scores["loss"] < 0.3
    outputs = task.decode(model, "test", beam_size=1)  # greedy
    assert sequence_error_rate(task.references("test"), outputs, multi_refs=True) <= 10.0
    assert task.translate_text(model, list("fade")) == list("edaf")
    paths = task.report(model, "test", tmp_path)
    assert [p.name for p in paths] == [f"attention-test-{n}.png" for n in range(3)]
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 2000
    first = task.sets["test"]
    L = int(first["lengths"][0])
    state = model.encode(first["source"][:1, :L], first["lengths"][:1])
    weights = model.decoder.attention_map(state, task.target.encode(outputs[0]))
    assert weights.shape == (len(outputs[0]) + 1, L)
    # `rnnkit predict` with the saved run: the source cut into tokens, the output after "->"
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "run"), "f a d e"]) == 0
    assert capsys.readouterr().out == "f a d e  ->  e d a f\n"


def test_decoding_a_split_sorted_by_length_keeps_its_order(tmp_path):
    """decode() runs the sources longest first (chunks of similar lengths stop early) and
    returns the outputs in the split's order: each equals that source decoded alone."""
    task = ReverseTask(reverse_config(tmp_path / "run"))
    torch.manual_seed(0)
    model = task.build_model().eval()
    data = task.sets["test"]
    for beam in (1, 3):
        outputs = task.decode(model, "test", beam_size=beam)
        assert len(outputs) == len(data["lengths"])
        for n in (0, 1, 7, len(outputs) - 1):
            L = int(data["lengths"][n])
            rows = {"source": data["source"][n:n + 1, :L], "lengths": data["lengths"][n:n + 1]}
            with torch.no_grad():
                assert [outputs[n]] == task.outputs(model, rows, beam), (beam, n)


def test_a_task_without_attention_draws_nothing(tmp_path):
    task = ReverseTask(reverse_config(tmp_path / "run", attention="none"))
    torch.manual_seed(0)
    model = task.build_model()
    logits, weights = model(task.sets["valid"]["source"][:4], task.sets["valid"]["lengths"][:4],
                            task.sets["valid"]["inputs"][:4])
    assert weights is None and logits.shape[-1] == len(task.target)
    assert task.report(model, "test", tmp_path) == []


class TwoPronunciations(ReverseTask):
    def load(self):
        pairs = [(list("ab"), [list("xy"), list("xyz")]), (list("b"), [list("z")])]
        return {"train": pairs, "valid": pairs[:1], "test": pairs[1:]}


def test_training_has_a_row_per_reference_and_evaluation_a_row_per_source(tmp_path):
    task = TwoPronunciations(reverse_config(tmp_path / "run"))
    train, valid = task.sets["train"], task.sets["valid"]
    x, y, z = task.target.encode(list("xyz"))
    assert train["inputs"].tolist() == [[BOS_INDEX, x, y, 0], [BOS_INDEX, x, y, z],
                                        [BOS_INDEX, z, 0, 0]]
    assert train["targets"].tolist() == [[x, y, EOS_INDEX, 0], [x, y, z, EOS_INDEX],
                                         [z, EOS_INDEX, 0, 0]]
    assert train["lengths"].tolist() == [2, 2, 1]
    assert valid["inputs"].tolist() == [[BOS_INDEX, x, y]]  # the first reference only
    assert task.references("val") == [[list("xy"), list("xyz")]]  # scored against both
    assert task.state() == {"source": task.source.to_list(), "target": task.target.to_list(),
                            "longest_target": 3}  # "xyz", the longest training reference
    again = TwoPronunciations(task.config, state=task.state())  # from a checkpoint: no data
    assert again.splits == {} and again.target == task.target


def test_a_seq2seq_task_refuses_truncated_bptt(tmp_path):
    cfg = reverse_config(tmp_path / "run")
    cfg.train.tbptt = 3
    with pytest.raises(ConfigError, match="train.tbptt: a sequence-to-sequence task trains on "
                                          "whole pairs"):
        ReverseTask(cfg)


def test_max_output_allows_twice_the_source_plus_ten():
    assert [max_output(n) for n in (1, 5)] == [12, 20]
    assert [max_output(n, limit=7) for n in (1, 5)] == [7, 7]  # model.max_length
    # and no more than one past the longest training target
    assert [max_output(n, longest=15) for n in (1, 5, 40)] == [12, 16, 16]
    assert max_output(torch.tensor([1, 5, 40]), longest=15).tolist() == [12, 16, 16]
    assert max_output(40, limit=7, longest=15) == 7


def test_predict_text_reads_a_words_letters_for_g2p_and_obeys_max_length():
    from rnnkit.heads.decoder import SPECIALS
    from rnnkit.tasks import G2pTask

    cfg = Config()
    cfg.data.task = "g2p"
    cfg.model = model_config(beam_size=2, max_length=3)
    letters = ["<pad>", "<unk>", *"abcdefgh"]
    task = G2pTask(cfg, state={"source": letters, "target": [*SPECIALS, "AA", "B", "K"]})
    assert task.source_tokens(" Bad\n") == ["b", "a", "d"]
    torch.manual_seed(0)
    model = task.build_model().eval()
    for p in model.parameters():  # a model that never writes <eos>: the length limit stops it
        p.data.normal_(0, 1)
    with torch.no_grad():
        model.decoder.out.bias[EOS_INDEX] = -1e4
    out = task.predict_text(model, "bad")
    assert len(out) == 3 and set(out) <= {"AA", "B", "K", "<unk>"}
    with pytest.raises(ValueError, match="text: expected something to read"):
        task.predict_text(model, "   ")


# ---- captioning --------------------------------------------------------------------------------


@pytest.fixture
def few_scenes(monkeypatch):
    """CaptionsTask reads 64 train, 20 validation and 20 test scenes instead of 10,000."""
    import rnnkit.data.scenes as scenes

    real = scenes.scene_splits
    monkeypatch.setattr(scenes, "scene_splits", lambda: real(64, 20, 20))


def test_captions_task_trains_a_step_and_evaluates(few_scenes, tmp_path):
    cfg = Config()
    cfg.data.task, cfg.data.batch_size = "captions", 16
    cfg.model.cell, cfg.model.hidden_size, cfg.model.embedding_size = "lstm", 16, 8
    cfg.model.beam_size = 2
    cfg.train.max_steps, cfg.train.eval_every = 1, 1
    cfg.run.out, cfg.run.checkpoint_every = str(tmp_path / "run"), 0
    cfg.run.progress = cfg.run.plots = False
    task = CaptionsTask(cfg)
    assert len(task.sets["valid"]["images"]) == 20
    assert task.state()["target"][:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    trainer = Trainer(task, cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.fit()
    assert trainer.step == 1 and summary["best_step"] == 1
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # one step changed them
    model = trainer.model.eval()
    scores = task.evaluate(model, "val")
    assert {"loss", "exact", "bleu"} <= set(scores)
    assert 0.0 <= scores["exact"] <= 100.0 and 0.0 <= scores["bleu"] <= 100.0
    captions = task.decode(model, "val")
    assert len(captions) == 20 and all(len(c) <= 20 for c in captions)
    images = task.sets["test"]["images"][:2]
    state = model.encode(images)
    assert state["memory"].shape == (2, 64, 64) and model.grid(images) == (8, 8)
    paths = task.report(model, "test", tmp_path)
    assert len(paths) == 3 and all(p.read_bytes()[:8] == PNG for p in paths)
