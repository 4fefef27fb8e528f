"""Seeded, speaker-disjoint splits for corpora that ship without an official one.

The assignment is a pure function of the rows' group values, the fractions and the seed: groups
(speakers by default) are visited in the order of ``sha256(seed, group)`` and each goes to the
split that is furthest below its target number of rows. It depends neither on row order nor on
Python's ``random`` or hash randomisation, so a run's split can be rebuilt from its config and
the corpus alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deepfake_detect.data.manifest import Utterance

ALL = "all"
"""The extra split every speaker-split corpus offers: every row, unsplit."""

DEFAULT_FRACTIONS = {"train": 0.7, "dev": 0.1, "test": 0.2}
UNKNOWN = ("", "-")
"""Group values that mean "not known": such rows are their own group (keyed by utt_id)."""


def _group_of(row: Utterance, group: str) -> str:
    value = row.speaker if group == "speaker" else row.extra.get(group, "")
    return f"utt:{row.utt_id}" if value in UNKNOWN else value


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    clean = {str(name): float(share) for name, share in fractions.items()}
    if not clean:
        raise ValueError("split fractions are empty")
    if ALL in clean:
        raise ValueError(f"{ALL!r} is reserved (it returns every row); rename that split")
    if any(share < 0 for share in clean.values()) or sum(clean.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {clean}")
    return clean


def split_by_speaker(
    rows: Sequence[Utterance],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    group: str = "speaker",
) -> dict[str, list[Utterance]]:
    """Split ``rows`` so that no ``group`` value (speaker by default) straddles two splits.

    ``fractions`` (normalised to sum to 1) are shares of rows, met approximately: a speaker's rows
    all go to one split. ``group`` is ``speaker`` or an ``extra`` column. Rows whose group value is
    unknown (``-``) are each their own group. Returns every split name (possibly empty), in the
    order of ``fractions``, with copies of the rows whose ``split`` field is set.
    """
    shares = _check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    sizes = Counter(_group_of(row, group) for row in rows)
    scale = sum(shares.values())
    target = {name: share / scale * len(rows) for name, share in shares.items()}
    filled = dict.fromkeys(shares, 0)
    candidates = [name for name, share in shares.items() if share > 0]
    assigned: dict[str, str] = {}
    for key in sorted(sizes, key=lambda k: _rank(seed, k)):
        # Ties go to the first split named: max() keeps the first maximum.
        name = max(candidates, key=lambda n: target[n] - filled[n])
        assigned[key] = name
        filled[name] += sizes[key]

    out: dict[str, list[Utterance]] = {name: [] for name in shares}
    for row in rows:
        name = assigned[_group_of(row, group)]
        out[name].append(replace(row, split=name, extra=dict(row.extra)))
    return out


@dataclass(frozen=True)
class SpeakerSplit:
    """The ``split:`` setting of a corpus without official splits.

    ``fractions`` name the splits (``all`` is added: every row), ``seed`` picks the assignment,
    ``group`` is the column that must not straddle splits (``speaker``, or an extra column).
    """

    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    group: str = "speaker"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", _check_fractions(self.fractions))

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None, default_group: str = "speaker"
    ) -> SpeakerSplit:
        """Build from a config mapping (a Hydra DictConfig works): keys fractions, seed, group."""
        config = {} if config is None else dict(config)
        unknown = set(config) - {"fractions", "seed", "group"}
        if unknown:
            raise ValueError(
                f"unknown split setting(s) {sorted(unknown)}; expected fractions, seed, group"
            )
        fractions = config.get("fractions")
        return cls(
            fractions=dict(DEFAULT_FRACTIONS if fractions is None else fractions),
            seed=int(config.get("seed", 0)),
            group=str(config.get("group", default_group)),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.fractions, ALL)

    def select(self, rows: Sequence[Utterance], split: str) -> list[Utterance]:
        if split == ALL:
            return [replace(row, split=ALL, extra=dict(row.extra)) for row in rows]
        return split_by_speaker(rows, self.fractions, self.seed, self.group)[split]
