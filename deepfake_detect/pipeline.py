"""train(cfg) and evaluate(cfg): build everything from a composed config, run, return metrics.

Test results are built here, once per test set, from the scores the module gathered
(:func:`deepfake_detect.evaluation.record.build_result`); logging, ``metrics.json``, score
files and reports are views of those records.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from deepfake_detect.augment.chain import build_augmentation, describe_augmentation
from deepfake_detect.console import RUN_MARKER, announce, quiet_dependencies
from deepfake_detect.data.corpora.base import CorpusPathError
from deepfake_detect.data.preprocessing import Preprocessing, describe, resolve_preprocessing
from deepfake_detect.errors import ConfigError, RunInterrupted
from deepfake_detect.evaluation.record import (
    TestSetResult,
    build_result,
    logged_metrics,
    provenance,
)
from deepfake_detect.evaluation.report import (
    log_run_files,
    text_table,
    write_metrics,
    write_test_report,
)
from deepfake_detect.evaluation.robustness import build_plan, evaluate_robustness
from deepfake_detect.evaluation.summary import summarize_scores
from deepfake_detect.fusion import align_scores, build_fusion
from deepfake_detect.models.checkpoint import read_checkpoint
from deepfake_detect.models.module import SpoofDetector, load_detector

log = logging.getLogger(__name__)

__all__ = ["RUN_MARKER", "evaluate", "evaluate_fusion", "load_detector", "objective", "train"]

PREPROCESSING_KEYS = tuple(f.name for f in fields(Preprocessing))


class OutputDirError(RuntimeError):
    """A run directory that already belongs to another run."""


def names_config_sources(run: Callable[..., Any]) -> Callable[..., Any]:
    """A corpus path that does not exist is named by the config keys it came from: Hydra
    resolves what it instantiates, so the data module sees ``data/mini_wild``, while the
    unresolved config says ``${paths.data_dir}/mini_wild`` (the key to change)."""

    @functools.wraps(run)
    def wrapper(cfg: DictConfig, *args: Any, **kwargs: Any) -> Any:
        try:
            return run(cfg, *args, **kwargs)
        except CorpusPathError as exc:
            if exc.key is None:
                raise
            parent, _, leaf = exc.key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if not isinstance(node, DictConfig) or leaf not in node:
                raise
            raw = OmegaConf.to_container(node, resolve=False)[leaf]  # type: ignore[index]
            if "${" not in str(raw):
                raise
            raise exc.configured_by(exc.key, raw) from exc

    return wrapper


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


def is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def claim_output_dir(
    out_dir: str | Path, ckpt_path: str | None = None, take_over: bool = False
) -> None:
    """Make ``out_dir`` this run's, or refuse: two runs in one directory would mix their
    checkpoints, logs and metrics. A run may reuse a directory only to resume from a
    checkpoint inside it, or with ``take_over`` (``resume=auto`` where the run it restarts wrote
    no checkpoint yet: a job requeued before its first epoch ended). The claim is atomic (two
    jobs started in the same second: one wins). The marker says ``"status": "running"``; the
    entry point records how the run ended (:func:`deepfake_detect.console.end_run`)."""
    if not is_global_zero():
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / RUN_MARKER
    owner = {
        "status": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
    }
    resuming = take_over or (
        ckpt_path is not None and Path(out_dir).resolve() in Path(ckpt_path).resolve().parents
    )
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if not resuming:
            try:
                previous = json.loads(marker.read_text())
            except (OSError, ValueError):
                previous = {}
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(previous.get("started", 0)))
            raise OutputDirError(
                f"{out_dir} already holds another run (pid {previous.get('pid', '?')} on "
                f"{previous.get('host', '?')}, started {started}): give this run its own "
                f"directory (hydra.run.dir=...), or resume that run with resume=auto "
                f"(or ckpt_path={out_dir}/checkpoints/last.ckpt)"
            ) from None
        marker.write_text(json.dumps(owner))
        return
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)


def _is_wandb(entry: DictConfig) -> bool:
    return str(entry.get("_target_", "")).rpartition(".")[2] in ("wandb_logger", "WandbLogger")


def _sweep_name() -> str | None:
    """The sweep directory's name in a multirun (``-m``), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(str(hydra_cfg.sweep.dir)).name or None


