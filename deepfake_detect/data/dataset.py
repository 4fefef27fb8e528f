"""The one Dataset: manifest rows -> mono waveforms at the contract's rate, cropped or padded,
with their lengths (the data side of :mod:`deepfake_detect.data.preprocessing`; normalisation
happens in the scorer, on what the model sees)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from deepfake_detect.data.audio import AudioError, check_policy, load_mono
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.data.preprocessing import (
    DEFAULT_SAMPLE_RATE,
    WaveTransform,
    crop_or_pad,
    frames_needed,
    is_silent,
)
from deepfake_detect.data.vad import trim_silence

ItemKey = int | tuple[int, int]
"""What a sampler yields: a row index, or ``(row index, item seed)``; with a seed the item's
random crop (and train-only transforms) draw from ``numpy.random.default_rng(seed)``, so they do
not depend on the worker that loads the item or on the global RNG (exact resume)."""

READ_MARGIN = 64
"""Extra frames read after a seeked window when resampling (the resampled length can fall a
sample short of the window)."""


def item_rng(seed: int | None) -> np.random.Generator:
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())  # follows seed_everything
    return np.random.default_rng(seed)


class SpoofDataset(Dataset):
    """Reads manifest rows.

    Training (``random_crop``): a random ``max_len`` window is read by seeking when the row's
    frame count is known (the scan stores it), else cropped from the decoded file; the
    train-only ``transforms`` run on it, then the crop or pad rule. Evaluation: the whole file,
    or its first ``max_len`` samples (read by seeking too).

    ``transform_seed`` (evaluation under a test-time condition, see
    :mod:`deepfake_detect.evaluation.robustness`): an item requested by its plain row index
    draws its transforms from ``numpy.random.default_rng([transform_seed, index])``, so the same
    seed and row always give the same audio; without it such an item draws from torch's global
    RNG. Keys with an item seed (training) are unaffected.

    An unusable file raises (``bad_audio="fail"``) or is returned as an error item that
    :func:`collate_waveforms` drops and reports (``bad_audio="skip"``). Items carry a
    ``silent`` flag (digital silence, dither only, cancelling channels).

    ``trim_silence`` (the contract's, :mod:`deepfake_detect.data.vad`): not ``none``, the whole
    file is read and trimmed first, then cropped (training) or cut to its first ``max_len``
    samples (evaluation); the seeking read is for untrimmed audio only.
    """

    def __init__(
        self,
        rows: Sequence[Utterance],
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        max_len: int | None = None,
        random_crop: bool = False,
        pad: str = "none",
        bad_audio: str = "fail",
        transforms: Sequence[WaveTransform] = (),
        transform_seed: int | None = None,
        trim_silence: str = "none",
    ) -> None:
        self.rows = list(rows)
        self.sample_rate = sample_rate
        self.max_len = max_len
        self.random_crop = random_crop
        self.pad = pad
        self.bad_audio = check_policy(bad_audio)
        self.transforms = list(transforms)
        self.transform_seed = transform_seed
        self.trim_silence = trim_silence

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, row: Utterance, rng: np.random.Generator | None) -> torch.Tensor:
        known = row.num_frames is not None and row.sample_rate is not None
        if self.trim_silence != "none":
            wave = trim_silence(
                load_mono(row.path, self.sample_rate), self.sample_rate, self.trim_silence
            ).wave
            return wave if rng is not None or self.max_len is None else wave[: self.max_len]
        if self.max_len is None or not known:
            wave = load_mono(row.path, self.sample_rate)
            return wave if rng is not None or self.max_len is None else wave[: self.max_len]
        assert row.num_frames is not None and row.sample_rate is not None
        need = frames_needed(self.max_len, row.sample_rate, self.sample_rate)
        if row.sample_rate != self.sample_rate:
            need += READ_MARGIN
        if row.num_frames <= need:
            return load_mono(row.path, self.sample_rate, file_rate=row.sample_rate)
        start = int(rng.integers(0, row.num_frames - need + 1)) if rng is not None else 0
        return load_mono(row.path, self.sample_rate, start, need, file_rate=row.sample_rate)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, seed = (key, None) if isinstance(key, int) else (int(key[0]), int(key[1]))
        row = self.rows[index]
        rng = None
        if seed is None and self.transform_seed is not None and self.transforms:
            rng = np.random.default_rng([self.transform_seed, index])
        elif self.random_crop or self.transforms:
            rng = item_rng(seed)
        try:
            wave = self._read(row, rng if self.random_crop else None)
        except AudioError as exc:
            if self.bad_audio == "fail":
                raise AudioError(
                    f"{exc} (utterance {row.utt_id}; set data.bad_audio=skip to skip and count "
                    "such files instead of stopping)"
                ) from exc
            return {"index": index, "error": str(exc)}
        for transform in self.transforms:
            assert rng is not None
            wave = transform(wave, self.sample_rate, rng)
        wave = crop_or_pad(wave, self.max_len, rng if self.random_crop else None, self.pad)
        return {"wave": wave, "label": row.target, "index": index, "silent": is_silent(wave)}


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
        "silent": torch.tensor([bool(item.get("silent")) for item in good], dtype=torch.bool),
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
