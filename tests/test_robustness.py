"""Test-time robustness (eval.py robustness=...): the conditions built from config with
key-named errors, deterministic per-item transforms, the files (one row per test set and
condition, clean first and equal to the normal test), the plot, and conditions that change the
scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import (
    TINY_SIZES,
    compose_config,
    la_data_overrides,
    tiny_la_overrides,
    tone,
    write_la_corpus,
)
from hydra.utils import instantiate
from omegaconf import open_dict

from deepfake_detect.augment import ColoredNoise, Gain
from deepfake_detect.data.dataset import SpoofDataset
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.errors import ConfigError
from deepfake_detect.evaluation.robustness import (
    CLEAN,
    ROBUSTNESS_CSV,
    ROBUSTNESS_MD,
    ROBUSTNESS_PNG,
    RobustnessPlan,
    bind_condition,
    build_condition,
    build_plan,
    score_conditions,
)
from deepfake_detect.models.module import load_detector
from deepfake_detect.pipeline import _eval_datamodule, build_results, evaluate, train

SETS = ["asvspoof2019_la_eval", "asvspoof2019_la_dev"]
CONDITIONS = ["white_10", "white_0", "babble_0", "mulaw"]
"""A few conditions of ``robustness=[noise,codecs]``, to keep the runs short."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny Wav2Vec2 after one epoch on the tiny corpus (its last checkpoint)."""
    root = write_la_corpus(tmp_path_factory.mktemp("corpus"), TINY_SIZES)
    out = tmp_path_factory.mktemp("train") / "run"
    train(compose_config(out, *tiny_la_overrides(root), "trainer.max_epochs=1", "test=false"))
    return {"root": root, "ckpt": out / "checkpoints" / "last.ckpt"}


