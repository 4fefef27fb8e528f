"""The frozen-encoder feature cache: hits and misses, equality with the encoder, invalidation,
damaged entries, concurrent writers, when it must stay off, reproducible frame crops, a real
training run with it, and the ``cache`` subcommand."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_la_overrides
from hydra.utils import instantiate

from deepfake_detect.augment import RawBoost
from deepfake_detect.cli import main as cli_main
from deepfake_detect.data.audio import load_mono
from deepfake_detect.data.feature_cache import (
    HEADER_SIZE,
    TEMP_MAX_AGE_S,
    CachedFeatureDataset,
    CorruptEntry,
    FeatureCache,
    cache_parts,
    fill,
    read_entry,
    write_entry,
)
from deepfake_detect.data.preprocessing import Preprocessing
from deepfake_detect.models.scorer import SpoofScorer

# the tiny corpus's clips are 0.5-1.2 s: a 0.25 s training crop makes frame crops real crops
CROP = 4000


def _parts(tmp_path: Path, tiny_la: Path, *overrides: str) -> tuple[Any, Any, Path]:
    """The tiny Wav2Vec2 (frozen) and a data module set up for fitting, with a fake trainer
    (one process) so its loaders decide on and fill the cache as under Lightning."""
    cfg = compose_config(
        tmp_path / "run",
        *tiny_la_overrides(tiny_la),
        "model.freeze=all",
        f"data.max_len={CROP}",
        "data.feature_cache.enabled=true",
        f"data.feature_cache.dir={tmp_path / 'features'}",
        "data.cache_dir=null",
        *overrides,
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    model.set_preprocessing(datamodule.preprocessing)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.trainer = SimpleNamespace(lightning_module=model, world_size=1, global_rank=0)
    return model, datamodule, tmp_path / "features"


class EncoderCalls:
    """Counts the encoder's forward passes."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.count = 0
        encoder.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.count += 1


def _cache_of(model: Any, datamodule: Any, root: Path, dtype: str = "float16") -> FeatureCache:
    spec = model.feature_cache_spec()
    parts = cache_parts(spec.key, datamodule.preprocessing, model.scorer.min_len)
    return FeatureCache(root, parts, spec.num_states, spec.hidden_size, dtype).open()


def test_second_run_encodes_nothing(tmp_path: Path, tiny_la: Path) -> None:
    model, datamodule, root = _parts(tmp_path, tiny_la)
    calls = EncoderCalls(model.net.encoder)
    train = datamodule.train_dataloader()
    rows = len({r.path for r in [*datamodule.train_rows, *datamodule.val_rows]})
    assert datamodule.feature_cache_stats["computed"] == rows == 54
    assert datamodule.feature_cache_stats["hits"] == 0
    assert calls.count > 0
    batch = next(iter(train))
    assert "states" in batch and "wave" not in batch
    frames = model.net.feature_cache_spec().frames(CROP)
    assert batch["states"].shape == (8, 1, frames, 32) and bool(batch["frame_mask"].all())
    val = next(iter(datamodule.val_dataloader()))
    assert val["states"].shape[:2] == (8, 1) and not bool(val["frame_mask"].all())

    # a new run (a new data module): every entry is a hit, the encoder never runs
    model2, datamodule2, _ = _parts(tmp_path, tiny_la)
    model2.load_state_dict(model.state_dict())
    assert model2.scorer.min_len  # the net's minimum input is probed once, through the encoder
    calls2 = EncoderCalls(model2.net.encoder)
    datamodule2.train_dataloader()
    datamodule2.val_dataloader()
    assert datamodule2.feature_cache_stats["hits"] == rows
    assert datamodule2.feature_cache_stats["computed"] == 0
    assert calls2.count == 0


@pytest.mark.parametrize(
    ("layer", "norm"), [(-1, "layer"), (1, "layer"), ("weighted", "layer"), (-1, "group")]
)
def test_cached_states_are_the_encoder_output(
    tmp_path: Path, tiny_la: Path, layer: Any, norm: str
) -> None:
    """Filled in padded batches of 4, each entry is the utterance encoded alone (group norm:
    the wav2vec2-base feature encoder, which takes no padding mask)."""
    model, datamodule, root = _parts(
        tmp_path, tiny_la, f"model.net.layer={layer}", f"model.net.config.feat_extract_norm={norm}"
    )
    model.eval()
    cache = _cache_of(model, datamodule, root, "float32")
    rows = datamodule.val_rows[:5]
    stats = fill(cache, rows, datamodule._eval_dataset(rows), model.encode_for_cache, 4)
    assert stats.computed == 5
    states_per_layer = 3 if layer == "weighted" else 1  # the tiny encoder: 2 layers + input
    for row in rows:
        wave = load_mono(row.path, 16000)[None]
        prepared, lengths = model.scorer.prepare(wave, torch.tensor([wave.shape[1]]))
        states, _ = model.net.hidden_states(prepared, lengths, all_layers=True)
        expected = torch.stack(states, dim=0) if layer == "weighted" else states[layer][None]
        entry = cache.read(row.path)
        assert entry is not None and entry.num_samples == wave.shape[1]
        assert entry.states.shape == (states_per_layer, expected.shape[2], 32)
        assert np.allclose(entry.states, expected[:, 0].numpy(), atol=1e-5)
        # the head on cached states gives the waveform path's embedding
        cached = torch.from_numpy(np.array(entry.states))[None]
        mask = torch.ones(1, cached.shape[2], dtype=torch.bool)
        with torch.no_grad():
            assert torch.allclose(
                model.net.embed_cached(cached, mask), model.net.embed(prepared, lengths), atol=1e-5
            )


