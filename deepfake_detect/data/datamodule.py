"""SpoofDataModule: named corpora + ``corpus:split`` selections -> checked manifests -> loaders."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch.utils.data import DataLoader, WeightedRandomSampler

from deepfake_detect.data.audio import check_policy, scan_manifest
from deepfake_detect.data.corpora.base import Corpus, name_some
from deepfake_detect.data.dataset import (
    OrderedSampler,
    SpoofDataset,
    collate_waveforms,
    longest_first,
)
from deepfake_detect.data.manifest import (
    LABELS,
    CorpusError,
    Utterance,
    class_counts,
    write_manifest,
)

log = logging.getLogger(__name__)

BALANCE_MODES = ("loss", "sampler", "none")
VALIDATE_MODES = ("header", "decode", "none")


@dataclass(frozen=True)
class SetSpec:
    """One selection ``corpus:split`` such as ``asvspoof2019_la:eval``."""

    corpus: str
    split: str

    @classmethod
    def parse(cls, text: str) -> SetSpec:
        corpus, sep, split = str(text).partition(":")
        if not sep or not corpus or not split:
            raise CorpusError(f"expected 'corpus:split' (e.g. asvspoof2019_la:eval), got {text!r}")
        return cls(corpus, split)

    def __str__(self) -> str:
        return f"{self.corpus}:{self.split}"


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def test_set_names(specs: Sequence[SetSpec]) -> list[str]:
    """A test set is named after its corpus, or ``corpus_split`` when a corpus appears twice."""
    corpora = [spec.corpus for spec in specs]
    return [
        spec.corpus if corpora.count(spec.corpus) == 1 else f"{spec.corpus}_{spec.split}"
        for spec in specs
    ]


class SpoofDataModule(L.LightningDataModule):
    """Serves train / val / test sets from any registered corpora.

    ``corpora`` maps a name to a corpus adapter config (instantiated only when used, so corpora
    whose ``root`` is unset cost nothing). ``train``, ``val`` and ``test`` select ``corpus:split``.
    """

    def __init__(
        self,
        corpora: Mapping[str, Any],
        train: str | Sequence[str] | None = None,
        train_weights: Sequence[float] | None = None,
        val: str | Sequence[str] | None = None,
        test: str | Sequence[str] | None = None,
        sample_rate: int = 16000,
        max_len: int = 64000,
        train_pad: str = "repeat",
        eval_max_len: int | None = None,
        normalize: str = "zscore",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        balance: str = "loss",
        validate: str = "header",
        bad_audio: str = "fail",
        limit_per_set: int | None = None,
        manifest_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if balance not in BALANCE_MODES:
            raise ValueError(f"data.balance must be one of {BALANCE_MODES}, got {balance!r}")
        if validate not in VALIDATE_MODES:
            raise ValueError(f"data.validate must be one of {VALIDATE_MODES}, got {validate!r}")
        self.corpus_configs = corpora
        self.train_specs = [SetSpec.parse(s) for s in _as_list(train)]
        self.train_weights = list(train_weights) if train_weights is not None else None
        if self.train_weights is not None and (
            len(self.train_weights) != len(self.train_specs) or min(self.train_weights) <= 0
        ):
            raise ValueError(
                "data.train_weights needs one positive weight per data.train selection, got "
                f"{self.train_weights} for {[str(s) for s in self.train_specs]}"
            )
        self.val_specs = [SetSpec.parse(s) for s in _as_list(val)]
        self.test_specs = [SetSpec.parse(s) for s in _as_list(test)]
        self.test_names = test_set_names(self.test_specs)
        self.sample_rate = sample_rate
        self.max_len = max_len
        self.train_pad = train_pad
        self.eval_max_len = eval_max_len
        self.normalize = normalize
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.balance = balance
        self.validate = validate
        self.bad_audio = check_policy(bad_audio)
        self.limit_per_set = limit_per_set
        self.manifest_dir = Path(manifest_dir) if manifest_dir else None
        self.seed = seed
        self._corpora: dict[str, Corpus] = {}
        self._sets: dict[SetSpec, list[Utterance]] = {}
        self.train_rows: list[Utterance] = []
        self.val_rows: list[Utterance] = []
        self.test_sets: dict[str, list[Utterance]] = {}
        self.scan_skipped: dict[str, int] = {}
        """Per selection: unusable files dropped by the scan (``bad_audio="skip"``)."""

    # -- corpora and manifests ------------------------------------------------------------------
    def corpus(self, name: str) -> Corpus:
        if name not in self._corpora:
            if name not in self.corpus_configs:
                raise CorpusError(
                    f"unknown corpus {name!r}; registered: {', '.join(self.corpus_configs)}"
                )
            cfg = self.corpus_configs[name]
            try:
                if isinstance(cfg, DictConfig):
                    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
                self._corpora[name] = instantiate(cfg)
            except MissingMandatoryValue as exc:
                raise CorpusError(
                    f"corpus {name!r} has no root: set data.corpora.{name}.root=/path/to/corpus "
                    f"({exc.msg if hasattr(exc, 'msg') else exc})"
                ) from exc
        return self._corpora[name]

    def rows(self, spec: SetSpec) -> list[Utterance]:
        """The checked manifest of one selection (cached: fit and test share the scan)."""
        if spec not in self._sets:
            rows = self.corpus(spec.corpus).load(spec.split)
            if not rows:
                raise CorpusError(f"{spec}: the selection is empty")
            if self.limit_per_set and len(rows) > self.limit_per_set:
                keep = sorted(random.Random(self.seed).sample(range(len(rows)), self.limit_per_set))
                rows = [rows[i] for i in keep]
            self._sets[spec] = self._checked(spec, rows)
        return self._sets[spec]

    def _checked(self, spec: SetSpec, rows: list[Utterance]) -> list[Utterance]:
        if self.validate == "none":
            return rows
        report = scan_manifest(rows, self.sample_rate, decode=self.validate == "decode")
        if report.resampled or report.downmixed:
            log.info(
                "%s: %d files will be resampled to %d Hz, %d down-mixed to mono",
                spec,
                report.resampled,
                self.sample_rate,
                report.downmixed,
            )
        if report.bad:
            described = [f"{path}: {reason}" for path, reason in report.bad]
            if self.bad_audio == "fail":
                raise CorpusError(
                    f"{spec}: {len(report.bad)} unusable audio files: {name_some(described)}. "
                    "Fix or remove them, or set data.bad_audio=skip to skip and count them."
                )
            log.warning(
                "%s: skipping %d unusable files: %s", spec, len(report.bad), name_some(described)
            )
            bad = {path for path, _ in report.bad}
            rows = [row for row in rows if row.path not in bad]
        self.scan_skipped[str(spec)] = len(report.bad)
        return rows

    def _gather(self, specs: Sequence[SetSpec]) -> list[Utterance]:
        return [row for spec in specs for row in self.rows(spec)]

    def prepare_data(self) -> None:
        # Runs on one process before the others set up: corpora that generate or fetch data
        # (the demo corpus) do it here.
        specs = {*self.test_specs}
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "test":
            specs |= {*self.train_specs, *self.val_specs}
        for spec in specs:
            self.corpus(spec.corpus).load(spec.split)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate"):
            if stage != "validate":
                if not self.train_specs:
                    raise CorpusError("no training set: set data.train=corpus:split")
                self.train_rows = self._gather(self.train_specs)
                counts = class_counts(self.train_rows)
                if min(counts.values()) == 0:
                    raise CorpusError(f"training set has a class with no examples: {counts}")
            self.val_rows = self._gather(self.val_specs)
        if stage in (None, "test"):
            pairs = zip(self.test_names, self.test_specs, strict=True)
            self.test_sets = {name: self.rows(spec) for name, spec in pairs}
        self._write_manifests()

    def _write_manifests(self) -> None:
        if self.manifest_dir is None:
            return
        for spec, rows in self._sets.items():
            write_manifest(rows, self.manifest_dir / f"{spec.corpus}_{spec.split}.tsv")

    def asv_scores(self, test_name: str) -> dict | None:
        """The ASV scores of a test set's corpus split and the t-DCF definition they go with
        (:meth:`Corpus.asv_scores`), or None when it has none."""
        spec = self.test_specs[self.test_names.index(test_name)]
        return self.corpus(spec.corpus).asv_scores(spec.split)

    def sampling_weights(self) -> torch.Tensor | None:
        """Per training row draw weights: each selection gets its ``train_weights`` share of the
        draws, and with ``balance="sampler"`` each class half of them. None: plain shuffling."""
        if self.train_weights is None and self.balance != "sampler":
            return None
        weights = torch.ones(len(self.train_rows), dtype=torch.float64)
        if self.train_weights is not None:
            start = 0
            for spec, share in zip(self.train_specs, self.train_weights, strict=True):
                n = len(self.rows(spec))
                weights[start : start + n] = share / n
                start += n
        if self.balance == "sampler":
            targets = torch.tensor([row.target for row in self.train_rows])
            for target in targets.unique():
                chosen = targets == target
                weights[chosen] /= weights[chosen].sum()
        return weights

    @property
    def class_weights(self) -> list[float] | None:
        """Inverse-frequency weights (spoof, bona fide) of the classes as drawn (mixing weights
        included) when ``balance="loss"``, else None."""
        if self.balance != "loss" or not self.train_rows:
            return None
        draws = self.sampling_weights()
        if draws is None:
            draws = torch.ones(len(self.train_rows), dtype=torch.float64)
        targets = torch.tensor([row.target for row in self.train_rows])
        mass = [float(draws[targets == i].sum()) for i in range(len(LABELS))]
        return [sum(mass) / (len(LABELS) * m) for m in mass]

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, dataset: SpoofDataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_waveforms,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def _eval_loader(self, rows: list[Utterance]) -> DataLoader:
        dataset = SpoofDataset(
            rows,
            self.sample_rate,
            self.normalize,
            self.eval_max_len,
            random_crop=False,
            pad="none",
            bad_audio=self.bad_audio,
        )
        return self._loader(
            dataset, self.eval_batch_size, sampler=OrderedSampler(longest_first(rows))
        )

    def train_dataloader(self) -> DataLoader:
        dataset = SpoofDataset(
            self.train_rows,
            self.sample_rate,
            self.normalize,
            self.max_len,
            random_crop=True,
            pad=self.train_pad,
            bad_audio=self.bad_audio,
        )
        drop_last = len(dataset) > self.batch_size  # never drop the only batch of a tiny set
        weights = self.sampling_weights()
        if weights is not None:
            sampler = WeightedRandomSampler(weights, len(weights))  # seeded by seed_everything
            return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=drop_last)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader(self.val_rows) if self.val_rows else []

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(rows) for rows in self.test_sets.values()]
