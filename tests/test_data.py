"""Preprocessing, the Dataset, and the DataModule's checks of bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_SIZES, la_data_overrides, tone, write_la_corpus
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from deepfake_detect.data.audio import AudioError, load_mono
from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.dataset import SpoofDataset, collate_waveforms
from deepfake_detect.data.manifest import CorpusError, Utterance, read_manifest, write_manifest
from deepfake_detect.data.preprocessing import crop_or_pad

# -- the data side of preprocessing (the rest: tests/test_preprocessing.py) ---------------------


def test_load_mono_reports_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC not really")
    with pytest.raises(AudioError, match="bad.flac"):
        load_mono(str(bad), 16000)


def test_crop_or_pad_crops_and_pads() -> None:
    wave = torch.arange(10, dtype=torch.float)
    rng = np.random.default_rng(0)
    assert torch.equal(crop_or_pad(wave, 10, rng, pad="repeat"), wave)  # exact length
    assert torch.equal(crop_or_pad(wave, 4, None, pad="repeat"), wave[:4])
    starts = set()
    for _ in range(40):
        crop = crop_or_pad(wave, 4, rng, pad="repeat")
        start = int(crop[0])
        starts.add(start)
        assert torch.equal(crop, wave[start : start + 4])
    assert starts == set(range(7))  # every window is reachable
    assert crop_or_pad(wave, 25, None, "repeat").tolist() == (list(range(10)) * 3)[:25]
    assert crop_or_pad(wave, 12, None, "zero").tolist() == list(range(10)) + [0, 0]
    assert crop_or_pad(wave, 12, None, "none").shape == (10,)
    assert crop_or_pad(wave, None, None, "none").shape == (10,)


def test_collate_pads_keeps_lengths_and_sets_bad_items_aside() -> None:
    items = [
        {"wave": torch.ones(5), "label": 1, "index": 0},
        {"index": 1, "error": "broken"},
        {"wave": torch.ones(3), "label": 0, "index": 2},
    ]
    batch = collate_waveforms(items)
    assert batch["wave"].shape == (2, 5)
    assert batch["lengths"].tolist() == [5, 3]
    assert batch["wave"][1, 3:].abs().sum() == 0
    assert batch["label"].tolist() == [1, 0]
    assert batch["index"].tolist() == [0, 2]
    assert batch["skipped"] == [(1, "broken")]
    assert batch["silent"].tolist() == [False, False]


def test_dataset_policy_on_nan_audio(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    samples = tone(0.5)
    samples[100] = np.nan
    sf.write(path, samples, 16000, subtype="FLOAT")
    rows = [Utterance("u1", str(path), "spoof")]
    with pytest.raises(AudioError, match=r"NaN.*u1.*data.bad_audio=skip"):
        SpoofDataset(rows, bad_audio="fail")[0]
    item = SpoofDataset(rows, bad_audio="skip")[0]
    assert "NaN" in item["error"]


def test_manifest_round_trip(tmp_path: Path) -> None:
    rows = [
        Utterance(
            "a",
            "/x/a.flac",
            "bonafide",
            speaker="s1",
            split="train",
            num_frames=16000,
            sample_rate=16000,
            channels=1,
        ),
        Utterance("b", "/x/b.flac", "spoof", attack="A07", extra={"codec": "mp3"}),
    ]
    path = write_manifest(rows, tmp_path / "m.tsv")
    assert read_manifest(path) == rows


def test_unknown_label_in_code_is_rejected() -> None:
    with pytest.raises(CorpusError, match="unknown label 'fake'"):
        Utterance("u", "/x.flac", "fake")


# -- the ASVspoof2019 adapter ------------------------------------------------------------------


def test_asvspoof2019_adapter_counts(tiny_la: Path) -> None:
    corpus = ASVspoof2019(tiny_la)
    for split, attacks in TINY_SIZES.items():
        rows = corpus.load(split)
        assert len(rows) == sum(attacks.values())
        for attack, n in attacks.items():
            assert sum(r.attack == attack for r in rows) == n
        assert {r.label for r in rows if r.attack == "-"} == {"bonafide"}
        assert all(Path(r.path).is_file() and r.split == split for r in rows)
    # the LA/ folder itself is accepted as root too
    assert len(ASVspoof2019(tiny_la / "LA").load("dev")) == len(corpus.load("dev"))


def test_asvspoof2019_adapter_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="root not found.*`root`"):
        ASVspoof2019(tmp_path / "nowhere").load("train")
    root = write_la_corpus(tmp_path / "c", {"train": {"-": 2, "A01": 2}})
    with pytest.raises(CorpusError, match=r"dev protocol not found"):
        ASVspoof2019(root).load("dev")
    protocol = root / "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"
    lines = protocol.read_text().splitlines()
    protocol.write_text("\n".join([*lines, "LA_0001 LA_T_9999999 - A01 fake"]) + "\n")
    with pytest.raises(CorpusError, match=r"trn.txt:5: unknown label 'fake'"):
        ASVspoof2019(root).load("train")
    protocol.write_text("\n".join([*lines, "LA_0001 LA_T_9999999 - A01 spoof"]) + "\n")
    with pytest.raises(CorpusError, match=r"1 of 5 protocol rows have no audio.*LA_T_9999999"):
        ASVspoof2019(root).load("train")
    corpus = ASVspoof2019(root, missing_audio="skip")
    assert len(corpus.load("train")) == 4
    assert corpus.report["train"]["missing_audio"] == 1


MINI_LA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mini_la"


@pytest.mark.skipif(not MINI_LA.is_dir(), reason="../shared/data/mini_la not present")
def test_asvspoof2019_adapter_on_mini_la() -> None:
    corpus = ASVspoof2019(MINI_LA)
    for split in corpus.splits:
        protocol = corpus.protocol_file(split).read_text().split("\n")
        expected: dict[str, int] = {}
        for line in filter(None, protocol):
            attack = line.split()[3]
            expected[attack] = expected.get(attack, 0) + 1
        rows = corpus.load(split)
        got: dict[str, int] = {}
        for row in rows:
            got[row.attack] = got.get(row.attack, 0) + 1
        assert got == expected
    eval_attacks = {r.attack for r in corpus.load("eval")}
    assert eval_attacks == {"-", *(f"A0{i}" for i in range(1, 9))}


# -- the data module: checks before training -----------------------------------------------------


def _datamodule(compose_cfg, root: Path, *overrides: str):
    cfg = compose_cfg("~experiment", *la_data_overrides(root), *overrides)
    return instantiate(cfg.data)


def test_datamodule_builds_loaders_and_writes_manifests(compose_cfg, tiny_la: Path) -> None:
    dm = _datamodule(compose_cfg, tiny_la, "data.batch_size=4", "data.max_len=4000")
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (4, 4000)
    assert batch["lengths"].tolist() == [4000] * 4
    # evaluation: full utterances, longest first, padded with their true lengths
    val = next(iter(dm.val_dataloader()))
    assert val["lengths"].tolist() == sorted(val["lengths"].tolist(), reverse=True)
    assert val["wave"].shape[1] == int(val["lengths"].max()) > 4000
    assert list(dm.test_sets) == ["asvspoof2019_la"]
    # 12 bona fide vs 24 spoof: inverse-frequency weights (spoof, bona fide)
    assert dm.class_weights == pytest.approx([36 / 48, 36 / 24])
    written = sorted(p.name for p in dm.manifest_dir.iterdir())
    assert written == [f"asvspoof2019_la_{s}.tsv" for s in ("dev", "eval", "train")]
    assert len(read_manifest(dm.manifest_dir / "asvspoof2019_la_train.tsv")) == 36


def test_balanced_sampler_draws_both_classes_evenly(compose_cfg, tiny_la: Path) -> None:
    dm = _datamodule(
        compose_cfg, tiny_la, "data.balance=sampler", "data.batch_size=36", "data.max_len=1000"
    )
    dm.setup("fit")
    assert dm.class_weights is None
    loader = dm.train_dataloader()
    labels = torch.cat([batch["label"] for _ in range(10) for batch in loader])
    assert labels.numel() == 360
    assert 0.4 < labels.float().mean().item() < 0.6  # bona fide is 1/3 of the data


def test_missing_root_names_the_setting(compose_cfg) -> None:
    cfg = compose_cfg("~experiment", "data=asvspoof2019_la", "data.num_workers=0")
    dm = instantiate(cfg.data)
    with pytest.raises(CorpusError, match=r"data.corpora.asvspoof2019_la.root="):
        dm.prepare_data()


def _damage(root: Path) -> dict[str, Path]:
    train = sorted((root / "LA/ASVspoof2019_LA_train/flac").glob("*.flac"))
    train[0].write_bytes(b"")  # empty file
    train[1].write_bytes(b"garbage that is not audio")  # corrupt
    sf.write(train[2], np.zeros((0,), np.float32), 16000)  # valid header, 0 frames
    return {"empty": train[0], "corrupt": train[1], "zero": train[2]}


def test_unusable_audio_fails_before_training(compose_cfg, tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    damaged = _damage(root)
    dm = _datamodule(compose_cfg, root)
    with pytest.raises(CorpusError, match=r"3 unusable audio files.*data.bad_audio=skip") as err:
        dm.setup("fit")
    for path in damaged.values():
        assert path.name in str(err.value)


def test_unusable_audio_skipped_and_counted(compose_cfg, tmp_path: Path, caplog) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    _damage(root)
    dm = _datamodule(compose_cfg, root, "data.bad_audio=skip")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.train_rows) == 36 - 3
    assert dm.scan_skipped["asvspoof2019_la:train"] == 3
    assert "skipping 3 unusable files" in caplog.text


def test_nan_audio_found_by_decode_scan(compose_cfg, tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    victim = sorted((root / "LA/ASVspoof2019_LA_dev/flac").glob("*.flac"))[0]
    samples = tone(0.6)
    samples[10] = np.nan
    # FLAC cannot store NaN, so the damaged file is a float WAV under the protocol's file name
    sf.write(victim, samples, 16000, format="WAV", subtype="FLOAT")
    dm = _datamodule(compose_cfg, root, "data.validate=header")
    dm.setup("fit")  # a header scan cannot see NaN samples
    dm = _datamodule(compose_cfg, root, "data.validate=decode")
    with pytest.raises(CorpusError, match=rf"{victim.name}.*NaN"):
        dm.setup("fit")


def test_other_rates_and_stereo_are_converted(compose_cfg, tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    victim = sorted((root / "LA/ASVspoof2019_LA_train/flac").glob("*.flac"))[0]
    left = tone(1.0, rate=22050)
    sf.write(victim, np.stack([left, left], axis=1), 22050, subtype="PCM_16")
    dm = _datamodule(compose_cfg, root, "data.max_len=null", "data.train_pad=none")
    dm.setup("fit")
    index = next(i for i, r in enumerate(dm.train_rows) if r.path == str(victim))
    row = dm.train_rows[index]
    assert (row.sample_rate, row.channels) == (22050, 2)
    item = dm.train_dataloader().dataset[index]
    assert item["wave"].shape == (16000,)


def test_training_on_a_weighted_mix_of_corpora(compose_cfg, tiny_la: Path, tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    lines = ["path,label,split"]
    for i in range(10):
        bona = i % 2 == 0
        sf.write(own / f"{i}.wav", tone(0.5, seed=100 + i, bonafide=bona), 16000)
        lines.append(f"{i}.wav,{'bonafide' if bona else 'spoof'},train")
    (own / "manifest.csv").write_text("\n".join(lines) + "\n")
    dm = _datamodule(
        compose_cfg,
        tiny_la,
        f"data.corpora.manifest_csv.root={own}",
        "data.train=[asvspoof2019_la:train,manifest_csv:train]",
        "data.train_weights=[1,3]",
    )
    dm.setup("fit")
    assert len(dm.train_rows) == 36 + 10
    weights = dm.sampling_weights()
    assert float(weights[36:].sum() / weights.sum()) == pytest.approx(0.75)
    # classes as drawn: 1/3 bona fide of a quarter, 1/2 of three quarters = 11/24 bona fide
    assert dm.class_weights == pytest.approx([1 / (2 * 13 / 24), 1 / (2 * 11 / 24)])
    drawn = torch.tensor([index for index, _ in dm.train_dataloader().sampler])
    assert 0.65 < float((drawn >= 36).float().mean()) < 0.85
    with pytest.raises(
        InstantiationException, match="one positive weight per data.train selection"
    ):
        _datamodule(compose_cfg, tiny_la, "data.train_weights=[1,2]")
