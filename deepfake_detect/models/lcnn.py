"""LCNN with Max-Feature-Map activations (the ASVspoof 2021 LFCC-LCNN baseline, Wang & Yamagishi).

Front end (computed inside ``embed``, on the model's device): pre-emphasis, a 20 ms Hamming
window every 10 ms (FFT 1024), then one of
- ``lfcc``: 20 linear triangular filters on 0-4 kHz, log10, DCT to 20 coefficients with the first
  replaced by log frame energy, plus deltas and delta-deltas (60 dims), as in the baseline;
- ``logmel``: log10 mel filterbank energies (``n_filters`` bands), plus deltas if ``deltas``;
- ``linear``: log10 power spectrum bins from 0 to ``f_max``, plus deltas if ``deltas``.
Built from torchaudio's parts (``Spectrogram``, ``linear_fbanks``, ``create_dct``) rather than
``torchaudio.transforms.LFCC``, which has neither the log-energy coefficient nor pre-emphasis,
and whose deltas (``compute_deltas``) would run across a padded batch's tail: the baseline's
definition and padding invariance need all three.

Network: nine convolutions with MFM (each halves the channels), four 2x2 max-pools, batch norm
without affine parameters, dropout 0.7, then two bidirectional LSTM layers with a skip
connection, averaged over frames. The reference outputs one sigmoid logit; here the head gives two
logits (index 0 spoof, 1 bona fide), 97 more parameters.

``width`` scales every convolution's channels (rounded to a multiple of 4, so MFM outputs stay
even) and ``lstm`` switches the BLSTM layers off, for small variants: ``width=0.55, lstm=False``
has 49,446 parameters (the full baseline: 269,826).

Padding: with ``lengths``, deltas replicate each item's own last frame, the padded tail is zeroed
before every convolution that spans time, the LSTMs run on packed sequences and the average is
over valid frames only, so in eval mode a padded item scores as it does alone.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepfake_detect.data.preprocessing import DEFAULT_SAMPLE_RATE
from deepfake_detect.models.interface import FeatureAugment, SpoofNet
from deepfake_detect.models.layers import apply_mask, masked_mean, pooled_lengths, sequence_mask

Frontend = Literal["lfcc", "logmel", "linear"]

# Conv output channels of the baseline (before MFM halves them), kernel sizes, and where the
# 2x2 max-pools and the affine-free batch norms sit: (channels, kernel, pool_after, bn_after).
_BASELINE_LAYERS: tuple[tuple[int, int, bool, bool], ...] = (
    (64, 5, True, False),
    (64, 1, False, True),
    (96, 3, True, True),
    (96, 1, False, True),
    (128, 3, True, False),
    (128, 1, False, True),
    (64, 3, False, True),
    (64, 1, False, True),
    (64, 3, True, False),
)


class MaxFeatureMap(nn.Module):
    """Split the channels in two halves and keep the element-wise maximum."""

    def forward(self, x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=1)
        return torch.maximum(first, second)


class SpectralFrontend(nn.Module):
    """Waveform [B, T] -> features [B, frames, dims], frames = T // hop_length + 1."""

    def __init__(
        self,
        kind: Frontend = "lfcc",
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        n_fft: int = 1024,
        win_length: int = 320,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float = 4000.0,
        n_filters: int = 20,
        n_coefficients: int = 20,
        deltas: bool = True,
        pre_emphasis: float = 0.97,
    ) -> None:
        super().__init__()
        if kind not in ("lfcc", "logmel", "linear"):
            raise ValueError(f"unknown frontend {kind!r}: choose lfcc, logmel or linear")
        if kind == "lfcc" and n_coefficients > n_filters:
            raise ValueError(f"{n_coefficients=} needs at least as many filters ({n_filters=})")
        self.kind = kind
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.deltas = deltas
        self.pre_emphasis = pre_emphasis
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            window_fn=torch.hamming_window,
            power=2.0,
            center=True,
            pad_mode="constant",
        )
        n_bins = n_fft // 2 + 1
        if kind == "lfcc":
            bank = torchaudio.functional.linear_fbanks(n_bins, f_min, f_max, n_filters, sample_rate)
            dct = torchaudio.functional.create_dct(n_coefficients, n_filters, norm="ortho")
            self.register_buffer("filterbank", bank, persistent=False)
            self.register_buffer("dct", dct, persistent=False)
            base_dims = n_coefficients
        elif kind == "logmel":
            self.mel = torchaudio.transforms.MelScale(
                n_mels=n_filters, sample_rate=sample_rate, f_min=f_min, f_max=f_max, n_stft=n_bins
            )
            base_dims = n_filters
        else:
            self.keep_bins = min(n_bins, int(f_max * n_fft / sample_rate) + 1)
            base_dims = self.keep_bins
        self.dims = base_dims * (3 if deltas else 1)

    def frame_lengths(self, lengths: Tensor | None) -> Tensor | None:
        if lengths is None:
            return None
        return torch.div(lengths, self.hop_length, rounding_mode="floor") + 1

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        eps = torch.finfo(torch.float32).eps
        x = waveform.float()
        if self.pre_emphasis:
            x = torch.cat([x[:, :1], x[:, 1:] - self.pre_emphasis * x[:, :-1]], dim=1)
        if lengths is not None:
            x = apply_mask(x, sequence_mask(lengths, x.shape[-1]))
        power = self.spectrogram(x).transpose(1, 2)  # [B, frames, bins]
        if self.kind == "lfcc":
            features = torch.log10(power @ self.filterbank + eps) @ self.dct
            energy = torch.log10(power.sum(dim=-1) / self.n_fft + eps)
            features = torch.cat([energy.unsqueeze(-1), features[..., 1:]], dim=-1)
        elif self.kind == "logmel":
            features = torch.log10(self.mel(power.transpose(1, 2)).transpose(1, 2) + eps)
        else:
            features = torch.log10(power[..., : self.keep_bins] + eps)
        if self.deltas:
            frames = self.frame_lengths(lengths)
            first = _delta(features, frames)
            features = torch.cat([features, first, _delta(first, frames)], dim=-1)
        return features


