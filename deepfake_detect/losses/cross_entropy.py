"""Class-weighted cross-entropy on the two logits: the default objective."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from deepfake_detect.losses.base import SpoofLoss


class WeightedCrossEntropy(SpoofLoss):
    """``F.cross_entropy`` with the module's class weights (spoof, bona fide)."""

    def forward(
        self, embedding: Tensor, logits: Tensor | None, labels: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        if logits is None:
            raise ValueError("cross-entropy needs logits")
        return F.cross_entropy(logits.float(), labels, weight=weight)
