"""SpoofDetector: the one LightningModule. It trains a
:class:`~deepfake_detect.models.scorer.SpoofScorer` (preprocessing + net + objective) and gathers
validation and test scores; the test result records are built outside it
(:mod:`deepfake_detect.evaluation.record`, by the pipeline)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from deepfake_detect.data.corpora.base import name_some
from deepfake_detect.data.preprocessing import Preprocessing
from deepfake_detect.evaluation.record import FLAG_SHORT, FLAG_SILENT, FLAG_WINDOWED
from deepfake_detect.evaluation.summary import summarize_scores
from deepfake_detect.losses import DistillationLoss, SpoofLoss
from deepfake_detect.metrics.collector import ScoreCollector
from deepfake_detect.models.checkpoint import CheckpointError, checkpoint_hparams, read_checkpoint
from deepfake_detect.models.interface import FeatureCacheSpec, SpoofNet
from deepfake_detect.models.scorer import SpoofScorer, build_net, build_objective, plain

log = logging.getLogger(__name__)

__all__ = ["SpoofDetector", "load_detector"]


def _classifier_parameters(net: SpoofNet) -> list[nn.Parameter]:
    """The parameters that ``net.classify`` uses (found by differentiating it once)."""
    params = [p for p in net.parameters() if p.requires_grad]
    out = net.classify(torch.ones(2, net.embedding_dim)).sum()
    grads = torch.autograd.grad(out, params, allow_unused=True)
    return [p for p, g in zip(params, grads, strict=True) if g is not None]


class NonFiniteError(RuntimeError):
    """A loss or score that is NaN or infinite, with the files that caused it."""


class SpoofDetector(L.LightningModule):
    """Binary spoof detector.

    ``net``, ``optimizer`` and ``scheduler`` are Hydra configs (the optimizer and scheduler are
    ``_partial_``); they are instantiated here so the checkpoint's hyper-parameters rebuild the
    model. ``freeze`` is passed to ``net.set_freeze`` (Wav2Vec2: ``all``, ``feature_encoder``,
    ``none``). ``class_weights``: ``auto`` takes the data module's inverse-frequency weights
    (``data.balance=loss``), a list fixes them (spoof, bona fide), None disables weighting.
    ``loss`` is a Hydra config of a ``deepfake_detect.losses`` objective (None: weighted
    cross-entropy); it defines the score. ``distill`` (``teacher_ckpt``, ``temperature``,
    ``alpha``) trains against a frozen teacher's scores; the teacher is loaded when fitting
    starts and is never part of this module's checkpoint. ``preprocessing`` is the input
    contract (:class:`~deepfake_detect.data.preprocessing.Preprocessing` fields); the pipeline
    sets it from the data config before fitting, and it is saved with the weights.
    ``batch_size`` is the model config's memory-safe training batch (4 s crops), which the data
    config's ``batch_size`` defaults to; the module itself does not use it.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        freeze: str = "none",
        class_weights: str | list[float] | None = "auto",
        loss: Mapping[str, Any] | None = None,
        distill: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        for key in ("net", "optimizer", "scheduler", "class_weights", "loss", "distill"):
            # plain containers, so checkpoints load with torch.load(weights_only=True)
            self.hparams[key] = plain(self.hparams[key])
        net_module, self.hparams["net"] = build_net(self.hparams.net)
        net_module.set_freeze(freeze)
        objective, self.hparams["loss"] = build_objective(self.hparams.loss, net_module)
        if not objective.uses_logits:
            # its head takes no part: frozen, so DDP does not wait for gradients that never come
            for param in _classifier_parameters(net_module):
                param.requires_grad_(False)
        self.scorer = SpoofScorer(net_module, objective, plain(preprocessing))
        self.hparams["preprocessing"] = self.scorer.preprocessing.to_dict()
        if distill:
            options = {k: v for k, v in self.hparams.distill.items() if k != "teacher_ckpt"}
            self.distill_loss: DistillationLoss | None = DistillationLoss(**options)
        else:
            self.distill_loss = None
        # a plain list, so the teacher is neither saved with this module nor moved or trained by it
        self._teacher: list[SpoofScorer] = []
        weights = class_weights if isinstance(class_weights, (list, tuple)) else [1.0, 1.0]
        self.register_buffer("class_weights", torch.tensor(list(weights), dtype=torch.float))
        self.val_scores = ScoreCollector()
        self.test_scores = nn.ModuleList()
        self.test_names: list[str] = []
        self.test_outputs: dict[str, dict[str, np.ndarray]] = {}
        """Per test set, after testing: gathered ``index``, ``scores``, ``labels``, ``flags``."""
        self.val_outputs: dict[str, np.ndarray] = {}
        """The last validation's gathered outputs (for fusion)."""
        self.skipped: dict[str, int] = {}
        self._epoch_samples, self._epoch_start, self._last_batch_end = 0, 0.0, 0.0

    # -- the scorer's parts -----------------------------------------------------------------------
    @property
    def net(self) -> SpoofNet:
        return self.scorer.net

    @property
    def loss(self) -> SpoofLoss:
        return self.scorer.objective

    @property
    def preprocessing(self) -> Preprocessing:
        return self.scorer.preprocessing

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Adopt the data's preprocessing contract (stored in the checkpoint)."""
        self.scorer.preprocessing = preprocessing
        self.hparams["preprocessing"] = preprocessing.to_dict()

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.scorer(waveform, lengths)

    def score(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Bona fide scores ``[B]`` (see :class:`SpoofScorer`)."""
        return self.scorer(waveform, lengths)

    def loss_and_score(
        self, waveform: Tensor, lengths: Tensor | None, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The loss on the true labels (the teacher takes no part) and the bona fide scores."""
        embedding, logits = self.scorer.outputs(waveform, lengths)
        loss = self.scorer.objective(embedding, logits, labels, self.class_weights)
        return loss, self.scorer.score_outputs(embedding, logits)

    # -- the frozen-encoder feature cache (deepfake_detect.data.feature_cache) ------------------
    def feature_cache_spec(self) -> FeatureCacheSpec | None:
        """The net's (None when it has no frozen encoder, or when distilling: the teacher
        scores the waveforms)."""
        if self.distill_loss is not None:
            return None
        return self.net.feature_cache_spec()

    def encode_for_cache(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """What the cache stores for a waveform batch: the scorer's preparation (tile short
        inputs, normalise each row over itself), then the net's encoder states, on this
        module's device (``[B, S, F, H]`` and the ``[B, F]`` frame mask)."""
        wave, lengths = self.scorer.prepare(waveform.to(self.device), lengths.to(self.device))
        return self.net.cache_states(wave, lengths)

    def cached_loss_and_score(
        self, states: Tensor, mask: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`loss_and_score` from cached encoder states (the head only)."""
        embedding = self.net.embed_cached(states, mask)
        logits = self.net.classify(embedding) if self.scorer.uses_logits else None
        loss = self.scorer.objective(embedding, logits, labels, self.class_weights)
        return loss, self.scorer.score_outputs(embedding, logits)

    @property
    def teacher(self) -> SpoofScorer | None:
        """The frozen distillation teacher while fitting (None otherwise)."""
        return self._teacher[0] if self._teacher else None

    # -- set-up -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.distill_loss is None:
            return
        path = self.hparams.distill.get("teacher_ckpt")
        if not path or path == "???":
            raise ValueError("distillation needs a teacher: set model.distill.teacher_ckpt")
        teacher = SpoofScorer.from_checkpoint(path)
        if teacher.preprocessing.sample_rate != self.preprocessing.sample_rate:
            raise CheckpointError(
                f"the teacher {path} takes {teacher.preprocessing.sample_rate} Hz audio, the "
                f"student {self.preprocessing.sample_rate} Hz (data.sample_rate): they must match"
            )
        self._teacher = [teacher.requires_grad_(False).to(self.device)]
        log.info(
            "distilling from %s (T=%s, alpha=%s)",
            path,
            self.distill_loss.temperature,
            self.distill_loss.alpha,
        )

    def on_fit_end(self) -> None:
        self._teacher = []

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.hparams.class_weights == "auto":
            weights = getattr(datamodule, "class_weights", None)
            if weights is not None:
                self.class_weights.copy_(torch.tensor(weights))
                log.info("class weights (spoof, bona fide): %s", [round(w, 3) for w in weights])
        if stage == "test":
            self.test_names = list(getattr(datamodule, "test_sets", {}))
            collectors = (ScoreCollector() for _ in self.test_names)
            self.test_scores = nn.ModuleList(collectors).to(self.device)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer_factory = instantiate(self.hparams.optimizer)
        params = self.net.param_groups(optimizer_factory.keywords.get("lr", 1e-3))
        if params is None:
            params = [p for p in self.parameters() if p.requires_grad]
        else:
            # nets with their own learning-rate layout (e.g. layer-wise decay) provide the groups
            loss_params = [p for p in self.loss.parameters() if p.requires_grad]
            if loss_params:
                params = [*params, {"params": loss_params}]
        optimizer = optimizer_factory(params=params)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- bad input --------------------------------------------------------------------------------
    def _count_skipped(self, stage: str, batch: dict[str, Any]) -> None:
        if batch["skipped"]:
            self.skipped[stage] = self.skipped.get(stage, 0) + len(batch["skipped"])
            for index, error in batch["skipped"]:
                log.warning("%s: skipped item %d: %s", stage, index, error)

    def _paths(self, stage: str, indices: Tensor, dataloader_idx: int = 0) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        rows = getattr(datamodule, "stage_rows", lambda *_: None)(stage, dataloader_idx)
        if rows is None:
            return [f"item {int(i)}" for i in indices]
        return [rows[int(i)].path for i in indices]

    def _policy(self) -> str:
        datamodule = getattr(self.trainer, "datamodule", None)
        return getattr(datamodule, "bad_audio", "fail")

    def _non_finite(
        self, stage: str, what: str, paths: list[str], skipped: str, count: int
    ) -> None:
        """Stop naming the files (``bad_audio=fail``), or skip and count (``skip``): the
        ``skipped`` count of ``metrics.json`` goes up by ``count`` (batches or files)."""
        message = f"{stage}: non-finite {what} from {name_some(paths)}"
        if self._policy() == "fail":
            raise NonFiniteError(
                f"{message}. Check these files (their samples, their scale with "
                "data.normalize=none), or set data.bad_audio=skip to skip and count them."
            )
        log.warning("%s: %s", message, skipped)
        key = f"{stage} non-finite {what} ({skipped})"
        self.skipped[key] = self.skipped.get(key, 0) + count

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self._count_skipped("train", batch)
        if batch["label"].numel() == 0:
            return None
        labels = batch["label"]
        if "states" in batch:  # the feature cache's frames (no teacher: the cache is off then)
            loss, score = self.cached_loss_and_score(batch["states"], batch["frame_mask"], labels)
        else:
            loss, score = self.loss_and_score(batch["wave"], batch["lengths"], labels)
        if "wave" in batch and self.distill_loss is not None and self.teacher is not None:
            with torch.no_grad():
                teacher_score = self.teacher(batch["wave"], batch["lengths"])
            hard = loss
            loss = self.distill_loss(score, teacher_score, hard)
            self.log("train/hard_loss", hard, on_step=False, on_epoch=True, batch_size=len(labels))
        if not torch.isfinite(loss):
            # name the items whose own score is not finite (all of them if every score is)
            culprits = ~torch.isfinite(score.detach())
            indices = batch["index"][culprits] if bool(culprits.any()) else batch["index"]
            self._non_finite("train", "loss", self._paths("train", indices), "batches skipped", 1)
            return None
        acc = ((score >= 0).long() == labels).float().mean()
        size = labels.numel()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        self._epoch_samples += size
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        self._epoch_samples = 0
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # training throughput of this process (data loading included, validation excluded)
        elapsed = self._last_batch_end - self._epoch_start
        if self._epoch_samples and elapsed > 0:
            self.log("train/samples_per_s", self._epoch_samples / elapsed, sync_dist=False)

    def _flags(self, batch: dict[str, Any]) -> Tensor:
        lengths = batch["lengths"]
        flags = batch["silent"].long() * FLAG_SILENT
        flags = flags + (lengths < self.scorer.min_len).long() * FLAG_SHORT
        return flags + self.scorer.is_long(lengths).long() * FLAG_WINDOWED

    def _score_batch(
        self,
        batch: dict[str, Any],
        collector: ScoreCollector,
        stage: str,
        prefix: str,
        dataloader_idx: int = 0,
    ) -> None:
        self._count_skipped(stage, batch)
        if batch["label"].numel() == 0:
            return
        lengths, labels = batch["lengths"], batch["label"]
        long = self.scorer.is_long(lengths)
        # no teacher here: a distilled student validates and tests alone
        if "states" in batch:
            # the feature cache (validation while fitting): whole utterances in one pass
            loss, score = self.cached_loss_and_score(batch["states"], batch["frame_mask"], labels)
        elif bool(long.any()):
            wave = batch["wave"]
            score = self.scorer(wave, lengths)  # long utterances scored in windows
            loss = None
            if not bool(long.all()):
                short = ~long
                width = int(lengths[short].max())
                loss = self.loss_and_score(wave[short, :width], lengths[short], labels[short])[0]
        else:
            loss, score = self.loss_and_score(batch["wave"], lengths, labels)
        keep = torch.isfinite(score)
        if not bool(keep.all()):
            paths = self._paths(stage, batch["index"][~keep], dataloader_idx)
            self._non_finite(stage, "scores", paths, "files skipped", len(paths))
        collector.update(batch["index"][keep], score[keep], labels[keep], self._flags(batch)[keep])
        if loss is not None and torch.isfinite(loss):
            self.log(
                f"{prefix}/loss",
                loss,
                on_epoch=True,
                batch_size=labels.numel(),
                sync_dist=True,
                add_dataloader_idx=False,
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._score_batch(batch, self.val_scores, "val", "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.test_names[dataloader_idx]
        self._score_batch(
            batch, self.test_scores[dataloader_idx], "test", f"test/{name}", dataloader_idx
        )

    # -- epoch ends -------------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        collected = self.val_scores.compute()
        self.val_scores.reset()
        self.val_outputs = collected
        if self.trainer.sanity_checking or collected["scores"].size == 0:
            return
        metrics = summarize_scores(collected["scores"], collected["labels"])
        for key in ("eer", "acc"):
            if key in metrics:
                self.log(f"val/{key}", metrics[key], prog_bar=key == "eer", sync_dist=False)

    def on_test_epoch_end(self) -> None:
        """Gather every test set's scores (all processes); the pipeline builds the records."""
        self.test_outputs = {}
        for name, collector in zip(self.test_names, self.test_scores, strict=True):
            self.test_outputs[name] = collector.compute()
            collector.reset()


def load_detector(ckpt_path: str | Path) -> SpoofDetector:
    """A trained detector from its checkpoint alone: the architecture from the hyper-parameters
    (nothing is downloaded), the weights from the state dict; never runs pickled code."""
    checkpoint = read_checkpoint(ckpt_path)
    model = SpoofDetector(**checkpoint_hparams(checkpoint, ckpt_path))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{ckpt_path}: its weights do not fit the model its hyper-parameters describe "
            f"({str(exc).splitlines()[0][:200]})"
        ) from None
    return model.eval()
