"""Training objectives of ``SpoofDetector``, selected with ``model/loss=<name>``."""

from deepfake_detect.losses.base import SpoofLoss, bonafide_score
from deepfake_detect.losses.cross_entropy import WeightedCrossEntropy
from deepfake_detect.losses.distillation import DistillationLoss, distillation_kl
from deepfake_detect.losses.ocsoftmax import OCSoftmax
from deepfake_detect.losses.supcon import WithSupCon, supervised_contrastive_loss

__all__ = [
    "DistillationLoss",
    "OCSoftmax",
    "SpoofLoss",
    "WeightedCrossEntropy",
    "WithSupCon",
    "bonafide_score",
    "distillation_kl",
    "supervised_contrastive_loss",
]
