"""WaveFake (Frank & Schönherr 2021): ``generated_audio/<generator>/<utterance>_gen.wav``.

Every generated file re-synthesises one real utterance of LJSpeech or JSUT, which are
distributed separately: ``real_roots`` lists their folders (searched recursively for ``.wav``;
relative entries are taken from ``root``). A fake pairs with the real file whose name is its own
minus the generator's suffix: ``_gen`` for most folders, ``_generated`` (``ljspeech_hifiGAN``) or
none (``ljspeech_waveglow``). The pair id goes into ``extra["pair"]`` (``-`` when no real file
matches, e.g. the Common Voice prompts of the TTS folder), the generator is the attack.

Bona fide rows are the real files that pair with at least one generated file of the selected
``generators`` (None: every folder); the other real files count as unlisted audio.
The real corpora are single-speaker, so ``speaker`` is the name of the real root unless
``speaker_pattern`` (a regex whose first group is the speaker) parses it from the pair id. There
is no official split: ``split`` configures a seeded one grouped by ``pair`` by default, which
keeps an utterance and all its fakes together (grouping by speaker is degenerate here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from deepfake_detect.data.corpora.base import (
    Corpus,
    list_audio,
    list_dirs,
    name_some,
    require_dir,
)
from deepfake_detect.data.manifest import BONAFIDE, SPOOF, CorpusError, Utterance
from deepfake_detect.data.splits import SpeakerSplit

FOLDER = "generated_audio"
FAKE_SUFFIXES = ("_generated", "_gen")


def pair_id(stem: str) -> str:
    """The real utterance a generated file re-synthesises: its stem minus the suffix."""
    for suffix in FAKE_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


class WaveFake(Corpus):
    name = "wavefake"

    def __init__(
        self,
        root: str | Path,
        real_roots: Sequence[str | Path] = (),
        generators: Sequence[str] | None = None,
        speaker_pattern: str | None = None,
        split: Mapping[str, Any] | None = None,
        missing_audio: str = "error",
    ) -> None:
        super().__init__(root, missing_audio)
        self.real_roots = [Path(p).expanduser() for p in real_roots]
        self.generators = None if generators is None else [str(g) for g in generators]
        self.speaker_pattern = None if speaker_pattern is None else re.compile(speaker_pattern)
        self.speaker_split = SpeakerSplit.from_config(split, default_group="pair")
        self.splits = self.speaker_split.names

    @property
    def generated_dir(self) -> Path:
        root = require_dir(self.root, "WaveFake root")
        return root / FOLDER if (root / FOLDER).is_dir() else root

    def available_generators(self) -> list[str]:
        return sorted(p.name for p in self.generated_dir.iterdir() if p.is_dir())

    def selected_generators(self) -> list[str]:
        available = self.available_generators()
        if not available:
            raise CorpusError(
                f"{self.name}: no generator folders in {self.generated_dir} "
                f"(`root` must hold {FOLDER}/ or be {FOLDER}/ itself)"
            )
        if self.generators is None:
            return available
        unknown = [g for g in self.generators if g not in available]
        if unknown:
            raise CorpusError(
                f"{self.name}: unknown generator(s) {name_some(unknown)} in `generators` "
                f"(available: {', '.join(available)})"
            )
        return list(self.generators)

    def _real_dirs(self) -> list[Path]:
        if not self.real_roots:
            raise CorpusError(
                f"{self.name}: `real_roots` is empty; list the LJSpeech / JSUT folders"
            )
        dirs = [p if p.is_absolute() else self.root / p for p in self.real_roots]
        for d in dirs:
            require_dir(d, f"{self.name} real audio folder", setting="real_roots")
        return dirs

    def _real_files(self) -> dict[str, tuple[Path, str]]:
        """Real utterance id -> (file, name of its real root)."""
        index: dict[str, tuple[Path, str]] = {}
        for d in self._real_dirs():
            for path in list_audio(d, (".wav",), recursive=True):
                if path.stem in index:
                    raise CorpusError(
                        f"{self.name}: real utterance {path.stem!r} found twice: "
                        f"{index[path.stem][0]} and {path}"
                    )
                index[path.stem] = (path, d.name)
        return index

    def _speaker(self, pair: str, real_root: str) -> str:
        if self.speaker_pattern is not None:
            match = self.speaker_pattern.search(pair)
            if match:
                return match.group(1)
        return real_root

    def _audio_files(self, split: str) -> Iterable[Path]:
        return [path for path, _ in self._real_files().values()]

    def source_files(self, split: str) -> list[Path]:
        """The folders listed: ``generated_audio/`` and each selected generator's folder, and
        every folder under the real roots (searched recursively)."""
        self._check_split(split)
        generated = self.generated_dir
        folders = [generated] + [generated / g for g in self.selected_generators()]
        return folders + [d for real in self._real_dirs() for d in list_dirs(real)]

    def _rows(self, split: str) -> list[Utterance]:
        generators = self.selected_generators()  # checks the root before the real roots
        real = self._real_files()
        fakes: list[Utterance] = []
        paired: set[str] = set()
        for generator in generators:
            for path in list_audio(self.generated_dir / generator, (".wav",)):
                pair = pair_id(path.stem)
                found = real.get(pair)
                if found is not None:
                    paired.add(pair)
                fakes.append(
                    Utterance(
                        utt_id=f"{generator}/{path.stem}",
                        path=str(path),
                        label=SPOOF,
                        attack=generator,
                        speaker="-" if found is None else self._speaker(pair, found[1]),
                        extra={"pair": pair if found is not None else "-"},
                        origin=str(path),
                    )
                )
        bona = [
            Utterance(
                utt_id=pair,
                path=str(real[pair][0]),
                label=BONAFIDE,
                speaker=self._speaker(pair, real[pair][1]),
                extra={"pair": pair},
                origin=str(real[pair][0]),
            )
            for pair in sorted(paired)
        ]
        return bona + fakes

    def load(self, split: str) -> list[Utterance]:
        rows = super().load(split)
        self.report[split]["unpaired_fakes"] = sum(
            1 for row in rows if row.label == SPOOF and row.extra["pair"] == "-"
        )
        return rows
