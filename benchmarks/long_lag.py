"""The long-lag tasks, per cell: the adding problem and the copy-memory task, solved or not and
the optimizer steps it took (the first held-out check that passes), with one recipe per task for
every cell; and IndRNN on the adding problem at T = 1000 with its paper's set-up.

- adding (Hochreiter & Schmidhuber 1997; ``rnnkit.data.synthetic.adding_problem``), T = 100:
  ``rnnkit demo adding``'s model and recipe (hidden 32, Adam 0.02, batch 64, clipping at norm 1);
  solved when the test MSE is below 0.1x the predict-the-mean baseline (the demo's verdict).
- copy (Arjovsky et al. 2016; ``copy_memory``: 10 symbols of 8 to recall after T = 50 blanks):
  one-hot input, hidden 64, a linear read-out at every step, cross-entropy over every step,
  Adam 0.005, batch 64, clipping at 1; solved when 99% of the recalled symbols are right.
- indrnn-1000: the adding problem at T = 1000 as Li et al. (2018) train it: two ReLU IndRNN
  layers of 128, |u| <= 2^(1/T) kept after every step, u ~ U(0, 1), input weights N(0, 0.001),
  Adam 2e-4, batch 50, clipping at 10.

A held-out set (2000 sequences; 500 for the copy task) is checked every ``--every`` steps; a run
stops when solved or at ``--steps``. One thread.

    python benchmarks/long_lag.py --tasks adding        # every cell (~4 min)
    python benchmarks/long_lag.py --tasks copy --steps 10000 --every 250   # (~30 min)
    python benchmarks/long_lag.py --indrnn-1000 --steps 30000   # the paper's set-up (long)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

import rnnkit
from rnnkit.data.synthetic import adding_problem, copy_memory
from rnnkit.demo import BASELINE_PREDICTION, SOLVED_RATIO, AddingModel, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import machine, write_section  # noqa: E402

SYMBOLS, RECALL = 8, 10  # the copy task's alphabet and how many symbols it recalls


class CopyModel(nn.Module):
    """one-hot(x_t) -> recurrent network -> Linear: scores over the tokens at every step."""

    def __init__(self, cell: str, hidden: int, **options):
        super().__init__()
        self.vocab = SYMBOLS + 2
        self.rnn = rnnkit.RecurrentNetwork(cell, self.vocab, hidden, batch_first=True,
                                           **options)
        self.head = nn.Linear(self.rnn.output_size, self.vocab)

    def forward(self, tokens):
        x = nn.functional.one_hot(tokens, self.vocab).float()
        return self.head(self.rnn(x)[0])  # (N, T', vocab)


class IndRNNAdding(nn.Module):
    """Li et al.'s adding model: IndRNN layers and a linear read-out of the last step."""

    def __init__(self, T: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.rnn = rnnkit.IndRNN(2, hidden, num_layers=layers, batch_first=True,
                                 max_recurrent_weight=2 ** (1 / T))
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if name.startswith("weight_ih"):
                    p.normal_(0, 0.001)
                elif name.startswith("bias"):
                    p.zero_()
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1]).squeeze(-1)


def adding_case(T: int, cell: str | None):
    """(model, optimizer, clip, batch draw, check) for the adding problem."""
    if cell is None:  # the IndRNN paper's set-up
        model, lr, batch, clip = IndRNNAdding(T), 2e-4, 50, 10.0
    else:
        model, lr, batch, clip = AddingModel(cell, 32), 2e-2, 64, 1.0
    test_x, test_y = adding_problem(2000, T, generator=torch.Generator().manual_seed(1))
    baseline = ((test_y - BASELINE_PREDICTION) ** 2).mean().item()

    def loss(g):
        x, y = adding_problem(batch, T, generator=g)
        return nn.functional.mse_loss(model(x), y)

    def check():
        mse = evaluate(model, test_x, test_y)
        return mse < SOLVED_RATIO * baseline, f"MSE {mse:.4f} (baseline {baseline:.3f})"

    return model, torch.optim.Adam(model.parameters(), lr=lr), clip, loss, check


def copy_case(T: int, cell: str):
    model = CopyModel(cell, 64)
    test_x, test_y = copy_memory(500, T, symbols=SYMBOLS, length=RECALL,
                                 generator=torch.Generator().manual_seed(1))

    def loss(g):
        x, y = copy_memory(64, T, symbols=SYMBOLS, length=RECALL, generator=g)
        return nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    @torch.no_grad()
    def check():
        got = model(test_x)[:, -RECALL:].argmax(-1)
        acc = (got == test_y[:, -RECALL:]).float().mean().item()
        return acc >= 0.99, f"recall {100 * acc:.1f}% (chance {100 / SYMBOLS:.1f}%)"

    return model, torch.optim.Adam(model.parameters(), lr=5e-3), 1.0, loss, check


