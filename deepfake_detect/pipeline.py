"""train(cfg) and evaluate(cfg): build everything from a composed config, run, return metrics."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from deepfake_detect.evaluation.report import log_run_files, write_metrics, write_test_report
from deepfake_detect.evaluation.scorefile import write_score_file
from deepfake_detect.evaluation.summary import summarize_scores, summarize_test_set
from deepfake_detect.fusion import align_scores, build_fusion
from deepfake_detect.models.module import SpoofDetector, logged_test_metrics

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


def is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def _finish(
    cfg: DictConfig,
    model: SpoofDetector | FusedSystem,
    datamodule: Any,
    loggers: list[Logger],
    metrics: dict[str, float],
) -> dict[str, float]:
    if not is_global_zero():
        return metrics  # every process holds the gathered metrics; one writes them
    out_dir = Path(cfg.paths.output_dir)
    skipped = {**model.skipped, **{f"scan {k}": v for k, v in datamodule.scan_skipped.items() if v}}
    if skipped:
        log.warning("unusable audio skipped and counted: %s", skipped)
    results = getattr(model, "test_results", None) or {}
    write_metrics(out_dir / "metrics.json", metrics, results, skipped)
    if results:
        table = write_test_report(out_dir, results, model.test_outputs)
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
        checkpoint = next(
            (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
        )
        best = checkpoint.best_model_path if checkpoint else ""
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(_floats(trainer.callback_metrics))
        metrics["best_checkpoint"] = best  # type: ignore[assignment]
        if "test/eer" in metrics and is_global_zero():
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
    """Score ``cfg.ckpt_path`` on the data config's test sets; write scores, metrics, report.
    With ``fusion.ckpt_paths`` set, the fused system of those checkpoints is evaluated instead
    (see ``evaluate_fusion``)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    fusion = cfg.get("fusion")
    if fusion and fusion.get("ckpt_paths"):
        return evaluate_fusion(cfg)
    model = load_detector(cfg.ckpt_path)
    datamodule, trainer, loggers = _build(cfg, model)
    trainer.test(model, datamodule=datamodule)
    metrics = _floats(trainer.callback_metrics)
    if "test/eer" in metrics and is_global_zero():
        print(f"test EER: {100 * metrics['test/eer']:.2f}%")
    return _finish(cfg, model, datamodule, loggers, metrics)


@dataclass
class FusedSystem:
    """The test results of a fused system, shaped like a tested ``SpoofDetector``'s."""

    test_results: dict[str, dict[str, float]] = field(default_factory=dict)
    test_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def _score_systems(
    paths: list[str], datamodule: Any, trainer: L.Trainer, fused: FusedSystem
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Each checkpoint's gathered dev outputs, test outputs (per test set) and own EERs."""
    dev_outputs, test_outputs, systems = [], [], []
    for path in paths:
        model = load_detector(path)
        trainer.validate(model, datamodule=datamodule, verbose=False)
        trainer.test(model, datamodule=datamodule, verbose=False)
        dev_outputs.append(model.val_outputs)
        test_outputs.append(model.test_outputs)
        for stage, count in model.skipped.items():  # the same files for every system
            fused.skipped[stage] = max(fused.skipped.get(stage, 0), count)
        dev = model.val_outputs
        systems.append(
            {
                "ckpt_path": path,
                "dev_eer": summarize_scores(dev["scores"], dev["labels"]).get("eer"),
                "test_eer": {name: r.get("eer") for name, r in model.test_results.items()},
            }
        )
    return dev_outputs, test_outputs, systems


def evaluate_fusion(cfg: DictConfig) -> dict[str, float]:
    """Score every checkpoint of ``fusion.ckpt_paths`` on the data config's ``val`` selection
    (the dev set) and test sets, fit ``fusion.method`` on the dev scores, and evaluate the fused
    scores like a single model's: score files, metrics, report, plus ``fusion.json`` (the fitted
    parameters and every system's own EERs) in the run directory."""
    options = OmegaConf.to_container(cfg.fusion, resolve=True)
    paths = [str(p) for p in options.pop("ckpt_paths")]
    method = options.pop("method", "logistic")
    fusion = build_fusion(method, **(options if method == "logistic" else {}))
    datamodule = instantiate(cfg.data)
    if not datamodule.val_specs:
        raise ValueError("fusion is fitted on the dev set: set data.val=corpus:split")
    loggers: list[Logger] = _instantiate_group(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    # scores the systems; only the fused system's metrics are logged
    scorer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    fused = FusedSystem()
    dev_outputs, test_outputs, systems = _score_systems(paths, datamodule, scorer, fused)

    _, dev_scores, dev_labels = align_scores(dev_outputs)
    fusion.fit(dev_scores, dev_labels)
    out_dir = Path(cfg.paths.output_dir)
    metrics: dict[str, float] = {}
    for i, name in enumerate(test_outputs[0]):
        index, scores, labels = align_scores([outputs[name] for outputs in test_outputs])
        rows, asv = test_outputs[0][name]["rows"], test_outputs[0][name]["asv"]
        fused_scores = fusion(scores)
        results = summarize_test_set(fused_scores, labels, rows, asv)
        fused.test_results[name] = results
        fused.test_outputs[name] = {
            "index": index,
            "scores": fused_scores,
            "labels": labels,
            "rows": rows,
            "asv": asv,
        }
        metrics.update(_floats(logged_test_metrics(name, results, first=i == 0)))
        if scorer.is_global_zero:
            write_score_file(out_dir / "scores" / f"{name}.tsv", rows, fused_scores)
    if scorer.is_global_zero:
        dev_eer = summarize_scores(fusion(dev_scores), dev_labels).get("eer")
        payload = {"fusion": fusion.state_dict(), "dev_eer": dev_eer, "systems": systems}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fusion.json").write_text(json.dumps(payload, indent=2))
    for logger in loggers:
        logger.log_metrics(metrics)
        logger.save()
    if "test/eer" in metrics:
        print(f"test EER: {100 * metrics['test/eer']:.2f}%  ({method} fusion of {len(paths)})")
    return _finish(cfg, fused, datamodule, loggers, metrics)
