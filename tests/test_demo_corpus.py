"""The generated demo corpus: layout, determinism, caching, audio, and no trivial cues."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.corpora.demo import DemoCorpus
from deepfake_detect.data.demo import (
    CLIP_SECONDS,
    MARKER,
    SAMPLE_RATE,
    SPLIT_ATTACKS,
    DemoSizes,
    demo_corpus_dir,
    ensure_demo_corpus,
    generate_demo_corpus,
)
from deepfake_detect.data.manifest import CorpusError, Utterance
from deepfake_detect.metrics import compute_eer

REPO = Path(__file__).parents[1]
SMALL = {
    "train_bonafide": 3,
    "train_spoof_per_attack": 2,
    "train_speakers": 2,
    "dev_bonafide": 2,
    "dev_spoof_per_attack": 1,
    "dev_speakers": 1,
    "eval_bonafide": 2,
    "eval_spoof_per_attack": 1,
    "eval_speakers": 2,
}
SPLITS = ("train", "dev", "eval")
EDGE = SAMPLE_RATE // 20


def digest(root: Path) -> dict[str, str]:
    """sha256 of every protocol and audio file, by path relative to ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "LA").rglob("*"))
        if p.is_file()
    }


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "LA").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo_small"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Utterance]]:
    root = generate_demo_corpus(tmp_path_factory.mktemp("demo_full"), seed=0)
    corpus = ASVspoof2019(root)
    return {split: corpus.load(split) for split in SPLITS}


def test_layout_parses_with_the_asvspoof2019_adapter(small: Path) -> None:
    sizes = DemoSizes(**SMALL)
    corpus = ASVspoof2019(small, track="LA")
    letters = {"train": "T", "dev": "D", "eval": "E"}
    for split in SPLITS:
        rows = corpus.load(split)
        expected = {"-": sizes.bonafide(split)}
        expected |= {a: sizes.spoof_per_attack(split) for a in SPLIT_ATTACKS[split]}
        assert Counter(r.attack for r in rows) == expected
        assert Counter(r.label for r in rows) == {
            "bonafide": sizes.bonafide(split),
            "spoof": sizes.spoof_per_attack(split) * len(SPLIT_ATTACKS[split]),
        }
        assert all(re.fullmatch(rf"LA_{letters[split]}_\d{{7}}", r.utt_id) for r in rows)
        assert all(re.fullmatch(r"LA_\d{4}", r.speaker) for r in rows)
        assert all(r.path.endswith(f"ASVspoof2019_LA_{split}/flac/{r.utt_id}.flac") for r in rows)
        assert len({r.speaker for r in rows}) == sizes.speakers(split)
    assert corpus.report["eval"]["rows"] == 6 and corpus.report["eval"]["missing_audio"] == 0
    protocol = small / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    assert re.fullmatch(
        r"LA_\d{4} LA_D_\d{7} - (-|A0[123]) (bonafide|spoof)", protocol.read_text().splitlines()[0]
    )


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    small: Path, tmp_path: Path
) -> None:
    again = generate_demo_corpus(tmp_path / "again", seed=0, **SMALL)
    assert digest(again) == digest(small)
    other = generate_demo_corpus(tmp_path / "other", seed=1, **SMALL)
    assert set(digest(other).values()).isdisjoint(digest(small).values())


