"""The training engine: the fit loop, truncated BPTT, clipping, checkpoints, diagnostics.

>>> from rnnkit.config import Config
>>> from rnnkit.tasks import make_task
>>> from rnnkit.training import Trainer
>>> cfg = Config()                      # the adding problem with an LSTM, by default
>>> cfg.train.max_steps, cfg.run.out = 300, "runs/example"
>>> trainer = Trainer(make_task(cfg), cfg)   # doctest: +SKIP
>>> summary = trainer.fit()                  # doctest: +SKIP
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .clipping import ClipResult, clip_gradients
from .loop import Trainer, TrainingStopped
from .tbptt import detach_state, reset_state

__all__ = ["Trainer", "TrainingStopped", "CheckpointError", "load_checkpoint",
           "save_checkpoint", "clip_gradients", "ClipResult", "detach_state", "reset_state"]
