"""Learning-rate schedules, built per step (Lightning ``interval: step``)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_linear_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up from 0 to the base rate, then linear decay to 0 at ``total_steps``
    (``warmup_steps`` wins over ``warmup_ratio`` when given)."""
    total_steps = max(1, int(total_steps))
    warmup = warmup_steps if warmup_steps is not None else int(round(warmup_ratio * total_steps))
    warmup = min(max(0, warmup), total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)
