"""Calibrated decisions: what a score means, the map from score to probability, the decision
threshold and the reject band, as :data:`~deepfake_detect.inference.semantics.SCORE_SEMANTICS`
states them for users (``deepfake-detect detect --help`` prints it).

A :class:`Calibration` is fitted on a development set's scores (:func:`fit_calibration`): a
logistic map ``llr = scale * score + offset`` (prior-weighted logistic regression, the
:class:`~deepfake_detect.fusion.LogisticFusion` of one system) and a threshold on the score,
chosen by a rule (``eer``, ``target_far``, ``bayes``, ``fixed``). It is stored in the checkpoint
under :data:`CALIBRATION_KEY` as plain values (the checkpoint still loads with
``weights_only=True``): by the training callback
(:class:`~deepfake_detect.callbacks.calibration.StoreCalibration`) in every checkpoint, from that
epoch's dev scores, and by ``deepfake-detect calibrate`` for an existing checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from deepfake_detect.fusion import LogisticFusion
from deepfake_detect.metrics.dcf import compute_cllr
from deepfake_detect.metrics.eer import compute_det_curve_tie_aware, compute_eer_tie_aware
from deepfake_detect.models.checkpoint import read_checkpoint

CALIBRATION_KEY = "calibration"
"""Where a checkpoint holds its calibration (a plain dict, see :meth:`Calibration.to_dict`)."""
DEFAULT_REJECT_BAND = 0.1
METHODS = ("eer", "target_far", "bayes", "fixed")
BONAFIDE, SPOOF, UNCERTAIN = "bonafide", "spoof", "uncertain"


class CalibrationError(ValueError):
    """Scores or settings a calibration cannot be fitted from or applied with."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def check_reject_band(band: float) -> float:
    if not 0.0 <= band < 0.5:
        raise CalibrationError(f"the reject band is a probability in [0, 0.5), got {band}")
    return float(band)


