"""The benchmark script runs end to end and writes its table (speed itself is not tested here)."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench.py"


def test_bench_writes_results(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "RESULTS.md"
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--shapes", "8x3", "--repeats", "1", "--threads", "1",
                           "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script sets it process-wide
    names = {r["name"] for r in rows}
    assert {"torch.nn.LSTM", "rnnkit.LSTM", "rnnkit.LSTM (scan)"} <= names
    assert all(r["train_ms"] > 0 and r["infer_ms"] > 0 for r in rows)
    text = out.read_text()
    assert "| 8 | 3 | rnnkit.GRU (scan) |" in text and "Machine:" in text
