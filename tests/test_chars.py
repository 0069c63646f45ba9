"""Character features of words (rnnkit.heads.chars): the spelling ids, the CNN against its
equations, gradcheck, and the tagger reading the letters of words it never saw."""

import pytest
import torch
from torch.func import functional_call

from rnnkit.cli import main
from rnnkit.config import ModelConfig
from rnnkit.data.text import Vocab
from rnnkit.heads.chars import CHAR_SPECIALS, MAX_CHARS, CharFeatures, spell
from rnnkit.heads.tagger import SequenceTagger


def letters(*words):
    return Vocab.build([list(w) for w in words], specials=CHAR_SPECIALS)


def test_spell_marks_each_word_and_pads_with_zeros():
    chars = letters("ab", "c")
    ids = spell([["ab", "zq"], ["c"]], chars)
    assert ids.shape == (2, 2, 4) and ids.dtype == torch.int16  # L: the longest word + 2
    w, end, unk = chars.index("<w>"), chars.index("</w>"), chars.unk_index
    assert ids[0, 0].tolist() == [w, chars.index("a"), chars.index("b"), end]
    assert ids[1, 0].tolist() == [w, chars.index("c"), end, 0]
    assert ids[0, 1, :4].tolist() == [w, unk, unk, end]  # letters never seen
    assert ids[1, 1].abs().sum() == 0  # a padding word
    long = spell([["a" * (MAX_CHARS + 5)]], chars)[0, 0]
    assert long.shape == (MAX_CHARS + 2,) and long[-1] == end  # cut to MAX_CHARS letters
    assert (long[1:-1] == chars.index("a")).all()


def naive(module, chars):
    """z_t = tanh(max_j sum_i W_i x_{t,j+i} + b) over the real positions j, from the loop."""
    E, W, b = module.embed.weight, module.conv.weight, module.conv.bias  # W (F, C, 3)
    N, T, L = chars.shape
    out = torch.zeros(N, T, W.shape[0], dtype=W.dtype)
    for n in range(N):
        for t in range(T):
            ids = chars[n, t].tolist()
            if ids[0] == 0:
                continue
            x = [E[c] if c else torch.zeros_like(E[0]) for c in ids]
            best = None
            for j in range(L):
                if ids[j] == 0:
                    continue
                s = b.clone()
                for i in (-1, 0, 1):
                    if 0 <= j + i < L:
                        s = s + W[:, :, i + 1] @ x[j + i]
                best = s if best is None else torch.maximum(best, s)
            out[n, t] = torch.tanh(best)
    return out


def test_char_features_match_the_equations():
    torch.manual_seed(0)
    chars = letters("boston", "denver", "la")
    module = CharFeatures(len(chars), filters=5).double()
    ids = spell([["boston", "to", "la"], ["denver"]], chars)
    got = module(ids)
    assert got.shape == (2, 3, 5)
    torch.testing.assert_close(got, naive(module, ids))
    assert got[1, 1:].abs().sum() == 0  # padding words


def test_char_features_gradcheck_float64():
    torch.manual_seed(1)
    chars = letters("fares", "flight")
    module = CharFeatures(len(chars), filters=3, embedding_size=4).double()
    ids = spell([["fares", "flight"], ["fare"]], chars)
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone() for p in module.parameters()]
    params[names.index("embed.weight")] = params[names.index("embed.weight")][1:]
    params = tuple(p.requires_grad_() for p in params)

    def features(*values):
        values = list(values)
        rows = values[names.index("embed.weight")]  # row 0 (padding) stays zero, as in use
        values[names.index("embed.weight")] = torch.cat([rows.new_zeros(1, rows.shape[1]), rows])
        return functional_call(module, dict(zip(names, values, strict=True)), (ids,))

    assert torch.autograd.gradcheck(features, params)


def tagger(**model):
    cfg = ModelConfig(cell="gru", hidden_size=8, embedding_size=6, bidirectional=True,
                      char_filters=4, **model)
    return SequenceTagger(cfg, vocab_size=10, num_tags=3, num_intents=2, num_chars=12).eval()


def test_tagger_reads_the_letters_of_unknown_words():
    torch.manual_seed(0)
    model = tagger()
    tokens = torch.tensor([[2, 1], [2, 1]])  # the same words, the second unknown (<unk> = 1)
    lengths = torch.tensor([2, 2])
    chars = torch.zeros(2, 2, 6, dtype=torch.int16)
    chars[:, 0, :3] = torch.tensor([2, 5, 3])
    chars[0, 1, :4] = torch.tensor([2, 6, 7, 3])  # the unknown word spelled differently
    chars[1, 1, :4] = torch.tensor([2, 8, 9, 3])
    out = model(tokens, lengths, chars=chars)
    assert not torch.allclose(out["emissions"][0, 1], out["emissions"][1, 1])
    paths, intents = model.predict(tokens, lengths, chars)
    assert [len(p) for p in paths] == [2, 2] and len(intents) == 2


@pytest.mark.parametrize("bad", [None, torch.zeros(2, 1, 6, dtype=torch.int32),
                                 torch.zeros(3, 2, 6, dtype=torch.int32)])
def test_tagger_with_char_features_needs_the_chars(bad):
    model = tagger()
    with pytest.raises(ValueError, match="chars: this model reads character ids"):
        model(torch.tensor([[2, 3], [4, 5]]), torch.tensor([2, 2]), chars=bad)


def test_tagger_refuses_char_features_without_a_character_vocabulary():
    cfg = ModelConfig(cell="gru", hidden_size=8, embedding_size=6, char_filters=4)
    with pytest.raises(ValueError, match="num_chars"):
        SequenceTagger(cfg, vocab_size=10, num_tags=3)


def test_atis_with_char_features_trains_saves_and_predicts(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data.task=atis", "--model.cell=gru", "--model.hidden_size=16",
                 "--model.embedding_size=16", "--model.char_filters=8", "--model.intent",
                 "--train.max_steps=10", "--train.eval_every=10", "--data.batch_size=16",
                 "--run.progress=false", "--run.plots=false", f"--run.out={out}"]) == 0
    assert main(["evaluate", str(out), "--split=val", "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", "--run", str(out), "fly from zzyzx to denver"]) == 0
    words = [line.split()[0] for line in capsys.readouterr().out.split("\n") if line.strip()]
    assert words == ["fly", "from", "zzyzx", "to", "denver", "intent"]


def test_char_features_do_not_depend_on_extra_padding():
    torch.manual_seed(2)
    chars = letters("boston", "to")
    module = CharFeatures(len(chars), filters=5)
    ids = spell([["boston", "to"]], chars)
    wider = torch.cat([ids, torch.zeros(1, 2, 7, dtype=ids.dtype)], dim=-1)
    assert torch.equal(module(ids), module(wider))
