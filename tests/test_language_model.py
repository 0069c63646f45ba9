"""The language model (windows carrying the state, step, tied weights), generate() against
re-reading the whole context every step, and the text task end to end: training on a file,
`rnnkit generate`, and a resumed run that carries its state across windows exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rnnkit.cells.base import state_leaves
from rnnkit.cli import main
from rnnkit.config import Config, ConfigError
from rnnkit.generate import generate
from rnnkit.heads.language_model import LanguageModel
from rnnkit.run import run_train
from rnnkit.tasks import LanguageModelTask
from rnnkit.training.checkpoint import find_checkpoint

TOKENS = ["<unk>", "<eos>", *"abcdefghij"]  # a word-level vocabulary of 12, <unk> first


def model_config(cell="lstm", **options):
    """A small ModelConfig (hidden 10, embedding 6) with ``options`` set on it."""
    cfg = Config().model
    cfg.cell, cfg.hidden_size, cfg.embedding_size = cell, 10, 6
    for key, value in options.items():
        setattr(cfg, key, value)
    return cfg


def language_model(cell="lstm", seed=0, **options):
    """A seeded float64 LanguageModel over :data:`TOKENS`, in eval mode."""
    torch.manual_seed(seed)
    return LanguageModel(model_config(cell, **options), len(TOKENS)).double().eval()


def tokens(N=3, T=9, seed=0):
    """Random token ids (N, T)."""
    return torch.randint(0, len(TOKENS), (N, T), generator=torch.Generator().manual_seed(seed))


# ---- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman", "jordan", "scrn"])
def test_two_windows_carrying_the_state_equal_one_pass(cell):
    model = language_model(cell)
    x = tokens()
    whole, final = model(x)
    first, state = model(x[:, :4])
    second, state = model(x[:, 4:], state)
    assert whole.shape == (3, 9, len(TOKENS))
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-12, atol=1e-12)
    for a, b in zip(state_leaves(state), state_leaves(final), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    restarted, _ = model(x[:, 4:])  # without the state: a different answer
    assert not torch.allclose(restarted, whole[:, 4:])


@pytest.mark.parametrize("cell", ["lstm", "jordan"])
def test_step_is_the_last_position_of_forward(cell):
    model = language_model(cell)
    x = tokens()
    logits, _ = model(x)
    _, state = model(x[:, :-1])
    log_probs, after = model.step(x[:, -1], state)
    assert log_probs.shape == (3, len(TOKENS))
    torch.testing.assert_close(log_probs, logits[:, -1].log_softmax(-1), rtol=1e-12,
                               atol=1e-12)
    # and stepping on continues the same stream
    nxt = torch.tensor([2, 3, 4])
    full, _ = model(torch.cat([x, nxt[:, None]], 1))
    torch.testing.assert_close(model.step(nxt, after)[0], full[:, -1].log_softmax(-1),
                               rtol=1e-12, atol=1e-12)


def test_tied_weights_share_one_parameter():
    model = language_model(tie_weights=True, embedding_size=10)
    assert model.out.weight is model.embed.weight
    names = [name for name, _ in model.named_parameters()]
    assert "out.weight" not in names and "embed.weight" in names  # counted once
    untied = language_model(embedding_size=10)
    assert untied.out.weight is not untied.embed.weight


def test_embeddings_start_small_and_the_output_bias_at_zero():
    # not torch's N(0, 1), whose vectors of norm ~sqrt(Emb) stay as noise for rare words
    model = LanguageModel(model_config(embedding_size=100), 5000)
    assert model.embed.weight.abs().max() <= 0.1
    assert model.embed.weight.std() > 0.05  # uniform on [-0.1, 0.1]: std 0.0577
    assert torch.equal(model.out.bias, torch.zeros(5000))


def test_normal_embedding_init_keeps_torchs_defaults():
    # the same draws as nn.Embedding and nn.Linear make, in the same order
    torch.manual_seed(3)
    model = LanguageModel(model_config(embedding_size=100, embedding_init="normal"), 5000)
    torch.manual_seed(3)
    embed = nn.Embedding(5000, 100)
    assert torch.equal(model.embed.weight, embed.weight)
    assert 0.95 < model.embed.weight.std() < 1.05
    assert model.out.bias.abs().max() > 0


def test_tied_weights_need_the_embedding_size_to_match():
    with pytest.raises(ConfigError, match=r"model.tie_weights: .*model.embedding_size must "
                                          r"equal the network's output size 10, got 6"):
        language_model(tie_weights=True)


def test_a_bidirectional_language_model_is_refused():
    with pytest.raises(ConfigError, match="model.bidirectional: a language model predicts"):
        language_model(bidirectional=True)


def test_gradcheck_of_the_loss_wrt_the_embedding_output():
    model = language_model("jordan")
    x = tokens(N=2, T=4)
    emb = model.embed(x).detach().requires_grad_(True)  # (N, T, Emb)

    def loss(e):
        h, _ = model.rnn(e)
        logits = model.out(h)  # (N, T-1 predictions of the next token)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())

    assert torch.autograd.gradcheck(loss, (emb,))


# ---- generate() ------------------------------------------------------------------------------


def lm_task(level="word"):
    """A LanguageModelTask over :data:`TOKENS` without data, as a checkpoint rebuilds it."""
    cfg = Config()
    cfg.data.task, cfg.data.level = "text", level
    cfg.model = model_config()
    return LanguageModelTask(cfg, state={"tokens": TOKENS})


def rereading_greedy(task, model, ids, length):
    """The greedy continuation computed by re-running the model on the whole growing context
    at every step (no state carried between steps): (token ids, text)."""
    ids, out = list(ids), []
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(torch.tensor([ids]))
            token = int(logits[0, -1].argmax())
            ids.append(token)
            out.append(token)
    return out, "".join(task.token_text(t) for t in out)


@pytest.mark.parametrize("prime", ["a b c", ""])
def test_greedy_generation_equals_rereading_the_whole_context(prime):
    task = lm_task()
    model = language_model("gru", seed=3)
    with torch.no_grad():  # larger weights than the init: a varied greedy text, not one token
        for p in model.parameters():
            p.normal_(0.0, 1.0)
    emitted = []
    text = generate(task, model, prime, length=15, temperature=0.0, emit=emitted.append)
    start = task.encode_text(prime) if prime else [task.vocab.index("<eos>")]
    ids, want = rereading_greedy(task, model, start, 15)
    assert text == want
    assert emitted == [task.token_text(t) for t in ids]  # each token, in order
    assert len(set(ids)) > 1  # not a degenerate constant stream


def test_token_text_of_words_and_characters():
    task = lm_task()
    assert task.token_text(task.vocab.index("b")) == " b"
    assert task.token_text(task.vocab.index("<eos>")) == "\n"
    assert task.encode_text("a zzz") == [task.vocab.index("a"), task.vocab.index("<unk>")]


def test_sampling_is_repeatable_with_a_seed():
    task = lm_task()
    model = language_model(seed=1)
    a = generate(task, model, "a", length=30, temperature=1.0, seed=5)
    b = generate(task, model, "a", length=30, temperature=1.0, seed=5)
    c = generate(task, model, "a", length=30, temperature=1.0, seed=6)
    assert a == b and a != c
    assert len(a.split()) == 30 - a.count("\n")  # 30 tokens, <eos> printed as a line end
    greedy = generate(task, model, "a", length=30, temperature=0.0)
    assert generate(task, model, "a", length=30, top_k=1, seed=5) == greedy


@pytest.mark.parametrize("length", [0, -3, 2.5, True, "10"])
def test_generate_checks_the_length(length):
    task = lm_task()
    with pytest.raises(ValueError, match=r"length: expected an int >= 1, got"):
        generate(task, language_model(), "a", length=length)


def test_generate_needs_a_readable_prime():
    with pytest.raises(ValueError, match="prime: expected some text the model can read"):
        generate(lm_task(), language_model(), "   ", length=3)


# ---- the text task end to end ----------------------------------------------------------------

PATTERN = "a b c d"
STEPS = 150


def text_config(train_file, out, max_steps=STEPS):
    """A small, fast run of the text task on ``train_file`` into ``out``."""
    cfg = Config()
    cfg.data.task, cfg.data.train_file = "text", str(train_file)
    cfg.data.batch_size, cfg.data.seq_len = 4, 8
    cfg.model.cell, cfg.model.hidden_size, cfg.model.embedding_size = "lstm", 16, 8
    cfg.model.input_dropout = 0.1  # draws random numbers, so a resume must restore the RNG
    cfg.train.optimizer, cfg.train.lr = "adam", 1e-2
    cfg.train.max_steps, cfg.train.eval_every = max_steps, 50
    cfg.run.out, cfg.run.checkpoint_every = str(out), 30
    cfg.run.progress = cfg.run.plots = False
    return cfg


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A word-level text file of 100 lines "a b c d" (500 tokens) and a run trained on it."""
    root = tmp_path_factory.mktemp("lm")
    path = root / "pattern.txt"
    path.write_text(f"{PATTERN}\n" * 100, encoding="utf-8")
    cfg = text_config(path, root / "straight")
    summary = run_train(cfg, print_fn=lambda _line: None)
    return path, root / "straight", summary


