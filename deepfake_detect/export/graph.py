"""The graph an exported file holds: the model side of the preprocessing contract for one batch
of prepared windows.

``wave [B, T]`` float32 and ``lengths [B]`` int64 -> per-row normalisation with padding masked ->
the net -> the objective's score ``[B]`` (higher = more bona fide, 0 = the boundary). Tiling of
short inputs and windowing of long ones stay in the host runtime
(:class:`deepfake_detect.export.runtime.ExportedScorer`), so an exported model and its
checkpoint score the same windows.

A net whose length cannot be dynamic in the exported graph (packed RNNs, data-dependent shapes)
is exported at a fixed window length: its rows are then always full (``lengths == T``), the net
runs without a padding mask, and the host tiles shorter windows up to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfake_detect.data.preprocessing import normalize_batch
from deepfake_detect.models.scorer import SpoofScorer

INPUT_NAMES = ("wave", "lengths")
OUTPUT_NAMES = ("score",)


class ScoreGraph(nn.Module):
    """Normalise -> net -> score, for a batch of windows already tiled by the host."""

    def __init__(self, scorer: SpoofScorer, fixed: bool = False) -> None:
        super().__init__()
        self.scorer = scorer
        self.fixed = fixed

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        scorer = self.scorer
        x = normalize_batch(wave, lengths, scorer.preprocessing.normalize)
        embedding = scorer.net.embed(x, None if self.fixed else lengths)
        logits = scorer.net.classify(embedding) if scorer.uses_logits else None
        return scorer.score_outputs(embedding, logits)


def has_rnn(module: nn.Module) -> bool:
    """Packed recurrent layers (RawNet2's GRU, LCNN's BLSTM) do not export with dynamic
    lengths through ``torch.export``."""
    return any(isinstance(m, nn.RNNBase) for m in module.modules())


def probe_inputs(window: int, min_len: int, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Padded batches of other sizes and lengths than the example: a dynamic export must score
    them as the eager graph does."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for batch, width in ((3, window + window // 3 + 7), (1, max(min_len, window // 2 + 1))):
        wave = 0.1 * torch.randn(batch, width, generator=g)
        lengths = torch.tensor(
            [width - i * (width - min_len) // max(batch, 2) for i in range(batch)]
        )
        for row, n in enumerate(lengths.tolist()):
            wave[row, n:] = 0
        out.append((wave, lengths))
    return out


def example_inputs(window: int, fixed: bool, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(2, window, generator=g)
    lengths = torch.tensor([window, window if fixed else window - window // 4])
    wave[1, int(lengths[1]) :] = 0
    return wave, lengths
