"""Accuracy benchmark: train each reference model with ``rnnkit train``'s engine and report its
test scores beside the targets and the published numbers. Writes the ``accuracy`` section of
``benchmarks/RESULTS.md`` (and ``ACCURACY.json`` beside it).

    python benchmarks/accuracy.py                 # every run (hours on 2 cores: PTB ~35 min each)
    python benchmarks/accuracy.py --only vowels   # some of them
    python benchmarks/accuracy.py --report-only   # rewrite the section from ACCURACY.json

Each run is the config below, trained from scratch into ``benchmarks/runs/<name>`` (replaced),
best checkpoint by validation metric, scored once on the test split. A run with more seeds
trains them too (``<name>-seed<N>``) and reports their spread: the targets are read on the
first seed's row.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rnnkit.atis_demo import demo_config
from rnnkit.config import Config, load_config
from rnnkit.run import run_train
from rnnkit.tasks import TASKS

sys.path.insert(0, str(Path(__file__).parent))  # the scripts' shared helper beside them
from results_file import machine, write_section  # noqa: E402

HERE = Path(__file__).parent


@dataclass
class Run:
    name: str
    what: str  # the model, in words
    config: Config
    targets: dict[str, float] = field(default_factory=dict)  # metric -> at least
    published: str = ""  # the number to compare with, and its source
    at_most: dict[str, float] = field(default_factory=dict)  # metric -> at most (errors, ppl)
    # more seeds (train.seed) of the same config, reported as a spread beside the seed-0 row
    # that the targets are read on: how much of a score is the model and how much the draw
    seeds: tuple[int, ...] = ()


def atis(cell: str, **model) -> Config:
    """The demo's tagger and training with another cell (and model fields)."""
    cfg = demo_config()
    cfg.model.cell = cell
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def pos(cell: str, head: str) -> Config:
    """Part-of-speech tagging on the Turkish Web Treebank (UPOS) as
    ``examples/turkish_pos.toml`` (the README's command) trains it, with ``cell`` and
    ``head``."""
    cfg = load_config(HERE.parent / "examples" / "turkish_pos.toml")
    cfg.model.cell, cfg.model.head = cell, head
    return cfg


_TWT = ("no published bi-LSTM tagger on this treebank that we could find (its paper, "
        "Kayadelen et al. 2020, reports parsing); Plank et al. 2016 used UD Turkish IMST, "
        "another treebank")


def schedule(cfg: Config, lr: float, steps: int, eval_every: int, clip: float) -> Config:
    """Adam at ``lr`` with a cosine schedule over ``steps``, clipping at norm ``clip``,
    validating and checkpointing every ``eval_every`` steps."""
    t = cfg.train
    t.lr, t.max_steps, t.eval_every, t.clip_norm, t.schedule = lr, steps, eval_every, clip, "cosine"
    cfg.run.checkpoint_every = eval_every
    return cfg


def classifier(task: str, *, cell="lstm", hidden=128, steps=1500, batch=32, lr=3e-3,
               eval_every=150, **model) -> Config:
    cfg = Config()
    cfg.data.task, cfg.data.batch_size = task, batch
    cfg.model.cell, cfg.model.hidden_size = cell, hidden
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return schedule(cfg, lr, steps, eval_every, clip=5.0)


def stream_model(task: str, cell: str, *, hidden: int, batch: int, seq_len: int,
                 layers=1, **model) -> Config:
    """A language model over ``batch`` streams read in windows of ``seq_len`` tokens, the
    state carried from one window to the next; the embedding as wide as the network unless
    ``model`` says otherwise."""
    cfg = Config()
    cfg.data.task, cfg.data.batch_size, cfg.data.seq_len = task, batch, seq_len
    m = cfg.model
    m.cell, m.hidden_size, m.num_layers, m.embedding_size = cell, hidden, layers, hidden
    for key, value in model.items():
        setattr(m, key, value)
    return cfg


