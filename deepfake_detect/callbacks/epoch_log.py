"""EpochLog: one line per training epoch through Python logging, so a run whose stdout is
redirected (nohup, SLURM) shows its progress as it goes, and the run's log file
(``<run>/train.log``) keeps it::

    epoch 3  train/loss 0.4121  val/eer 9.50%  best 9.38% (epoch 2)  elapsed 0:01:12  296 samples/s

Epochs are counted from 0, as the checkpoint names (``epoch_003.ckpt``) count them. The loss is
the epoch's sample-weighted mean, the throughput counts training samples over the training
time of the epoch (data loading included, validation excluded).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping) and "label" in batch:
        return len(batch["label"])
    return 1


def _loss(outputs: Any) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(loss, torch.Tensor):
        value = float(loss.detach())
        return value if math.isfinite(value) else None
    return None


class EpochLog(Callback):
    """Log the epoch, train loss, the monitored validation metric, the best value so far (and
    its epoch), the elapsed time and the training throughput at the end of every epoch."""

    def __init__(self, monitor: str = "val/eer", mode: str = "min") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self._fit_start = 0.0
        self._reset()
        self._best: tuple[float, int] | None = None

    def _reset(self) -> None:
        self._samples = 0
        self._loss_sum = 0.0
        self._loss_samples = 0
        self._epoch_start = time.perf_counter()
        self._train_end = self._epoch_start
        self._val: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._best = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        size = _batch_size(batch)
        self._samples += size
        loss = _loss(outputs)
        if loss is not None:
            self._loss_sum += loss * size
            self._loss_samples += size
        self._train_end = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and math.isfinite(float(value)):
            self._val = float(value)
            if self._best is None or self._improves(self._val, self._best[0]):
                self._best = (self._val, trainer.current_epoch)

    def _improves(self, value: float, best: float) -> bool:
        return value < best if self.mode == "min" else value > best

    def _best_so_far(self, trainer: L.Trainer) -> tuple[float, int | None] | None:
        """Ours, or the checkpoint callback's when that is better (a resumed run: the best
        epoch before the interruption is in its restored state)."""
        best: tuple[float, int | None] | None = self._best
        for callback in trainer.checkpoint_callbacks:
            if (
                isinstance(callback, ModelCheckpoint)
                and callback.monitor == self.monitor
                and callback.best_model_score is not None
            ):
                score = float(callback.best_model_score)
                if best is None or self._improves(score, best[0]):
                    best = (score, None)
        return best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        parts = [f"epoch {trainer.current_epoch}"]
        if self._loss_samples:
            parts.append(f"train/loss {self._loss_sum / self._loss_samples:.4f}")
        if self._val is not None:
            parts.append(f"{self.monitor} {self._format(self._val)}")
        best = self._best_so_far(trainer)
        if best is not None:
            where = f" (epoch {best[1]})" if best[1] is not None else ""
            parts.append(f"best {self._format(best[0])}{where}")
        elapsed = timedelta(seconds=round(time.perf_counter() - self._fit_start))
        parts.append(f"elapsed {elapsed}")
        train_time = self._train_end - self._epoch_start
        if self._samples and train_time > 0:
            parts.append(f"{self._samples / train_time:.0f} samples/s")
        log.info("  ".join(parts))

    def _format(self, value: float) -> str:
        """Rates (``eer``, ``acc``) in %, anything else as it is."""
        if self.monitor.rsplit("/", 1)[-1] in ("eer", "acc"):
            return f"{100 * value:.2f}%"
        return f"{value:.4f}"