def _delta(x: Tensor, frames: Tensor | None) -> Tensor:
    """``x[t + 1] - x[t - 1]`` along frames, repeating the first and each item's last frame."""
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)
    last = torch.full((x.shape[0],), steps - 1, device=x.device) if frames is None else frames - 1
    following = torch.minimum(t[None, :] + 1, last[:, None])
    previous = (t - 1).clamp(min=0).expand(x.shape[0], -1)

    def pick(index: Tensor) -> Tensor:
        return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    return pick(following) - pick(previous)


class LCNN(SpoofNet):
    """LFCC-LCNN countermeasure (ASVspoof 2021 baseline) with a selectable front end."""

    def __init__(
        self,
        frontend: Frontend = "lfcc",
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        n_fft: int = 1024,
        win_length: int = 320,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float = 4000.0,
        n_filters: int = 20,
        n_coefficients: int = 20,
        deltas: bool = True,
        pre_emphasis: float = 0.97,
        width: float = 1.0,
        lstm: bool = True,
        dropout: float = 0.7,
    ) -> None:
        super().__init__()
        self.frontend = SpectralFrontend(
            frontend,
            sample_rate,
            n_fft,
            win_length,
            hop_length,
            f_min,
            f_max,
            n_filters,
            n_coefficients,
            deltas,
            pre_emphasis,
        )
        if self.frontend.dims < 16:
            raise ValueError(f"the front end gives {self.frontend.dims} dims; LCNN needs >= 16")
        layers: list[nn.Module] = []
        in_channels = 1
        for channels, kernel, pool_after, bn_after in _BASELINE_LAYERS:
            channels = max(4, 4 * round(channels * width / 4))
            conv = nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2)
            layers += [conv, MaxFeatureMap()]
            in_channels = channels // 2
            if pool_after:
                layers.append(nn.MaxPool2d(2, 2))
            if bn_after:
                layers.append(nn.BatchNorm2d(in_channels, affine=False))
        self.cnn = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.embedding_dim = (self.frontend.dims // 16) * in_channels
        self.lstm = (
            nn.LSTM(
                self.embedding_dim,
                self.embedding_dim // 2,
                num_layers=2,
                bidirectional=True,
                batch_first=True,
            )
            if lstm
            else None
        )
        self.out_layer = nn.Linear(self.embedding_dim, 2)
        self.feature_augment: FeatureAugment | None = None

    def set_feature_augment(self, augment: FeatureAugment | None) -> None:
        """SpecAugment on the front end's features [B, frames, dims], in training only."""
        self.feature_augment = augment

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        features = self.frontend(waveform, lengths)
        frames = self.frontend.frame_lengths(lengths)
        if self.training and self.feature_augment is not None:
            features = self.feature_augment(features, frames)
        x = features.unsqueeze(1)  # [B, 1, frames, dims]
        for layer in self.cnn:
            if isinstance(layer, nn.Conv2d) and layer.kernel_size[0] > 1 and frames is not None:
                x = apply_mask(x, sequence_mask(frames, x.shape[2])[:, None, :, None])
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                frames = pooled_lengths(frames, 2)
        x = self.dropout(x)
        hidden = x.permute(0, 2, 1, 3).flatten(2)  # [B, frames, channels * dims]
        mask = None if frames is None else sequence_mask(frames, hidden.shape[1]).unsqueeze(-1)
        if self.lstm is not None:
            if frames is None:
                recurrent, _ = self.lstm(hidden)
            else:
                packed = pack_padded_sequence(
                    hidden,
                    frames.clamp(max=hidden.shape[1]).cpu(),
                    batch_first=True,
                    enforce_sorted=False,
                )
                recurrent, _ = pad_packed_sequence(
                    self.lstm(packed)[0], batch_first=True, total_length=hidden.shape[1]
                )
            hidden = hidden + recurrent
        return masked_mean(hidden, mask, dim=1)

    def classify(self, embedding: Tensor) -> Tensor:
        return self.out_layer(embedding)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))
