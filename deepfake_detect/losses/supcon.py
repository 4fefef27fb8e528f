"""Supervised contrastive loss (Khosla et al., NeurIPS 2020) as an auxiliary term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepfake_detect.losses.base import SpoofLoss


def supervised_contrastive_loss(
    features: Tensor, labels: Tensor, temperature: float = 0.07
) -> Tensor:
    """The paper's L^sup_out on ``[B, D]`` features (L2-normalised here): for each anchor, the
    mean over its positives (same label, itself excluded) of ``-log softmax`` of the positive's
    similarity among all other samples. Anchors without a positive are left out; a batch with
    none gives 0 (still connected to the graph)."""
    z = F.normalize(features.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_positives = positives.sum(dim=1)
    anchors = n_positives > 0
    if not anchors.any():
        return features.sum() * 0.0
    summed = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(summed[anchors] / n_positives[anchors]).mean()


class WithSupCon(SpoofLoss):
    """``base`` (which also gives the score) plus ``weight`` times the supervised contrastive
    loss of the pooled embeddings."""

    def __init__(self, base: SpoofLoss, weight: float = 0.1, temperature: float = 0.07) -> None:
        super().__init__()
        self.base = base
        self.weight = weight
        self.temperature = temperature
        self.uses_logits = getattr(base, "uses_logits", True)

    def forward(
        self, embedding: Tensor, logits: Tensor | None, labels: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        contrastive = supervised_contrastive_loss(embedding, labels, self.temperature)
        return self.base(embedding, logits, labels, weight) + self.weight * contrastive

    def score(self, embedding: Tensor, logits: Tensor | None) -> Tensor:
        return self.base.score(embedding, logits)
