"""The manifest as a cached input, and training crops read by seeking."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_SIZES, tone, write_la_corpus

from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.dataset import SpoofDataset
from deepfake_detect.data.manifest import CorpusError, Utterance
from deepfake_detect.data.manifest_cache import load_selection

CONFIG = {"_target_": "deepfake_detect.data.corpora.asvspoof2019.ASVspoof2019", "track": "LA"}


def select(root: Path, cache: Path, scan: str = "header"):
    return load_selection(ASVspoof2019(root), {**CONFIG, "root": str(root)}, "eval", cache, scan)


def test_manifest_is_built_once_then_read_until_the_protocol_changes(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    cache = tmp_path / "cache"
    first = select(root, cache)
    assert not first.cached and len(first.rows) == 24 and len(list(cache.glob("*.tsv"))) == 1
    assert all(r.num_frames and r.sample_rate == 16000 and r.channels == 1 for r in first.rows)
    again = select(root, cache)
    assert again.cached and again.rows == first.rows and again.report == first.report
    # a decode scan serves a header request; a header scan does not serve a decode request
    decoded = select(root, cache, "decode")
    assert not decoded.cached and select(root, cache, "header").scan == "decode"

    protocol = root / "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
    lines = protocol.read_text().splitlines()
    protocol.write_text("\n".join(lines[:-1]) + "\n")
    stat = protocol.stat()
    os.utime(protocol, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = select(root, cache)
    assert not changed.cached and len(changed.rows) == 23


def test_unusable_files_are_cached_and_the_policy_applies_on_every_read(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    victim = sorted((root / "LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[0]
    victim.write_bytes(b"")
    for _ in range(2):
        manifest = select(root, tmp_path / "cache")
        assert [path for path, _ in manifest.bad] == [str(victim)]


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    cache = tmp_path / "cache"
    select(root, cache)
    for entry in cache.glob("*.json"):
        entry.write_text("{not json")
    rebuilt = select(root, cache)
    assert not rebuilt.cached and len(rebuilt.rows) == 24


def test_missing_corpus_still_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        select(tmp_path / "nowhere", tmp_path / "cache")


def long_file(tmp_path: Path, rate: int = 16000, seconds: float = 6.0) -> Utterance:
    path = tmp_path / f"long_{rate}.flac"
    sf.write(path, tone(seconds, rate=rate, seed=3), rate, subtype="PCM_16")
    info = sf.info(path)
    return Utterance(
        "u", str(path), "bonafide", num_frames=info.frames, sample_rate=rate, channels=1
    )


def test_training_crop_is_read_by_seeking_and_equals_the_decoded_window(tmp_path: Path) -> None:
    row = long_file(tmp_path)
    whole = torch.from_numpy(sf.read(row.path, dtype="float32")[0])
    dataset = SpoofDataset([row], 16000, max_len=16000, random_crop=True, pad="repeat")
    starts = set()
    for seed in range(6):
        crop = dataset[(0, seed)]["wave"]
        assert crop.shape == (16000,)
        start = int(np.argmin([(whole[s : s + 16000] - crop).abs().sum() for s in range(0, 80001)]))
        assert torch.equal(crop, whole[start : start + 16000])
        starts.add(start)
        assert torch.equal(dataset[(0, seed)]["wave"], crop)  # the item seed decides the crop
    assert len(starts) == 6


def test_crops_of_other_rates_are_resampled_to_the_crop_length(tmp_path: Path) -> None:
    row = long_file(tmp_path, rate=22050)
    dataset = SpoofDataset([row], 16000, max_len=16000, random_crop=True, pad="repeat")
    crop = dataset[(0, 1)]["wave"]
    assert crop.shape == (16000,) and torch.isfinite(crop).all() and crop.abs().max() > 0.01
    evaluation = SpoofDataset([row], 16000, max_len=None)[0]["wave"]
    assert evaluation.shape == (96000,)  # the whole file, resampled
