"""``rnnkit demo`` (and ``make demo``): train the ATIS slot filler, score it, show its tags.

Slot filling is the course's reason for recurrence: in "leave boston" and "arrive in boston"
the same city needs different slots (``fromloc`` vs ``toloc``), and only the context says
which. The demo trains the default tagger (a bidirectional LSTM with a CRF output layer and a
joint intent head; word embeddings learned from scratch plus character features) with the
training engine, prints the test slot F1 (conlleval) and intent accuracy, and tags pairs of
sentences where one city changes role. The run lands in ``runs/atis`` (``rnnkit predict``
reads it from there); running the demo again resumes that run, which has nothing left to
train, and shows the results again.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Config

# Pairs where the same city is the departure in one sentence and the arrival in the other.
CONTRASTS = (
    ("i want to leave boston tomorrow morning", "i want to arrive in boston tomorrow morning"),
    ("flights from denver to pittsburgh", "flights from pittsburgh to denver"),
    ("what flights depart from dallas", "what flights arrive in dallas"),
)


def demo_config(out: str = "runs/atis") -> Config:
    """The default tagger and its training, chosen to train in a few minutes on 2 cores."""
    cfg = Config()
    cfg.data.task, cfg.data.batch_size = "atis", 32
    m = cfg.model
    m.cell, m.bidirectional, m.hidden_size, m.embedding_size = "lstm", True, 128, 100
    m.head, m.intent, m.pooling, m.input_dropout = "crf", True, "attention", 0.3
    m.char_filters = 50  # spelling helps rare and unseen words (slots and intents)
    t = cfg.train
    t.optimizer, t.lr, t.schedule, t.clip_norm = "adam", 3e-3, "cosine", 5.0
    t.max_steps, t.eval_every = 2800, 280
    # float sums depend on how many threads split them: a fixed count makes the seed's numbers
    # the same on every machine with the same kind of CPU (tests/test_readme.py checks a rerun)
    t.threads = 2
    cfg.run.out, cfg.run.checkpoint_every = out, 280
    return cfg


def run_atis_demo(cfg: Config | None = None, *, print_fn: Callable[[str], object] = print,
                  progress: bool = True) -> dict:
    """Train (or resume) the demo's tagger, then print the test scores and the contrasts."""
    from pathlib import Path

    from .run import load_for_prediction, run_train
    from .training.checkpoint import find_checkpoint

    cfg = cfg or demo_config()
    cfg.run.progress = progress
    resume = Path(cfg.run.out).exists() and find_checkpoint(cfg.run.out) is not None
    # the 80-odd slot types' table would push the tags off the screen: `rnnkit evaluate`
    # prints it (and metrics.jsonl keeps it)
    summary = run_train(cfg, resume=resume, print_fn=print_fn, tables=False)
    test = summary["test"]
    print_fn("")
    print_fn(f"ATIS test set (893 utterances): slot F1 {test['f1']:.2f} (conlleval, exact "
             f"chunks), intent accuracy {test.get('intent_accuracy', float('nan')):.2f}%")
    task, model = load_for_prediction(cfg.run.out)
    print_fn("\nThe same city, a departure in one sentence and an arrival in the other:")
    for pair in CONTRASTS:
        print_fn("")
        for text in pair:
            tagged, intent = task.predict_text(model, text)
            print_fn("  " + " ".join(f"{w}/{t}" if t != "O" else w for w, t in tagged))
    print_fn(f'\nTag your own: rnnkit predict "i want to leave from boston and arrive in '
             f'denver" (reads {cfg.run.out}); scores per slot type: rnnkit evaluate '
             f'{cfg.run.out}')
    return summary