def test_key_changes_with_encoder_layer_and_preprocessing(tmp_path: Path, tiny_la: Path) -> None:
    model, datamodule, root = _parts(tmp_path, tiny_la)
    base = _cache_of(model, datamodule, root).key
    assert _cache_of(model, datamodule, root).key == base  # stable
    assert _cache_of(model, datamodule, root, "float32").key != base
    other_layer, dm2, _ = _parts(tmp_path, tiny_la, "model.net.layer=1")
    other_layer.load_state_dict(model.state_dict())
    assert _cache_of(other_layer, datamodule, root).key != base
    for change in (
        {"normalize": "peak"},
        {"sample_rate": 8000},
        {"trim_silence": "edges"},
        {"eval_max_len": 8000},
    ):
        preprocessing = Preprocessing(**{**datamodule.preprocessing.to_dict(), **change})
        spec = model.feature_cache_spec()
        parts = cache_parts(spec.key, preprocessing, model.scorer.min_len)
        assert FeatureCache(root, parts, 1, 32).key != base, change
    with torch.no_grad():
        model.net.encoder.encoder.layers[0].attention.k_proj.weight[0, 0] += 1e-3
    assert _cache_of(model, datamodule, root).key != base
    # a fine-tuned encoder is not cached at all
    model.net.set_freeze("feature_encoder")
    assert model.feature_cache_spec() is None


