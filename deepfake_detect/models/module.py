"""SpoofDetector: the one LightningModule. Any net with ``forward(waveform, lengths) -> [B, 2]``
plugs in; training, scoring, metrics and score files live here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from deepfake_detect.evaluation.scorefile import write_score_file
from deepfake_detect.evaluation.summary import summarize_scores, summarize_test_set
from deepfake_detect.metrics.collector import ScoreCollector

log = logging.getLogger(__name__)


def _plain(config: Any) -> Any:
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config


def bonafide_score(logits: Tensor) -> Tensor:
    """Log-odds of bona fide vs spoof: higher = more bona fide, 0 = the decision boundary."""
    return (logits[:, 1] - logits[:, 0]).float()


class SpoofDetector(L.LightningModule):
    """Binary spoof detector.

    ``net``, ``optimizer`` and ``scheduler`` are Hydra configs (the optimizer and scheduler are
    ``_partial_``); they are instantiated here so the checkpoint's hyper-parameters rebuild the
    model. ``freeze`` is passed to ``net.set_freeze`` (Wav2Vec2: ``all``, ``feature_encoder``,
    ``none``). ``class_weights``: ``auto`` takes the data module's inverse-frequency weights
    (``data.balance=loss``), a list fixes them (spoof, bona fide), None disables weighting.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        freeze: str = "none",
        class_weights: str | list[float] | None = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        for key in ("net", "optimizer", "scheduler", "class_weights"):
            # plain containers, so checkpoints load with torch.load(weights_only=True)
            self.hparams[key] = _plain(self.hparams[key])
        self.net = instantiate(net, _convert_="all")
        if hasattr(self.net, "rebuild_config"):
            self.hparams["net"] = self.net.rebuild_config(_plain(net))
        if freeze != "none" or hasattr(self.net, "set_freeze"):
            if not hasattr(self.net, "set_freeze"):
                raise ValueError(f"{type(self.net).__name__} has no encoder to freeze ({freeze=})")
            self.net.set_freeze(freeze)
        weights = class_weights if isinstance(class_weights, (list, tuple)) else [1.0, 1.0]
        self.register_buffer("class_weights", torch.tensor(list(weights), dtype=torch.float))
        self.val_scores = ScoreCollector()
        self.test_scores = nn.ModuleList()
        self.score_dir: Path | None = None
        """Where test score files go (set by the pipeline; None: not written)."""
        self.skipped: dict[str, int] = {}

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(waveform, lengths)

    # -- set-up -----------------------------------------------------------------------------------
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
        logits = self(batch["wave"], batch["lengths"])
        loss = F.cross_entropy(logits.float(), batch["label"], weight=self.class_weights)
        acc = (logits.argmax(dim=1) == batch["label"]).float().mean()
        size = batch["label"].numel()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def _score_batch(
        self, batch: dict[str, Any], collector: ScoreCollector, stage: str, prefix: str
    ) -> None:
        self._count_skipped(stage, batch)
        if batch["label"].numel() == 0:
            return
        logits = self(batch["wave"], batch["lengths"])
        collector.update(batch["index"], bonafide_score(logits), batch["label"])
        loss = F.cross_entropy(logits.float(), batch["label"], weight=self.class_weights)
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
            for key, value in metrics.items():
                if key.startswith("n_"):
                    continue
                self.log(f"test/{name}/{key}", value, sync_dist=False, add_dataloader_idx=False)
                if i == 0 and key in ("eer", "acc", "min_tdcf"):
                    self.log(f"test/{key}", value, sync_dist=False, add_dataloader_idx=False)
            if self.score_dir is not None and self.trainer.is_global_zero:
                write_score_file(self.score_dir / f"{name}.tsv", rows, collected["scores"])
