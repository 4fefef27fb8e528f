"""RawNet2 for spoofing countermeasures (Tak et al., ICASSP 2021; the ASVspoof 2021 baseline).

Raw waveform -> fixed mel-spaced sinc filterbank -> |.| + max-pool -> six pre-activation residual
blocks, each followed by filter-wise feature map scaling (FMS) -> GRU -> fully connected layers.
Defaults reproduce the baseline's ``model_config_RawNet.yaml``.

Differences from the reference implementation, both deliberate:
- The reference residual block computes its batch norm + LeakyReLU pre-activation and then
  discards it (``conv1`` reads the block input). Here the pre-activation is used, as the paper
  describes; the parameter count is unchanged.
- Padding: with ``lengths`` the padded tail is zeroed before every time convolution, FMS averages
  over valid frames only, and the GRU runs on packed sequences, so in eval mode a padded item
  scores exactly as it does alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from deepfake_detect.data.preprocessing import DEFAULT_SAMPLE_RATE
from deepfake_detect.models.interface import SpoofNet
from deepfake_detect.models.layers import (
    SincFilterbank,
    apply_mask,
    masked_mean,
    pooled_lengths,
    sequence_mask,
)


def _time_mask(lengths: Tensor | None, frames: int) -> Tensor | None:
    return None if lengths is None else sequence_mask(lengths, frames).unsqueeze(1)


class _ResidualBlock1d(nn.Module):
    """Pre-activation residual block (BN, LeakyReLU, conv3, BN, LeakyReLU, conv3) + max-pool 3,
    followed by FMS: ``x * s + s`` with ``s = sigmoid(fc(mean over time of x))``."""

    def __init__(self, in_channels: int, out_channels: int, first: bool) -> None:
        super().__init__()
        self.bn1 = None if first else nn.BatchNorm1d(in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        self.downsample = (
            nn.Conv1d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else None
        )
        self.act = nn.LeakyReLU(negative_slope=0.3)
        self.pool = nn.MaxPool1d(3)
        self.fms = nn.Linear(out_channels, out_channels)

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        mask = _time_mask(lengths, x.shape[-1])
        out = x if self.bn1 is None else apply_mask(self.act(self.bn1(x)), mask)
        out = self.conv1(out)
        out = apply_mask(self.act(self.bn2(out)), mask)
        out = self.conv2(out)
        identity = x if self.downsample is None else self.downsample(x)
        out = self.pool(out + identity)

        lengths = pooled_lengths(lengths, 3)
        mask = _time_mask(lengths, out.shape[-1])
        scale = torch.sigmoid(self.fms(masked_mean(out, mask, dim=-1))).unsqueeze(-1)
        return apply_mask(out * scale + scale, mask), lengths


class RawNet2(SpoofNet):
    """RawNet2 anti-spoofing network (ASVspoof 2021 LA/DF baseline).

    ``block_channels`` are the output channels of the six residual blocks (the first block's input
    is the sinc filterbank). ``embedding_dim`` is the width of the first fully connected layer,
    whose output is the utterance embedding; a second linear layer gives the two logits.
    """

    def __init__(
        self,
        sinc_filters: int = 20,
        sinc_kernel_size: int = 1024,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        block_channels: Sequence[int] = (20, 20, 128, 128, 128, 128),
        gru_hidden: int = 1024,
        gru_layers: int = 3,
        embedding_dim: int = 1024,
    ) -> None:
        super().__init__()
        self.sinc = SincFilterbank(sinc_filters, sinc_kernel_size, sample_rate)
        self.first_bn = nn.BatchNorm1d(sinc_filters)
        self.selu = nn.SELU()
        channels = [sinc_filters, *block_channels]
        self.blocks = nn.ModuleList(
            _ResidualBlock1d(c_in, c_out, first=i == 0)
            for i, (c_in, c_out) in enumerate(pairwise(channels))
        )
        self.bn_before_gru = nn.BatchNorm1d(channels[-1])
        self.gru = nn.GRU(channels[-1], gru_hidden, num_layers=gru_layers, batch_first=True)
        self.fc_embed = nn.Linear(gru_hidden, embedding_dim)
        self.fc_out = nn.Linear(embedding_dim, 2)
        self.embedding_dim = embedding_dim

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        if lengths is not None:
            waveform = apply_mask(waveform, sequence_mask(lengths, waveform.shape[-1]))
        x = torch.abs(self.sinc(waveform))
        lengths = self.sinc.output_lengths(lengths)
        x = nn.functional.max_pool1d(x, 3)
        lengths = pooled_lengths(lengths, 3)
        x = apply_mask(self.selu(self.first_bn(x)), _time_mask(lengths, x.shape[-1]))
        for block in self.blocks:
            x, lengths = block(x, lengths)
        x = self.selu(self.bn_before_gru(x)).transpose(1, 2)
        if lengths is None:
            _, hidden = self.gru(x)
        else:
            packed = pack_padded_sequence(
                x, lengths.clamp(max=x.shape[1]).cpu(), batch_first=True, enforce_sorted=False
            )
            _, hidden = self.gru(packed)
        return self.fc_embed(hidden[-1])

    def classify(self, embedding: Tensor) -> Tensor:
        return self.fc_out(embedding)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))
