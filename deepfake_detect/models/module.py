"""SpoofDetector: the one LightningModule. Any net with ``embed(waveform, lengths) -> [B, D]``
and ``classify(embedding) -> [B, 2]`` plugs in; training, scoring, metrics and score files live
here."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from deepfake_detect.evaluation.scorefile import write_score_file
from deepfake_detect.evaluation.summary import summarize_scores, summarize_test_set
from deepfake_detect.losses import DistillationLoss, WeightedCrossEntropy, bonafide_score
from deepfake_detect.metrics.collector import ScoreCollector

log = logging.getLogger(__name__)

__all__ = ["HEADLINE_METRICS", "SpoofDetector", "bonafide_score", "logged_test_metrics"]

HEADLINE_METRICS = ("eer", "acc", "min_tdcf")


def _plain(config: Any) -> Any:
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config


def _embedding_dim(net: nn.Module, sample_rate: int = 16000) -> int:
    dim = getattr(net, "embedding_dim", None)
    if dim is not None:
        return int(dim)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        dim = net.embed(torch.zeros(1, sample_rate), torch.tensor([sample_rate])).shape[-1]
    net.train(was_training)
    return int(dim)


def _fill_embedding_dim(config: Any, net: nn.Module) -> Any:
    """Loss configs may leave ``embedding_dim: null``: it is the net's."""
    if isinstance(config, dict):
        filled = {key: _fill_embedding_dim(value, net) for key, value in config.items()}
        if "_target_" in filled and "embedding_dim" in filled and filled["embedding_dim"] is None:
            filled["embedding_dim"] = _embedding_dim(net)
        return filled
    return config


def _classifier_parameters(net: nn.Module, embedding_dim: int) -> list[nn.Parameter]:
    """The parameters that ``net.classify`` uses (found by differentiating it once)."""
    params = [p for p in net.parameters() if p.requires_grad]
    out = net.classify(torch.ones(2, embedding_dim)).sum()
    grads = torch.autograd.grad(out, params, allow_unused=True)
    return [p for p, g in zip(params, grads, strict=True) if g is not None]


def logged_test_metrics(name: str, metrics: Mapping[str, float], first: bool) -> dict[str, float]:
    """How one test set's metrics are logged: ``test/<set>/<metric>`` (trial counts left out),
    and for the first test set the headline ``test/eer``, ``test/acc``, ``test/min_tdcf``."""
    out = {f"test/{name}/{k}": v for k, v in metrics.items() if not k.startswith("n_")}
    if first:
        out.update({f"test/{k}": v for k, v in metrics.items() if k in HEADLINE_METRICS})
    return out


