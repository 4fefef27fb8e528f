"""SpoofDataModule: named corpora + ``corpus:split`` selections -> checked manifests -> loaders."""

from __future__ import annotations

import logging
import numbers
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
from torch.utils.data import DataLoader

from deepfake_detect.augment.base import AugmentContext
from deepfake_detect.data.audio import check_policy, count_conversions
from deepfake_detect.data.corpora.base import Corpus, CorpusPathError, check_unique_ids, name_some
from deepfake_detect.data.dataset import (
    OrderedSampler,
    SpoofDataset,
    collate_waveforms,
    longest_first,
)
from deepfake_detect.data.feature_cache import (
    CachedFeatureDataset,
    FeatureCache,
    FillStats,
    cache_parts,
    check_dtype,
    collate_states,
    default_dir,
    fill,
)
from deepfake_detect.data.manifest import (
    LABELS,
    CorpusError,
    Utterance,
    class_counts,
    write_manifest,
)
from deepfake_detect.data.manifest_cache import SCAN_LEVELS, load_selection
from deepfake_detect.data.preprocessing import DEFAULT_SAMPLE_RATE, Preprocessing
from deepfake_detect.data.sampling import EpochSampler
from deepfake_detect.errors import ConfigError

log = logging.getLogger(__name__)

BALANCE_MODES = ("loss", "sampler", "none")
FEATURE_CACHE_KEYS = ("enabled", "dir", "dtype")
VALIDATE_MODES = ("auto", *SCAN_LEVELS)


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


INT_SETTINGS = {
    # key: (minimum, may be null)
    "sample_rate": (1, False),
    "max_len": (1, True),
    "eval_max_len": (1, True),
    "min_len": (1, False),
    "max_eval_len": (1, True),
    "batch_size": (1, False),
    "eval_batch_size": (1, True),
    "num_workers": (0, False),
    "limit_per_set": (1, True),
    "seed": (0, False),
}
"""The data module's integer settings, checked before anything is built (a string from the
command line, ``data.batch_size=abc``, fails here naming the key, not deep inside a loader)."""


