"""StoreCalibration: every checkpoint carries the calibration fitted on its own epoch's dev
scores (the score -> LLR map and the decision threshold that ``deepfake-detect detect`` uses;
see :mod:`deepfake_detect.inference.calibration`), so the best checkpoint holds the best
epoch's calibration without a file being rewritten after training."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from deepfake_detect.inference.calibration import (
    CALIBRATION_KEY,
    DEFAULT_REJECT_BAND,
    CalibrationError,
    check_reject_band,
    fit_calibration,
)

log = logging.getLogger(__name__)


class StoreCalibration(Callback):
    """After each validation, fit a calibration on the module's gathered dev scores
    (``val_outputs``) with the threshold rule ``threshold`` (``eer``, ``target_far``,
    ``bayes``, ``fixed``; ``value``: its rate, prior or score) and the default reject band;
    checkpoints saved at that step store it under ``calibration``. Dev scores that cannot be
    calibrated (one class, a model that ranks them the wrong way) leave the checkpoint without
    one, with a warning (the first time in a fit); ``deepfake-detect calibrate`` can add it
    later. Nothing is fitted when no checkpoint will be saved (``fast_dev_run``, no checkpoint
    callback)."""

    def __init__(
        self,
        threshold: str = "eer",
        value: float | None = None,
        reject_band: float = DEFAULT_REJECT_BAND,
    ) -> None:
        self.threshold, self.value = threshold, value
        self.reject_band = check_reject_band(reject_band)
        self._latest: tuple[int, dict[str, Any]] | None = None
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._latest = None
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.checkpoint_callbacks:
            return  # no checkpoint will be saved
        outputs = getattr(pl_module, "val_outputs", None) or {}
        scores, labels = outputs.get("scores"), outputs.get("labels")
        if scores is None or labels is None or len(scores) == 0:
            return
        try:
            calibration = fit_calibration(
                scores,
                labels,
                self.threshold,
                self.value,
                self.reject_band,
                source=f"the dev set at epoch {trainer.current_epoch}",
            )
        except CalibrationError as exc:
            # once per fit: debug runs validate on a handful of trials every epoch
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(
                level,
                "epoch %d: no calibration stored in its checkpoint (%s); "
                "`deepfake-detect calibrate` can add one",
                trainer.current_epoch,
                exc,
            )
            return
        self._latest = (trainer.global_step, calibration.to_dict())

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._latest is not None and self._latest[0] == trainer.global_step:
            checkpoint[CALIBRATION_KEY] = self._latest[1]
