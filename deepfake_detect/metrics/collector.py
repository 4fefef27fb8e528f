"""Collects per-utterance scores across batches and, under DDP, across processes."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class ScoreCollector(Metric):
    """Keeps (dataset index, score, label, flags) for every scored utterance.

    ``compute`` gathers the states of all processes (``cat``) first, so EER and friends are
    computed once on all scores, never averaged over processes. Duplicates that a distributed
    sampler adds to even out shards are removed by dataset index.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("flags", default=[], dist_reduce_fx="cat")

    def update(
        self,
        index: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        flags: torch.Tensor | None = None,
    ) -> None:
        self.index.append(index.detach().long())
        self.scores.append(scores.detach().float())
        self.labels.append(labels.detach().long())
        self.flags.append(torch.zeros_like(index) if flags is None else flags.detach().long())

    def compute(self) -> dict[str, np.ndarray]:
        if isinstance(self.index, list) and not self.index:
            empty = np.zeros(0)
            ints = empty.astype(int)
            return {"index": ints, "scores": empty, "labels": ints, "flags": ints}
        index = dim_zero_cat(self.index).cpu().numpy()
        scores = dim_zero_cat(self.scores).cpu().numpy().astype(np.float64)
        labels = dim_zero_cat(self.labels).cpu().numpy()
        flags = dim_zero_cat(self.flags).cpu().numpy()
        index, first = np.unique(index, return_index=True)
        return {
            "index": index,
            "scores": scores[first],
            "labels": labels[first],
            "flags": flags[first],
        }
