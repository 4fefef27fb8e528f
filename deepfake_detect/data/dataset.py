"""The one Dataset: manifest rows -> preprocessed waveforms, cropped or padded, with lengths."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from deepfake_detect.data.audio import AudioError, check_policy, load_waveform
from deepfake_detect.data.manifest import Utterance

PAD_MODES = ("repeat", "zero", "none")


def fit_length(
    wave: torch.Tensor, max_len: int | None, random_crop: bool, pad: str
) -> torch.Tensor:
    """Crop ``wave`` to ``max_len`` (random or leading window), then pad it up to ``max_len``
    by tiling (``repeat``), with zeros (``zero``), or not at all (``none``)."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    if max_len is None:
        return wave
    n = wave.shape[-1]
    if n > max_len:
        start = int(torch.randint(0, n - max_len + 1, (1,))) if random_crop else 0
        return wave[start : start + max_len]
    if n == max_len or pad == "none":
        return wave
    if pad == "repeat":
        return wave.repeat((max_len + n - 1) // n)[:max_len]
    return torch.nn.functional.pad(wave, (0, max_len - n))


class SpoofDataset(Dataset):
    """Reads manifest rows. An unusable file raises (``bad_audio="fail"``) or is returned as an
    error item that :func:`collate_waveforms` drops and reports (``bad_audio="skip"``)."""

    def __init__(
        self,
        rows: Sequence[Utterance],
        sample_rate: int = 16000,
        normalize: str = "zscore",
        max_len: int | None = None,
        random_crop: bool = False,
        pad: str = "none",
        bad_audio: str = "fail",
    ) -> None:
        self.rows = list(rows)
        self.sample_rate = sample_rate
        self.normalize = normalize
        self.max_len = max_len
        self.random_crop = random_crop
        self.pad = pad
        self.bad_audio = check_policy(bad_audio)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        try:
            wave = load_waveform(row.path, self.sample_rate, self.normalize)
        except AudioError as exc:
            if self.bad_audio == "fail":
                raise AudioError(
                    f"{exc} (utterance {row.utt_id}; set data.bad_audio=skip to skip and count "
                    "such files instead of stopping)"
                ) from exc
            return {"index": index, "error": str(exc)}
        wave = fit_length(wave, self.max_len, self.random_crop, self.pad)
        return {"wave": wave, "label": row.target, "index": index}


def collate_waveforms(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad to the longest item; keep each item's true length; set bad items aside."""
    good = [item for item in items if "error" not in item]
    skipped = [(item["index"], item["error"]) for item in items if "error" in item]
    lengths = torch.tensor([item["wave"].shape[-1] for item in good], dtype=torch.long)
    width = int(lengths.max()) if len(good) else 0
    wave = torch.zeros(len(good), width)
    for i, item in enumerate(good):
        wave[i, : lengths[i]] = item["wave"]
    return {
        "wave": wave,
        "lengths": lengths,
        "label": torch.tensor([item["label"] for item in good], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "skipped": skipped,
    }


class OrderedSampler(Sampler[int]):
    """Yields a fixed index order (longest first for evaluation, so batches hold similar lengths
    and little padding). Lightning wraps it for DDP, keeping the order within each process."""

    def __init__(self, order: Sequence[int]) -> None:
        self.order = list(order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def longest_first(rows: Sequence[Utterance]) -> list[int]:
    """Indices sorted by duration, longest first (unknown durations last, in manifest order)."""
    return sorted(range(len(rows)), key=lambda i: -(rows[i].duration or 0.0))
