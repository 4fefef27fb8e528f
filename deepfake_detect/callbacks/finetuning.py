"""Staged unfreezing of a pretrained encoder, after Lightning's ``BaseFinetuning`` pattern."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer

log = logging.getLogger(__name__)

UNFROZEN_MODES = ("none", "feature_encoder")


class StagedUnfreeze(BaseFinetuning):
    """Train the head on a frozen encoder for ``unfreeze_at_epoch`` epochs, then fine-tune it.

    Until then the net is in freeze mode ``all`` (the encoder a fixed feature extractor: no
    gradients, no autograd graph, eval mode), whatever ``model.freeze`` says. At the start of
    epoch ``unfreeze_at_epoch`` the net switches to ``mode`` (``none``: the whole encoder trains,
    ``feature_encoder``: all but its CNN) and the parameters that became trainable join the
    optimizer as new groups, laid out by the net's ``param_groups`` (so layer-wise decay applies)
    from ``lr_ratio`` times the head's rate. The new groups follow the learning-rate schedule
    from where it stands (the same factor as the head's from then on; schedulers that scale
    ``base_lrs``, such as ``LambdaLR`` and the project's warm-up/decay). Resuming from a
    checkpoint restores the unfrozen encoder and its groups.

    Not for multi-process training: DDP fixes the parameters it synchronises when it wraps the
    model, so parameters unfrozen later would drift apart across processes.
    """

    def __init__(
        self, unfreeze_at_epoch: int = 2, mode: str = "none", lr_ratio: float = 0.01
    ) -> None:
        super().__init__()
        if mode not in UNFROZEN_MODES:
            raise ValueError(f"mode must be one of {UNFROZEN_MODES}, got {mode!r}")
        if unfreeze_at_epoch < 0 or lr_ratio <= 0:
            raise ValueError("unfreeze_at_epoch must be >= 0 and lr_ratio > 0")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.mode = mode
        self.lr_ratio = lr_ratio
        self.unfrozen = False

    @staticmethod
    def _net(pl_module: L.LightningModule) -> Any:
        net = getattr(pl_module, "net", None)
        if not (hasattr(net, "set_freeze") and hasattr(net, "param_groups")):
            raise ValueError(
                "staged unfreezing needs a net with an encoder to freeze and its own parameter "
                f"groups (a Wav2Vec2 net), got {type(net).__name__}"
            )
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1:
            raise NotImplementedError(
                "staged unfreezing does not support multi-process training (DDP would not "
                "synchronise the encoder once unfrozen): train on one device, or fine-tune from "
                "the start with model.freeze=none"
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self._net(pl_module).set_freeze("all")

    def finetune_function(
        self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if epoch < self.unfreeze_at_epoch or self.unfrozen:
            return
        net = self._net(pl_module)
        net.set_freeze(self.mode)
        head = optimizer.param_groups[0]
        base_lr = head.get("initial_lr", head["lr"])
        factor = head["lr"] / base_lr if base_lr else 1.0
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        added = []
        for group in net.param_groups(base_lr * self.lr_ratio):
            params = [p for p in group["params"] if id(p) not in present]
            if params:
                lr = group["lr"]
                added.append({**group, "params": params, "initial_lr": lr, "lr": lr * factor})
                optimizer.add_param_group(added[-1])
        self._follow_schedule(pl_module.trainer, optimizer)
        self.unfrozen = True
        log.info(
            "epoch %d: encoder unfrozen (freeze=%s); new parameter groups: %s",
            epoch,
            self.mode,
            ", ".join(f"{g.get('name', '?')} lr {g['initial_lr']:.3g}" for g in added),
        )

    @staticmethod
    def _follow_schedule(trainer: L.Trainer, optimizer: Optimizer) -> None:
        """Extend the optimizer's schedulers to the groups they do not know yet."""
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if scheduler.optimizer is not optimizer:
                continue
            extra = optimizer.param_groups[len(scheduler.base_lrs) :]
            scheduler.base_lrs.extend(g.get("initial_lr", g["lr"]) for g in extra)
            lambdas = getattr(scheduler, "lr_lambdas", None)
            if lambdas is not None:
                lambdas.extend([lambdas[0]] * (len(optimizer.param_groups) - len(lambdas)))

    # -- resuming ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "unfrozen": self.unfrozen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.unfrozen = bool(state_dict.get("unfrozen", False))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed_unfrozen = self._restarting and self.unfrozen
        if resumed_unfrozen:
            self._net(pl_module).set_freeze(self.mode)
        super().on_fit_start(trainer, pl_module)  # restores the optimizer's parameter groups
        if resumed_unfrozen:
            for optimizer in trainer.optimizers:
                self._follow_schedule(trainer, optimizer)