def test_training_on_a_text_file_learns_the_pattern(text_run):
    _, out, summary = text_run
    V = 6  # <unk>, a, b, c, d, <eos>
    assert summary["best"] < 0.15 * math.log(V)  # val nll, nats per token
    assert summary["test"]["nll"] < 0.15 * math.log(V)
    assert summary["test"]["ppl"] == pytest.approx(math.exp(summary["test"]["nll"]))


def test_rnnkit_generate_prints_the_pattern(text_run, capsys):
    _, out, _ = text_run
    assert main(["generate", "--run", str(out), "--greedy", "--length", "10"]) == 0
    assert capsys.readouterr().out == " a b c d\n a b c d\n\n"
    assert main(["generate", "c", "--run", str(out), "--greedy", "--length", "4"]) == 0
    assert capsys.readouterr().out == "c d\n a b\n"


def test_rnnkit_generate_refuses_a_run_that_is_not_a_language_model(tmp_path, capsys):
    cfg = Config()
    cfg.data.task, cfg.data.seq_len, cfg.data.batch_size = "copy", 25, 8
    cfg.data.train_size, cfg.data.val_size, cfg.data.test_size = 16, 8, 8
    cfg.model.hidden_size, cfg.train.max_steps = 4, 1
    cfg.run.out, cfg.run.progress, cfg.run.plots = str(tmp_path / "copy"), False, False
    run_train(cfg, print_fn=lambda _line: None)
    capsys.readouterr()
    assert main(["generate", "--run", str(tmp_path / "copy"), "--length", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "a 'copy' model cannot do this; `rnnkit generate` needs a language-model run" \
        in captured.err
    assert "Traceback" not in captured.err


def test_the_text_task_checks_its_config(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a b\n", encoding="utf-8")
    cfg = text_config(path, tmp_path / "run")
    cfg.train.tbptt = 4
    with pytest.raises(ConfigError, match="train.tbptt: a language model is already trained "
                                          "in windows"):
        LanguageModelTask(cfg)
    cfg.train.tbptt, cfg.data.train_file = 0, ""
    with pytest.raises(ConfigError, match="data.train_file: the text task needs your text"):
        LanguageModelTask(cfg)
    cfg.data.train_file, cfg.data.test_file = str(path), str(path)
    with pytest.raises(ConfigError, match="data.test_file: give data.val_file too"):
        LanguageModelTask(cfg)


def test_a_character_level_task_scores_bits_per_character(tmp_path):
    path = tmp_path / "chars.txt"
    path.write_text("abcab cabca\n" * 20, encoding="utf-8")
    cfg = text_config(path, tmp_path / "run")
    cfg.data.level = "char"
    task = LanguageModelTask(cfg)
    assert task.vocab.to_list()[0] == "<unk>" and "\n" in task.vocab.to_list()
    assert sum(len(ids) for ids in task.ids.values()) == len(path.read_text()) - 1  # last \n
    assert task.token_text(task.vocab.index("b")) == "b"
    torch.manual_seed(0)
    scores = task.evaluate(task.build_model(), "val")
    assert scores["bpc"] == pytest.approx(scores["nll"] / math.log(2))
    assert scores["ppl"] == pytest.approx(math.exp(scores["nll"]))
    assert 0.5 * math.log(len(task.vocab)) < scores["nll"] < 2 * math.log(len(task.vocab))


def test_evaluation_over_several_windows_equals_one_pass(tmp_path, monkeypatch):
    """A split longer than one evaluation window is scored with the state carried from window to
    window: the same NLL as one forward pass over the whole split."""
    import torch.nn.functional as F

    from rnnkit.tasks import language

    path = tmp_path / "t.txt"
    path.write_text("a b c d e\nb a d\n" * 30, encoding="utf-8")
    task = LanguageModelTask(text_config(path, tmp_path / "run"))
    torch.manual_seed(0)
    model = task.build_model().eval()
    ids = task.ids["valid"]
    assert len(ids) > 2 * 4
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0), None)
        one_pass = F.cross_entropy(logits[0], ids[1:], reduction="mean").item()
    monkeypatch.setattr(language, "EVAL_WINDOW", 4)
    assert task.evaluate(model, "val")["nll"] == pytest.approx(one_pass, rel=1e-5)


def test_a_resumed_run_carries_its_state_across_windows(text_run, tmp_path):
    """Stopped at step 60 (mid-pass: 13 windows per pass, so the carried state is not zero)
    and resumed to 150: the same weights, bit for bit, as the run straight to 150."""
    path, straight, _ = text_run
    out = tmp_path / "split"
    cfg = text_config(path, out, max_steps=60)
    run_train(cfg, print_fn=lambda _line: None)
    stopped = find_checkpoint(out)
    assert stopped.name == "step-00000060"
    carry = load_file(stopped / "state.safetensors")
    assert carry and any(t.abs().sum() > 0 for t in carry.values())  # a carried state
    cfg.train.max_steps = STEPS
    run_train(cfg, resume=True, given={"train.max_steps"}, print_fn=lambda _line: None)
    a = load_file(find_checkpoint(straight) / "model.safetensors")
    b = load_file(find_checkpoint(out) / "model.safetensors")
    assert find_checkpoint(out).name == f"step-{STEPS:08d}"
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("flag, message", [
    ("--data.batch_size=5000", "data.batch_size: the training text is cut into that many streams"),
    ("--data.seq_len=5000", "data.seq_len: expected at most the stream length"),
])
def test_streams_that_do_not_fit_the_text_are_a_one_line_config_error(tmp_path, capsys, flag,
                                                                      message):
    text = tmp_path / "tiny.txt"
    text.write_text("a b c d\n" * 50)
    code = main(["train", "--data.task=text", f"--data.train_file={text}", flag,
                 f"--run.out={tmp_path / 'run'}", "--run.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
