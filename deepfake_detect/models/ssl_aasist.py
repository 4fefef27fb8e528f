"""SSL-AASIST (Tak et al., Odyssey 2022): a Wav2Vec2 front end with AASIST's graph back end.

Wav2Vec2 frames [B, F, H] (one layer, or the learned weighted sum of all) -> linear to 128 -> a
one-channel map [B, 1, 128, F] (the projected dimensions stand in for AASIST's sub-bands) ->
3x3 max-pool -> batch norm, SELU -> six 2-D residual blocks (no pooling in time) -> batch norm,
SELU -> self-attentive pooling: from a 1x1-convolution attention map, a softmax over time gives
one spectral node per row (128 // 3 = 42), a softmax over the rows one temporal node per frame
-> AASIST's graph back end (``GraphBackEnd``: graph attention, HS-GAL, readout) -> 2 logits.

The back-end sizes default to the reference's; the reference front end is XLS-R 300M (1024-dim
frames), fine-tuned with the back end (``conf/model/w2v2_aasist.yaml``).

Differences from the reference implementation:
- As in ``aasist.py``: the residual blocks use their batch norm + SELU pre-activation, and padded
  frames are masked throughout (zeroed before every time convolution, given no attention weight,
  excluded from graph attention, pooling and readout), so in eval mode a padded item scores as
  it does alone.
- Inputs of fewer than 3 frames are zero-padded to the 3x3 pooling window (the reference fails).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepfake_detect.models.aasist import GraphBackEnd, ResidualBlock2d, time_mask_4d
from deepfake_detect.models.layers import apply_mask, pooled_lengths, sequence_mask
from deepfake_detect.models.wav2vec2 import Wav2Vec2Net


class SSLGraphBackEnd(GraphBackEnd):
    """The SSL-AASIST back end on [B, F, ``input_dim``] frames (see the module docstring)."""

    def __init__(
        self,
        input_dim: int,
        projection_dim: int = 128,
        encoder_channels: Sequence[int] = (32, 32, 64, 64, 64, 64),
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0),
    ) -> None:
        super().__init__()
        if projection_dim < 3:
            raise ValueError("projection_dim must be >= 3 (the map is max-pooled by 3)")
        channels = [1, *encoder_channels]
        width = channels[-1]
        self.projection = nn.Linear(input_dim, projection_dim)
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.encoder = nn.ModuleList(
            ResidualBlock2d(c_in, c_out, first=i == 0, time_pool=1)
            for i, (c_in, c_out) in enumerate(pairwise(channels))
        )
        self.encoder_bn = nn.BatchNorm2d(width)
        self.attention = nn.Sequential(
            nn.Conv2d(width, 128, kernel_size=1),
            nn.SELU(),
            nn.BatchNorm2d(128),
            nn.Conv2d(128, width, kernel_size=1),
        )
        self._build_graph(width, projection_dim // 3, gat_dims, pool_ratios, temperatures)

    def embed(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """frames [B, F, input_dim], mask [B, F] (True = real frame) -> [B, 5 * hs_dim]."""
        x = self.projection(frames)
        lengths = None
        if mask is not None:
            x = x * mask.unsqueeze(-1)
            lengths = mask.sum(dim=1)
        if x.shape[1] < 3:
            x = F.pad(x, (0, 0, 0, 3 - x.shape[1]))
        x = F.max_pool2d(x.transpose(1, 2).unsqueeze(1), (3, 3))
        lengths = pooled_lengths(lengths, 3)
        time_mask = time_mask_4d(lengths, x.shape[-1])
        x = apply_mask(self.selu(self.first_bn(x)), time_mask)
        for block in self.encoder:
            x = apply_mask(block(x, time_mask), time_mask)
        x = apply_mask(self.selu(self.encoder_bn(x)), time_mask)

        scores = self.attention(x)
        over_time = scores
        if time_mask is not None:
            over_time = scores.masked_fill(~time_mask, torch.finfo(scores.dtype).min)
        spectral = (x * torch.softmax(over_time, dim=-1)).sum(dim=-1).transpose(1, 2)
        temporal = (x * torch.softmax(scores, dim=-2)).sum(dim=-2).transpose(1, 2)
        node_mask = None if lengths is None else sequence_mask(lengths, temporal.shape[1])
        return self._graph_embed(spectral, temporal, node_mask)


class Wav2Vec2AASIST(Wav2Vec2Net):
    """SSL-AASIST: Wav2Vec2 frames (``layer``: one hidden state or ``"weighted"``) -> the
    ``SSLGraphBackEnd`` -> (spoof, bona fide) logits. Freezing, ``llrd`` and gradient
    checkpointing work as for every ``Wav2Vec2Net``; the back end counts as the head."""

    def __init__(
        self,
        source: str = "facebook/wav2vec2-xls-r-300m",
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        layer: int | str = -1,
        projection_dim: int = 128,
        encoder_channels: Sequence[int] = (32, 32, 64, 64, 64, 64),
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0),
        gradient_checkpointing: bool = False,
        llrd: float = 1.0,
    ) -> None:
        super().__init__(source, pretrained, config, layer, gradient_checkpointing, llrd)
        self.backend = SSLGraphBackEnd(
            self.encoder.config.hidden_size,
            projection_dim,
            encoder_channels,
            gat_dims,
            pool_ratios,
            temperatures,
        )
        self.embedding_dim = self.backend.embedding_dim

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        frames, mask = self.features(waveform, lengths)
        return self.backend.embed(frames, mask)

    def embed_cached(self, states: Tensor, mask: Tensor) -> Tensor:
        return self.backend.embed(self.cached_frames(states, mask), mask)

    def classify(self, embedding: Tensor) -> Tensor:
        return self.backend.classify(embedding)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))
