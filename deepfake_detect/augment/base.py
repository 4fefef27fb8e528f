"""What every training-time augmentation is: a :data:`~deepfake_detect.data.preprocessing.
WaveTransform` applied with its own probability, checked when it is built.

An :class:`Augmentation` runs in the data-loader workers, on one mono waveform after resampling
and before the crop, with the item's own generator (``numpy.random.default_rng(item_seed)``,
derived from the run seed, the epoch and the row): the same item of the same epoch gets the same
augmentation whichever worker loads it, and a resumed run draws what the uninterrupted one drew.
Augmentations never run on validation or test batches (the data module hands them to the
training Dataset only).

Bad settings fail when the config is built, before any data is read: a probability outside
[0, 1] or a range whose minimum exceeds its maximum raises :class:`AugmentConfigError`, which
the chain builder (:func:`deepfake_detect.augment.chain.build_augmentation`) prefixes with the
config key (``augment.noise.snr_db: ...``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepfake_detect.errors import ConfigError

MIN_SAMPLES = 16
"""Shorter waveforms pass through unchanged: no transform here means anything on 1 ms of audio."""


class AugmentConfigError(ConfigError):
    """A bad augmentation setting; ``key`` names it (``p``, ``snr_db``, ``folder``...)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


def check_probability(key: str, value: Any) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise AugmentConfigError(key, f"a probability must be a number, got {value!r}") from None
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise AugmentConfigError(key, f"a probability must be within [0, 1], got {value!r}")
    return p


def check_range(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
) -> tuple[float, float]:
    """``[min, max]`` (or one number: a fixed value) -> ``(min, max)``, inside ``[low, high]``."""
    if isinstance(value, (int, float)):
        value = [value, value]
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AugmentConfigError(key, f"expected [min, max] or a number, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise AugmentConfigError(key, f"bounds must be finite, got {value!r}")
    if lo > hi:
        raise AugmentConfigError(key, f"min {lo:g} > max {hi:g}")
    if low is not None and lo < low:
        raise AugmentConfigError(key, f"min {lo:g} is below {low:g}")
    if high is not None and hi > high:
        raise AugmentConfigError(key, f"max {hi:g} is above {high:g}")
    return lo, hi


def check_choices(key: str, values: Any, allowed: Sequence[str]) -> list[str]:
    chosen = [values] if isinstance(values, str) else list(values or [])
    if not chosen:
        raise AugmentConfigError(key, f"choose at least one of {list(allowed)}")
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise AugmentConfigError(key, f"unknown {unknown}; choose from {list(allowed)}")
    return chosen


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo if lo == hi else float(rng.uniform(lo, hi))


@dataclass
class AugmentContext:
    """What an augmentation may bind to before training: the contract's sample rate and the
    training rows (babble draws its talkers from the bona fide ones)."""

    sample_rate: int
    train_rows: Sequence[Any] = field(default_factory=list)


class Augmentation(ABC):
    """A waveform transform applied with probability ``p`` (a subclass implements
    :meth:`apply` on a float32 numpy array and returns one of the same length unless it says
    otherwise). A result that is not finite is discarded (the input is returned), so no
    augmentation can put NaN or Inf into a batch."""

    name: str = "augmentation"

    def __init__(self, p: float = 1.0) -> None:
        self.p = check_probability("p", p)

    def __call__(self, wave: Tensor, sample_rate: int, rng: np.random.Generator) -> Tensor:
        if self.p < 1.0 and rng.random() >= self.p:
            return wave
        if wave.numel() < MIN_SAMPLES:
            return wave
        x = wave.detach().cpu().numpy().astype(np.float32, copy=False)
        out = np.asarray(self.apply(x, sample_rate, rng), dtype=np.float32)
        if out.ndim != 1 or not np.isfinite(out).all():
            return wave
        return torch.from_numpy(np.ascontiguousarray(out))

    @abstractmethod
    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """The transform itself, always applied (the probability is handled by the caller)."""

    def prepare(self, context: AugmentContext) -> None:  # noqa: B027 (optional hook)
        """Bind to the training data (once, in the main process, before training)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p:g})"


class OneOf(Augmentation):
    """Applies one of ``transforms`` (picked uniformly, or by ``weights``) with probability ``p``;
    each chosen transform still applies its own probability."""

    name = "one_of"

    def __init__(
        self,
        transforms: Sequence[Augmentation],
        weights: Sequence[float] | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.transforms = list(transforms)
        if not self.transforms:
            raise AugmentConfigError("transforms", "needs at least one transform")
        if weights is None:
            weights = [1.0] * len(self.transforms)
        if len(weights) != len(self.transforms) or min(weights) < 0 or sum(weights) <= 0:
            raise AugmentConfigError(
                "weights", f"one non-negative weight per transform, got {list(weights)}"
            )
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]

    def __call__(self, wave: Tensor, sample_rate: int, rng: np.random.Generator) -> Tensor:
        if self.p < 1.0 and rng.random() >= self.p:
            return wave
        choice = int(rng.choice(len(self.transforms), p=self.weights))
        return self.transforms[choice](wave, sample_rate, rng)

    def apply(self, x: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError  # __call__ delegates to the chosen transform

    def prepare(self, context: AugmentContext) -> None:
        for transform in self.transforms:
            transform.prepare(context)

    def __repr__(self) -> str:
        return f"OneOf({self.transforms}, p={self.p:g})"


def signal_power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``x`` to ``length`` samples."""
    if len(x) >= length:
        return x[:length]
    return np.concatenate([x, np.zeros(length - len(x), dtype=x.dtype)])
