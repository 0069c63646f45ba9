"""The fit loop: any task, any model, one optimizer step at a time.

Per optimizer step s (1-based):

1. the batch of step s: the rows ``perm_e[i*B:(i+1)*B]`` of the training set, where
   ``e, i = divmod(s - 1, N // B)`` and ``perm_e`` is a permutation drawn from
   ``(train.seed, e)``; a pure function of s, so a resumed run sees the same batches. Each
   process of a distributed run takes its slice of those B rows.
2. forward and backward in chunks of ``train.tbptt`` steps (:mod:`.tbptt`), the loss of each
   chunk divided by the loss items of the whole global batch;
3. the gradient norm is measured, then clipped (:mod:`.clipping`); a non-finite loss or norm
   stops the run here, before the weights change;
4. optimizer step, schedule step; a record to ``metrics.jsonl`` every ``run.log_every`` steps;
5. every ``train.eval_every`` steps: validation metrics, the best checkpoint, early stopping,
   the plateau schedule; every ``run.checkpoint_every`` steps: a checkpoint.

Callbacks (objects with any of ``on_train_begin(trainer)``, ``on_step_begin(trainer, s)``,
``on_step_end(trainer, s, record)``, ``on_eval(trainer, s, metrics)``,
``on_train_end(trainer)``) see each phase; ``record`` is the dict written for step s.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import ConfigError, TrainingStopped
from ..networks import RecurrentNetwork
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    clean_partial,
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from .clipping import clip_gradients
from .distributed import World, all_sum, barrier, init_world, shard
from .optim import (
    adopt_settings,
    make_optimizer,
    make_scheduler,
    parameter_groups,
    steps_per_update,
)
from .records import MetricsLog, plot_curves, read_records
from .tbptt import detach_state, map_state, reset_state, spans

_clock = time.monotonic  # train.max_minutes reads this clock (tests replace it)


class Trainer:
    """Trains ``task.build_model()`` on ``task`` as ``config`` (an rnnkit.config.Config) says."""

    def __init__(self, task, config, *, callbacks=(), world: World | None = None) -> None:
        train, data = config.train, config.data
        self.task, self.config = task, config
        self.world = world if world is not None else init_world(train.device)
        if train.threads:
            torch.set_num_threads(train.threads)
        if train.tbptt and config.model.bidirectional:
            raise ConfigError("train.tbptt: truncated BPTT carries the state forward in time, but "
                              "a bidirectional model (model.bidirectional=true) also reads every "
                              "chunk backwards; use train.tbptt=0 or a unidirectional model")
        self.device = torch.device(train.device)
        torch.manual_seed(train.seed)
        self.model = task.build_model().to(self.device)
        self.net = self.model
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = make_optimizer(parameter_groups(self.model, train), train)
        self.scheduler = make_scheduler(self.optimizer, train, task.mode)

        self.data = task.train_set()
        self.n = len(next(iter(self.data.values())))
        self.rows = shard(data.batch_size, self.world)
        if task.stream:
            if self.n != data.batch_size:
                raise ConfigError(f"data.batch_size: a stream task trains on all its streams at "
                                  f"once, expected {self.n}, got {data.batch_size}")
            self.windows = next(iter(self.data.values())).shape[1] // data.seq_len
            if self.windows < 1:
                raise ConfigError(f"data.seq_len: expected at most the stream length "
                                  f"({next(iter(self.data.values())).shape[1]} tokens), got "
                                  f"{data.seq_len}")
        elif self.n < data.batch_size:
            raise ConfigError(f"data.batch_size: expected at most the {self.n} samples of the "
                              f"training split, got {data.batch_size}")
        self._perm_epoch, self._perm = None, None

        self.step = 0
        self.best: float | None = None
        self.best_step = 0
        self.bad_evals = 0
        self.clip_counts = {"norm": 0, "value": 0, "steps": 0}  # fired; steps clipped
        self.carry = None  # a stream task's state, carried from batch to batch
        self.saved_step = -1  # the step of the last checkpoint written
        self.pending_eval = False  # resumed from a checkpoint written before its validation
        # where the last completed step left the RNG and the carried state: a step cut short
        # has moved both on, and a checkpoint written after a crash must not see that
        self._at_step: tuple | None = None
        self._updating = False  # inside the optimizer's update: the weights are half-written
        self.out_dir = Path(config.run.out)
        self.ckdir = self.out_dir / "checkpoints"
        self.log = MetricsLog(self.out_dir / "metrics.jsonl") if self.is_main else None
        self.callbacks = list(callbacks)
        # the data files this run trains on (size, hash), measured when training starts; a
        # resumed run keeps the ones its first start measured
        self.data_files: dict | None = None

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    # ---- data ----------------------------------------------------------------------------

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This process' rows of the batch of optimizer step ``step`` (see the module doc)."""
        B = self.config.data.batch_size
        if self.task.stream:
            W = self.config.data.seq_len
            i = (step - 1) % self.windows
            if i == 0:
                self.carry = None  # a new pass over the streams starts from the zero state
            return {k: v[self.rows, i * W:(i + 1) * W].to(self.device)
                    for k, v in self.data.items()}
        epoch, i = divmod(step - 1, self.n // B)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        rows = self._perm[i * B:(i + 1) * B][self.rows]
        return {k: v[rows].to(self.device) for k, v in self.data.items()}

    # ---- one step ------------------------------------------------------------------------

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """Forward and backward over ``batch`` in truncated-BPTT chunks; gradients accumulate
        in ``.grad``. Returns the global batch's mean loss and its items (for throughput)."""
        task, k = self.task, self.config.train.tbptt
        sizes = torch.tensor([float(task.count(batch)), float(task.items(batch))])
        count, items = all_sum(sizes, self.world).tolist()  # one collective for both
        scale = self.world.size / count  # DDP averages over processes: see .distributed
        T = batch[task.time_keys[0]].shape[1]
        reset = batch.get("reset")
        state = self.carry if task.stream else None
        total = torch.zeros((), dtype=torch.float64)
        chunks: list[list[tuple[int, int]]] = [[]]  # the spans of each truncation chunk
        for start, stop, cut in spans(T, k, reset):
            chunks[-1].append((start, stop))
            if cut and stop < T:
                chunks.append([])
        for c, chunk_spans in enumerate(chunks):
            # DDP all-reduces in the backward of the last chunk only; no_sync must also hold
            # during the forward passes it covers.
            last = c == len(chunks) - 1
            sync = contextlib.nullcontext() if last or self.world.size == 1 \
                else self.net.no_sync()
            with sync:
                chunk_loss = None
                for start, stop in chunk_spans:
                    if reset is not None and state is not None:
                        state = reset_state(state, reset[:, start])
                    part = {key: (v[:, start:stop] if key in task.time_keys else v)
                            for key, v in batch.items() if key != "reset"}
                    loss, state = task.loss(self.net, part, state, stop == T)
                    chunk_loss = loss if chunk_loss is None else chunk_loss + loss
                if chunk_loss.requires_grad:
                    (chunk_loss * scale).backward()
            total += chunk_loss.detach().double().cpu()
            state = detach_state(state)
        if task.stream:
            self.carry = state
        return all_sum(total, self.world).item() / count, items

    def train_step(self, step: int) -> dict:
        """Optimizer step ``step``; returns its record."""
        started = time.perf_counter()
        for cb in self.callbacks:
            _call(cb, "on_step_begin", self, step)
        self._at_step = (torch.get_rng_state(), self.carry)
        batch = self.batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss, items = self.forward_backward(batch)
        train = self.config.train
        clip = clip_gradients(self.model.parameters(), train.clip_norm, train.clip_value)
        if not math.isfinite(loss) or not math.isfinite(clip.norm):
            what = f"loss is {loss}" if not math.isfinite(loss) else \
                f"gradient norm is {clip.norm} (loss {loss:.6g})"
            self._stop(step, what)
        self.clip_counts["norm"] += clip.by_norm
        self.clip_counts["value"] += clip.by_value
        self.clip_counts["steps"] += clip.by_norm or clip.by_value
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
        self._updating = True
        self.optimizer.step()
        for m in self.model.modules():  # weight constraints, by projection (IndRNN's bound)
            if isinstance(m, RecurrentNetwork):
                m.constrain_()
        if steps_per_update(self.scheduler):
            self.scheduler.step()
        self.step = step
        self._updating, self._at_step = False, None
        record = {"step": step, "kind": "train", "loss": loss,
                  "lr": lr, "grad_norm": clip.norm,
                  "clipped": clip.by_norm or clip.by_value,
                  "clip_fraction": self.clip_counts["steps"] / step,
                  "items_per_s": items / (time.perf_counter() - started)}
        for cb in self.callbacks:
            _call(cb, "on_step_end", self, step, record)
        return record

    def _stop(self, step: int, what: str) -> None:
        last = find_checkpoint(self.ckdir) if self.ckdir.exists() else None
        kept = f"the last good checkpoint, {last}, is left as it was" if last else \
            "no checkpoint had been saved yet"
        if self.log is not None:
            self.log.write({"step": step, "kind": "stopped", "reason": what})
        clip = self.config.train.clip_norm
        hint = (f"a lower train.clip_norm (now {clip:g})" if clip > 0 else
                "gradient clipping (train.clip_norm=1, off now)")
        raise TrainingStopped(f"training stopped at step {step}: the {what}, so nothing was "
                              f"saved from this step; {kept}. Try a lower train.lr or {hint}.")

    # ---- evaluation ----------------------------------------------------------------------

    def evaluate(self, split: str = "val") -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.task.evaluate(self.model, split)
        finally:
            self.model.train(was_training)

    def final_test(self) -> dict[str, float]:
        """Test metrics of the best checkpoint's weights (the last weights if none is best);
        logged as a ``test`` record. The model keeps the weights it was tested with."""
        if not self.task.has_split("test"):
            return {}
        best = find_checkpoint(self.ckdir, "best") if self.ckdir.exists() else None
        if best is not None:
            load_model_weights(self.model, load_checkpoint(best))
        metrics = self.evaluate("test")
        if self.log is not None and not any(  # a resumed finished run has its record already
                r.get("kind") == "test" and r.get("step") == self.step
                for r in (read_records(self.log.path) if self.log.path.exists() else [])):
            self.log.write({"step": self.step, "kind": "test",
                            "checkpoint": best.name if best else None, **metrics})
        return metrics

    def _validate(self, step: int) -> tuple[bool, bool, float]:
        """Validation after step ``step``: the metric, the best so far, early stopping, the
        plateau schedule, the ``eval`` record; returns ``(best, stop early, metric)``."""
        train = self.config.train
        metrics = self.evaluate("val")
        value = metrics[self.task.metric]
        improved = self._improved(value)
        # a tie moves "best" to the later, longer-trained weights (a small validation split
        # saturates, e.g. at 100% accuracy, and would otherwise freeze the best checkpoint at
        # the first step that reached it), but it is no improvement for early stopping
        best = improved or value == self.best
        if best:
            self.best, self.best_step = value, step
        self.bad_evals = 0 if improved else self.bad_evals + 1
        if self.scheduler is not None and not steps_per_update(self.scheduler):
            self.scheduler.step(value)
        if self.log is not None:  # the scalars; tables go to the test record
            self.log.write({"step": step, "kind": "eval",
                            **{k: v for k, v in metrics.items() if not isinstance(v, dict)}})
        for cb in self.callbacks:
            _call(cb, "on_eval", self, step, metrics)
        self.pending_eval = False
        return best, bool(train.patience) and self.bad_evals >= train.patience, value

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        return value < self.best if self.task.mode == "min" else value > self.best

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to ``train.max_steps`` (or early stop); return a summary dict."""
        train, run = self.config.train, self.config.run
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.ckdir.exists():
                clean_partial(self.ckdir)  # an interrupted save's leftovers
        if self.data_files is None:  # a new run (or one resumed from before they were kept)
            from rnnkit.tasks.files import file_fingerprints

            self.data_files = file_fingerprints(self.config.data)
        for cb in self.callbacks:
            _call(cb, "on_train_begin", self)
        bar = tqdm(total=train.max_steps, initial=self.step, file=sys.stderr, dynamic_ncols=True,
                   disable=not (run.progress and self.is_main), desc="train")
        smoothed, last_metric, stopped_early, out_of_time = None, None, False, False
        deadline = _clock() + 60 * train.max_minutes if train.max_minutes else None
        self.model.train()
        try:
            if self.pending_eval:  # resumed from a checkpoint whose validation never ended
                best, stopped_early, last_metric = self._validate(self.step)
                self.save(best=best)
            while self.step < train.max_steps and not (stopped_early or out_of_time):
                step = self.step + 1
                record = self.train_step(step)
                out_of_time = deadline is not None and self._past(deadline)
                last = step == train.max_steps or out_of_time
                smoothed = record["loss"] if smoothed is None else \
                    0.95 * smoothed + 0.05 * record["loss"]
                if self.log is not None and (step % run.log_every == 0
                                              or "grad_flow" in record):
                    self.log.write(record)
                save = run.checkpoint_every and step % run.checkpoint_every == 0
                best = False
                if step % train.eval_every == 0 or last:
                    self.pending_eval = True  # until _validate ends: a crash save says so
                    if save or last:
                        # first: a crash in validation loses no training (the checkpoint
                        # says its validation is pending; a resume runs it)
                        self.save(pending_eval=True)
                    best, stopped_early, last_metric = self._validate(step)
                if save or best or stopped_early or last:
                    self.save(best=best)
                bar.update(1)
                postfix = {"loss": f"{smoothed:.4g}",
                           f"{self.task.item_name}/s": f"{record['items_per_s']:.0f}"}
                if last_metric is not None:
                    postfix[f"val_{self.task.metric}"] = f"{last_metric:.4g}"
                bar.set_postfix(postfix, refresh=False)
                if stopped_early:
                    break
        except BaseException as e:
            # a NaN stops without saving (nothing after it is worth keeping); any other
            # exception, Ctrl-C or SIGTERM keeps the training done so far
            if not isinstance(e, TrainingStopped):
                self.save_after_crash(e)
            raise
        finally:
            bar.close()
        for cb in self.callbacks:
            _call(cb, "on_train_end", self)
        barrier(self.world)  # rank 0's last checkpoint is complete before anyone reads it
        summary = {"step": self.step, "best": self.best, "best_step": self.best_step,
                   "metric": self.task.metric, "stopped_early": stopped_early,
                   "out_of_time": out_of_time,
                   "clip_counts": dict(self.clip_counts)}
        if self.is_main and run.plots and self.log is not None and self.log.path.exists():
            summary["curves"] = plot_curves(read_records(self.log.path), self.out_dir /
                                            "curves.png", title=self.describe_model())
        return summary

    def _past(self, deadline: float) -> bool:
        """Whether ``deadline`` (``time.monotonic``) has passed; in a distributed run, on
        any process (so that all stop after the same step)."""
        late = torch.tensor(float(_clock() >= deadline))
        return bool(all_sum(late, self.world).item() > 0)

    def describe_model(self) -> str:
        """``"adding: lstm, hidden 64 x 1 layer(s)"``: the task and the model's shape."""
        m = self.config.model
        return (f"{self.task.name}: {m.cell}, hidden {m.hidden_size} x {m.num_layers} layer(s)"
                f"{', bidirectional' if m.bidirectional else ''}")

    # ---- checkpoints ---------------------------------------------------------------------

    def save_after_crash(self, error: BaseException) -> Path | None:
        """Write a checkpoint of the last completed step when training is cut short (an
        exception, Ctrl-C, SIGTERM) and say on stderr where it is and how to continue; nothing
        when that step is saved already or the weights were caught mid-update."""
        if not self.is_main or self.step == 0:
            return None
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else \
            f"stopped by {type(error).__name__}"
        resume = f"rnnkit train --resume --run.out={self.out_dir}"
        if self._updating:
            last = find_checkpoint(self.ckdir) if self.ckdir.exists() else None
            print(f"rnnkit: training {what} while the weights were being updated; the last "
                  f"checkpoint ({last or 'none'}) is kept; continue with: {resume}",
                  file=sys.stderr)
            return None
        if self.saved_step == self.step:
            path = self.ckdir / f"step-{self.step:08d}"
        else:
            rng, carry = self._at_step if self._at_step is not None else (None, self.carry)
            try:
                path = self.save(rng=rng, carry=carry, pending_eval=self.pending_eval)
            except Exception as e:  # noqa: BLE001 (the disk may be what failed)
                print(f"rnnkit: training {what} at step {self.step}, and its checkpoint could "
                      f"not be written ({e}); the last one written is kept", file=sys.stderr)
                return None
        print(f"rnnkit: training {what} after step {self.step}; saved {path}; continue with: "
              f"{resume}", file=sys.stderr)
        return path

    def trainer_state(self, rng: torch.Tensor | None = None, carry=None) -> dict:
        """Everything a resumed run needs besides the weights; ``rng``/``carry``: those of
        the last completed step, when a step was cut short."""
        state = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                 "rng": {"torch": torch.get_rng_state() if rng is None else rng},
                 "step": self.step, "best": self.best, "best_step": self.best_step,
                 "bad_evals": self.bad_evals, "clip_counts": dict(self.clip_counts),
                 "carry": self.carry if rng is None else carry,
                 "world_size": self.world.size,
                 "task": self.task.state(), "data_files": self.data_files}
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, best: bool = False, *, rng: torch.Tensor | None = None, carry=None,
             pending_eval: bool = False) -> Path | None:
        """A checkpoint of this step (rank 0 only); ``best`` also points ``best`` at it;
        ``pending_eval``: written before this step's validation, which a resume then runs.
        Saving a step again (after its validation) replaces the first one."""
        if not self.is_main:
            return None
        from rnnkit.config import config_to_dict

        state = {**self.trainer_state(rng, carry), "pending_eval": pending_eval}
        path = save_checkpoint(self.ckdir, self.step, self.model.state_dict(), state,
                               config_to_dict(self.config), keep=self.config.run.keep,
                               best=best)
        self.saved_step = self.step
        return path

    def resume(self, source=None) -> int:
        """Continue from a checkpoint: a loaded ``Checkpoint``, or the latest one in the
        directory ``source`` (default: this run's). Restores the weights, optimizer, schedule,
        RNG, counters and carried state, then applies the ``train`` settings that changed since
        (:func:`rnnkit.training.optim.adopt_settings`); returns the step."""
        ckpt = source if isinstance(source, Checkpoint) else \
            load_checkpoint(source if source is not None else self.out_dir)
        load_model_weights(self.model, ckpt)
        ts = ckpt.trainer_state
        try:
            self.optimizer.load_state_dict(ts["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(ts["scheduler"])
            torch.set_rng_state(ts["rng"]["torch"])
            if "cuda" in ts["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(ts["rng"]["cuda"], self.device)
            self.step, self.best, self.best_step = ts["step"], ts["best"], ts["best_step"]
            self.saved_step = self.step
            self.pending_eval = bool(ts.get("pending_eval", False))
            self.bad_evals, self.clip_counts = ts["bad_evals"], dict(ts["clip_counts"])
            self.data_files = ts.get("data_files")  # older runs lack them: measured anew
            carry = ts["carry"]
            adopt_settings(self.optimizer, self.scheduler, self.config.train,
                           dict(ckpt.config.get("train") or {}), self.step)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{ckpt.directory}: the training state does not fit this run "
                                  f"({type(e).__name__}: {e})") from None
        self.carry = map_state(lambda t: t.to(self.device), carry)
        if self.log is not None:  # a validation still pending is logged again when it runs
            self.log.truncate_after(self.step, redo=("eval",) if self.pending_eval else ())
        return self.step


def _call(cb, name: str, *args) -> None:
    method = getattr(cb, name, None)
    if method is not None:
        method(*args)

