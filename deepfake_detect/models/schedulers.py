"""Learning-rate schedules behind one config interface: a ``_partial_`` factory that
``SpoofDetector.configure_optimizers`` calls with ``optimizer`` and ``total_steps`` (the run's
optimizer steps). Every schedule is stepped per optimizer step (Lightning ``interval: step``);
the schedules themselves are torch's and transformers'."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, StepLR
from transformers import get_linear_schedule_with_warmup


def warmup_linear_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up from 0 to the base rate, then linear decay to 0 at ``total_steps``
    (transformers' ``get_linear_schedule_with_warmup``; ``warmup_steps`` wins over
    ``warmup_ratio`` when given)."""
    total_steps = max(1, int(total_steps))
    warmup = warmup_steps if warmup_steps is not None else int(round(warmup_ratio * total_steps))
    warmup = min(max(0, warmup), total_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def cosine_annealing(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LRScheduler:
    """Cosine decay from the base rate to ``eta_min`` over the run (torch's
    ``CosineAnnealingLR`` with ``T_max = total_steps``), AASIST's reference schedule."""
    return CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps)), eta_min=eta_min)


def step_decay(
    optimizer: Optimizer, total_steps: int, epochs: int, step_epochs: int = 10, gamma: float = 0.5
) -> LRScheduler:
    """The rate multiplied by ``gamma`` every ``step_epochs`` epochs (torch's ``StepLR``), the
    LFCC-LCNN baseline's schedule. Counted in optimizer steps: an epoch is ``total_steps /
    epochs`` of them (``epochs``: the run's ``trainer.max_epochs``)."""
    if epochs is None or epochs <= 0:
        raise ValueError(
            f"step_decay needs the run's epoch count (trainer.max_epochs), got {epochs}"
        )
    per_epoch = max(1, round(int(total_steps) / epochs))
    return StepLR(optimizer, step_size=per_epoch * step_epochs, gamma=gamma)
