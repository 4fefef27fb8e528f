"""Pieces shared by the baseline networks: the fixed sinc filterbank front end of RawNet2 and
AASIST, and the length bookkeeping that lets padded batches give the same answer per item as
unpadded ones (in eval mode; in training, batch-norm statistics still see the padding)."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepfake_detect.data.preprocessing import DEFAULT_SAMPLE_RATE


def sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B] valid counts -> [B, max_len] bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor | None, dim: int) -> Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` (broadcastable) is True."""
    if mask is None:
        return x.mean(dim=dim)
    weights = mask.to(x.dtype)
    total = (x * weights).sum(dim=dim)
    count = weights.sum(dim=dim).clamp(min=1.0)
    return total / count


def apply_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the padded positions (``mask`` broadcastable to ``x``); a no-op when unmasked."""
    return x if mask is None else x * mask


def pooled_lengths(lengths: Tensor | None, kernel: int) -> Tensor | None:
    """Valid frames after a non-overlapping max-pool of ``kernel`` (floor, like ``MaxPool``).

    Kept at least 1 so that an input shorter than the receptive field still yields a vector."""
    if lengths is None:
        return None
    return torch.div(lengths, kernel, rounding_mode="floor").clamp(min=1)


def mel_band_edges(n_filters: int, sample_rate: int) -> Tensor:
    """``n_filters + 1`` band edges in Hz, equally spaced on the mel scale from 0 to Nyquist."""
    top = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    mel = torch.linspace(0.0, top, n_filters + 1, dtype=torch.float64)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


class SincFilterbank(nn.Module):
    """Fixed (not learned) band-pass filterbank: Hamming-windowed ideal band-pass filters with
    mel-spaced edges, applied as one valid (unpadded) convolution.

    Both RawNet2 (ASVspoof 2021 baseline) and AASIST keep these filters fixed; the kernel size is
    made odd (as the references do) so every filter is symmetric.
    """

    def __init__(
        self, n_filters: int, kernel_size: int, sample_rate: int = DEFAULT_SAMPLE_RATE
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size
        half = (self.kernel_size - 1) / 2
        taps = torch.arange(-half, half + 1, dtype=torch.float64)
        edges = mel_band_edges(n_filters, sample_rate)
        window = torch.hamming_window(self.kernel_size, periodic=False, dtype=torch.float64)
        filters = []
        for low, high in pairwise(edges.tolist()):
            ideal = (2 * high / sample_rate) * torch.sinc(2 * high * taps / sample_rate) - (
                2 * low / sample_rate
            ) * torch.sinc(2 * low * taps / sample_rate)
            filters.append(ideal * window)
        bank = torch.stack(filters).to(torch.float32).unsqueeze(1)
        self.register_buffer("filters", bank, persistent=False)

    def output_lengths(self, lengths: Tensor | None) -> Tensor | None:
        if lengths is None:
            return None
        return (lengths - self.kernel_size + 1).clamp(min=1)

    def forward(self, waveform: Tensor) -> Tensor:
        """[B, T] -> [B, n_filters, T - kernel_size + 1]."""
        if waveform.shape[-1] < self.kernel_size:
            waveform = F.pad(waveform, (0, self.kernel_size - waveform.shape[-1]))
        return F.conv1d(waveform.unsqueeze(1), self.filters.to(waveform.dtype))
