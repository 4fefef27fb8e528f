"""Training-time augmentation (the ``augment/`` config group) and the conditions of test-time
robustness evaluation. See README "Augmentation" for the chains and what each library does."""

from deepfake_detect.augment.base import (
    Augmentation,
    AugmentConfigError,
    AugmentContext,
    OneOf,
)
from deepfake_detect.augment.chain import build_augmentation, describe_augmentation
from deepfake_detect.augment.codec import Codec, Gain, Speed, Telephone
from deepfake_detect.augment.noise import Babble, ColoredNoise, FolderNoise
from deepfake_detect.augment.rawboost import RawBoost
from deepfake_detect.augment.reverb import Reverb
from deepfake_detect.augment.spec import SpecAugment

__all__ = [
    "Augmentation",
    "AugmentConfigError",
    "AugmentContext",
    "Babble",
    "Codec",
    "ColoredNoise",
    "FolderNoise",
    "Gain",
    "OneOf",
    "RawBoost",
    "Reverb",
    "SpecAugment",
    "Speed",
    "Telephone",
    "build_augmentation",
    "describe_augmentation",
]
