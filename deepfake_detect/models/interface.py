"""The contract every architecture of the model zoo meets: :class:`SpoofNet`.

A net maps a zero-padded waveform batch ``[B, T]`` (normalised by the scorer; see
:mod:`deepfake_detect.data.preprocessing`) and the true lengths ``[B]`` to a pooled embedding
``[B, D]`` (:meth:`SpoofNet.embed`, padding masked: a padded utterance embeds as it does alone),
and an embedding to two logits ``[B, 2]`` ordered (spoof, bona fide) (:meth:`SpoofNet.classify`).
The optional capabilities have defaults here, so callers never probe with ``hasattr``:
freezing an encoder, a config that rebuilds the net offline, optimizer parameter groups.

The score a system reports is defined by its objective (``deepfake_detect.losses``), and the
:class:`~deepfake_detect.models.scorer.SpoofScorer` ties net, objective and preprocessing
together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

MAX_PROBE_LEN = 1 << 16

FeatureAugment = Callable[[Tensor, Tensor | None], Tensor]
"""Feature masking in training: ``(features [B, T, F], valid frames [B]) -> features``."""


class SpoofNet(ABC, nn.Module):
    """Base class of the zoo's architectures (see the module docstring for the contract).

    Subclasses set ``embedding_dim`` (D) in ``__init__`` and implement :meth:`embed` and
    :meth:`classify`.
    """

    embedding_dim: int

    @abstractmethod
    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``[B, T]`` waveforms (+ ``[B]`` lengths; None: all ``T``) -> ``[B, D]``."""

    @abstractmethod
    def classify(self, embedding: Tensor) -> Tensor:
        """``[B, D]`` -> ``[B, 2]`` logits (spoof, bona fide)."""

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))

    def set_freeze(self, mode: str) -> None:
        """Freeze part of the net (``all``, ``feature_encoder``) or nothing (``none``); nets
        without a pretrained encoder only accept ``none``."""
        if mode != "none":
            raise ValueError(f"{type(self).__name__} has no encoder to freeze (freeze={mode!r})")

    def set_feature_augment(self, augment: FeatureAugment | None) -> None:
        """Mask features in training (SpecAugment: ``augment(features [B, T, F], frames [B])``).
        Only nets with a spectrogram front end or an SSL encoder take it; None removes it."""
        if augment is not None:
            raise ValueError(
                f"{type(self).__name__} has neither a spectrogram front end nor an SSL encoder: "
                "SpecAugment does not apply to it (use waveform augmentations, e.g. "
                "augment=rawboost)"
            )

    def rebuild_config(self, net_config: dict[str, Any]) -> dict[str, Any]:
        """The net config stored in checkpoints: it must rebuild this architecture without
        downloading anything (the weights come from the checkpoint)."""
        return net_config

    def param_groups(self, base_lr: float) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups with their own learning rates; None: one group."""
        return None

    @property
    def min_input_len(self) -> int:
        """The fewest samples :meth:`embed` accepts (found once by bisection on silence)."""
        cached = getattr(self, "_min_input_len", None)
        if cached is None:
            cached = self._probe_min_len()
            self._min_input_len = cached
        return cached

    def _works(self, n: int) -> bool:
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        try:
            out = self.embed(torch.zeros(1, n, device=device), torch.tensor([n], device=device))
        except (RuntimeError, ValueError, IndexError):
            return False
        return bool(torch.isfinite(out).all())

    def _probe_min_len(self) -> int:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if not self._works(MAX_PROBE_LEN):
                    raise ValueError(f"{type(self).__name__} fails on {MAX_PROBE_LEN} samples")
                low, high = 0, MAX_PROBE_LEN  # low fails (or is 0), high works
                while high - low > 1:
                    mid = (low + high) // 2
                    low, high = (low, mid) if self._works(mid) else (mid, high)
        finally:
            self.train(was_training)
        return high