def language_model(task: str, cell: str, *, lr: float, epochs: int, decay_every: int,
                   steps_per_epoch=1330, hidden=100, input_dropout=0.2,
                   recurrent_lr_scale=1.0, max_minutes=0.0, **model) -> Config:
    """Word level, 20 streams read in windows of 35 words, the state carried; dropout on the
    embeddings and on the network's outputs; plain SGD with the gradient norm clipped at 0.25,
    as Zaremba et al. (2014) and torch's word_language_model; the rate divided by 4 every
    ``decay_every`` epochs.

    What we measured on the way:
    - Adam on the LSTM overfitted (validation 156 with training perplexity 107 after 7
      epochs); SGD without dropout reached validation 123 (test 119) with training
      perplexity 61.
    - With dropout 0.2 the LSTM kept improving a little every epoch at lr 20 (validation 129
      after 9), so a rule that decays on plateaus never lowered the rate: it decays on a
      fixed step instead.
    - A tanh Elman network under SGD saturates above lr 5 (|h|^2 ~ 85 of 100 within 100
      steps, the loss back up to 7.8) and learns slowly at 5 (validation 206 after 4 epochs).
      With its recurrent layer alone at a tenth of the rate (lr 2, the embeddings and softmax
      at 20) it stays unsaturated (|h|^2 ~ 12) and learns as fast as the LSTM (training loss
      6.06 over steps 300-400).
    - The SCRN's sigmoid units go the other way: with its recurrent layer at 3 times the
      rate, validation was 172 after 3 epochs at lr 20, against 178 at 1 times."""
    cfg = stream_model(task, cell, hidden=hidden, batch=20, seq_len=35,
                       input_dropout=input_dropout, **model)
    t = cfg.train
    t.optimizer, t.lr, t.recurrent_lr_scale = "sgd", lr, recurrent_lr_scale
    t.momentum, t.clip_norm = 0.0, 0.25
    t.schedule, t.step_size, t.gamma = "step", decay_every * steps_per_epoch, 0.25
    t.plateau_patience = 0  # unused by the step schedule; kept so the recorded configs match
    t.max_steps, t.eval_every = epochs * steps_per_epoch, steps_per_epoch
    t.max_minutes = max_minutes
    cfg.run.checkpoint_every = steps_per_epoch
    return cfg


def seq2seq(task: str, *, attention="additive", hidden=128, steps=6000, batch=128, lr=3e-3,
            eval_every=1000, **model) -> Config:
    """A bidirectional LSTM encoder and an LSTM attention decoder."""
    cfg = Config()
    cfg.data.task, cfg.data.batch_size = task, batch
    m = cfg.model
    m.cell, m.hidden_size, m.bidirectional, m.attention = "lstm", hidden, True, attention
    m.embedding_size = 64
    for key, value in model.items():
        setattr(m, key, value)
    return schedule(cfg, lr, steps, eval_every, clip=5.0)