def wandb_identity(entry: DictConfig, facts: Mapping[str, Any], user_tags: Any) -> dict[str, Any]:
    """The W&B group and tags of a run: the configured group, else the sweep directory's name
    (the runs of one sweep share it; a single run has none); the user's ``tags`` plus the run's
    experiment, model, freeze mode, training data and augmentation (W&B tags: 64 characters)."""
    group = entry.get("group") or _sweep_name()
    if group:
        group = f"{facts['task']}-{group}" if entry.get("group") is None else str(group)
    train_data = facts.get("train_data")
    derived = [
        facts.get("experiment") and f"experiment:{facts['experiment']}",
        f"model:{facts['model']}",
        facts.get("freeze") and f"freeze:{facts['freeze']}",
        *(f"data:{d}" for d in (train_data if isinstance(train_data, list) else [train_data])),
        f"augment:{facts.get('augment_name') or 'none'}",
    ]
    tags: list[str] = []
    for tag in [*(OmegaConf.to_container(user_tags) if user_tags else []), *derived]:
        if tag and str(tag)[:64] not in tags:
            tags.append(str(tag)[:64])
    return {"group": group, "tags": tags}


def _loggers(cfg: DictConfig, facts: Mapping[str, Any] | None = None) -> list[Logger]:
    """The configured loggers (W&B: grouped and tagged from ``facts``, see
    :func:`wandb_identity`), each given the whole resolved config."""
    loggers: list[Logger] = []
    for entry in (cfg.get("logger") or {}).values():
        if not entry or "_target_" not in entry:
            continue
        extra = wandb_identity(entry, facts, cfg.get("tags")) if facts and _is_wandb(entry) else {}
        loggers.append(instantiate(entry, **extra))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def finishes_wandb(run: Callable[..., Any]) -> Callable[..., Any]:
    """Finish the W&B run a task started, if any (exit code 1, which W&B marks failed, when
    the task raises): without it the next run of a sweep in this process would log into the
    same W&B run."""

    @functools.wraps(run)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = run(*args, **kwargs)
        except BaseException:
            _finish_global_wandb(exit_code=1)
            raise
        _finish_global_wandb(exit_code=0)
        return result

    return wrapper


