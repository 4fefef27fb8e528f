"""train(cfg) and evaluate(cfg): build everything from a composed config, run, return metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from deepfake_detect.evaluation.report import log_run_files, write_metrics, write_test_report
from deepfake_detect.models.module import SpoofDetector

log = logging.getLogger(__name__)


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        out[key] = value if math.isfinite(value) else float("nan")
    return out


def _build(cfg: DictConfig, model: SpoofDetector) -> tuple[Any, L.Trainer, list[Logger]]:
    datamodule = instantiate(cfg.data)
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"))
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    model.score_dir = Path(cfg.paths.output_dir) / "scores"
    return datamodule, trainer, loggers


def _finish(
    cfg: DictConfig,
    model: SpoofDetector,
    datamodule: Any,
    loggers: list[Logger],
    metrics: dict[str, float],
) -> dict[str, float]:
    out_dir = Path(cfg.paths.output_dir)
    skipped = {**model.skipped, **{f"scan {k}": v for k, v in datamodule.scan_skipped.items() if v}}
    if skipped:
        log.warning("unusable audio skipped and counted: %s", skipped)
    write_metrics(out_dir / "metrics.json", metrics, getattr(model, "test_results", {}), skipped)
    if getattr(model, "test_results", None):
        table = write_test_report(out_dir, model.test_results, model.test_outputs)
        log.info("test results\n%s", table)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            log_run_files(logger, out_dir)
    return metrics


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint (by ``val/eer``); returns every logged metric."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    model: SpoofDetector = instantiate(cfg.model)
    datamodule, trainer, loggers = _build(cfg, model)
    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _floats(trainer.callback_metrics)
    if cfg.get("test", True):
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        best = checkpoint.best_model_path if checkpoint else ""
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(_floats(trainer.callback_metrics))
        metrics["best_checkpoint"] = best  # type: ignore[assignment]
        if "test/eer" in metrics:
            print(f"test EER: {100 * metrics['test/eer']:.2f}%  (checkpoint: {best or 'last'})")
    return _finish(cfg, model, datamodule, loggers, metrics)


def load_detector(ckpt_path: str | Path) -> SpoofDetector:
    """Rebuild a trained detector from its checkpoint alone (no download: the architecture
    is stored in the checkpoint's hyper-parameters, the weights in its state dict)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (check ckpt_path)")
    return SpoofDetector.load_from_checkpoint(path, map_location="cpu")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score ``cfg.ckpt_path`` on the data config's test sets; write scores, metrics, report."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    model = load_detector(cfg.ckpt_path)
    datamodule, trainer, loggers = _build(cfg, model)
    trainer.test(model, datamodule=datamodule)
    metrics = _floats(trainer.callback_metrics)
    if "test/eer" in metrics:
        print(f"test EER: {100 * metrics['test/eer']:.2f}%")
    return _finish(cfg, model, datamodule, loggers, metrics)