def test_marker_skips_regeneration_until_it_is_missing_or_differs(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    folder = generate_demo_corpus(root, seed=0, **SMALL)
    assert folder == demo_corpus_dir(root, seed=0, **SMALL) and folder.parent == root
    assert (root / "LA").resolve() == (folder / "LA").resolve()  # ASVspoof2019(root) reads it
    before = mtimes(folder)
    assert ensure_demo_corpus(root, seed=0, **SMALL) == folder
    assert mtimes(folder) == before

    (folder / MARKER).unlink()  # as after a damaged cache
    stray = next(iter(before))
    stray.unlink()
    ensure_demo_corpus(root, seed=0, **SMALL)
    assert stray.is_file() and (folder / MARKER).is_file()
    assert all(mtimes(folder)[p] != t for p, t in before.items())

    bigger = SMALL | {"eval_bonafide": 3}
    other = ensure_demo_corpus(root, seed=0, **bigger)
    assert other != folder
    assert Counter(r.label for r in ASVspoof2019(root).load("eval"))["bonafide"] == 3
    assert Counter(r.label for r in ASVspoof2019(folder).load("eval"))["bonafide"] == 2


def test_other_settings_never_remove_the_files_of_a_running_job(tmp_path: Path) -> None:
    """Job A reads the seed-0 corpus while job B asks for seed 1 in the same cache: A keeps
    every file of its manifest, byte for byte, including the one it has open."""
    root = tmp_path / "cache" / "demo_la"
    job_a = DemoCorpus(root, seed=0, **SMALL)
    rows_a = [row for split in SPLITS for row in job_a.load(split)]
    digests = {row.path: hashlib.sha256(Path(row.path).read_bytes()).hexdigest() for row in rows_a}
    with open(rows_a[0].path, "rb") as reader:
        head = reader.read(64)
        job_b = DemoCorpus(root, seed=1, **SMALL)
        rows_b = job_b.load("train")
        assert head + reader.read() == Path(rows_a[0].path).read_bytes()
    assert job_a.root != job_b.root and job_a.root.parent == job_b.root.parent == root
    assert {Path(r.path).parents[3] for r in rows_b} == {job_b.root}
    assert (root / "LA").resolve() == (job_b.root / "LA").resolve()  # the latest settings
    after = {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in digests}
    assert after == digests


def test_only_corpora_that_no_process_holds_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "demo_la"
    held = ensure_demo_corpus(root, seed=0, **SMALL)  # this process holds it until it exits
    script = (
        "import sys; from deepfake_detect.data.demo import ensure_demo_corpus; "
        f"print(ensure_demo_corpus(sys.argv[1], seed=int(sys.argv[2]), **{SMALL!r}))"
    )
    run = [sys.executable, "-c", script, str(root)]
    released = Path(
        subprocess.run([*run, "2"], check=True, capture_output=True, text=True).stdout.strip()
    )
    assert released.is_dir() and held.is_dir()  # the other process could not remove ours
    (root / ".tmp-demo-la-2-seed9-0123-999999").mkdir()  # left by an interrupted generation
    again = ensure_demo_corpus(root, seed=0, **SMALL)
    assert again == held and held.is_dir()
    assert not released.exists()  # its process has exited: nobody holds it
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [".demo_corpus", ".lock", "LA", held.name]
    )


def test_a_cache_of_the_layout_before_per_setting_folders_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "demo_la"
    folder = generate_demo_corpus(root, seed=0, **SMALL)
    before = digest(folder)
    # the old layout: the corpus straight under root, its marker beside it
    (root / "LA").unlink()
    (folder / "LA").rename(root / "LA")
    (folder / MARKER).rename(root / MARKER)
    shutil.rmtree(folder)
    times = mtimes(root)
    assert ensure_demo_corpus(root, seed=0, **SMALL) == folder
    assert digest(folder) == before and mtimes(folder) == {
        folder / p.relative_to(root): t for p, t in times.items()
    }  # moved, not regenerated
    assert (root / "LA").is_symlink() and not (root / MARKER).exists()
    # an old-layout corpus of other settings is replaced
    (root / "LA").unlink()
    (folder / "LA").rename(root / "LA")
    (root / MARKER).write_text("{}")
    shutil.rmtree(folder)
    assert ensure_demo_corpus(root, seed=0, **SMALL) == folder and digest(folder) == before


def test_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "LA" / "ASVspoof2019_LA_train").mkdir(parents=True)
    with pytest.raises(CorpusError, match="not written by the demo corpus generator"):
        ensure_demo_corpus(tmp_path, seed=0, **SMALL)
    assert (tmp_path / "LA" / "ASVspoof2019_LA_train").is_dir()


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="eval_speakers"):
        DemoSizes(eval_speakers=0)
    with pytest.raises(TypeError):
        DemoSizes(train_files=3)  # type: ignore[call-arg]