def check_int_settings(values: Mapping[str, Any]) -> None:
    for key, (minimum, nullable) in INT_SETTINGS.items():
        if key not in values or (nullable and values[key] is None):
            continue
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(
                f"data.{key} must be {kind}{' or null' if nullable else ''}, got {value!r}"
            )


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
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        max_len: int = 64000,
        train_pad: str = "repeat",
        eval_max_len: int | None = None,
        normalize: str = "zscore",
        min_len: int = 1600,
        max_eval_len: int | None = 480000,
        trim_silence: str = "none",
        transforms: Sequence[Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        balance: str = "loss",
        validate: str = "auto",
        bad_audio: str = "fail",
        limit_per_set: int | None = None,
        manifest_dir: str | None = None,
        cache_dir: str | None = None,
        feature_cache: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        settings = locals()  # the arguments, by name
        check_int_settings({key: settings[key] for key in INT_SETTINGS})
        if balance not in BALANCE_MODES:
            raise ConfigError(f"data.balance must be one of {BALANCE_MODES}, got {balance!r}")
        if validate not in VALIDATE_MODES:
            raise ConfigError(f"data.validate must be one of {VALIDATE_MODES}, got {validate!r}")
        self.corpus_configs = corpora
        self.train_specs = [SetSpec.parse(s) for s in _as_list(train)]
        self.train_weights = list(train_weights) if train_weights is not None else None
        if self.train_weights is not None and (
            len(self.train_weights) != len(self.train_specs) or min(self.train_weights) <= 0
        ):
            raise ConfigError(
                "data.train_weights needs one positive weight per data.train selection, got "
                f"{self.train_weights} for {[str(s) for s in self.train_specs]}"
            )
        self.val_specs = [SetSpec.parse(s) for s in _as_list(val)]
        self.test_specs = [SetSpec.parse(s) for s in _as_list(test)]
        self.test_names = test_set_names(self.test_specs)
        self.preprocessing = Preprocessing(
            sample_rate=sample_rate,
            normalize=normalize,
            max_len=max_len,
            train_pad=train_pad,
            eval_max_len=eval_max_len,
            min_len=min_len,
            max_eval_len=max_eval_len,
            trim_silence=trim_silence,
        )
        """The preprocessing contract (the model stores it; evaluation adopts the checkpoint's
        through :meth:`set_preprocessing`)."""
        self.transforms = [
            instantiate(t) if isinstance(t, (Mapping, DictConfig)) else t for t in transforms or ()
        ]
        """Train-only waveform transforms (``WaveTransform``), applied in the loader workers."""
        self.test_transforms: dict[str, list[Any]] = {}
        """Per test set name: waveform transforms applied to every item of its test loader (a
        test-time condition, :mod:`deepfake_detect.evaluation.robustness`; empty for a normal
        test), each item with ``numpy.random.default_rng([test_transform_seed, row index])``."""
        self.test_transform_seed = 0
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.balance = balance
        self.validate = validate
        self.bad_audio = check_policy(bad_audio)
        self.limit_per_set = limit_per_set
        self.manifest_dir = Path(manifest_dir) if manifest_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.seed = seed
        self.feature_cache_options = _feature_cache_options(feature_cache)
        """``data.feature_cache``: ``enabled``, ``dir``, ``dtype`` (see
        :mod:`deepfake_detect.data.feature_cache`)."""
        self.feature_cache: FeatureCache | None = None
        """The open cache while fitting with it (None: waveforms)."""
        self.feature_cache_stats: dict[str, Any] = {}
        """The fill's counts (``hits``, ``computed``, ``corrupt``, ``skipped``, ``seconds``)."""
        self._feature_cache_decided = False
        self._crop_frames: int | None = None
        self._corpora: dict[str, Corpus] = {}
        self._sets: dict[SetSpec, list[Utterance]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        """Per selection: the corpus's counts (rows, missing audio) and the scan's."""
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

    def _corpus_config(self, name: str) -> dict[str, Any]:
        cfg = self.corpus_configs[name]
        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
        return dict(cfg)

    def _scan(self, spec: SetSpec) -> str:
        """``auto``: decode every sample of evaluation selections (they are read whole at every
        evaluation anyway, so NaN anywhere is found before training), and the header plus the
        last block (truncation) of training selections."""
        if self.validate != "auto":
            return self.validate
        return "header" if spec in self.train_specs else "decode"

    def rows(self, spec: SetSpec) -> list[Utterance]:
        """The checked manifest of one selection: read from the manifest cache (built on first
        use), unusable files failed or skipped by ``bad_audio``, ``limit_per_set`` applied."""
        if spec not in self._sets:
            corpus = self.corpus(spec.corpus)
            try:
                manifest = load_selection(
                    corpus,
                    self._corpus_config(spec.corpus),
                    spec.split,
                    self.cache_dir,
                    self._scan(spec),
                )
            except CorpusPathError as exc:
                key = f"data.corpora.{spec.corpus}.{exc.setting}"
                value = self._corpus_config(spec.corpus).get(exc.setting)
                raise exc.configured_by(key, value) from exc
            rows = manifest.rows
            if not rows:
                raise CorpusError(f"{spec}: the selection is empty")
            if self.limit_per_set and len(rows) > self.limit_per_set:
                keep = sorted(random.Random(self.seed).sample(range(len(rows)), self.limit_per_set))
                rows = [rows[i] for i in keep]
            self._sets[spec] = self._checked(spec, rows, manifest.bad, manifest.report)
        return self._sets[spec]

    def _checked(
        self,
        spec: SetSpec,
        rows: list[Utterance],
        bad: list[tuple[str, str]],
        report: dict[str, Any],
    ) -> list[Utterance]:
        in_rows = {row.path for row in rows}
        bad = [(path, reason) for path, reason in bad if path in in_rows]
        missing = int(report.get("missing_audio", 0))
        if missing:
            log.warning(
                "%s: %d protocol rows without audio dropped (missing_audio: skip): %s",
                spec,
                missing,
                name_some(list(report.get("missing_examples", []))),
            )
        resampled, downmixed = count_conversions(rows, self.preprocessing.sample_rate)
        if resampled or downmixed:
            log.info(
                "%s: %d files will be resampled to %d Hz, %d down-mixed to mono",
                spec,
                resampled,
                self.preprocessing.sample_rate,
                downmixed,
            )
        if bad:
            described = [f"{path}: {reason}" for path, reason in bad]
            if self.bad_audio == "fail":
                raise CorpusError(
                    f"{spec}: {len(bad)} unusable audio files: {name_some(described)}. "
                    "Fix or remove them, or set data.bad_audio=skip to skip and count them."
                )
            log.warning("%s: skipping %d unusable files: %s", spec, len(bad), name_some(described))
            dropped = {path for path, _ in bad}
            rows = [row for row in rows if row.path not in dropped]
        self.scan_skipped[str(spec)] = len(bad)
        self.reports[str(spec)] = {
            "rows": len(rows),
            "missing_audio": missing,
            "missing_examples": list(report.get("missing_examples", [])),
            "unlisted_audio": int(report.get("unlisted_audio", 0)),
            "unusable_audio": len(bad),
        }
        return rows

    def _gather(self, specs: Sequence[SetSpec]) -> list[Utterance]:
        return [row for spec in specs for row in self.rows(spec)]

    def _specs(self, stage: str | None) -> list[SetSpec]:
        if stage == "test":
            return list(self.test_specs)
        if stage == "validate":
            return list(self.val_specs)
        # fitting: every selection the run will use is checked before the first step
        return list(dict.fromkeys([*self.train_specs, *self.val_specs, *self.test_specs]))

    def prepare_data(self) -> None:
        # One process per node, before the others set up: corpora that generate data (the demo)
        # do it here, and every selection's manifest is built, scanned and cached, so damaged
        # files in any split stop the run (or are counted) before training starts.
        trainer = getattr(self, "trainer", None)
        stage = None if trainer is None else trainer.state.fn
        for spec in self._specs(None if stage is None else str(stage.value)):
            self.rows(spec)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate"):
            # decided (and filled) when the first loader is asked for: after the checkpoint is
            # restored and the model is on its device
            self.feature_cache, self._feature_cache_decided = None, stage == "validate"
            if stage != "validate":
                if not self.train_specs:
                    raise CorpusError("no training set: set data.train=corpus:split")
                self.train_rows = self._gather(self.train_specs)
                if len(self.train_specs) > 1:
                    check_unique_ids(self.train_rows, "data.train")
                counts = class_counts(self.train_rows)
                if min(counts.values()) == 0:
                    raise CorpusError(f"training set has a class with no examples: {counts}")
                self._prepare_transforms()
            self.val_rows = self._gather(self.val_specs)
        if stage in (None, "fit", "test"):
            pairs = zip(self.test_names, self.test_specs, strict=True)
            self.test_sets = {name: self.rows(spec) for name, spec in pairs}
        self._write_manifests()

    def _prepare_transforms(self) -> None:
        """Bind the augmentations to the training rows (babble draws bona fide talkers from
        them; simulated rooms are built here, once, before the loader workers start)."""
        context = AugmentContext(self.preprocessing.sample_rate, self.train_rows)
        for transform in self.transforms:
            prepare = getattr(transform, "prepare", None)
            if callable(prepare):
                prepare(context)

    def set_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Serve data under another contract (evaluation adopts the checkpoint's)."""
        self.preprocessing = preprocessing

    def stage_rows(self, stage: str, dataloader_idx: int = 0) -> list[Utterance] | None:
        """The rows a stage's batch indices refer to (to name files in errors)."""
        if stage == "train":
            return self.train_rows
        if stage == "val":
            return self.val_rows
        sets = list(self.test_sets.values())
        return sets[dataloader_idx] if dataloader_idx < len(sets) else None

    def metric_mask(self, test_name: str) -> list[bool] | None:
        """Which rows of a test set its metrics count (None: all; see
        :meth:`Corpus.metric_mask`)."""
        spec = self.test_specs[self.test_names.index(test_name)]
        return self.corpus(spec.corpus).metric_mask(spec.split, self.test_sets[test_name])

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

    # -- the frozen-encoder feature cache ---------------------------------------------------------
    def _feature_cache_blocker(self, model: Any) -> str | None:
        """Why the cache cannot serve this fit (None: it can)."""
        if self.transforms:
            names = ", ".join(type(t).__name__ for t in self.transforms)
            return (
                f"a waveform augmentation is active ({names}): cached features would hide it "
                "(SpecAugment on the head's frames works with the cache)"
            )
        if getattr(model, "distill_loss", None) is not None:
            return "distillation: the teacher scores the waveforms"
        net = getattr(model, "net", None)
        if net is None or getattr(net, "freeze_mode", "none") != "all":
            return (
                f"{type(net).__name__} has no frozen encoder (needs a Wav2Vec2 net with "
                "model.freeze=all)"
            )
        return None

    def _open_feature_cache(self) -> FeatureCache | None:
        """Decide once per fit whether batches carry cached encoder states; when they do, fill
        the cache for the training and validation rows first (each process its share under
        DDP, then every process encodes what is still missing)."""
        if self._feature_cache_decided:
            return self.feature_cache
        self._feature_cache_decided = True
        options = self.feature_cache_options
        trainer = getattr(self, "trainer", None)
        if not options["enabled"] or trainer is None:
            return None
        model = trainer.lightning_module
        blocker = self._feature_cache_blocker(model)
        spec = None if blocker else model.feature_cache_spec()
        if spec is None:
            log.info("feature cache off: %s", blocker or "the model has nothing to cache")
            return None
        p = self.preprocessing
        parts = cache_parts(spec.key, p, model.scorer.min_len)
        cache = FeatureCache(
            options["dir"], parts, spec.num_states, spec.hidden_size, options["dtype"]
        ).open()
        rows = list({row.path: row for row in [*self.train_rows, *self.val_rows]}.values())
        reader = self._eval_dataset(rows)
        batch = self.eval_batch_size if spec.padding_invariant else 1
        world, rank = trainer.world_size, trainer.global_rank
        stats = fill(
            cache,
            rows,
            reader,
            model.encode_for_cache,
            batch,
            self.num_workers,
            (rank, world),
            f" (rank {rank})" if world > 1 else "",
        )
        if world > 1:
            trainer.strategy.barrier("feature_cache")
            # every process checks all rows and encodes what another one could not write
            check = fill(cache, rows, reader, model.encode_for_cache, batch, self.num_workers)
            stats.computed += check.computed
            stats.seconds += check.seconds
        self._log_fill(cache, stats, len(rows))
        self.feature_cache = cache
        self._crop_frames = spec.frames(p.max_len) if p.max_len else None
        return cache

    def _log_fill(self, cache: FeatureCache, stats: FillStats, rows: int) -> None:
        self.feature_cache_stats = {
            "hits": stats.hits,
            "computed": stats.computed,
            "corrupt": stats.corrupt,
            "skipped": stats.skipped,
            "seconds": stats.seconds,
        }
        log.info(
            "feature cache on: %s (%s, states %s): %d utterances, %d hits, %d encoded "
            "(%d corrupt entries re-encoded, %d unreadable skipped) in %.1f s",
            cache.dir,
            cache.dtype,
            cache.parts["encoder"].get("states"),
            rows,
            stats.hits,
            stats.computed,
            stats.corrupt,
            stats.skipped,
            stats.seconds,
        )

    # -- loaders --------------------------------------------------------------------------------
    def _loader(
        self, dataset: Any, batch_size: int, collate: Any = collate_waveforms, **kwargs: Any
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def _eval_dataset(self, rows: list[Utterance], transforms: Sequence[Any] = ()) -> SpoofDataset:
        """The contract's evaluation read: whole utterances (or their first eval_max_len)."""
        return SpoofDataset(
            rows,
            self.preprocessing.sample_rate,
            self.preprocessing.eval_max_len,
            random_crop=False,
            pad="none",
            bad_audio=self.bad_audio,
            transforms=transforms,
            transform_seed=self.test_transform_seed if transforms else None,
            trim_silence=self.preprocessing.trim_silence,
        )

    def _eval_loader(self, rows: list[Utterance], transforms: Sequence[Any] = ()) -> DataLoader:
        return self._loader(
            self._eval_dataset(rows, transforms),
            self.eval_batch_size,
            sampler=OrderedSampler(longest_first(rows)),
        )

    def train_dataloader(self) -> DataLoader:
        p = self.preprocessing
        cache = self._open_feature_cache()
        if cache is not None:
            return self._train_loader(
                CachedFeatureDataset(
                    self.train_rows, cache, self._crop_frames, p.train_pad, self.bad_audio
                ),
                collate_states,
            )
        dataset = SpoofDataset(
            self.train_rows,
            p.sample_rate,
            p.max_len,
            random_crop=True,
            pad=p.train_pad,
            bad_audio=self.bad_audio,
            transforms=self.transforms,
            trim_silence=p.trim_silence,
        )
        return self._train_loader(dataset, collate_waveforms)

    def _train_loader(self, dataset: Any, collate: Any) -> DataLoader:
        drop_last = len(dataset) > self.batch_size  # never drop the only batch of a tiny set
        weights = self.sampling_weights()
        # keys (row, item seed) depend only on (seed, epoch): exact resume, any worker count
        sampler = EpochSampler(
            len(dataset), self.seed, weights=None if weights is None else weights.tolist()
        )
        return self._loader(dataset, self.batch_size, collate, sampler=sampler, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_rows:
            return []
        cache = self._open_feature_cache()
        if cache is not None:
            dataset = CachedFeatureDataset(self.val_rows, cache, bad_audio=self.bad_audio)
            order = OrderedSampler(longest_first(self.val_rows))
            return self._loader(dataset, self.eval_batch_size, collate_states, sampler=order)
        return self._eval_loader(self.val_rows)

    def test_dataloader(self) -> list[DataLoader]:
        return [
            self._eval_loader(rows, self.test_transforms.get(name, ()))
            for name, rows in self.test_sets.items()
        ]


def _feature_cache_options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data.feature_cache`` checked: ``enabled`` (bool), ``dir`` (default: the cache folder's
    ``features``), ``dtype`` (``float16`` | ``float32``)."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)  # type: ignore[assignment]
    options = dict(value or {})
    unknown = sorted(set(options) - set(FEATURE_CACHE_KEYS))
    if unknown:
        raise ConfigError(
            f"data.feature_cache: unknown option(s) {unknown} (known: {list(FEATURE_CACHE_KEYS)})"
        )
    enabled = options.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"data.feature_cache.enabled must be true or false, got {enabled!r}")
    return {
        "enabled": enabled,
        "dir": Path(options.get("dir") or default_dir()),
        "dtype": check_dtype(str(options.get("dtype") or "float16")),
    }