def _finish_global_wandb(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")  # never imported: no run to finish
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish(exit_code=exit_code)


def _trainer(cfg: DictConfig, loggers: list[Logger], no_validation: str | None = None) -> L.Trainer:
    """The configured trainer and callbacks. ``no_validation``: why a training run will not
    validate (None: it will); the callbacks that need a validation metric (early stopping, the
    best checkpoint) are then left out with a warning, and the final weights are tested."""
    callbacks: list[Callback] = _instantiate_group(cfg.get("callbacks"))
    if no_validation:
        needs_val = [
            c
            for c in callbacks
            if isinstance(c, EarlyStopping) or (isinstance(c, ModelCheckpoint) and c.monitor)
        ]
        if needs_val:
            log.warning(
                "no validation (%s): early stopping and the best-checkpoint selection are off, "
                "the final weights are tested (checkpoints/last.ckpt is still written)",
                no_validation,
            )
            callbacks = [c for c in callbacks if not any(c is n for n in needs_val)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def _no_validation(cfg: DictConfig, datamodule: Any) -> str | None:
    """Why a training run will not validate, or None when it will."""
    if not getattr(datamodule, "val_specs", True):
        return "data.val is empty"
    limit = cfg.trainer.get("limit_val_batches")
    if limit is not None and float(limit) == 0:
        return f"trainer.limit_val_batches={limit}"
    return None


def _latest_checkpoint_file(trainer: L.Trainer) -> str | None:
    """The file of the unmonitored checkpoint callback (``last.ckpt``), if written."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and not callback.monitor:
            for path in (callback.last_model_path, callback.best_model_path):
                if path and Path(path).is_file():
                    return path
    return None


@contextmanager
def _interruptible(trainer: L.Trainer) -> Iterator[None]:
    """Lightning handles Ctrl-C in ``fit`` / ``test`` itself (callbacks' ``on_exception``,
    loggers finalised, teardown) and then calls ``sys.exit(1)``; turn that back into an
    interruption the entry point can report, with the checkpoint to resume from."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise RunInterrupted(_latest_checkpoint_file(trainer)) from None
        raise


# -- results ---------------------------------------------------------------------------------
def build_results(
    outputs: Mapping[str, Mapping[str, np.ndarray]], datamodule: Any, info: Mapping[str, Any]
) -> list[TestSetResult]:
    """One record per test set from the gathered outputs (index, scores, labels, flags)."""
    results = []
    for name, out in outputs.items():
        rows_all = datamodule.test_sets[name]
        rows = [rows_all[i] for i in out["index"]]
        mask = datamodule.metric_mask(name)
        counted = None if mask is None else [mask[i] for i in out["index"]]
        result = build_result(
            name,
            rows,
            out["scores"],
            out["labels"],
            out.get("flags"),
            asv=datamodule.asv_scores(name),
            counted=counted,
            provenance=info,
        )
        for note in result.notes:
            log.warning("%s: %s", name, note)
        results.append(result)
    return results


def _log_results(loggers: list[Logger], metrics: Mapping[str, float], step: int) -> None:
    for logger in loggers:
        logger.log_metrics(dict(metrics), step=step)
        logger.save()


def _finish(
    cfg: DictConfig,
    datamodule: Any,
    loggers: list[Logger],
    metrics: dict[str, Any],
    results: list[TestSetResult],
    skipped: Mapping[str, int],
    info: Mapping[str, Any],
    headline: str | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the run's files, then print its last lines: ``headline``, one row per test set and
    the run directory."""
    if not is_global_zero():
        return metrics  # every process holds the gathered metrics; one writes them
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = {
        **skipped,
        **{f"scan {k}": v for k, v in datamodule.scan_skipped.items() if v},
        **{
            f"missing_audio {k}": r["missing_audio"]
            for k, r in datamodule.reports.items()
            if r.get("missing_audio")
        },
    }
    if skipped:
        log.warning("unusable or missing audio skipped and counted: %s", skipped)
    write_metrics(
        out_dir / "metrics.json",
        metrics,
        results,
        skipped,
        provenance=dict(info),
        data=datamodule.reports,
        **({"run": dict(run)} if run is not None else {}),
    )
    if results:
        write_test_report(out_dir, results, datamodule.reports)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            log_run_files(logger, out_dir)
            _log_best_checkpoint(logger, metrics.get("best_checkpoint"))
    table = text_table({r.name: r.metrics for r in results}) if results else None
    lines = [part for part in (headline, table) if part]
    announce("\n\n".join(["", *lines, f"run directory: {out_dir}"]))
    return metrics


RESUME_MODES = (False, "auto")


def _log_best_checkpoint(logger: WandbLogger, path: str | None) -> None:
    """``log_model`` on an offline W&B run (see :func:`deepfake_detect.config.wandb_logger`):
    the best checkpoint as a ``model`` artifact, alias ``best``. Online, Lightning does it."""
    if not path or not getattr(logger, "requested_log_model", False) or logger._log_model:
        return
    import wandb

    run = logger.experiment
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"file": Path(path).name})
    artifact.add_file(path, name="model.ckpt")
    run.log_artifact(artifact, aliases=["best", "latest"])


def _resume_path(cfg: DictConfig) -> tuple[str | None, bool]:
    """The checkpoint to resume from and whether this run may take over its directory.

    ``ckpt_path`` wins; else ``resume=auto`` resumes from ``<output_dir>/checkpoints/last.ckpt``
    when it exists (a requeued or restarted job), and otherwise starts fresh in the same
    directory. Under SLURM, a Lightning ``hpc_ckpt_*.ckpt`` in the directory (written on the
    requeue signal) is newer than ``last.ckpt`` and is taken instead."""
    mode = cfg.get("resume", False)
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume={mode!r}: expected false or auto")
    path = cfg.get("ckpt_path")
    take_over = False
    if not path and mode == "auto":
        out_dir = Path(cfg.paths.output_dir)
        candidates = [out_dir / "checkpoints" / "last.ckpt", *out_dir.glob("hpc_ckpt_*.ckpt")]
        found = [c for c in candidates if c.is_file()]
        take_over = True
        if found:
            path = str(max(found, key=lambda c: c.stat().st_mtime))
            log.info("resume=auto: resuming from %s", path)
        else:
            log.info("resume=auto: no checkpoint in %s, starting fresh", out_dir)
    if path:
        read_checkpoint(path, "checkpoint to resume from")  # one clear error if unusable
    return path, take_over


# -- the run's facts (metrics.json's "run" section, W&B tags, compare's rows) -----------------
def _hydra_choice(group: str) -> str | None:
    """Hydra's choice for a config group (``experiment``, ``model``); None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # a composed config, no Hydra app
        return None


def experiment_name(cfg: DictConfig) -> str | None:
    """``experiment_name`` when set, else Hydra's choice of ``experiment=`` (None without one,
    or outside a Hydra app)."""
    if cfg.get("experiment_name"):
        return str(cfg.experiment_name)
    return _hydra_choice("experiment")


def _augment_name(cfg: DictConfig) -> str:
    """The chain's entries by name (``rawboost+codec``), or ``none``."""
    chain = cfg.get("augment") or {}
    names = [name for name, entry in chain.items() if entry and "_target_" in entry]
    return "+".join(names) or "none"


def run_facts(cfg: DictConfig, augment: str) -> dict[str, Any]:
    """What a run is, from its config: the row ``compare`` puts it in."""
    target = OmegaConf.select(cfg, "model.net._target_", default=None)
    target = target or OmegaConf.select(cfg, "model._target_", default="unknown")
    train_data = cfg.data.get("train")
    if OmegaConf.is_list(train_data) or isinstance(train_data, list | tuple):
        train_data = [str(t) for t in train_data]
    return {
        "task": "train",
        "experiment": experiment_name(cfg),
        # the model config chosen (w2v2_linear, lcnn, ...): one class may serve several sizes
        "model": _hydra_choice("model") or str(target).rpartition(".")[2],
        "freeze": cfg.model.get("freeze"),
        "train_data": train_data,
        "augment": augment,
        "augment_name": _augment_name(cfg),
        "seed": cfg.get("seed"),
    }


def _accelerator_name(trainer: L.Trainer) -> str:
    return type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()


def run_section(
    facts: Mapping[str, Any],
    trainer: L.Trainer,
    model: torch.nn.Module,
    train_seconds: float,
    run_seconds: float,
    optimized: tuple[str, float | None],
) -> dict[str, Any]:
    """metrics.json's ``run`` section. ``gpu_hours``: this process's wall time (fit and test)
    times the GPUs it held (0 on CPU); a resumed run counts its own part only."""
    accelerator = _accelerator_name(trainer)
    devices, nodes = int(trainer.num_devices), int(trainer.num_nodes)
    gpus = devices * nodes if accelerator == "cuda" else 0
    return {
        **facts,
        "train_seconds": round(train_seconds, 3),
        "accelerator": accelerator,
        "devices": devices,
        "num_nodes": nodes,
        "gpu_hours": run_seconds * gpus / 3600,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimized_metric": optimized[0],
        "optimized_value": optimized[1],
    }


def best_metrics(trainer: L.Trainer) -> dict[str, float]:
    """``<monitor>_best`` (``val/eer_best``): the score the best checkpoint was chosen by, the
    best over the run (restored with the callback's state on resume)."""
    out = {}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor:
            score = callback.best_model_score
            if score is not None:
                out[f"{callback.monitor}_best"] = float(score)
    return out


def objective(metrics: Mapping[str, Any], name: str, multirun: bool) -> float | None:
    """The value a sweeper minimises: ``metrics[name]``, or None when the run has none (no
    validation, say). In a multirun a NaN or infinite value is None too: Optuna's sweeper
    records a trial whose value is not a float as failed and goes on (a NaN would end the
    sweep), Hydra's basic sweeper ignores the value. A single run returns it as it is."""
    value = metrics.get(name)
    if not isinstance(value, int | float):
        if multirun:
            log.warning("optimized_metric=%s: the run has no such metric; trial failed", name)
        return None
    if multirun and not math.isfinite(value):
        log.warning("optimized_metric=%s is %s: trial failed", name, value)
        return None
    return float(value)


@names_config_sources
@finishes_wandb
def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint (by ``val/eer``); returns every metric (the test
    metrics in float64, from the result records)."""
    started = time.perf_counter()
    quiet_dependencies()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    resume, take_over = _resume_path(cfg)
    claim_output_dir(cfg.paths.output_dir, resume, take_over)
    log.info("run directory: %s", cfg.paths.output_dir)
    model: SpoofDetector = instantiate(cfg.model)
    waves, masking = build_augmentation(cfg.get("augment"))
    datamodule = instantiate(cfg.data)
    datamodule.transforms.extend(waves)
    if masking is not None:
        try:
            model.scorer.net.set_feature_augment(masking)
        except ValueError as exc:
            raise ConfigError(f"augment: {exc}") from None
    model.set_preprocessing(datamodule.preprocessing)
    log.info("preprocessing: %s", describe(datamodule.preprocessing))
    augment = describe_augmentation(waves, masking)
    log.info("augmentation (training only): %s", augment)
    facts = run_facts(cfg, augment)
    loggers = _loggers(cfg, facts)
    return _fit_and_test(cfg, model, datamodule, loggers, facts, resume, started)


def _fit_and_test(
    cfg: DictConfig,
    model: SpoofDetector,
    datamodule: Any,
    loggers: list[Logger],
    facts: Mapping[str, Any],
    resume: str | None,
    started: float,
) -> dict[str, Any]:
    trained = bool(cfg.get("train", True))
    trainer = _trainer(cfg, loggers, _no_validation(cfg, datamodule) if trained else None)
    info = provenance(cfg)
    fit_started = time.perf_counter()
    if trained:
        with _interruptible(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    train_seconds = time.perf_counter() - fit_started
    metrics: dict[str, Any] = _floats(trainer.callback_metrics)
    metrics.update(best_metrics(trainer))
    results: list[TestSetResult] = []
    headline = None
    if cfg.get("test", True):
        checkpoint = next(
            (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
        )
        best = checkpoint.best_model_path if checkpoint else ""
        tested = best or _tested_weights(trainer, trained)
        if not best:
            log.warning("no best checkpoint: testing %s", tested)
        with _interruptible(trainer):
            trainer.test(
                model,
                datamodule=datamodule,
                ckpt_path=best or None,
                weights_only=True,
                verbose=False,
            )
        info = {**info, "checkpoint": tested}
        results = build_results(model.test_outputs, datamodule, info)
        test_metrics = logged_metrics(results)
        _log_results(loggers, test_metrics, trainer.global_step)
        metrics.update(test_metrics)
        metrics["best_checkpoint"] = best
        if "test/eer" in metrics:
            what = f"checkpoint: {best}" if best else f"tested: {tested}"
            headline = f"test EER: {100 * metrics['test/eer']:.2f}%  ({what})"
    name = str(cfg.get("optimized_metric") or "val/eer_best")
    value = metrics.get(name)
    optimized = (name, float(value) if isinstance(value, int | float) else None)
    run = run_section(
        {k: v for k, v in facts.items() if k != "augment_name"},
        trainer,
        model,
        train_seconds,
        time.perf_counter() - started,
        optimized,
    )
    return _finish(
        cfg, datamodule, loggers, metrics, results, model.skipped, info, headline, run=run
    )


def _tested_weights(trainer: L.Trainer, trained: bool) -> str:
    """What a run without a best checkpoint tests, in words."""
    if not trained:
        return "the initial weights (train=false)"
    last = _latest_checkpoint_file(trainer)
    weights = f"the final weights of epoch {max(trainer.current_epoch - 1, 0)}"
    return f"{weights}, saved as {last}" if last else f"{weights} (no checkpoint written)"


# -- evaluation ------------------------------------------------------------------------------
def _requested_preprocessing(cfg: DictConfig) -> dict[str, Any]:
    return {key: cfg.data.get(key) for key in PREPROCESSING_KEYS if key in cfg.data}


CKPT_EXAMPLE = "logs/train/runs/<run>/checkpoints/epoch_NNN.ckpt"


def _newest_checkpoint(cfg: DictConfig) -> str | None:
    """The newest best checkpoint under ``paths.log_dir/train``, for the example command."""
    try:
        logs = Path(cfg.paths.log_dir) / "train"
        found = [
            *logs.glob("runs/*/checkpoints/epoch_*.ckpt"),
            *logs.glob("multiruns/*/*/checkpoints/epoch_*.ckpt"),
        ]
        return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None
    except (OSError, ValueError, AttributeError):  # no paths.log_dir, an unreadable folder
        return None


def _check_eval_config(cfg: DictConfig) -> None:
    fusion = cfg.get("fusion")
    if OmegaConf.is_missing(cfg, "ckpt_path") and not (fusion and fusion.get("ckpt_paths")):
        example = _newest_checkpoint(cfg) or CKPT_EXAMPLE
        raise ConfigError(
            f"eval.py needs a checkpoint: python eval.py ckpt_path={example} data=<data config> "
            "(or 'fusion.ckpt_paths=[a.ckpt,b.ckpt]' to evaluate a fusion)"
        )
    if cfg.get("model") is not None:
        raise ConfigError(
            "eval.py takes the model from the checkpoint (its architecture and preprocessing "
            "are stored in it): drop the model override (+model=...)"
        )


def _eval_datamodule(cfg: DictConfig, preprocessing: Preprocessing) -> Any:
    data = {key: getattr(preprocessing, key) for key in PREPROCESSING_KEYS}
    return instantiate(cfg.data, **data)


@names_config_sources
@finishes_wandb
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.ckpt_path`` on the data config's test sets with the preprocessing stored in
    the checkpoint; write scores, metrics, report. With ``fusion.ckpt_paths`` set, the fused
    system of those checkpoints is evaluated instead (see ``evaluate_fusion``). With
    ``robustness`` set, the test sets are then scored again under each of its conditions
    (:mod:`deepfake_detect.evaluation.robustness`)."""
    quiet_dependencies()
    _check_eval_config(cfg)
    robustness = build_plan(cfg)  # bad conditions fail here, before anything is scored
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    fusion = cfg.get("fusion")
    if fusion and fusion.get("ckpt_paths"):
        return evaluate_fusion(cfg)
    model = load_detector(cfg.ckpt_path)
    preprocessing = resolve_preprocessing(
        model.preprocessing,
        _requested_preprocessing(cfg),
        override=bool(cfg.get("override_preprocessing", False)),
        what=f"checkpoint {cfg.ckpt_path}",
    )
    model.set_preprocessing(preprocessing)
    claim_output_dir(cfg.paths.output_dir)
    log.info("run directory: %s", cfg.paths.output_dir)
    log.info("preprocessing: %s", describe(preprocessing))
    datamodule = _eval_datamodule(cfg, preprocessing)
    loggers = _loggers(cfg)
    trainer = _trainer(cfg, loggers)
    with _interruptible(trainer):
        trainer.test(model, datamodule=datamodule, verbose=False)
    info = {
        **provenance(cfg),
        "checkpoint": str(cfg.ckpt_path),
        "model": {"net": model.hparams.net.get("_target_"), "loss": model.hparams.get("loss")},
        "preprocessing": preprocessing.to_dict(),
    }
    results = build_results(model.test_outputs, datamodule, info)
    metrics: dict[str, Any] = logged_metrics(results)
    if robustness is not None:
        metrics.update(
            evaluate_robustness(robustness, cfg, model, datamodule, results, info, loggers)
        )
    _log_results(loggers, metrics, 0)
    headline = None
    if "test/eer" in metrics:
        headline = f"test EER: {100 * metrics['test/eer']:.2f}%  (checkpoint: {cfg.ckpt_path})"
    return _finish(cfg, datamodule, loggers, metrics, results, model.skipped, info, headline)


def _score_systems(
    models: list[SpoofDetector], paths: list[str], datamodule: Any, trainer: L.Trainer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Each system's gathered dev outputs, test outputs (per test set) and own EERs."""
    dev_outputs, test_outputs, systems = [], [], []
    skipped: dict[str, int] = {}
    for path, model in zip(paths, models, strict=True):
        trainer.validate(model, datamodule=datamodule, verbose=False)
        trainer.test(model, datamodule=datamodule, verbose=False)
        dev_outputs.append(model.val_outputs)
        test_outputs.append(model.test_outputs)
        for stage, count in model.skipped.items():  # the same files for every system
            skipped[stage] = max(skipped.get(stage, 0), count)
        dev = model.val_outputs
        own = build_results(model.test_outputs, datamodule, {})
        systems.append(
            {
                "ckpt_path": path,
                "dev_eer": summarize_scores(dev["scores"], dev["labels"]).get("eer"),
                "test_eer": {r.name: r.metrics.get("eer") for r in own},
            }
        )
    return dev_outputs, test_outputs, systems, skipped


@names_config_sources
@finishes_wandb
def evaluate_fusion(cfg: DictConfig) -> dict[str, Any]:
    """Score every checkpoint of ``fusion.ckpt_paths`` on the data config's ``val`` selection
    (the dev set) and test sets, fit ``fusion.method`` on the dev scores, and evaluate the fused
    scores like a single model's: score files, metrics, report, plus ``fusion.json`` (the fitted
    parameters and every system's own EERs) in the run directory. Each system scores with its
    own stored preprocessing; they must share the sample rate (the data is read once)."""
    options = OmegaConf.to_container(cfg.fusion, resolve=True)
    paths = [str(p) for p in options.pop("ckpt_paths")]
    method = options.pop("method", "logistic")
    fusion = build_fusion(method, **(options if method == "logistic" else {}))
    requested = _requested_preprocessing(cfg)
    override = bool(cfg.get("override_preprocessing", False))
    models = []
    for path in paths:
        model = load_detector(path)
        what = f"checkpoint {path}"
        model.set_preprocessing(
            resolve_preprocessing(model.preprocessing, requested, override, what)
        )
        models.append(model)
    rates = {p: m.preprocessing.sample_rate for p, m in zip(paths, models, strict=True)}
    if len(set(rates.values())) > 1:
        raise ConfigError(f"fused systems must share a sample rate; they take {rates}")
    claim_output_dir(cfg.paths.output_dir)
    datamodule = _eval_datamodule(cfg, models[0].preprocessing)
    if not datamodule.val_specs:
        raise ConfigError("fusion is fitted on the dev set: set data.val=corpus:split")
    loggers = _loggers(cfg)
    # scores the systems; only the fused system's metrics are logged
    scorer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    with _interruptible(scorer):
        dev_outputs, test_outputs, systems, skipped = _score_systems(
            models, paths, datamodule, scorer
        )

    _, dev_scores, dev_labels = align_scores(dev_outputs)
    fusion.fit(dev_scores, dev_labels)
    fused_outputs = {}
    for name in test_outputs[0]:
        index, scores, labels = align_scores([outputs[name] for outputs in test_outputs])
        flags = np.bitwise_or.reduce([outputs[name]["flags"] for outputs in test_outputs])
        fused_outputs[name] = {
            "index": index,
            "scores": fusion(scores),
            "labels": labels,
            "flags": flags,
        }
    info = {**provenance(cfg), "fusion": method, "checkpoints": paths}
    results = build_results(fused_outputs, datamodule, info)
    metrics: dict[str, Any] = logged_metrics(results)
    if scorer.is_global_zero:
        out_dir = Path(cfg.paths.output_dir)
        dev_eer = summarize_scores(fusion(dev_scores), dev_labels).get("eer")
        payload = {"fusion": fusion.state_dict(), "dev_eer": dev_eer, "systems": systems}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fusion.json").write_text(json.dumps(payload, indent=2))
    _log_results(loggers, metrics, 0)
    headline = None
    if "test/eer" in metrics:
        headline = f"test EER: {100 * metrics['test/eer']:.2f}%  ({method} fusion of {len(paths)})"
    return _finish(cfg, datamodule, loggers, metrics, results, skipped, info, headline)
