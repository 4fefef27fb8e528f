"""The generated demo corpus: written on first use, then read as ASVspoof 2019 LA."""

from __future__ import annotations

from pathlib import Path

from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.demo import DemoSizes, ensure_demo_corpus
from deepfake_detect.data.manifest import Utterance


class DemoCorpus(ASVspoof2019):
    """:mod:`deepfake_detect.data.demo`'s corpus in the cache ``root``, generated on the first
    :meth:`load` (and again only when the seed, sizes or generator version change).

    Each setting has its own folder under ``root`` (:func:`~deepfake_detect.data.demo.
    demo_corpus_dir`), which this corpus reads once :meth:`ensure` has run, so another job
    generating other settings in the same cache never removes its files. ``sizes`` are
    :class:`~deepfake_detect.data.demo.DemoSizes` fields, e.g. ``train_bonafide``.
    """

    def __init__(
        self, root: str | Path, seed: int = 0, missing_audio: str = "error", **sizes: int
    ) -> None:
        super().__init__(root, track="LA", missing_audio=missing_audio)
        self.name = "demo"
        self.cache_root = self.root
        self.seed = seed
        self.sizes = dict(sizes)
        DemoSizes(**self.sizes)
        self._ready = False

    def ensure(self) -> Path:
        """Generate the corpus unless it is already there; return its folder (the new root)."""
        if not self._ready:
            self.root = ensure_demo_corpus(self.cache_root, self.seed, **self.sizes)
            self._ready = True
        return self.root

    def _rows(self, split: str) -> list[Utterance]:
        self.ensure()
        return super()._rows(split)

    def source_files(self, split: str) -> list[Path]:
        self._check_split(split)
        self.ensure()
        return super().source_files(split)

    def asv_score_file(self, split: str) -> Path | None:
        return None
