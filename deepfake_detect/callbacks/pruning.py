"""Magnitude pruning of the net's Linear and Conv weights during training: Lightning's
``ModelPruning`` restricted to the layers that carry the compute, with a schedule that reaches a
stated sparsity and checkpoints that always hold plain (pruned, dense) weights.

Unstructured sparsity (``l1_unstructured``) zeroes single weights: the file compresses and the
model is smaller in a sparse format, but dense CPU kernels (PyTorch, onnxruntime) run as fast as
before (benchmarks/compression_eer.py measures it). ``ln_structured`` zeroes whole output
channels, which could be removed from the graph, but nothing here removes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelPruning
from torch import nn

from deepfake_detect.callbacks.qat import LAYER_TYPES, load_init_weights

log = logging.getLogger(__name__)

__all__ = ["LayerPruning", "step_amount", "weight_sparsity"]


def step_amount(target: float, steps: int) -> float:
    """The fraction of the remaining weights to prune at each of ``steps`` prunings so that
    ``target`` of them are pruned after the last (PyTorch prunes among the weights left)."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"callbacks.pruning.sparsity must be in [0, 1), got {target}")
    if steps < 1:
        raise ValueError(f"callbacks.pruning.prune_epochs must be >= 1, got {steps}")
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def weight_sparsity(net: nn.Module, layers: Sequence[str] = tuple(LAYER_TYPES)) -> float:
    """The fraction of zero weights over the given layer types' ``weight`` tensors."""
    types = tuple(LAYER_TYPES[name] for name in layers)
    zeros = total = 0
    for module in net.modules():
        if isinstance(module, types):
            weight = module.weight
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0


class _Schedule:
    """``amount(epoch)``: ``step`` for the first ``epochs`` epochs, then 0 (fine-tuning)."""

    def __init__(self, step: float, epochs: int) -> None:
        self.step, self.epochs = step, epochs

    def __call__(self, epoch: int) -> float:
        return self.step if epoch < self.epochs else 0.0


class LayerPruning(ModelPruning):
    """``ModelPruning`` on the net's layers of the types in ``layers`` (their ``weight``).

    ``sparsity``: the fraction of those weights zeroed once pruning is done; it is reached in
    ``prune_epochs`` equal steps at the ends of the first epochs, the later epochs fine-tune the
    pruned net. ``global_ranking``: one magnitude ranking across all the layers (True) or each
    layer pruned by ``sparsity`` on its own. ``init_from``: a trained checkpoint whose weights
    the run starts from. Other keyword arguments go to ``ModelPruning`` (``pruning_fn``:
    ``l1_unstructured`` | ``ln_structured`` with ``pruning_dim`` and ``pruning_norm``).
    Pruning is made permanent in every saved checkpoint and at the end of training.
    """

    def __init__(
        self,
        sparsity: float = 0.5,
        prune_epochs: int = 1,
        layers: Sequence[str] = ("Linear", "Conv1d", "Conv2d"),
        global_ranking: bool = True,
        init_from: str | Path | None = None,
        pruning_fn: str = "l1_unstructured",
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(layers) - set(LAYER_TYPES))
        if unknown:
            raise ValueError(
                f"callbacks.pruning.layers: unknown layer type(s) {unknown}; "
                f"known: {sorted(LAYER_TYPES)}"
            )
        structured = pruning_fn == "ln_structured"
        super().__init__(
            pruning_fn=pruning_fn,
            amount=_Schedule(step_amount(sparsity, prune_epochs), prune_epochs),
            # global ranking is for unstructured pruning only (Lightning's restriction)
            use_global_unstructured=global_ranking and not structured,
            make_pruning_permanent=True,
            # fine-tune the pruned net; never rewind the kept weights to their initial values
            use_lottery_ticket_hypothesis=False,
            **kwargs,
        )
        self.sparsity, self.prune_epochs = sparsity, prune_epochs
        self.layers = tuple(layers)
        self.init_from = init_from

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.init_from and trainer.ckpt_path is None:
            load_init_weights(pl_module, self.init_from)
        types = tuple(LAYER_TYPES[name] for name in self.layers)
        self._parameters_to_prune = [
            (module, "weight")
            for module in pl_module.scorer.net.modules()
            if isinstance(module, types)
        ]
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        log.info(
            "pruning: %.1f %% of the %s weights are zero",
            100 * weight_sparsity(pl_module.scorer.net, self.layers),
            "/".join(self.layers),
        )
