"""Reader for the organisers' ASV score files of ASVspoof 2019
(``ASVspoof2019.{LA,PA}.asv.{dev,eval}.gi.trl.scores.txt``).

One trial per line, three whitespace-separated columns: source (``bonafide`` or an attack id such
as ``A13``), key (``target``, ``nontarget`` or ``spoof``) and the ASV score, e.g.
``bonafide target 3.21`` or ``A13 spoof -1.07``.
"""

from __future__ import annotations

import os

import numpy as np

ASV_KEYS = ("target", "nontarget", "spoof")


def read_asv_scores(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Scores by key: ``{"target": ..., "nontarget": ..., "spoof": ...}`` (float64 arrays)."""
    scores: dict[str, list[float]] = {key: [] for key in ASV_KEYS}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{os.fspath(path)}:{line_no}: {line.strip()!r}"
            if len(fields) != 3:
                raise ValueError(f"{where}: expected 3 columns (source key score)")
            _, key, value = fields
            if key not in scores:
                raise ValueError(f"{where}: key must be one of {', '.join(ASV_KEYS)}, got {key!r}")
            try:
                score = float(value)
            except ValueError:
                raise ValueError(f"{where}: score {value!r} is not a number") from None
            if not np.isfinite(score):
                raise ValueError(f"{where}: score {value!r} is not finite")
            scores[key].append(score)
    if not any(scores.values()):
        raise ValueError(f"{os.fspath(path)}: no ASV trials found")
    return {key: np.asarray(values, dtype=np.float64) for key, values in scores.items()}
