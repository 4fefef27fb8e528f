"""Score-level fusion of several systems, fitted on a development set's scores.

``logistic``: linear logistic regression fusion (Brümmer's FoCal recipe): weights and bias
minimise the prior-weighted cross-entropy of the dev trials, so the fused score is a calibrated
log-likelihood ratio. ``mean``: the mean of the systems' scores, each z-scored with its dev mean
and standard deviation. Both take ``[N, K]`` score matrices (N trials, K systems) and labels
(1 bona fide, 0 spoof) and are pure numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def _matrix(scores: ArrayLike) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"expected a finite [trials, systems] score matrix, got shape {x.shape}")
    return x


def _classes(labels: ArrayLike, n: int) -> np.ndarray:
    bona = np.asarray(labels) == 1
    if bona.shape != (n,):
        raise ValueError(f"{bona.size} labels for {n} trials")
    if bona.all() or not bona.any():
        raise ValueError("fusion is fitted on trials of both classes; the dev set has one")
    return bona


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class LogisticFusion:
    """``llr = scores @ weights + bias``, fitted by minimising

        P / N_bona * sum_bona softplus(-(llr + logit P))
        + (1 - P) / N_spoof * sum_spoof softplus(llr + logit P)  +  l2 / 2 * |w|²

    (P = ``prior`` of bona fide) with Newton's method. The small L2 penalty (on the weights of
    z-scored scores, not on the bias) keeps the weights finite when the dev scores separate the
    classes perfectly.
    """

    method = "logistic"

    def __init__(self, prior: float = 0.5, l2: float = 1e-4) -> None:
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        self.prior = prior
        self.l2 = l2
        self.weights: np.ndarray | None = None
        self.bias = 0.0

    def fit(self, scores: ArrayLike, labels: ArrayLike, max_iter: int = 100) -> LogisticFusion:
        x = _matrix(scores)
        bona = _classes(labels, len(x))
        # z-score for conditioning; the weights are mapped back to raw scores at the end
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
        sign = np.where(bona, 1.0, -1.0)
        cost = np.where(bona, self.prior / bona.sum(), (1 - self.prior) / (~bona).sum())
        offset = math.log(self.prior / (1 - self.prior))
        penalty = np.full(z.shape[1], self.l2)
        penalty[-1] = 0.0

        def objective(theta: np.ndarray) -> float:
            margin = sign * (z @ theta + offset)
            return float(cost @ _softplus(-margin) + 0.5 * penalty @ theta**2)

        theta = np.zeros(z.shape[1])
        value = objective(theta)
        for _ in range(max_iter):
            margin = sign * (z @ theta + offset)
            p_wrong = _sigmoid(-margin)
            grad = z.T @ (cost * -sign * p_wrong) + penalty * theta
            hessian = (z * (cost * p_wrong * (1 - p_wrong))[:, None]).T @ z + np.diag(penalty)
            hessian += 1e-12 * np.eye(len(theta))
            step = np.linalg.solve(hessian, grad)
            rate = 1.0
            while rate > 1e-8:  # backtracking: Newton steps can overshoot far from the optimum
                candidate = theta - rate * step
                new_value = objective(candidate)
                if new_value <= value:
                    break
                rate /= 2
            else:
                break
            converged = value - new_value < 1e-12
            theta, value = candidate, new_value
            if converged:
                break
        self.weights = theta[:-1] / std
        self.bias = float(theta[-1] - self.weights @ mean)
        return self

    def __call__(self, scores: ArrayLike) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("fit the fusion on dev scores first")
        return _matrix(scores) @ self.weights + self.bias

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "prior": self.prior,
            "l2": self.l2,
            "weights": None if self.weights is None else self.weights.tolist(),
            "bias": self.bias,
        }


class MeanFusion:
    """The mean of the systems' scores after z-scoring each with its dev mean and std."""

    method = "mean"

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, scores: ArrayLike, labels: ArrayLike | None = None) -> MeanFusion:
        x = _matrix(scores)
        self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        self.std[self.std == 0] = 1.0
        return self

    def __call__(self, scores: ArrayLike) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("fit the fusion on dev scores first")
        return ((_matrix(scores) - self.mean) / self.std).mean(axis=1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }


FUSION_METHODS = {"logistic": LogisticFusion, "mean": MeanFusion}


def build_fusion(method: str, **options: Any) -> LogisticFusion | MeanFusion:
    """A fusion by name: ``logistic`` (options ``prior``, ``l2``) or ``mean``."""
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion.method must be one of {sorted(FUSION_METHODS)}, got {method!r}")
    return FUSION_METHODS[method](**options)


def align_scores(outputs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack several systems' gathered outputs (``index``, ``scores``, ``labels`` per system,
    as a ``ScoreCollector`` gives them) into ``[N, K]`` by dataset index. Returns the index,
    the score matrix and the labels; the systems must have scored the same trials."""
    index = outputs[0]["index"]
    for k, out in enumerate(outputs[1:], start=1):
        if not np.array_equal(out["index"], index):
            raise ValueError(f"system {k} scored other trials than system 0 (skipped audio?)")
    return index, np.stack([out["scores"] for out in outputs], axis=1), outputs[0]["labels"]
