"""The ATIS tagger that ``make demo`` trains (runs/atis), exported to ONNX and run in
onnxruntime, against the same network in PyTorch: the time to score the test split's sentences
(emissions and intent scores), batched and one sentence at a time, in the same run.

Both sides compute the exported program's forward (embeddings and character CNN, the
bidirectional LSTM, the emission and intent layers; the CRF's Viterbi is the caller's on
either side), on the same inputs, with the same thread count; medians of interleaved repeats.
Writes the ``onnx`` section of ``benchmarks/RESULTS.md``.

    python benchmarks/onnx_speed.py [--run runs/atis] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import machine, write_section  # noqa: E402


def batches(task, size: int):
    from rnnkit.data.text import pad_batch
    from rnnkit.heads.chars import spell

    sentences = [s.words for s in task.splits["test"]]
    out = []
    for start in range(0, len(sentences), size):
        part = sentences[start:start + size]
        tokens, lengths = pad_batch([task.words.encode(w) for w in part])
        out.append((tokens, lengths, spell(part, task.chars).long()))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/atis")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    import onnxruntime as ort

    import rnnkit
    from rnnkit.export import program, to_onnx

    if not (Path(args.run) / "checkpoints").is_dir():
        sys.exit(f"{args.run}: no trained run; `make demo` trains the ATIS tagger there")
    torch.set_num_threads(args.threads)
    trained = rnnkit.load(args.run)
    task = type(trained.task)(trained.config, state=trained.task.state(), data=True)
    module, example, shapes, _ = program(trained)
    module.requires_grad_(False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = to_onnx(module, example, Path(tmp) / "atis.onnx", dynamic_shapes=shapes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options)
    rows = []
    for size in (32, 1):
        data = batches(task, size)
        if size == 1:
            data = data[:200]

        def run_torch(data=data):
            with torch.inference_mode():
                for t, n, c in data:
                    module(t, n, c)

        def run_ort(data=data):
            for t, n, c in data:
                session.run(None, {"tokens": t.numpy(), "lengths": n.numpy(),
                                   "chars": c.numpy()})

        # the same numbers first
        t, n, c = data[0]
        with torch.inference_mode():
            want = module(t, n, c)
        got = session.run(None, {"tokens": t.numpy(), "lengths": n.numpy(), "chars": c.numpy()})
        err = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True))
        times = {"torch": [], "ort": []}
        for f in (run_torch, run_ort):
            f()  # warm-up
        for _ in range(args.repeats):
            for name, f in (("torch", run_torch), ("ort", run_ort)):
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
        tt, to = statistics.median(times["torch"]), statistics.median(times["ort"])
        rows.append((size, sum(len(n) for _, n, _ in data), tt, to, err))
        print(f"batch {size} done", file=sys.stderr, flush=True)
    lines = [
        "# ONNX: the ATIS tagger in onnxruntime",
        "",
        f"- Date: {datetime.date.today().isoformat()}; machine: {machine()}; onnxruntime "
        f"{ort.__version__}",
        "- The tagger `make demo` trains (runs/atis: bidirectional LSTM 128, character CNN, intent "
        "head) exported with `rnnkit.export.to_onnx` (ONNX's LSTM operator per direction); both "
        f"sides score the test split's sentences with {args.threads} threads; medians of "
        f"{args.repeats} interleaved repeats (`benchmarks/onnx_speed.py`).",
        "",
        "| sentences per call | sentences | PyTorch (ms) | onnxruntime (ms) | onnxruntime / "
        "PyTorch | largest difference |",
        "|---|---|---|---|---|---|",
    ]
    for size, count, tt, to, err in rows:
        lines.append(f"| {size} | {count} | {1e3 * tt:.1f} | {1e3 * to:.1f} | {to / tt:.2f} | "
                     f"{err:.1e} |")
    text = "\n".join(lines) + "\n"
    write_section(args.out, "onnx", text)
    print(text)


if __name__ == "__main__":
    main()