RUNS = [
    Run("atis-bilstm-crf", "BiLSTM 128 + CRF + intent head, words and characters (the "
        "`make demo` model)", demo_config(), {"f1": 95.5, "intent_accuracy": 97.5},
        "BLSTM-CRF with pretrained GloVe and character embeddings: F1 95.74; intent: "
        "Slot-Gated BLSTM (Goo et al. 2018) 94.1, Stack-Propagation + BERT (Qin et al. "
        "2019) 97.5", seeds=(1, 2, 3)),
    Run("atis-elman", "bidirectional Elman 128 + CRF + intent head, words and characters",
        atis("elman"), {"f1": 94.5},
        "Elman RNN, Mesnil et al. 2015: F1 94.98"),
    Run("atis-jordan", "bidirectional Jordan 128 + CRF + intent head, words and characters",
        atis("jordan"), {"f1": 94.0},
        "Jordan RNN, Mesnil et al. 2015: F1 94.29"),
    Run("atis-elman-forward", "forward-only Elman 128 + CRF + intent head, words and characters",
        atis("elman", bidirectional=False), {}, "Elman RNN, Mesnil et al. 2015: F1 94.98"),
    Run("atis-jordan-forward", "forward-only Jordan 128 + CRF + intent head, words and characters",
        atis("jordan", bidirectional=False), {}, "Jordan RNN, Mesnil et al. 2015: F1 94.29"),
    Run("pos-bilstm-crf", "Turkish POS: BiLSTM 128 + CRF, words and characters",
        pos("lstm", "crf"), {}, _TWT, seeds=(1, 2, 3)),
    Run("pos-bilstm", "Turkish POS: BiLSTM 128 + softmax, words and characters",
        pos("lstm", "softmax"), {}, _TWT, seeds=(1, 2, 3)),
    Run("pos-elman", "Turkish POS: bidirectional Elman 128 + softmax, words and characters",
        pos("elman", "softmax"), {}, _TWT),
    Run("pos-jordan", "Turkish POS: bidirectional Jordan 128 + softmax, words and characters",
        pos("jordan", "softmax"), {}, _TWT),
    Run("vowels", "BiLSTM 128, mean pooling, on 12 standardised channels",
        classifier("vowels", bidirectional=True, pooling="mean", batch=16, lr=2e-3,
                   steps=1000, eval_every=50, input_dropout=0.3),
        {"accuracy": 98.0}, "", seeds=(1, 2, 3)),
    Run("sms-spam", "BiLSTM 64, max pooling, words from scratch",
        classifier("sms_spam", hidden=64, bidirectional=True, pooling="max", steps=1000,
                   eval_every=100, input_dropout=0.3), {}, ""),
    Run("movie-reviews", "BiLSTM 128, max pooling, words from scratch",
        classifier("movie_reviews", bidirectional=True, pooling="max", steps=1500,
                   input_dropout=0.5), {}, ""),
    Run("fashion-mnist-rows", "LSTM 128 reading 28 rows of 28 pixels, final state",
        classifier("fashion_mnist", pooling="final", batch=128, steps=3000, eval_every=500),
        {}, ""),
    Run("captions", "CNN (3 conv layers) + LSTM 128 decoder, additive attention, beam 5",
        seq2seq("captions", hidden=128, steps=1500, batch=64, eval_every=250, embedding_size=32),
        {"exact": 90.0}, ""),
    Run("shakespeare-char", "LSTM 512, character level, 32 streams x 100 steps",
        schedule(stream_model("shakespeare", "lstm", hidden=512, batch=32, seq_len=100,
                              embedding_size=64, embedding_init="normal"),
                 2e-3, 2500, 250, clip=1.0),
        {}, "", at_most={"val nll": 1.5, "minutes": 20}),
    # layer normalization's evidence (Ba et al. 2016): the same model and schedule, normalized
    Run("shakespeare-char-layernorm", "the same LSTM 512, layer-normalized (gate "
        "pre-activations and cell)",
        schedule(stream_model("shakespeare", "lstm", hidden=512, batch=32, seq_len=100,
                              embedding_size=64, embedding_init="normal", layer_norm=True),
                 2e-3, 2500, 250, clip=1.0),
        {}, "", at_most={"val nll": 1.5}),
    Run("g2p-attention", "BiLSTM 128 encoder, LSTM 128 decoder, additive attention, beam 5",
        seq2seq("g2p"), {}, "Yao & Zweig 2015, encoder-decoder LSTM: PER 7.63, WER 28.61",
        at_most={"wer": 30.0, "per": 8.0}),
    Run("g2p-no-attention", "the same without attention (the decoder starts from the final "
        "states only)", seq2seq("g2p", attention="none"), {}, ""),
    Run("ptb-elman", "Elman 100, word level, full softmax, SGD, the recurrent layer at a "
        "tenth of the rate",
        language_model("ptb", "elman", lr=20.0, epochs=14, decay_every=6,
                       recurrent_lr_scale=0.1),
        {}, "Mikolov et al. 2015 (SRN, 100 units): 129", at_most={"ppl": 129.0}),
    Run("ptb-lstm", "LSTM 100, word level, full softmax, SGD",
        language_model("ptb", "lstm", lr=20.0, epochs=14, decay_every=6),
        {}, "Mikolov et al. 2015 (LSTM, 100 units): 115", at_most={"ppl": 115.0}),
    Run("ptb-scrn", "SCRN 100 (+ 50 context units), word level, full softmax, SGD, the "
        "recurrent layer at 3 times the rate",
        language_model("ptb", "scrn", lr=20.0, epochs=18, decay_every=8,
                       recurrent_lr_scale=3.0),
        {}, "Mikolov et al. 2015 (SCRN, 100 units): 115", at_most={"ppl": 115.0}),
    # The regularizers' evidence (rnnkit/regularize.py): one 2-layer 200-unit LSTM, the same
    # optimizer and epochs, three ways (Zaremba et al. 2014's "small" model size).
    Run("ptb-lstm200-plain", "2-layer LSTM 200, word level, no regularization",
        language_model("ptb", "lstm", lr=20.0, epochs=13, decay_every=5, hidden=200,
                       input_dropout=0.0, num_layers=2),
        {}, "Zaremba et al. 2014 (2 x 200, no regularization): 114.5"),
    Run("ptb-lstm200-dropout", "2-layer LSTM 200, word level, standard dropout 0.25 on the "
        "embeddings, between layers and on the outputs",
        language_model("ptb", "lstm", lr=20.0, epochs=13, decay_every=5, hidden=200,
                       input_dropout=0.25, dropout=0.25, num_layers=2),
        {}, "Zaremba et al. 2014 (2 x 200, no regularization): 114.5"),
    Run("ptb-lstm200-variational", "2-layer LSTM 200, word level, variational dropout 0.25 "
        "(embeddings, between layers, outputs), weight drop 0.25, zoneout 0.05",
        language_model("ptb", "lstm", lr=20.0, epochs=13, decay_every=5, hidden=200,
                       input_dropout=0.25, dropout=0.25, dropout_mode="variational",
                       weight_drop=0.25, zoneout=0.05, num_layers=2),
        {}, "Zaremba et al. 2014 (2 x 200, no regularization): 114.5", at_most={"ppl": 105.0}),
    # Zaremba et al.'s "medium" size, as far as about two hours of one core go: 39 epochs
    # would take about 12 h here (16 min an epoch at 1 thread), so a 7-epoch schedule of its
    # own (the rate divided by 4 after epochs 3 and 6), cut by train.max_minutes if slower
    Run("ptb-lstm650-variational", "2-layer LSTM 650, word level, variational dropout 0.5 "
        "(embeddings, between layers, outputs), weight drop 0.2; 7 epochs",
        language_model("ptb", "lstm", lr=20.0, epochs=7, decay_every=3, hidden=650,
                       input_dropout=0.5, dropout=0.5, dropout_mode="variational",
                       weight_drop=0.2, num_layers=2, max_minutes=125.0),
        {}, "Zaremba et al. 2014 (2 x 650, dropout, 39 epochs): 82.7; Gal and Ghahramani "
        "2016 (variational, 2 x 650): 79.7"),
]


