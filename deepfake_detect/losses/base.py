"""What every training objective of ``SpoofDetector`` provides: a loss and a bona fide score."""

from __future__ import annotations

from torch import Tensor, nn


def bonafide_score(logits: Tensor) -> Tensor:
    """Log-odds of bona fide vs spoof: higher = more bona fide, 0 = the decision boundary."""
    return (logits[:, 1] - logits[:, 0]).float()


class SpoofLoss(nn.Module):
    """A loss on a batch's pooled embeddings ``[B, D]`` and/or logits ``[B, 2]`` (0 spoof,
    1 bona fide), and the score it trains (higher = more bona fide, 0 = its decision boundary).

    ``uses_logits`` False: the net's classifier head takes no part (the module freezes it).
    ``embedding_dim`` None in a loss config is filled in with the net's embedding size.
    """

    uses_logits: bool = True

    def forward(
        self, embedding: Tensor, logits: Tensor | None, labels: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def score(self, embedding: Tensor, logits: Tensor | None) -> Tensor:
        if logits is None:
            raise ValueError(f"{type(self).__name__} scores from logits but got none")
        return bonafide_score(logits)


def weighted_mean(values: Tensor, labels: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of per-sample values, each weighted by its class weight (as ``cross_entropy`` does)."""
    if weight is None:
        return values.mean()
    w = weight.to(values.dtype)[labels]
    return (values * w).sum() / w.sum()