def test_corrupt_entries_and_leftover_temp_files(
    tmp_path: Path, tiny_la: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, datamodule, root = _parts(tmp_path, tiny_la)
    cache = _cache_of(model, datamodule, root)
    rows = datamodule.val_rows[:4]
    reader = datamodule._eval_dataset(rows)
    assert fill(cache, rows, reader, model.encode_for_cache, 4).computed == 4
    truncated, bad_header = cache.path(rows[0].path), cache.path(rows[1].path)
    good = read_entry(truncated, 1, 32, "float16").states.copy()
    with open(truncated, "r+b") as handle:  # a half-written final file
        handle.truncate(HEADER_SIZE + 100)
    bad_header.write_bytes(b"garbage" + bad_header.read_bytes()[7:])
    with pytest.raises(CorruptEntry, match="bytes, expected"):
        read_entry(truncated, 1, 32, "float16")
    with pytest.raises(CorruptEntry, match="bad header"):
        read_entry(bad_header, 1, 32, "float16")
    # a killed writer's leftover (old) and a live writer's temp file (fresh)
    stale = truncated.with_name(truncated.name + ".tmp-999-dead")
    live = truncated.with_name(truncated.name + ".tmp-998-live")
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    old = time.time() - TEMP_MAX_AGE_S - 60
    os.utime(stale, (old, old))

    caplog.set_level(logging.INFO)
    cache.open()
    assert not stale.exists() and live.exists()
    stats = fill(cache, rows, reader, model.encode_for_cache, 4)
    assert (stats.hits, stats.corrupt, stats.computed) == (2, 2, 2)
    assert "corrupt entry" in caplog.text
    assert np.array_equal(read_entry(truncated, 1, 32, "float16").states, good)
    assert read_entry(bad_header, 1, 32, "float16").states.shape[1] > 0


def test_concurrent_writers_of_one_entry(tmp_path: Path) -> None:
    """Two writers racing on one entry (two sweep trials on one node) while a reader reads:
    the reader sees a whole entry or none, never a torn one; no temp file is left behind."""
    path = tmp_path / "ab" / "entry.fc"
    arrays = [np.full((2, 50, 16), value, dtype=np.float32) for value in (1.0, 2.0)]
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(array: np.ndarray) -> None:
        try:
            for _ in range(200):
                write_entry(path, array, 8000, False, "float32")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        seen = 0
        while not done.is_set() or seen == 0:
            try:
                states = np.array(read_entry(path, 2, 16, "float32").states)
            except FileNotFoundError:
                continue
            except BaseException as exc:
                errors.append(exc)
                return
            if states.min() != states.max() or states.flat[0] not in (1.0, 2.0):
                errors.append(AssertionError(f"torn entry: {states.min()}..{states.max()}"))
                return
            seen += 1

    threads = [threading.Thread(target=writer, args=(a,)) for a in arrays]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert not errors, errors[0]
    assert [p.name for p in path.parent.iterdir()] == ["entry.fc"]


def test_cache_stays_off_with_a_waveform_augmentation(
    tmp_path: Path, tiny_la: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, datamodule, root = _parts(tmp_path, tiny_la)
    datamodule.transforms.append(RawBoost(algo=3))
    caplog.set_level(logging.INFO)
    batch = next(iter(datamodule.train_dataloader()))
    assert "wave" in batch and "states" not in batch
    assert "feature cache off: a waveform augmentation is active (RawBoost)" in caplog.text
    assert not root.exists() or not any(root.rglob("*.fc"))


def test_cache_stays_off_for_a_fine_tuned_encoder(
    tmp_path: Path, tiny_la: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, datamodule, _ = _parts(tmp_path, tiny_la, "model.freeze=feature_encoder")
    caplog.set_level(logging.INFO)
    assert "wave" in next(iter(datamodule.train_dataloader()))
    assert "feature cache off: Wav2Vec2Classifier has no frozen encoder" in caplog.text


def test_frame_crops_are_reproducible_from_the_item_seed(tmp_path: Path, tiny_la: Path) -> None:
    model, datamodule, root = _parts(tmp_path, tiny_la)
    datamodule.train_dataloader()  # fills the cache
    dataset = datamodule.train_dataloader().dataset
    assert isinstance(dataset, CachedFeatureDataset)
    crop = model.net.feature_cache_spec().frames(CROP)
    assert dataset.crop_frames == crop
    row = max(range(len(dataset.rows)), key=lambda i: dataset.rows[i].duration or 0)
    full = np.array(datamodule.feature_cache.read(dataset.rows[row].path).states)
    assert full.shape[1] > crop + 10
    a, b = dataset[(row, 1234)], dataset[(row, 1234)]
    assert torch.equal(a["states"], b["states"]) and a["states"].shape[1] == crop
    starts = set()
    for seed in range(20):
        window = dataset[(row, seed)]["states"].numpy()
        # frame-aligned: the window is exactly frames start..start+crop of the stored states
        matches = [
            s
            for s in range(full.shape[1] - crop + 1)
            if np.array_equal(full[:, s : s + crop], window)
        ]
        assert matches, "a crop is a run of whole stored frames"
        starts.add(matches[0])
    assert len(starts) > 5  # the seeds move the window
    # validation items are whole utterances
    val = CachedFeatureDataset(dataset.rows, datamodule.feature_cache)
    assert val[row]["states"].shape[1] == full.shape[1]


def test_train_with_the_cache_writes_a_waveform_checkpoint(
    compose_cfg: Any, tiny_la: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from deepfake_detect.evaluation.scorefile import read_score_file
    from deepfake_detect.pipeline import train

    cfg = compose_cfg(
        *tiny_la_overrides(tiny_la),
        "model.freeze=all",
        "augment=specaugment",
        "data.feature_cache.enabled=true",
        f"data.feature_cache.dir={tmp_path / 'features'}",
        "data.cache_dir=null",
    )
    caplog.set_level(logging.INFO)
    metrics = train(cfg)
    assert "feature cache on:" in caplog.text and "54 encoded" in caplog.text
    assert 0.0 <= metrics["val/eer"] <= 1.0 and 0.0 <= metrics["test/eer"] <= 1.0
    # a normal checkpoint: it rebuilds a scorer that scores waveforms, and the test set was
    # scored through the waveform path (its score file is what that scorer gives)
    scorer = SpoofScorer.from_checkpoint(metrics["best_checkpoint"])
    rows = read_score_file(Path(cfg.paths.output_dir) / "scores" / "asvspoof2019_la.tsv")
    flac = {p.stem: p for p in tiny_la.rglob("*.flac")}
    for row in rows[:4]:
        wave = load_mono(flac[row["utt_id"]], 16000)[None]
        with torch.no_grad():
            score = float(scorer(wave)[0])
        assert score == pytest.approx(float(row["score"]), abs=1e-4)


def test_cli_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "features"
    keys = []
    for layer in ("last", 3):
        parts = {
            "encoder": {"encoder": "ab" * 32, "architecture": {"hidden_size": 16}, "states": layer},
            "preprocessing": {"sample_rate": 16000, "normalize": "zscore", "trim_silence": "none"},
        }
        cache = FeatureCache(root, parts, 1, 16).open()
        for i in range(3):
            audio = tmp_path / f"{layer}-{i}.wav"
            audio.write_bytes(b"x" * (i + 1))
            cache.write(str(audio), np.zeros((1, 10, 16)), 1000, False)
        keys.append(cache.key)
    old = time.time() - 10 * 86400
    os.utime(root / keys[0] / "last_used", (old, old))

    assert cli_main(["cache", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert keys[0] in out and keys[1] in out and "2 keys, 6 entries" in out
    assert "abababababab" in out and "16000 Hz, zscore" in out

    assert cli_main(["cache", "clear", str(root), "--older-than", "5"]) == 0
    assert "removed 1 keys" in capsys.readouterr().out
    assert not (root / keys[0]).exists() and (root / keys[1]).exists()
    assert cli_main(["cache", "clear", str(root), "--key", "nomatch"]) == 0
    assert (root / keys[1]).exists()
    assert cli_main(["cache", "clear", str(root), "--key", keys[1][:6]]) == 0
    assert not (root / keys[1]).exists()
    assert cli_main(["cache", "info", str(root)]) == 0
    assert "no feature cache" in capsys.readouterr().out