def eval_config(trained: dict, out: Path, *overrides: str):
    cfg = compose_config(
        out,
        *la_data_overrides(trained["root"]),
        f"data.test=[{','.join(s.replace('asvspoof2019_la_', 'asvspoof2019_la:') for s in SETS)}]",
        f"ckpt_path={trained['ckpt']}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "robustness=[noise,codecs]",
        *overrides,
        config_name="eval",
    )
    with open_dict(cfg):
        kept = {k: cfg.robustness.conditions[k] for k in CONDITIONS}
        cfg.robustness.conditions = kept
    return cfg


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(trained: dict, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The same robustness evaluation twice, in two run directories."""
    out = []
    for k in range(2):
        run = tmp_path_factory.mktemp("eval") / f"run{k}"
        out.append({"run": run, "metrics": evaluate(eval_config(trained, run))})
    return out


# -- config -----------------------------------------------------------------------------------
def test_the_standard_config_composes_every_condition(tmp_path: Path) -> None:
    off = compose_config(tmp_path / "off", "ckpt_path=x.ckpt", config_name="eval")
    assert off.get("robustness") is None and build_plan(off) is None
    cfg = compose_config(
        tmp_path / "r", "ckpt_path=x.ckpt", "robustness=standard", config_name="eval"
    )
    plan = build_plan(cfg)
    assert plan is not None and plan.seed == 0
    names = [c.name for c in plan.conditions]
    noise = [f"{family}_{snr}" for family in ("white", "babble") for snr in (20, 10, 5, 0)]
    codecs = ["mp3", "vorbis", "opus", "gsm", "mulaw", "alaw", "telephone"]
    assert names == [*noise, "reverb", *codecs]
    by_name = {c.name: c for c in plan.conditions}
    assert (by_name["white_5"].family, by_name["white_5"].snr) == ("white", 5.0)
    assert (by_name["babble_0"].family, by_name["babble_0"].snr) == ("babble", 0.0)
    assert by_name["mp3"].snr is None and by_name["mp3"].family is None
    assert all(c.transform is not None and c.transform.p == 1.0 for c in plan.conditions)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("robustness.conditions.white_5.snr_db=abc", "robustness.conditions.white_5.snr_db"),
        (
            "robustness.conditions.white_5._target_=deepfake_detect.augment.Nope",
            "robustness.conditions.white_5._target_",
        ),
        ("robustness.conditions.white_5.p=0.5", "robustness.conditions.white_5.p"),
        ("+robustness.conditions.white_5.snr=loud", "robustness.conditions.white_5.snr"),
        ("robustness.conditions.mp3.quality=2", "robustness.conditions.mp3.quality"),
        ("+robustness.conditions.clean.snr_db=3", "robustness.conditions.clean"),
        ("robustness.seed=-1", "robustness.seed"),
        ("robustness.conditions.white_5.snr_db=???", "robustness.conditions.white_5.snr_db"),
    ],
)
def test_a_bad_condition_is_refused_naming_its_key_before_anything_runs(
    tmp_path: Path, override: str, key: str
) -> None:
    out = tmp_path / "run"
    cfg = compose_config(
        out, "ckpt_path=missing.ckpt", "robustness=[noise,codecs]", override, config_name="eval"
    )
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')}: "):
        evaluate(cfg)  # the checkpoint does not exist: refused before it is read
    assert not out.exists()


def test_a_feature_masking_is_not_a_condition() -> None:
    entry = {"_target_": "deepfake_detect.augment.SpecAugment"}
    with pytest.raises(ConfigError, match=r"^robustness\.conditions\.spec: .*waveform"):
        build_condition("spec", entry)


def test_babble_talkers_come_from_the_bona_fide_speech_of_the_set_scored() -> None:
    def rows(prefix: str, labels: str) -> list[Utterance]:
        kinds = {"b": "bonafide", "s": "spoof"}
        return [
            Utterance(f"{prefix}{i}", f"{prefix}{i}.wav", kinds[k]) for i, k in enumerate(labels)
        ]

    babble = build_condition(
        "babble_5", {"_target_": "deepfake_detect.augment.Babble", "snr_db": 5}
    )
    sets = {"a": rows("a", "bsb"), "b": rows("b", "sbs"), "fake_only": rows("f", "ss")}
    bound = bind_condition(babble, sets, 16000)
    sources = {name: sorted(str(p) for p in t[0].sources) for name, t in bound.items()}
    assert sources == {
        "a": ["a0.wav", "a2.wav"],
        "b": ["b1.wav"],
        "fake_only": ["a0.wav", "a2.wav", "b1.wav"],  # no bona fide of its own: every set's
    }
    assert babble.transform.sources == []  # the configured transform is left as built
    with pytest.raises(ConfigError, match=r"^robustness\.conditions\.babble_5: "):
        bind_condition(babble, {"fake_only": sets["fake_only"]}, 16000)


# -- deterministic conditioned audio ----------------------------------------------------------
def test_eval_items_under_a_transform_seed_are_reproducible(tmp_path: Path) -> None:
    rows = []
    for i in range(2):
        path = tmp_path / f"{i}.wav"
        sf.write(path, tone(0.5, seed=i), 16000)
        # frame counts known: the window is read by seeking, as the scanned corpora are
        rows.append(Utterance(f"u{i}", str(path), "bonafide", num_frames=8000, sample_rate=16000))
    noise = [ColoredNoise(snr_db=0, colors=["white"])]

    def dataset(seed: int | None, transforms=noise) -> SpoofDataset:
        return SpoofDataset(rows, 16000, max_len=4000, transforms=transforms, transform_seed=seed)

    clean = dataset(None, ())[0]["wave"]
    first, again = dataset(7)[0]["wave"], dataset(7)[0]["wave"]
    assert torch.equal(first, again) and first.shape == clean.shape == (4000,)
    assert not torch.equal(first, clean)
    assert not torch.equal(first, dataset(8)[0]["wave"])  # another seed, another draw
    noise_0 = first - clean
    noise_1 = dataset(7)[1]["wave"] - dataset(None, ())[1]["wave"]
    assert not torch.allclose(noise_0 / noise_0.std(), noise_1 / noise_1.std())  # per item
    # an evaluation item is its leading window, transformed or not (no random crop)
    louder = dataset(7, [Gain(gain_db=20 * np.log10(2))])[0]["wave"]
    torch.testing.assert_close(louder, 2 * clean)


# -- the run ----------------------------------------------------------------------------------
def test_robustness_files_hold_every_set_and_condition_clean_first(runs: list[dict]) -> None:
    run, metrics = runs[0]["run"], runs[0]["metrics"]
    rows = read_rows(run / ROBUSTNESS_CSV)
    expected = [(c, s) for c in [CLEAN, *CONDITIONS] for s in SETS]
    assert [(r["condition"], r["test_set"]) for r in rows] == expected
    for row in rows:
        eer = float(row["eer"])
        assert 0.0 <= eer <= 1.0
        assert metrics[f"robustness/{row['condition']}/{row['test_set']}/eer"] == eer
        if row["condition"] == CLEAN:
            assert eer == metrics[f"test/{row['test_set']}/eer"]
    white = {r["condition"]: r for r in rows if r["test_set"] == SETS[0]}
    assert (white["white_0"]["family"], white["white_0"]["snr_db"]) == ("white", "0.0")
    assert white["mulaw"]["snr_db"] == "" and white[CLEAN]["family"] == ""
    assert int(white["babble_0"]["n_bonafide"]) == TINY_SIZES["eval"]["-"]

    saved = json.loads((run / "metrics.json").read_text())["metrics"]
    assert (
        saved[f"robustness/white_0/{SETS[1]}/eer"] == metrics[f"robustness/white_0/{SETS[1]}/eer"]
    )
    report = (run / ROBUSTNESS_MD).read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0] == f"| condition | family | SNR dB | {' | '.join(SETS)} |"
    assert table[1].startswith("| clean | – | – | ")
    assert f"![EER against SNR]({ROBUSTNESS_PNG})" in report
    png = (run / ROBUSTNESS_PNG).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert (run / "report.md").is_file()  # the usual report is still there


def test_a_rerun_writes_the_same_robustness_files(runs: list[dict]) -> None:
    first, second = (r["run"] / ROBUSTNESS_CSV for r in runs)
    assert first.read_text() == second.read_text()


def test_a_condition_changes_the_scores_and_the_skip_counts_stay(trained: dict, tmp_path) -> None:
    """Scored directly: white noise at 0 dB moves every score; the same condition and seed give
    the same scores; the normal test's skipped-file counts are not touched."""
    cfg = eval_config(trained, tmp_path / "run")
    model = load_detector(cfg.ckpt_path)
    datamodule = _eval_datamodule(cfg, model.preprocessing)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    clean = build_results(model.test_outputs, datamodule, {})
    model.skipped = {"test": 3}
    plan = build_plan(cfg)
    assert plan is not None
    white_0 = next(c for c in plan.conditions if c.name == "white_0")
    noisy = RobustnessPlan([white_0], seed=0)
    results = score_conditions(noisy, model, datamodule, trainer, {})["white_0"]
    again = score_conditions(noisy, model, datamodule, trainer, {})["white_0"]
    for before, after, rerun in zip(clean, results, again, strict=True):
        assert [r.utt_id for r in before.rows] == [r.utt_id for r in after.rows]
        assert not np.isclose(before.scores, after.scores, atol=1e-4).any()
        np.testing.assert_array_equal(after.scores, rerun.scores)
        assert after.provenance["robustness"] == {"condition": "white_0", "seed": 0}
    assert model.skipped == {"test": 3} and datamodule.test_transforms == {}