def train(cfg: Config, out: Path, steps: int | None) -> tuple[dict, float]:
    """Train ``cfg`` from scratch into ``out``: its summary and the seconds it took."""
    cfg.run.out = str(out)
    cfg.run.progress = False
    if steps is not None:  # --quick
        cfg.train.max_steps = steps
        cfg.train.eval_every = cfg.run.checkpoint_every = max(1, steps // 2)
    shutil.rmtree(cfg.run.out, ignore_errors=True)
    start = time.perf_counter()
    summary = run_train(cfg, print_fn=lambda line: print(f"  {line}", flush=True))
    return summary, time.perf_counter() - start


def scalars(metrics: dict) -> dict:
    """The scalar metrics (a tagger's per-tag table stays in its run's metrics.jsonl)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def run_one(run: Run, out_root: Path, steps: int | None) -> dict:
    cfg = run.config
    summary, seconds = train(cfg, out_root / run.name, steps)
    test = scalars(summary["test"])
    # targets may also be set on the best validation score ("val nll") and the time
    metric = summary.get("metric", TASKS[cfg.data.task].metric)
    scores = {**test, f"val {metric}": summary["best"],
              "minutes": seconds / 60}
    met = {metric: scores.get(metric, float("nan")) >= bound
           for metric, bound in run.targets.items()}
    met.update({metric: scores.get(metric, float("nan")) <= bound
                for metric, bound in run.at_most.items()})
    spread = {cfg.train.seed: test}
    for seed in run.seeds:
        again = copy.deepcopy(cfg)
        again.train.seed = seed
        print(f"{run.name}, seed {seed}", flush=True)
        spread[seed] = scalars(train(again, out_root / f"{run.name}-seed{seed}", steps)[0]["test"])
    return {"name": run.name, "what": run.what, "task": cfg.data.task, "steps":
            summary["step"], "seconds": seconds, "test": test,
            "curve": validation_curve(out_root / run.name, metric),
            "val": {k: v for k, v in scores.items() if k not in test},
            "targets": run.targets, "at_most": run.at_most, "met": met,
            "published": run.published,
            "seeds": {str(k): v for k, v in spread.items()} if run.seeds else {}}


def validation_curve(run_dir: Path, metric: str) -> list:
    """``[[step, validation metric], ...]`` from a run's ``metrics.jsonl`` (its eval lines)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r[metric]] for r in rows if r.get("kind") == "eval" and metric in r]


def fmt_scores(test: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in test.items())


def fmt_row_scores(row: dict) -> str:
    """The test scores, after the validation score a target is set on."""
    asked = set(row["targets"]) | set(row.get("at_most", {}))
    val = {k: v for k, v in row.get("val", {}).items() if k in asked}
    return "; ".join(filter(None, [fmt_scores(val), "test " + fmt_scores(row["test"]),
                                   fmt_spread(row.get("seeds", {}), asked)]))


def fmt_spread(seeds: dict[str, dict], metrics) -> str:
    """The targeted metrics (every metric of a row without targets) over all seeds:
    ``seeds 0, 1: f1 95.22-95.82 (mean 95.52)``."""
    if len(seeds) < 2:
        return ""
    names = ", ".join(seeds)
    parts = []
    for metric in sorted(metrics) or list(next(iter(seeds.values()))):
        values = [test[metric] for test in seeds.values() if metric in test]
        if values:
            parts.append(f"{metric} {min(values):.2f}-{max(values):.2f} "
                         f"(mean {sum(values) / len(values):.2f})")
    return f"seeds {names}: " + ", ".join(parts)


def most_frequent_tag() -> str:
    """The baseline a POS tagger must beat, measured on the Turkish Web Treebank: each test
    word gets its most frequent training tag, a word never seen in training the most frequent
    tag overall."""
    from collections import Counter, defaultdict

    from rnnkit.data.turkish import load_twt

    splits = load_twt("upos")
    by_word: dict[str, Counter] = defaultdict(Counter)
    for s in splits["train"]:
        for word, tag in zip(s.words, s.tags, strict=True):
            by_word[word][tag] += 1
    overall = Counter(t for s in splits["train"] for t in s.tags).most_common(1)[0][0]
    pairs = [(w, t) for s in splits["test"] for w, t in zip(s.words, s.tags, strict=True)]
    right = sum((by_word[w].most_common(1)[0][0] if w in by_word else overall) == t
                for w, t in pairs)
    unseen = sum(w not in by_word for w, _ in pairs)
    return (f"Baseline: each word's most frequent training tag ({overall} for a word never "
            f"seen in training, {100 * unseen / len(pairs):.1f}% of the {len(pairs):,} test "
            f"words) gets {100 * right / len(pairs):.2f}.")


def report(rows: list[dict], when: str, where: str) -> str:
    lines = ["## Accuracy", "", f"- Date: {when}", f"- Machine: {where}",
             "- Each model trained from scratch by `python benchmarks/accuracy.py` (the configs "
             "are in that file); test scores of the best checkpoint by validation metric, in "
             "percent (language models: nats per token, perplexity, bits per character); "
             "where a target is set on validation, the best validation score comes first; "
             "time = the whole run (training, validation, test) on the CPU.",
             "- ATIS: 4,478 train / 500 validation (fixed seed) / 893 test utterances; slot F1 "
             "is conlleval's (exact BIO chunks); intent accuracy counts a sentence when its "
             "whole set of intents is right.",
             "- Turkish POS: the Turkish Web Treebank (PyPI turkish-treebanks, CoNLL-U, UPOS "
             "tags), the package's split: 3,881 train / 485 validation / 485 test sentences, "
             "81,370 tokens (inflectional groups) in all; scored by token accuracy."
             + (" " + most_frequent_tag() if any(r.get("task") == "turkish_pos" for r in rows)
                else ""), "",
             "| run | model | steps | time (s) | test | target | met | published |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = ", ".join([f"{k} ≥ {v:g}" for k, v in r["targets"].items()]
                           + [f"{k} ≤ {v:g}" for k, v in r.get("at_most", {}).items()]) or "-"
        met = ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in r["met"].items()) or "-"
        lines.append(f"| {r['name']} | {r['what']} | {r['steps']} | {r['seconds']:.0f} | "
                     f"{fmt_row_scores(r)} | {target} | {met} | {r['published'] or '-'} |")
    by_note: dict[str, list[str]] = {}  # rows that share a note share its line
    for r in rows:
        if r.get("note"):
            by_note.setdefault(r["note"], []).append(r["name"])
    notes = [f"- {', '.join(names)}: {note}" for note, names in by_note.items()]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [r.name for r in RUNS]
    parser.add_argument("--only", default="", help=f"comma-separated runs: {', '.join(names)}")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--runs", type=Path, default=HERE / "runs",
                        help="where the runs are trained (default: benchmarks/runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 steps per run")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rewrite "
                        "the RESULTS section from ACCURACY.json (after a change to its text)")
    parser.add_argument("--note", default="", help="a note on how these runs were made (the "
                        "machine was shared, ...), kept with their rows")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"--only: unknown runs {unknown}; choose from {names}")
    torch.set_num_threads(args.threads)
    from rnnkit.malloc import keep_freed_memory

    keep_freed_memory()  # as `rnnkit train` runs
    saved = args.out.with_name("ACCURACY.json")
    rows = []
    for run in RUNS:
        if run.name in chosen and not args.report_only:
            print(f"{run.name}: {run.what}", flush=True)
            rows.append({**run_one(run, args.runs, 4 if args.quick else None),
                         "note": args.note})
    # rows of runs not chosen this time stay as the last run left them (read now, not at the
    # start, so two runs of this script on different rows keep each other's results)
    old = {r["name"]: r for r in json.loads(saved.read_text())} if saved.exists() else {}
    table = [next((r for r in rows if r["name"] == run.name), old.get(run.name)) for run in RUNS]
    table = [r for r in table if r is not None]
    # and rows this process does not know (a run added to RUNS after it started) stay too
    known = {run.name for run in RUNS}
    table += [r for name, r in old.items() if name not in known]
    text = report(table, datetime.date.today().isoformat(), machine())
    write_section(args.out, "accuracy", text)
    saved.write_text(json.dumps(table, indent=1))
    print(text)
    return rows


if __name__ == "__main__":
    main()