def test_demo_corpus_generates_once_on_first_load(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "demo_la"
    corpus = DemoCorpus(root, seed=0, **SMALL)
    assert corpus.name == "demo" and not root.exists()
    rows = corpus.load("dev")
    assert len(rows) == 5 and all(Path(r.path).is_file() for r in rows)
    assert corpus.root == demo_corpus_dir(root, seed=0, **SMALL) and corpus.cache_root == root
    assert all(r.origin.startswith(f"{corpus.root}/LA/") for r in rows)
    before = mtimes(root)
    again = DemoCorpus(root, seed=0, **SMALL)
    assert len(again.load("eval")) == 6
    assert mtimes(root) == before
    assert corpus.asv_score_file("eval") is None
    fresh = DemoCorpus(tmp_path / "fresh", seed=0, **SMALL)  # source_files generates first
    assert fresh.source_files("dev") == [
        fresh.root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt",
        fresh.root / "LA" / "ASVspoof2019_LA_dev" / "flac",
    ]
    assert all(p.exists() for p in fresh.source_files("dev"))


def test_corpus_config_instantiates_the_demo_corpus(tmp_path: Path) -> None:
    cfg = OmegaConf.load(REPO / "conf" / "data" / "corpus" / "demo.yaml")
    cfg.root = str(tmp_path / "demo_la")
    corpus = instantiate(cfg)
    assert isinstance(corpus, DemoCorpus) and corpus.seed == 0 and corpus.sizes == {}


def test_full_corpus_counts_and_split_disjoint_speakers(full: dict[str, list[Utterance]]) -> None:
    sizes = DemoSizes()
    for split, rows in full.items():
        assert Counter(r.label for r in rows)["bonafide"] == sizes.bonafide(split)
        attacks = Counter(r.attack for r in rows if r.label == "spoof")
        assert attacks == {a: sizes.spoof_per_attack(split) for a in SPLIT_ATTACKS[split]}
        assert len({r.speaker for r in rows}) == sizes.speakers(split)
    speakers = {split: {r.speaker for r in rows} for split, rows in full.items()}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["eval"]
    assert not speakers["dev"] & speakers["eval"]
    ids = [r.utt_id for rows in full.values() for r in rows]
    assert len(set(ids)) == len(ids)


def read_all(full: dict[str, list[Utterance]]) -> tuple[list[Utterance], list[np.ndarray]]:
    rows = [r for split in SPLITS for r in full[split]]
    waves = []
    for row in rows:
        info = sf.info(row.path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            SAMPLE_RATE,
            1,
            "FLAC",
            "PCM_16",
        )
        wave, _ = sf.read(row.path, dtype="float64")
        waves.append(wave)
    return rows, waves


def test_full_corpus_audio_is_16k_mono_finite_and_unclipped(
    full: dict[str, list[Utterance]],
) -> None:
    _, waves = read_all(full)
    for wave in waves:
        assert wave.ndim == 1 and np.all(np.isfinite(wave))
        assert np.abs(wave).max() < 0.9
        assert CLIP_SECONDS[0] <= len(wave) / SAMPLE_RATE <= CLIP_SECONDS[1]
        assert np.sqrt(np.mean(wave**2)) > 1e-3


def trivial_cues(wave: np.ndarray) -> dict[str, float]:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    return {
        "duration": len(wave),
        "rms": np.mean(wave**2),
        "first_50ms": np.mean(wave[:EDGE] ** 2),
        "last_50ms": np.mean(wave[-EDGE:] ** 2),
        "above_4k": power[freqs > 4000].sum() / power.sum(),
    }


def test_trivial_cues_are_near_chance(full: dict[str, list[Utterance]]) -> None:
    """No single scalar a model could shortcut on separates the classes (EER of either sign)."""
    rows, waves = read_all(full)
    cues = [trivial_cues(w) for w in waves]
    attacks = np.array([r.attack for r in rows])
    for name in cues[0]:
        values = np.array([c[name] for c in cues])
        bona = values[attacks == "-"]
        for attack in ["all", *sorted(set(attacks) - {"-"})]:
            spoof = values[attacks != "-"] if attack == "all" else values[attacks == attack]
            eer, _ = compute_eer(bona, spoof)
            assert min(eer, 1 - eer) > 0.3, f"{name} separates bona fide from {attack}: {eer:.3f}"
