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

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

MAX_PROBE_LEN = 1 << 16


def module_digest(module: nn.Module) -> str:
    """SHA-256 (hex) of a module's state dict: every tensor's name, dtype, shape and bytes. Keys
    caches of what the module computes (a few seconds for a 300 M-parameter encoder)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        if data.numel():
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


FeatureAugment = Callable[[Tensor, Tensor | None], Tensor]
"""Feature masking in training: ``(features [B, T, F], valid frames [B]) -> features``."""


@dataclass(frozen=True)
class FeatureCacheSpec:
    """What a net with a fixed (frozen) encoder lets :mod:`deepfake_detect.data.feature_cache`
    store per utterance: ``num_states`` hidden states of ``hidden_size`` per frame.

    ``key`` holds everything the stored values depend on besides the input (the encoder's
    weight digest and architecture, the layer set); ``conv`` the encoder's (kernel, stride)
    layers, which map a sample count to a frame count; ``padding_invariant``: whether a padded
    utterance encodes as it does alone (else the cache encodes one utterance per pass)."""

    key: dict[str, Any]
    num_states: int
    hidden_size: int
    conv: tuple[tuple[int, int], ...] = field(default=())
    padding_invariant: bool = True

    def frames(self, num_samples: int) -> int:
        """Encoder frames of ``num_samples`` input samples."""
        n = num_samples
        for kernel, stride in self.conv:
            n = (n - kernel) // stride + 1
        return max(int(n), 0)


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

    # -- the frozen-encoder feature cache (deepfake_detect.data.feature_cache) -------------------
    def feature_cache_spec(self) -> FeatureCacheSpec | None:
        """What the feature cache may store for this net, or None: its input-side computation
        is not fixed (nothing frozen, or no separable encoder), so nothing can be cached."""
        return None

    def cache_states(
        self, waveform: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Prepared ``[B, T]`` waveforms -> the states the cache stores ``[B, S, F, H]`` and the
        ``[B, F]`` frame mask (only when :meth:`feature_cache_spec` is not None)."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable encoder")

    def embed_cached(self, states: Tensor, mask: Tensor) -> Tensor:
        """:meth:`embed` from cached states ``[B, S, F, H]`` and their ``[B, F]`` frame mask."""
        raise NotImplementedError(f"{type(self).__name__} has no cacheable encoder")

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
