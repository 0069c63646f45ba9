"""torchrun with 2 processes (gloo, loopback) takes the same steps as one process on the
same global batch, up to float rounding; only rank 0 writes."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.training.checkpoint import find_checkpoint

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["--data.task=copy", "--data.seq_len=6", "--data.train_size=256", "--data.val_size=32",
        "--data.test_size=32", "--data.batch_size=16", "--model.cell=lstm",
        "--model.hidden_size=12", "--train.optimizer=sgd", "--train.lr=0.5",
        "--train.max_steps=30", "--train.eval_every=10", "--train.tbptt=8",
        "--train.threads=1", "--run.checkpoint_every=10", "--run.progress=false",
        "--run.plots=false", "--run.log_every=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not (
    TORCHRUN.exists() or shutil.which("torchrun")), reason="torch.distributed/torchrun missing")
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    two = subprocess.run(
        [torchrun, "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", "-m", "rnnkit", "train", *ARGS,
         f"--run.out={tmp_path / 'two'}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 processes" in two.stdout
    one = subprocess.run([sys.executable, "-m", "rnnkit", "train", *ARGS,
                          f"--run.out={tmp_path / 'one'}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    a = load_file(find_checkpoint(tmp_path / "one") / "model.safetensors")
    b = load_file(find_checkpoint(tmp_path / "two") / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    # the runs really trained (the weights are not the initial ones)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "two" / "metrics.jsonl").open()
              if '"kind": "train"' in line]
    assert len(losses) == 30  # rank 0 alone writes: one record per step
    assert losses[-1] < losses[0]
    one_losses = [json.loads(line)["loss"] for line in (tmp_path / "one" / "metrics.jsonl").open()
                  if '"kind": "train"' in line]
    assert losses == pytest.approx(one_losses, rel=1e-4)
