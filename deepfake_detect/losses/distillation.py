"""Knowledge distillation (Hinton, Vinyals & Dean 2015) between two bona fide scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def distillation_kl(student_score: Tensor, teacher_score: Tensor, temperature: float) -> Tensor:
    """Mean KL(teacher || student) of the two-class distributions softened by ``temperature``,
    times T². With two classes ``softmax(logits / T)`` is ``sigmoid(score / T)`` for
    ``score = logit_bonafide - logit_spoof``, so this is Hinton's soft-target loss on logits;
    on scores it also covers nets that have no logits (OC-softmax)."""
    t = teacher_score.float() / temperature
    s = student_score.float() / temperature
    p_bona = torch.sigmoid(t)
    kl = p_bona * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_bona) * (
        F.logsigmoid(-t) - F.logsigmoid(-s)
    )
    return kl.mean() * temperature**2


class DistillationLoss(nn.Module):
    """``alpha * T² KL(teacher || student) + (1 - alpha) * hard``, ``hard`` being the student's
    own loss on the true labels."""

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"need temperature > 0 and 0 <= alpha <= 1, got {temperature=}, {alpha=}"
            )
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_score: Tensor, teacher_score: Tensor, hard: Tensor) -> Tensor:
        soft = distillation_kl(student_score, teacher_score, self.temperature)
        return self.alpha * soft + (1 - self.alpha) * hard
