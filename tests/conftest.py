"""Test-wide settings."""

import torch

# The tests use tiny tensors, where intra-op threads only add synchronisation; on a shared 2-core
# machine, OpenMP workers spin-waiting for a busy core made the suite ~10x slower. One thread
# keeps it fast and its timing stable. (Speed is measured in benchmarks/, never in tests.)
torch.set_num_threads(1)