def train(case, steps: int, every: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model, opt, clip, loss_fn, check = case()
    g = torch.Generator().manual_seed(2 * seed)
    start, solved_at, last = time.perf_counter(), None, ""
    for step in range(1, steps + 1):
        model.train()
        loss = loss_fn(g)
        if not math.isfinite(loss.item()):
            last = "diverged (loss not finite)"
            break
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        for m in model.modules():
            if isinstance(m, rnnkit.RecurrentNetwork):
                m.constrain_()  # (IndRNN's |u| bound; a no-op for the other cells)
        if step % every == 0 or step == steps:
            model.eval()
            ok, last = check()
            print(f"  step {step}: {last}", file=sys.stderr, flush=True)
            if ok:
                solved_at = step
                break
    return {"solved_at": solved_at, "steps": step, "last": last,
            "seconds": time.perf_counter() - start}


def report(rows: list[dict], title: str, note: str) -> str:
    lines = [f"## {title}", "", note, "",
             "| task | cell | solved | steps | at the last check | time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        solved = f"yes, at step {r['solved_at']}" if r["solved_at"] else "no"
        lines.append(f"| {r['task']} | {r['cell']} | {solved} | {r['steps']} | {r['last']} | "
                     f"{r['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="all", help="comma-separated names, or all")
    parser.add_argument("--tasks", default="adding,copy")
    parser.add_argument("--adding-length", type=int, default=100)
    parser.add_argument("--copy-length", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--indrnn-1000", action="store_true",
                        help="only IndRNN at T = 1000, Li et al.'s set-up")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    if args.indrnn_1000:
        print("indrnn-1000", file=sys.stderr)
        r = train(partial(adding_case, 1000, None), args.steps, args.every)
        rows.append({"task": "adding, T = 1000", "cell": "indrnn (2 x 128, paper set-up)", **r})
        section, title = "long-lag-indrnn", "IndRNN on the adding problem at T = 1000"
        note = (f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
                f"`python benchmarks/long_lag.py --indrnn-1000 --steps {args.steps}`: "
                "Li et al. (2018)'s set-up (two ReLU layers of 128, |u| <= 2^(1/1000), input "
                "weights N(0, 0.001), Adam 2e-4, batch 50, clipping at 10); solved when the "
                f"test MSE is below 0.1x the baseline, checked every {args.every} steps.")
    else:
        cells = rnnkit.cell_names() if args.cells == "all" else args.cells.split(",")
        for task in args.tasks.split(","):  # one section each: long-lag-adding, long-lag-copy
            length = args.adding_length if task == "adding" else args.copy_length
            make = adding_case if task == "adding" else copy_case
            rows = []
            for cell in cells:
                print(f"{task} {cell}", file=sys.stderr)
                rows.append({"task": f"{task}, T = {length}", "cell": cell,
                             **train(partial(make, length, cell), args.steps, args.every)})
            recipe = (
                "`rnnkit demo adding`'s model and recipe (hidden 32, Adam 0.02, batch 64, "
                "clipping at 1); solved below 0.1x the predict-the-mean MSE"
                if task == "adding" else
                "recall 10 symbols of 8 after the blanks; one-hot input, hidden 64, a read-out "
                "at every step, Adam 0.005, batch 64, clipping at 1; solved at 99% recall")
            note = (f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}. "
                    f"`python benchmarks/long_lag.py --tasks {task} --steps {args.steps} "
                    f"--every {args.every}` (seed 0, one thread): {recipe}. One recipe for "
                    "every cell, not tuned per cell: a 'no' says the cell did not solve it "
                    "with this recipe in this budget.")
            emit(args.out, f"long-lag-{task}", report(
                rows, f"Long-lag task per cell: {task}, T = {length}", note), rows)
        return 0
    emit(args.out, section, report(rows, title, note), rows)
    return 0


def emit(out: Path, section: str, text: str, rows: list[dict]) -> None:
    """Print ``text``, write it as ``section`` of ``out`` and the rows beside it as JSON."""
    print(text)
    write_section(out, section, text)
    out.with_name(f"{section}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
