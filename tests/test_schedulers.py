"""Learning-rate schedules: the factories' curves and the model configs' reference schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR

from deepfake_detect.models.schedulers import cosine_annealing, step_decay, warmup_linear_decay


def rates(scheduler, steps: int) -> list[float]:
    """The learning rate used at each of ``steps`` optimizer steps."""
    optimizer = scheduler.optimizer
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_linear_decay() -> None:
    lr = rates(warmup_linear_decay(optimizer(), total_steps=10, warmup_ratio=0.2), 10)
    assert lr == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert rates(warmup_linear_decay(optimizer(), 4, warmup_steps=0), 4) == [1, 0.75, 0.5, 0.25]


def test_cosine_reaches_eta_min_at_the_last_step() -> None:
    lr = rates(cosine_annealing(optimizer(1e-4), total_steps=100, eta_min=5e-6), 101)
    assert lr[0] == pytest.approx(1e-4)
    assert lr[50] == pytest.approx((1e-4 + 5e-6) / 2)
    assert lr[100] == pytest.approx(5e-6)
    expected = [5e-6 + (1e-4 - 5e-6) * (1 + math.cos(math.pi * t / 100)) / 2 for t in range(101)]
    assert lr == pytest.approx(expected)


def test_step_decay_halves_every_n_epochs() -> None:
    # 20 epochs of 5 steps: halved after every 10 epochs (50 steps)
    lr = rates(step_decay(optimizer(3e-4), total_steps=100, epochs=20), 100)
    assert lr[:50] == [3e-4] * 50
    assert lr[50:] == pytest.approx([1.5e-4] * 50)
    with pytest.raises(ValueError, match="max_epochs"):
        step_decay(optimizer(), total_steps=100, epochs=-1)


def test_reference_schedules_of_aasist_and_lcnn(compose_cfg) -> None:
    aasist = compose_cfg("~experiment", "model=aasist").model
    assert aasist.optimizer.lr == 1e-4
    scheduler = instantiate(aasist.scheduler)(optimizer=optimizer(1e-4), total_steps=1000)
    assert isinstance(scheduler, CosineAnnealingLR)
    assert scheduler.T_max == 1000 and scheduler.eta_min == 5e-6

    lcnn = compose_cfg("~experiment", "model=lcnn", "trainer.max_epochs=100").model
    assert lcnn.optimizer.lr == 3e-4
    scheduler = instantiate(lcnn.scheduler)(optimizer=optimizer(3e-4), total_steps=2500)
    assert isinstance(scheduler, StepLR)
    assert scheduler.step_size == 250 and scheduler.gamma == 0.5  # 10 epochs of 25 steps
