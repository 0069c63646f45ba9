"""The benchmark script runs end to end and writes its table (speed itself is not tested here)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import rnnkit

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "bench.py"


def load_bench(script=SCRIPT):
    spec = importlib.util.spec_from_file_location(script.stem, script)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def run(bench, *argv):
    threads = torch.get_num_threads()
    try:
        return bench.main([*argv, "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # the script sets it process-wide


def test_bench_quick_writes_results(tmp_path):
    bench = load_bench()
    out = tmp_path / "RESULTS.md"
    rows = run(bench, "--quick", "--no-memory", "--out", str(out))
    names = {r["name"] for r in rows}
    expected = {"torch.nn.LSTM", "torch.nn.GRU", "torch.nn.RNN",
                "rnnkit.LSTM", "rnnkit.GRU", "rnnkit.RNN"}
    expected |= {f"rnnkit.RecurrentNetwork('{c}')" for c in rnnkit.cell_names()}
    assert expected <= names
    assert all(r["H"] == 8 and r["T"] == 3 for r in rows)
    assert all(r["train_ms"] > 0 and r["infer_ms"] > 0 and r["first_ms"] > 0 for r in rows)
    assert all(r["peak_mb"] is None and r["peak_ratio"] is None for r in rows)
    ref = next(r for r in rows if r["name"] == "torch.nn.LSTM")
    assert ref["train_ratio"] == ref["infer_ratio"] == 1.0
    text = out.read_text()
    assert "Machine:" in text and "| 8 | 3 | rnnkit.RecurrentNetwork('scrn') |" in text
    for column in ("first call (ms)", "peak memory (MiB)", "rnnkit speed-up vs torchrecurrent"):
        assert column in text
    if bench.torchrecurrent is not None:
        assert {"torchrecurrent.PeepholeLSTM", "torchrecurrent.SCRN"} <= names
        scrn = next(r for r in rows if r["name"] == "rnnkit.RecurrentNetwork('scrn')")
        assert scrn["train_speedup_tr"] > 0 and scrn["infer_speedup_tr"] > 0
    else:
        assert "not installed" in text


def test_bench_cells_filter_and_missing_torchrecurrent(tmp_path):
    bench = load_bench()
    bench.torchrecurrent = None  # the script must run without the optional dependency
    out = tmp_path / "RESULTS.md"
    rows = run(bench, "--quick", "--no-memory", "--cells", "gru,scrn", "--repeats", "2",
               "--out", str(out))
    assert [r["name"] for r in rows] == [
        "torch.nn.LSTM", "torch.nn.GRU", "rnnkit.GRU", "rnnkit.RecurrentNetwork('gru')",
        "rnnkit.RecurrentNetwork('scrn')"]
    assert all(r["train_speedup_tr"] is None for r in rows)
    assert "medians of 2 interleaved" in out.read_text()
    with pytest.raises(SystemExit):
        run(bench, "--quick", "--cells", "nope", "--out", str(out))


def test_peak_memory_of_a_train_step_is_measured_in_a_fresh_process():
    bench = load_bench()
    small = bench.peak_bytes("torch.nn.LSTM", "lstm", 16, 5, 1)
    large = bench.peak_bytes("torch.nn.LSTM", "lstm", 256, 100, 1)
    assert 0 <= small < large  # (T, B, 4H) gates alone are ~13 MB at the larger shape
    assert large > 8 * 2**20


def test_bench_cuda_section_or_clear_refusal(tmp_path):
    bench = load_bench()
    out = tmp_path / "RESULTS.md"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # asked for CUDA where there is none: a usage error
            run(bench, "--quick", "--device", "cuda", "--out", str(out))
        rows = run(bench, "--quick", "--no-memory", "--cells", "lstm", "--out", str(out))
        assert {r["device"] for r in rows} == {"cpu"}
        assert "## CUDA" not in out.read_text()
        return
    rows = run(bench, "--quick", "--cells", "lstm,scrn", "--out", str(out))
    assert {r["device"] for r in rows} == {"cpu", "cuda"}
    text = out.read_text()
    assert "## CPU" in text and "## CUDA" in text
    assert all(r["peak_mb"] is not None for r in rows if r["device"] == "cuda")


def test_render_rewrites_the_report_from_the_saved_rows(tmp_path):
    bench = load_bench()
    out = tmp_path / "RESULTS.md"
    rows = run(bench, "--quick", "--no-memory", "--cells", "peephole_lstm", "--out", str(out))
    first = out.read_text()
    out.write_text("")
    again = run(bench, "--render", str(tmp_path / "RESULTS.json"), "--out", str(out))
    assert again == rows and out.read_text() == first
    assert "### Targets" in first and "Inference ≤ 1.0× torch.nn.LSTM" in first


def test_accuracy_quick_writes_its_section_and_keeps_the_speed_one(tmp_path):
    accuracy = load_bench(SCRIPT.with_name("accuracy.py"))
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin speed -->\n# speed table\n<!-- end speed -->\n")
    rows = run(accuracy, "--quick", "--only", "atis-elman,vowels", "--out", str(out),
               "--runs", str(tmp_path / "runs"))
    assert [r["name"] for r in rows] == ["atis-elman", "vowels"]
    assert {"f1", "intent_accuracy"} <= set(rows[0]["test"]) and "accuracy" in rows[1]["test"]
    text = out.read_text()
    assert text.startswith("<!-- begin speed -->\n# speed table\n<!-- end speed -->\n")
    assert "<!-- begin accuracy -->" in text and "| atis-elman |" in text
    assert (tmp_path / "ACCURACY.json").exists() and (tmp_path / "runs" / "vowels").is_dir()
    run(accuracy, "--quick", "--only", "vowels", "--out", str(out),
        "--runs", str(tmp_path / "runs"), "--note", "two runs shared the cores")
    text = out.read_text()
    assert text.count("<!-- begin accuracy -->") == 1  # replaced, not appended
    assert "| atis-elman |" in text  # a row not re-run stays
    assert "\n- vowels: two runs shared the cores\n" in text and "- atis-elman:" not in text


def test_accuracy_reports_the_spread_over_more_seeds(tmp_path):
    accuracy = load_bench(SCRIPT.with_name("accuracy.py"))
    vowels = next(r for r in accuracy.RUNS if r.name == "vowels")
    vowels.seeds = (1,)
    out = tmp_path / "RESULTS.md"
    [row] = run(accuracy, "--quick", "--only", "vowels", "--out", str(out),
                "--runs", str(tmp_path / "runs"))
    assert set(row["seeds"]) == {"0", "1"} and row["seeds"]["0"] == row["test"]
    assert (tmp_path / "runs" / "vowels-seed1").is_dir()
    values = [test["accuracy"] for test in row["seeds"].values()]
    assert (f"seeds 0, 1: accuracy {min(values):.2f}-{max(values):.2f} "
            f"(mean {sum(values) / 2:.2f})") in out.read_text()


def test_double_backward_bench_quick_writes_its_section(tmp_path):
    bench = load_bench(SCRIPT.with_name("double_backward.py"))
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin speed -->\nkept\n<!-- end speed -->\n")
    run(bench, "--quick", "--out", str(out))
    text = out.read_text()
    assert "kept" in text and "<!-- begin double-backward -->" in text
    for name in ("torch.nn.GRU", "rnnkit.GRU", "rnnkit.RecurrentNetwork('clockwork')"):
        assert f"| {name} |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA it measures")
def test_gpu_benchmark_without_cuda_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    gpu = load_bench(SCRIPT.with_name("gpu.py"))
    out = tmp_path / "RESULTS.md"
    assert gpu.main(["--quick", "--out", str(out)]) == []
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no CUDA device" in printed[0]
    assert not out.exists()


def test_fixed_cost_bench_writes_its_section_against_the_speed_runs_floors(tmp_path):
    bench = load_bench(SCRIPT.with_name("fixed_cost.py"))
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin speed -->\nkept\n<!-- end speed -->\n")
    row = {"device": "cpu", "H": 128, "T": 50, "cell": "elman", "floor_train_ms": 2.0}
    out.with_suffix(".json").write_text(json.dumps({"rows": [row]}))
    run(bench, "--rounds", "3", "--out", str(out))
    text = out.read_text()
    assert "kept" in text and "<!-- begin fixed-cost -->" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    for cell in rnnkit.cell_names():
        assert f"| rnnkit.RecurrentNetwork('{cell}')" in lines
    assert lines["| torch.nn.RNN"].endswith("% |")  # elman's floor was given
    assert lines["| torch.nn.GRU"].endswith("|  |")  # gru's was not


def test_scan_length_bench_writes_its_section(tmp_path):
    bench = load_bench(SCRIPT.with_name("scan_length.py"))
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin speed -->\nkept\n<!-- end speed -->\n")
    models = ["minGRU", "torch.nn.LSTM"]  # (a process each: the others run as these do)
    run(bench, "--lengths", "8,32", "--batch", "2", "--hidden", "8", "--repeats", "1",
        "--models", ",".join(models), "--out", str(out))
    text = out.read_text()
    assert "kept" in text and "<!-- begin scan-length -->" in text
    rows = {}  # (the time table's row of each model comes before its memory table's)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0], line)
    for model in models:
        assert rows[f"| {model}"].count(" ms (") == 2, rows[f"| {model}"]  # both lengths ran
    assert "(batch 2, hidden 8, input 8" in text and "minGRU: " in text


def test_long_lag_bench_writes_a_section_per_task(tmp_path):
    bench = load_bench(SCRIPT.with_name("long_lag.py"))
    out = tmp_path / "RESULTS.md"
    bench.main(["--cells", "elman,mingru", "--steps", "2", "--every", "1", "--adding-length",
                "5", "--copy-length", "3", "--out", str(out)])
    text = out.read_text()
    for task in ("adding", "copy"):
        assert f"<!-- begin long-lag-{task} -->" in text
        assert f"| {task}, T = " in text
        rows = json.loads(out.with_name(f"long-lag-{task}.json").read_text())
        assert [r["cell"] for r in rows] == ["elman", "mingru"]
        assert all(r["steps"] == 2 or r["solved_at"] for r in rows)
