"""A run killed with SIGKILL mid-training and resumed ends with the same weights, bit for bit,
as an uninterrupted run with the same seed (CPU, a small 2-layer GRU with variational dropout,
recurrent dropout, zoneout and weight drop, truncated BPTT, Adam and a cosine schedule: every
piece of state that must survive does, the random masks' generator too)."""

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from rnnkit.training.checkpoint import find_checkpoint

STEPS = 600
ARGS = ["--data.task=copy", "--data.seq_len=10", "--data.train_size=512", "--data.val_size=64",
        "--data.test_size=64", "--data.batch_size=16", "--model.cell=gru",
        "--model.hidden_size=16", "--model.num_layers=2", "--model.dropout=0.1",
        "--model.dropout_mode=variational", "--model.recurrent_dropout=0.2",
        "--model.zoneout=0.1", "--model.weight_drop=0.2",
        f"--train.max_steps={STEPS}", "--train.eval_every=50", "--train.tbptt=10",
        "--train.schedule=cosine", "--train.lr=0.01", "--train.threads=1",
        "--run.checkpoint_every=20", "--run.progress=false", "--run.plots=false"]


def train(out, *extra, wait=True):
    cmd = [sys.executable, "-m", "rnnkit", "train", *ARGS, f"--run.out={out}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def final_weights(out):
    ckpt = find_checkpoint(out)
    assert ckpt is not None and ckpt.name == f"step-{STEPS:08d}"
    return load_file(ckpt / "model.safetensors")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    proc = train(killed, wait=False)
    deadline = time.monotonic() + 240
    try:
        while True:  # wait for a checkpoint a good way in, then kill without warning
            latest = find_checkpoint(killed) if (killed / "checkpoints").exists() else None
            if latest is not None and int(latest.name.split("-")[1]) >= 100:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never reached step 100"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stopped_at = int(find_checkpoint(killed).name.split("-")[1])
    assert 100 <= stopped_at < STEPS, "the run was not killed mid-training"

    r = train(killed, "--resume")
    assert f"resumed {killed} at step {stopped_at}" in r.stdout
    straight = tmp_path / "straight"
    train(straight)

    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the log of the resumed run has every step once
    import json

    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").open()
             if '"kind": "eval"' in line]
    assert steps == list(range(50, STEPS + 1, 50))
