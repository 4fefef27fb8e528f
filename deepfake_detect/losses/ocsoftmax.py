"""One-class softmax (Zhang, Jiang & Yu, "One-class learning towards synthetic voice spoofing
detection", IEEE SPL 2021): bona fide embeddings are pulled within a cosine margin of one
learnable direction, spoofs pushed outside another; nothing is assumed about how spoofs cluster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepfake_detect.losses.base import SpoofLoss, weighted_mean


class OCSoftmax(SpoofLoss):
    """``softplus(alpha * (m_real - cos))`` for bona fide, ``softplus(alpha * (cos - m_fake))``
    for spoofs, where ``cos`` is the cosine between the embedding and the learnable ``center``.

    The defaults are the paper's (m_real 0.9, m_fake 0.2, alpha 20). The score is
    ``alpha * (cos - (m_real + m_fake) / 2)``: the paper's cosine score up to a monotone map
    (so EER is unchanged), shifted so that 0 is midway between the margins (the accuracy
    threshold) and scaled to the loss's logit scale.
    """

    uses_logits = False

    def __init__(
        self,
        embedding_dim: int,
        margin_real: float = 0.9,
        margin_fake: float = 0.2,
        alpha: float = 20.0,
    ) -> None:
        super().__init__()
        if not -1.0 <= margin_fake < margin_real <= 1.0:
            raise ValueError(
                f"need -1 <= margin_fake < margin_real <= 1, got {margin_fake=}, {margin_real=}"
            )
        self.margin_real = margin_real
        self.margin_fake = margin_fake
        self.alpha = alpha
        self.center = nn.Parameter(torch.randn(embedding_dim))

    def cosine(self, embedding: Tensor) -> Tensor:
        return F.normalize(embedding.float(), dim=1) @ F.normalize(self.center.float(), dim=0)

    def forward(
        self, embedding: Tensor, logits: Tensor | None, labels: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        cos = self.cosine(embedding)
        margin_violation = torch.where(labels == 1, self.margin_real - cos, cos - self.margin_fake)
        return weighted_mean(F.softplus(self.alpha * margin_violation), labels, weight)

    def score(self, embedding: Tensor, logits: Tensor | None) -> Tensor:
        midpoint = (self.margin_real + self.margin_fake) / 2
        return self.alpha * (self.cosine(embedding) - midpoint)