@dataclass(frozen=True)
class Calibration:
    """``llr = scale * score + offset``; decisions at ``threshold`` (a score) with a reject band
    (see :mod:`.semantics`). ``method`` / ``target``: the rule that chose the threshold
    (``uncalibrated``: no dev scores, threshold 0); ``dev``: what the dev set gave (trial
    counts, EER, rates at the threshold, Cllr); ``source``: what the dev scores came from."""

    scale: float = 1.0
    offset: float = 0.0
    threshold: float = 0.0
    method: str = "uncalibrated"
    target: float | None = None
    reject_band: float = DEFAULT_REJECT_BAND
    fit_prior: float = 0.5
    dev: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def calibrated(self) -> bool:
        return self.method != "uncalibrated"

    @property
    def threshold_llr(self) -> float:
        return self.scale * self.threshold + self.offset

    @property
    def operating_prior(self) -> float:
        """The bona fide prior at which ``threshold`` is the Bayes decision."""
        return float(_sigmoid(np.array(-self.threshold_llr)))

    def llr(self, scores: ArrayLike) -> np.ndarray:
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset

    def p_spoof(self, scores: ArrayLike) -> np.ndarray:
        """Probability of spoof, 0.5 at the threshold (see :mod:`.semantics`)."""
        s = np.asarray(scores, dtype=np.float64)
        return _sigmoid(-self.scale * (s - self.threshold))

    def decide(self, p_spoof: ArrayLike, reject_band: float | None = None) -> list[str]:
        band = self.reject_band if reject_band is None else check_reject_band(reject_band)
        p = np.atleast_1d(np.asarray(p_spoof, dtype=np.float64))
        return [UNCERTAIN if abs(x - 0.5) < band else SPOOF if x > 0.5 else BONAFIDE for x in p]

    def describe(self) -> str:
        """One line: the threshold and where it came from."""
        if not self.calibrated:
            return "uncalibrated: threshold score 0 (p_spoof 0.5); run `deepfake-detect calibrate`"
        rule = {
            "eer": "the dev EER point",
            "target_far": f"a dev false-acceptance rate of {self.target}",
            "bayes": f"the Bayes threshold for a bona fide prior of {self.target}",
            "fixed": "a fixed score",
        }[self.method]
        where = f" of {self.source}" if self.source else ""
        return (
            f"calibrated on {self.dev.get('n_bonafide', '?')} bona fide / "
            f"{self.dev.get('n_spoof', '?')} spoof dev trials{where}: threshold score "
            f"{self.threshold:.4g} ({rule}; LLR {self.threshold_llr:.3g}, operating bona fide "
            f"prior {self.operating_prior:.3g}), reject band {self.reject_band}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


UNCALIBRATED = Calibration()


def _split(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise CalibrationError(f"{s.size} scores for {y.size} labels")
    if not np.isfinite(s).all():
        raise CalibrationError("the dev scores contain NaN or infinite values")
    bona = y == 1
    if bona.all() or not bona.any():
        n = int(bona.sum())
        raise CalibrationError(
            f"calibration needs dev trials of both classes: {n} bona fide, {s.size - n} spoof"
        )
    return s, s[bona], s[~bona]


def target_far_threshold(spoof_scores: np.ndarray, far: float, bona: np.ndarray) -> float:
    """The lowest score threshold (accept when score >= it) whose dev FAR is at most ``far``."""
    _, rates, thresholds = compute_det_curve_tie_aware(bona, spoof_scores)
    i = int(np.argmax(rates <= far))  # rates never increase; the last point (inf) has far 0
    if np.isinf(thresholds[i]):
        return float(np.nextafter(float(np.max(spoof_scores)), np.inf))
    return float(thresholds[i])


def fit_calibration(
    scores: ArrayLike,
    labels: ArrayLike,
    method: str = "eer",
    value: float | None = None,
    reject_band: float = DEFAULT_REJECT_BAND,
    fit_prior: float = 0.5,
    source: str = "",
) -> Calibration:
    """Fit the score -> LLR map on dev ``scores`` (labels: 1 bona fide, 0 spoof) and choose the
    threshold: ``eer`` (the dev EER point), ``target_far`` (``value``: the highest dev rate of
    spoofs accepted as bona fide), ``bayes`` (``value``: the bona fide prior; accept when
    ``llr >= -logit(value)``) or ``fixed`` (``value``: a score)."""
    if method not in METHODS:
        raise CalibrationError(f"threshold rule must be one of {METHODS}, got {method!r}")
    check_reject_band(reject_band)
    s, bona, spoof = _split(scores, labels)
    fusion = LogisticFusion(prior=fit_prior).fit(s[:, None], (np.asarray(labels) == 1).ravel())
    assert fusion.weights is not None
    scale, offset = float(fusion.weights[0]), float(fusion.bias)
    eer, eer_threshold = compute_eer_tie_aware(bona, spoof)
    if scale <= 0:
        raise CalibrationError(
            f"the dev scores rank bona fide below spoof (dev EER {100 * eer:.1f}%): the model "
            "cannot be calibrated on them (wrong dev set, or an untrained model?)"
        )
    if method == "eer":
        threshold = eer_threshold
    elif value is None:
        raise CalibrationError(f"threshold rule {method!r} needs a value")
    elif method == "target_far":
        if not 0.0 <= value < 1.0:
            raise CalibrationError(f"the target FAR is a rate in [0, 1), got {value}")
        threshold = target_far_threshold(spoof, value, bona)
    elif method == "bayes":
        if not 0.0 < value < 1.0:
            raise CalibrationError(f"the bona fide prior must be in (0, 1), got {value}")
        threshold = (-_logit(value) - offset) / scale
    else:
        threshold = float(value)
    calibration = Calibration(
        scale=scale,
        offset=offset,
        threshold=float(threshold),
        method=method,
        target=None if method == "eer" else float(value),  # type: ignore[arg-type]
        reject_band=float(reject_band),
        fit_prior=float(fit_prior),
        source=source,
    )
    llr_bona, llr_spoof = calibration.llr(bona), calibration.llr(spoof)
    dev = {
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
        "eer": float(eer),
        "eer_threshold": float(eer_threshold),
        "far": float(np.mean(spoof >= threshold)),
        "frr": float(np.mean(bona < threshold)),
        "cllr": float(compute_cllr(llr_bona, llr_spoof)),
    }
    return replace(calibration, dev=dev)


# -- in the checkpoint --------------------------------------------------------------------------
def stored_calibration(checkpoint: dict[str, Any]) -> Calibration | None:
    """The calibration a checkpoint's dictionary holds, or None."""
    values = checkpoint.get(CALIBRATION_KEY)
    return Calibration.from_dict(values) if isinstance(values, dict) else None


def save_checkpoint_atomically(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a
    crash never leaves a half-written checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_calibration(
    checkpoint_path: str | Path, calibration: Calibration, output: str | Path | None = None
) -> Path:
    """Store ``calibration`` in the checkpoint (in place, or into a copy at ``output``)."""
    checkpoint = read_checkpoint(checkpoint_path)
    checkpoint[CALIBRATION_KEY] = calibration.to_dict()
    return save_checkpoint_atomically(checkpoint, output or checkpoint_path)