class SpoofDetector(L.LightningModule):
    """Binary spoof detector.

    ``net``, ``optimizer`` and ``scheduler`` are Hydra configs (the optimizer and scheduler are
    ``_partial_``); they are instantiated here so the checkpoint's hyper-parameters rebuild the
    model. ``freeze`` is passed to ``net.set_freeze`` (Wav2Vec2: ``all``, ``feature_encoder``,
    ``none``). ``class_weights``: ``auto`` takes the data module's inverse-frequency weights
    (``data.balance=loss``), a list fixes them (spoof, bona fide), None disables weighting.
    ``loss`` is a Hydra config of a ``deepfake_detect.losses`` objective (None: weighted
    cross-entropy); the score is the loss's. ``distill`` (``teacher_ckpt``, ``temperature``,
    ``alpha``) trains against a frozen teacher's scores; the teacher is loaded when fitting
    starts and is never part of this module's checkpoint.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        for key in ("net", "optimizer", "scheduler", "class_weights", "loss", "distill"):
            # plain containers, so checkpoints load with torch.load(weights_only=True)
            self.hparams[key] = _plain(self.hparams[key])
        self.net = instantiate(net, _convert_="all")
        if hasattr(self.net, "rebuild_config"):
            self.hparams["net"] = self.net.rebuild_config(_plain(net))
        if freeze != "none" or hasattr(self.net, "set_freeze"):
            if not hasattr(self.net, "set_freeze"):
                raise ValueError(f"{type(self.net).__name__} has no encoder to freeze ({freeze=})")
            self.net.set_freeze(freeze)
        self.loss = self._build_loss(self.hparams.loss)
        if distill:
            options = {k: v for k, v in self.hparams.distill.items() if k != "teacher_ckpt"}
            self.distill_loss: DistillationLoss | None = DistillationLoss(**options)
        else:
            self.distill_loss = None
        # a plain list, so the teacher is neither saved with this module nor moved or trained by it
        self._teacher: list[SpoofDetector] = []
        weights = class_weights if isinstance(class_weights, (list, tuple)) else [1.0, 1.0]
        self.register_buffer("class_weights", torch.tensor(list(weights), dtype=torch.float))
        self.val_scores = ScoreCollector()
        self.test_scores = nn.ModuleList()
        self.score_dir: Path | None = None
        """Where test score files go (set by the pipeline; None: not written)."""
        self.skipped: dict[str, int] = {}
        self._epoch_samples, self._epoch_start, self._last_batch_end = 0, 0.0, 0.0

    def _build_loss(self, config: dict[str, Any] | None) -> nn.Module:
        if not config:
            return WeightedCrossEntropy()
        config = _fill_embedding_dim(config, self.net)
        self.hparams["loss"] = config
        loss = instantiate(config, _convert_="all")
        if not getattr(loss, "uses_logits", True):
            # its head takes no part: frozen, so DDP does not wait for gradients that never come
            embedding_dim = _embedding_dim(self.net)
            for param in _classifier_parameters(self.net, embedding_dim):
                param.requires_grad_(False)
        return loss

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(waveform, lengths)

    def _outputs(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        embedding = self.net.embed(waveform, lengths)
        logits = self.net.classify(embedding) if getattr(self.loss, "uses_logits", True) else None
        return embedding, logits

    def _score(self, embedding: Tensor, logits: Tensor | None) -> Tensor:
        scorer = getattr(self.loss, "score", None)
        if scorer is None:
            return bonafide_score(logits)
        return scorer(embedding, logits).float()

    def score(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Bona fide scores ``[B]``: higher = more bona fide, 0 = the decision boundary
        (the logits' difference, or the loss's own score, e.g. OC-softmax's)."""
        return self._score(*self._outputs(waveform, lengths))

    def loss_and_score(
        self, waveform: Tensor, lengths: Tensor | None, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The loss on the true labels (the teacher takes no part) and the bona fide scores."""
        embedding, logits = self._outputs(waveform, lengths)
        loss = self.loss(embedding, logits, labels, self.class_weights)
        return loss, self._score(embedding, logits)

    @property
    def teacher(self) -> SpoofDetector | None:
        """The frozen distillation teacher while fitting (None otherwise)."""
        return self._teacher[0] if self._teacher else None

    # -- set-up -----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.distill_loss is None:
            return
        path = self.hparams.distill.get("teacher_ckpt")
        if not path or path == "???":
            raise ValueError("distillation needs a teacher: set model.distill.teacher_ckpt")
        from deepfake_detect.pipeline import load_detector

        teacher = load_detector(path).eval().requires_grad_(False).to(self.device)
        self._teacher = [teacher]
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
            names = list(getattr(datamodule, "test_sets", {}))
            self.test_names = names
            self.test_scores = nn.ModuleList(ScoreCollector() for _ in names).to(self.device)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer_factory = instantiate(self.hparams.optimizer)
        if hasattr(self.net, "param_groups"):
            # nets with their own learning-rate layout (e.g. layer-wise decay) provide the groups
            params = self.net.param_groups(optimizer_factory.keywords.get("lr", 1e-3))
            loss_params = [p for p in self.loss.parameters() if p.requires_grad]
            if loss_params:
                params = [*params, {"params": loss_params}]
        else:
            params = [p for p in self.parameters() if p.requires_grad]
        optimizer = optimizer_factory(params=params)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        total = self.trainer.estimated_stepping_batches
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- steps ------------------------------------------------------------------------------------
    def _count_skipped(self, stage: str, batch: dict[str, Any]) -> None:
        if batch["skipped"]:
            self.skipped[stage] = self.skipped.get(stage, 0) + len(batch["skipped"])
            for index, error in batch["skipped"]:
                log.warning("%s: skipped item %d: %s", stage, index, error)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        self._count_skipped("train", batch)
        if batch["label"].numel() == 0:
            return None
        labels = batch["label"]
        loss, score = self.loss_and_score(batch["wave"], batch["lengths"], labels)
        if self.distill_loss is not None and self.teacher is not None:
            with torch.no_grad():
                teacher_score = self.teacher.score(batch["wave"], batch["lengths"])
            hard = loss
            loss = self.distill_loss(score, teacher_score, hard)
            self.log("train/hard_loss", hard, on_step=False, on_epoch=True, batch_size=len(labels))
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

    def _score_batch(
        self, batch: dict[str, Any], collector: ScoreCollector, stage: str, prefix: str
    ) -> None:
        self._count_skipped(stage, batch)
        if batch["label"].numel() == 0:
            return
        # no teacher here: a distilled student validates and tests alone
        loss, score = self.loss_and_score(batch["wave"], batch["lengths"], batch["label"])
        collector.update(batch["index"], score, batch["label"])
        self.log(
            f"{prefix}/loss",
            loss,
            on_epoch=True,
            batch_size=batch["label"].numel(),
            sync_dist=True,
            add_dataloader_idx=False,
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._score_batch(batch, self.val_scores, "val", "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.test_names[dataloader_idx]
        self._score_batch(batch, self.test_scores[dataloader_idx], "test", f"test/{name}")

    # -- epoch ends -------------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        collected = self.val_scores.compute()
        self.val_scores.reset()
        self.val_outputs = collected
        """The last validation's gathered ``index``, ``scores``, ``labels`` (for fusion)."""
        if self.trainer.sanity_checking or collected["scores"].size == 0:
            return
        metrics = summarize_scores(collected["scores"], collected["labels"])
        for key in ("eer", "acc"):
            if key in metrics:
                self.log(f"val/{key}", metrics[key], prog_bar=key == "eer", sync_dist=False)

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        self.test_results: dict[str, dict[str, float]] = {}
        self.test_outputs: dict[str, dict[str, Any]] = {}
        """Per test set: gathered ``scores``, ``labels``, manifest ``rows``, ``asv`` scores."""
        for i, (name, collector) in enumerate(zip(self.test_names, self.test_scores, strict=True)):
            collected = collector.compute()
            collector.reset()
            rows = [datamodule.test_sets[name][j] for j in collected["index"]]
            asv = datamodule.asv_scores(name) if hasattr(datamodule, "asv_scores") else None
            metrics = summarize_test_set(collected["scores"], collected["labels"], rows, asv)
            self.test_results[name] = metrics
            self.test_outputs[name] = {**collected, "rows": rows, "asv": asv}
            for key, value in logged_test_metrics(name, metrics, first=i == 0).items():
                self.log(key, value, sync_dist=False, add_dataloader_idx=False)
            if self.score_dir is not None and self.trainer.is_global_zero:
                write_score_file(self.score_dir / f"{name}.tsv", rows, collected["scores"])
