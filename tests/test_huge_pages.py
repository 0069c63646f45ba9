"""The compiled ops' sequence-long buffers in huge pages (csrc/recurrence.h, sequence_buffer):
from 32 MB up they start on a 2 MB boundary; RNNKIT_HUGE_PAGES=0 gives plain allocations and the
same numbers."""

import subprocess
import sys

import pytest

import rnnkit.ops as ops

pytestmark = pytest.mark.skipif(not ops.compiled() or not sys.platform.startswith("linux"),
                                reason="the compiled CPU ops on Linux")

# one LSTM op call, whose saved gates (T N, 4H) are 32 MB: prints
# whether they start on a 2 MB boundary, then the outputs' sum
CALL = """
import torch, rnnkit.ops
torch.manual_seed(0)
T, N, I, H = 512, 32, 8, 128
args = [torch.randn(T, N, I), torch.zeros(N, H), torch.zeros(N, H), torch.randn(4 * H, I),
        torch.randn(4 * H, H) / 10, None, None, None, None, None, "none", True, True, False]
out = torch.ops.rnnkit.lstm_sequence(*args)
gates = out[3]
print(gates.data_ptr() % (2 << 20) == 0,
      repr(sum(o.double().sum().item() for o in out[:3])))
"""


def run(env: dict) -> list[str]:
    import os

    got = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    return got.stdout.split()


def test_large_buffers_on_huge_page_boundaries_and_the_same_numbers_without():
    on, off = run({"RNNKIT_HUGE_PAGES": "1"}), run({"RNNKIT_HUGE_PAGES": "0"})
    assert on[0] == "True"  # the 32 MB gates: 2 MB-aligned
    assert on[1] == off[1]  # bit for bit
