"""Which sentences' intents do several trained taggers get wrong, and does voting fix them?

    python benchmarks/intent_errors.py RUN [RUN ...] [--split test]

Each RUN is a saved tagging run with an intent head (``runs/atis``, the accuracy benchmark's
``benchmarks/runs/atis-bilstm-crf*``, ...). The script scores each run's best checkpoint on
the split, then prints:

- each run's number of sentences with a wrong set of intents;
- the errors of a majority vote of the runs (each sentence gets the set of intents most runs
  predict; a tie goes to the set of the earliest run among the tied ones), which removes the
  errors that come from one run's seed;
- the sentences every run gets wrong, with their gold and predicted intents: the errors no
  ensemble of these models can fix.

This is how the ATIS intent floor in benchmarks/RESULTS.md was measured.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from rnnkit.run import _load_run, _saved_model
from rnnkit.tasks import make_task
from rnnkit.tasks.tagging import intent_set
from rnnkit.training.checkpoint import CheckpointError


def run_intents(run: str, split: str) -> tuple[list[str], list[frozenset], list[frozenset]]:
    """One saved run on ``split``: the sentences (as text), the gold and the predicted
    intents of each, as sets of names (so runs with different vocabularies compare)."""
    try:
        ckpt, cfg = _load_run(run, "best")
    except CheckpointError as e:
        raise SystemExit(str(e)) from e
    if not cfg.model.intent:
        raise SystemExit(f"{run}: this run has no intent head (model.intent is off)")
    task = make_task(cfg)
    if not task.has_split(split):
        raise SystemExit(f"--split: {run} has no {split} split (its data.{split}_file was "
                         f"not given)")
    model = _saved_model(task, ckpt, "cpu")
    model.eval()
    with torch.no_grad():
        rows = task.predictions(model, split)
    sentences = task.splits[split]
    texts = [" ".join(s.words) for s in sentences]
    gold = [frozenset(intent_set(s.intent)) for s in sentences]
    pred = [frozenset(task.intents.decode(sorted(p))) for *_, p in rows]
    return texts, gold, pred


def summarize(gold: list[frozenset], runs: list[list[frozenset]]) -> dict:
    """``gold``: each sentence's intents; ``runs``: each run's predictions of them. Returns
    ``errors`` (per run), ``vote`` (the majority vote's errors, ties to the earliest run's
    set), ``vote_predictions`` and ``wrong_in_all`` (indices of sentences every run misses)."""
    if not runs or any(len(r) != len(gold) for r in runs):
        raise ValueError(f"runs: expected at least one run with {len(gold)} predictions, got "
                         f"{[len(r) for r in runs]}")
    errors = [sum(p != g for p, g in zip(r, gold, strict=True)) for r in runs]
    vote = []
    for n in range(len(gold)):
        counts = Counter(r[n] for r in runs)
        top = max(counts.values())
        vote.append(next(r[n] for r in runs if counts[r[n]] == top))
    wrong_in_all = [n for n, g in enumerate(gold) if all(r[n] != g for r in runs)]
    return {"errors": errors, "vote": sum(v != g for v, g in zip(vote, gold, strict=True)),
            "vote_predictions": vote, "wrong_in_all": wrong_in_all}


def names(intents: frozenset) -> str:
    return ";".join(sorted(intents))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="saved tagging runs with an intent head")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)

    texts, gold, runs = None, None, []
    for run in args.runs:
        t, g, p = run_intents(run, args.split)
        if texts is None:
            texts, gold = t, g
        elif t != texts:
            raise SystemExit(f"{run}: its {args.split} split has other sentences than "
                             f"{args.runs[0]}'s")
        runs.append(p)
    s = summarize(gold, runs)
    n = len(gold)
    for run, e in zip(args.runs, s["errors"], strict=True):
        print(f"{run}: {e} of {n} wrong ({100 * (1 - e / n):.2f}%)")
    print(f"majority vote of {len(runs)} run{'s' if len(runs) > 1 else ''}: {s['vote']} wrong "
          f"({100 * (1 - s['vote'] / n):.2f}%)")
    print(f"wrong in every run: {len(s['wrong_in_all'])}")
    for i in s["wrong_in_all"]:
        predicted = Counter(names(r[i]) for r in runs).most_common(1)[0][0]
        print(f"  {names(gold[i])} -> {predicted} | {texts[i]}")
    return s


if __name__ == "__main__":
    main()
