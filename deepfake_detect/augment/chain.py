"""From the ``augment`` config to the objects that run: waveform augmentations for the training
Dataset and, at most one, a feature masking (SpecAugment) for the net.

The ``augment`` node maps a name to a ``_target_`` config, in order (``conf/augment/``; several
files compose: ``augment=[rawboost,codec]``)::

    augment:
      rawboost: {_target_: deepfake_detect.augment.RawBoost, algo: 5, p: 0.8}
      codec:    {_target_: deepfake_detect.augment.Codec, p: 0.3}

A null entry is skipped (``augment.codec=null`` removes one from a named chain). Entries are
built here rather than by Hydra so that a bad value names its key:
``augment.rawboost.algo: RawBoost algorithms are 1-8, got 9``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from deepfake_detect.augment.base import Augmentation, AugmentConfigError, OneOf
from deepfake_detect.augment.spec import SpecAugment
from deepfake_detect.errors import ConfigError


def _build(entry: Any, key: str) -> Any:
    if isinstance(entry, (Augmentation, SpecAugment)):
        return entry
    if isinstance(entry, DictConfig):
        try:
            entry = OmegaConf.to_container(entry, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            full = str(exc.full_key)
            where = full if full.startswith(f"{key}.") else f"{key}.{exc.key}"
            raise ConfigError(f"{where}: required, but not set (???): set {where}=...") from None
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        raise ConfigError(f"{key}: expected a config with a _target_, got {entry!r}")
    options = {k: v for k, v in entry.items() if k != "_target_"}
    try:
        cls = get_class(str(entry["_target_"]))
    except Exception as exc:  # Hydra raises ImportError / ValueError subclasses
        raise ConfigError(f"{key}._target_: cannot import {entry['_target_']!r} ({exc})") from None
    if cls is OneOf or (isinstance(cls, type) and issubclass(cls, OneOf)):
        inner = options.pop("transforms", None)
        if not inner:
            raise ConfigError(f"{key}.transforms: OneOf needs a list of transforms")
        if isinstance(inner, Mapping):
            inner = [_build(v, f"{key}.transforms.{k}") for k, v in inner.items() if v]
        else:
            inner = [_build(v, f"{key}.transforms[{i}]") for i, v in enumerate(inner)]
        options["transforms"] = inner
    try:
        return cls(**options)
    except AugmentConfigError as exc:
        raise ConfigError(f"{key}.{exc.key}: {exc.detail}") from None
    except TypeError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def build_augmentation(
    augment: Mapping[str, Any] | None, root: str = "augment"
) -> tuple[list[Augmentation], SpecAugment | None]:
    """The waveform augmentations (in order) and the feature masking of an ``augment`` node."""
    waves: list[Augmentation] = []
    masking: SpecAugment | None = None
    for name, entry in (augment or {}).items():
        if entry is None:
            continue
        built = _build(entry, f"{root}.{name}")
        if isinstance(built, SpecAugment):
            if masking is not None:
                raise ConfigError(f"{root}.{name}: only one SpecAugment entry per run")
            masking = built
        elif isinstance(built, Augmentation):
            waves.append(built)
        else:
            raise ConfigError(
                f"{root}.{name}: {type(built).__name__} is neither a waveform Augmentation nor "
                "SpecAugment"
            )
    return waves, masking


def describe_augmentation(waves: list[Augmentation], masking: SpecAugment | None) -> str:
    parts = [repr(w) for w in waves] + ([repr(masking)] if masking else [])
    return ", ".join(parts) if parts else "none"
