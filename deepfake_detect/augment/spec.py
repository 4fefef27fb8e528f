"""SpecAugment (Park et al., 2019): time and frequency masking of a model's features, in
training only, on the batch (it runs inside the net, on the model's device).

- Spectrogram front ends (LCNN): the masks zero spans of frames and of feature dimensions of
  the front end's output (:meth:`SpecAugment.__call__`).
- Wav2Vec2 models with a trained encoder use the encoder's own time and feature masking
  (``mask_time_prob`` / ``mask_time_length`` / ``mask_feature_prob``, which replaces masked
  frames by a learned embedding, as in pre-training); with a frozen encoder
  (``freeze=all``, run in eval mode) the masks apply to the hidden states the head reads.

Draws come from torch's global generator (seeded by the run seed; its state is in every
checkpoint, so a resumed run masks as the uninterrupted one).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepfake_detect.augment.base import AugmentConfigError, check_probability


def mask_spans(x: Tensor, dim: int, starts: Tensor, widths: Tensor, value: float = 0.0) -> Tensor:
    """A copy of ``x`` [B, T, F] with ``x[b]`` set to ``value`` on ``[starts[b, k],
    starts[b, k] + widths[b, k])`` along ``dim`` (1: time, 2: features), for every mask k."""
    size = x.shape[dim]
    positions = torch.arange(size, device=x.device)
    inside = (positions[None, None, :] >= starts[..., None]) & (
        positions[None, None, :] < (starts + widths)[..., None]
    )
    hit = inside.any(dim=1)  # [B, size]
    shape = [x.shape[0], 1, 1]
    shape[dim] = size
    return x.masked_fill(hit.view(shape), value)


class SpecAugment:
    """``time_masks`` spans of up to ``time_width`` frames (at most ``max_time_fraction`` of an
    item's valid frames) and ``freq_masks`` spans of up to ``freq_width`` feature dims, each
    batch item masked with probability ``p``. ``mask_time_prob`` / ``mask_time_length`` /
    ``mask_feature_prob``: the Wav2Vec2 encoder's own masking, used instead when it trains."""

    name = "specaugment"

    def __init__(
        self,
        p: float = 1.0,
        time_masks: int = 2,
        time_width: int = 20,
        max_time_fraction: float = 0.2,
        freq_masks: int = 2,
        freq_width: int = 8,
        mask_time_prob: float = 0.05,
        mask_time_length: int = 10,
        mask_feature_prob: float = 0.0,
    ) -> None:
        self.p = check_probability("p", p)
        for key, value in (
            ("time_masks", time_masks),
            ("time_width", time_width),
            ("freq_masks", freq_masks),
            ("freq_width", freq_width),
            ("mask_time_length", mask_time_length),
        ):
            if int(value) < 0:
                raise AugmentConfigError(key, f"must be >= 0, got {value!r}")
        self.time_masks, self.time_width = int(time_masks), int(time_width)
        self.freq_masks, self.freq_width = int(freq_masks), int(freq_width)
        self.max_time_fraction = check_probability("max_time_fraction", max_time_fraction)
        self.mask_time_prob = check_probability("mask_time_prob", mask_time_prob)
        self.mask_time_length = max(1, int(mask_time_length))
        self.mask_feature_prob = check_probability("mask_feature_prob", mask_feature_prob)

    @staticmethod
    def _draw(count: int, cap: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``count`` spans per item: widths uniform in [0, cap], starts so that each span lies
        within the item's ``valid`` length."""
        batch = cap.shape[0]
        widths = (torch.rand(batch, count, device=cap.device) * (cap[:, None] + 1)).floor().long()
        widths = torch.minimum(widths, valid[:, None])
        room = valid[:, None] - widths
        starts = (torch.rand(batch, count, device=cap.device) * (room + 1)).floor().long()
        return starts, widths

    def __call__(self, features: Tensor, frames: Tensor | None = None) -> Tensor:
        """``features`` [B, T, F] (valid frames ``frames`` [B]; None: all T) -> masked copy."""
        batch, steps, dims = features.shape
        device = features.device
        valid = torch.full((batch,), steps, device=device, dtype=torch.long)
        if frames is not None:
            valid = frames.to(device).long().clamp(0, steps)
        chosen = (torch.rand(batch, device=device) < self.p).long()
        out = features
        if self.time_masks and self.time_width:
            cap = (valid.float() * self.max_time_fraction).floor().long().clamp(max=self.time_width)
            starts, widths = self._draw(self.time_masks, cap, valid)
            out = mask_spans(out, 1, starts, widths * chosen[:, None])
        if self.freq_masks and self.freq_width:
            full = torch.full((batch,), dims, device=device, dtype=torch.long)
            cap = full.clamp(max=self.freq_width)
            starts, widths = self._draw(self.freq_masks, cap, full)
            out = mask_spans(out, 2, starts, widths * chosen[:, None])
        return out

    def __repr__(self) -> str:
        return (
            f"SpecAugment(p={self.p:g}, time={self.time_masks}x{self.time_width}, "
            f"freq={self.freq_masks}x{self.freq_width})"
        )
