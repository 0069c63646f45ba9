"""The ``rnnkit`` command line: ``rnnkit --help`` lists the subcommands."""

from __future__ import annotations

import argparse
import sys

from .cells import cell_names, get_cell


def _cell_list(text: str) -> list[str]:
    if text.strip() == "all":
        return cell_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of cell names, got ''")
    for n in names:
        try:
            get_cell(n)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return names


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected integers >= 2, got {text!r}")
    return values


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Recurrent networks from the course notes as fast, exact PyTorch modules.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="train cells on the adding problem and compare their test MSE with the baseline",
        description="Train each cell on the adding problem (Hochreiter & Schmidhuber 1997) at "
        "each sequence length and print its test MSE beside the predict-the-mean baseline "
        "(about 0.167): the vanishing-gradient lesson, in numbers.",
    )
    demo.add_argument("--cells", type=_cell_list, default=["elman", "lstm", "gru"],
                      help="comma-separated cell names, or 'all' for every registered cell "
                      "(default: elman,lstm,gru; see 'rnnkit cells'). Cells without a torch "
                      "kernel run through rnnkit's Python loop for now: 'all' takes ~15 min")
    demo.add_argument("--lengths", type=_int_list, default=[50, 150],
                      help="comma-separated sequence lengths T (default: 50,150)")
    demo.add_argument("--hidden-size", type=_positive(int), default=None,
                      help="hidden units per cell (default: the demo's tuned size)")
    demo.add_argument("--seconds", type=_positive(float), default=None,
                      help="wall-clock cap per training run (default: the demo's)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    sub.add_parser("cells", help="list the registered cells",
                   description="List the registered cell names and their one-line summaries.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "cells":
        width = max(map(len, cell_names()))
        for name in cell_names():
            summary = (get_cell(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:{width}s}  {summary}")
        return 0
    if args.command == "demo":
        from .demo import run_demo  # imported here: training code is not needed for --help

        kwargs = {"seed": args.seed}
        if args.hidden_size is not None:
            kwargs["hidden_size"] = args.hidden_size
        if args.seconds is not None:
            kwargs["seconds"] = args.seconds
        run_demo(cells=tuple(args.cells), lengths=tuple(args.lengths), **kwargs)
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
