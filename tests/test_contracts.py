"""The core contracts: preprocessing stored with the model and enforced at evaluation, the scorer
outside Lightning, one result record (float64 files, provenance), safe checkpoint loading, one
run per output directory, and the bad inputs found by trying them as a user would."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import (
    ROOT,
    TINY_SIZES,
    compose_config,
    la_data_overrides,
    tiny_la_overrides,
    tone,
    write_la_corpus,
)

from deepfake_detect.data.preprocessing import Preprocessing, PreprocessingMismatch
from deepfake_detect.evaluation.scorefile import read_score_file
from deepfake_detect.metrics import compute_eer
from deepfake_detect.models.checkpoint import CheckpointError
from deepfake_detect.models.module import load_detector
from deepfake_detect.models.scorer import SpoofScorer
from deepfake_detect.pipeline import OutputDirError, evaluate, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny Wav2Vec2 trained on a tiny corpus (with peak normalisation, so the checkpoint's
    contract differs from the data config defaults)."""
    root = write_la_corpus(tmp_path_factory.mktemp("corpus"), TINY_SIZES)
    out = tmp_path_factory.mktemp("train") / "run"
    cfg = compose_config(out, *tiny_la_overrides(root), "data.normalize=peak")
    metrics = train(cfg)
    return {"root": root, "run": out, "metrics": metrics, "ckpt": metrics["best_checkpoint"]}


def eval_config(trained: dict, out: Path, *overrides: str):
    return compose_config(
        out,
        *la_data_overrides(trained["root"]),
        f"ckpt_path={trained['ckpt']}",
        *overrides,
        config_name="eval",
    )


# -- preprocessing stored with the model -------------------------------------------------------
def test_checkpoint_stores_the_preprocessing(trained: dict) -> None:
    saved = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    stored = saved["hyper_parameters"]["preprocessing"]
    assert stored["normalize"] == "peak" and stored["sample_rate"] == 16000
    assert stored["max_len"] == 8000 and stored["max_eval_len"] == 480000
    assert Preprocessing.from_dict(stored) == load_detector(trained["ckpt"]).preprocessing


def test_eval_uses_the_checkpoints_preprocessing(trained: dict, tmp_path: Path) -> None:
    metrics = evaluate(eval_config(trained, tmp_path / "a"))  # data config: no normalize set
    assert metrics["test/eer"] == trained["metrics"]["test/eer"]
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["provenance"]["preprocessing"]["normalize"] == "peak"
    assert saved["provenance"]["checkpoint"] == trained["ckpt"]


def test_eval_refuses_contradicting_preprocessing(trained: dict, tmp_path: Path) -> None:
    for setting in ("data.normalize=zscore", "data.sample_rate=8000"):
        with pytest.raises(PreprocessingMismatch, match="override_preprocessing=true"):
            evaluate(eval_config(trained, tmp_path / "b", setting))
    assert not (tmp_path / "b").exists()  # refused before anything was written
    evaluate(
        eval_config(trained, tmp_path / "c", "data.normalize=none", "override_preprocessing=true")
    )
    forced = read_score_file(tmp_path / "c" / "scores" / "asvspoof2019_la.tsv")
    as_trained = read_score_file(Path(trained["run"]) / "scores" / "asvspoof2019_la.tsv")
    assert {r["utt_id"] for r in forced} == {r["utt_id"] for r in as_trained}
    assert {r["score"] for r in forced}.isdisjoint({r["score"] for r in as_trained})
    saved = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert saved["provenance"]["preprocessing"]["normalize"] == "none"


def test_eval_refuses_a_model_override(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="takes the model from the checkpoint"):
        evaluate(eval_config(trained, tmp_path / "d", "+model=lcnn"))


# -- the scorer without Lightning ---------------------------------------------------------------
def test_scorer_loads_without_lightning_and_scores_like_the_module(trained: dict) -> None:
    code = (
        "import sys, torch\n"
        "from deepfake_detect.models.scorer import SpoofScorer\n"
        f"s = SpoofScorer.from_checkpoint({trained['ckpt']!r})\n"
        "print(s(torch.ones(1, 4000) * torch.linspace(-1, 1, 4000)).item())\n"
        "assert 'lightning' not in sys.modules and 'lightning.pytorch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    scorer = SpoofScorer.from_checkpoint(trained["ckpt"])
    module = load_detector(trained["ckpt"])
    wave = torch.ones(1, 4000) * torch.linspace(-1, 1, 4000)
    with torch.inference_mode():
        assert float(out.stdout) == pytest.approx(float(scorer(wave)), abs=1e-6)
        torch.testing.assert_close(scorer(wave), module.score(wave))
    assert scorer.preprocessing.normalize == "peak" and not scorer.training


# -- one result record --------------------------------------------------------------------------
def test_metrics_json_holds_float64_values_of_the_score_file(trained: dict) -> None:
    run = Path(trained["run"])
    saved = json.loads((run / "metrics.json").read_text())
    rows = read_score_file(run / "scores" / "asvspoof2019_la.tsv")
    scores = np.array([float(r["score"]) for r in rows])
    bona = np.array([r["label"] == "bonafide" for r in rows])
    eer = compute_eer(scores[bona], scores[~bona])[0]
    assert saved["metrics"]["test/eer"] == eer  # exact: float64 end to end
    assert saved["test_sets"]["asvspoof2019_la"]["metrics"]["eer"] == eer
    provenance = saved["test_sets"]["asvspoof2019_la"]["provenance"]
    assert len(provenance["config_hash"]) == 16 and provenance["git_revision"]
    assert saved["data"]["asvspoof2019_la:eval"]["rows"] == 24
    assert "| asvspoof2019_la:eval | 24 | 0 | 0 | 0 |" in (run / "report.md").read_text()


# -- checkpoints are read safely ----------------------------------------------------------------
class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused_even_when_torch_is_told_otherwise(
    trained: dict, tmp_path: Path
) -> None:
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"net": Payload()}}, bad)
    code = f"from deepfake_detect.models.module import load_detector\nload_detector({str(bad)!r})\n"
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode != 0 and not (tmp_path / "PWNED").exists()
    assert "is not a checkpoint this project wrote" in out.stderr
    assert "weights_only=False" not in out.stderr.splitlines()[-1]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "missing"])
def test_unusable_checkpoints_give_one_error_naming_the_file(
    trained: dict, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "x.ckpt"
    data = Path(trained["ckpt"]).read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(CheckpointError, match=str(path)):
        load_detector(path)
    with pytest.raises(CheckpointError, match=str(path)):
        SpoofScorer.from_checkpoint(path)


# -- one run per output directory ---------------------------------------------------------------
def test_a_second_run_in_the_same_directory_is_refused(trained: dict, tmp_path: Path) -> None:
    cfg = compose_config(Path(trained["run"]), *tiny_la_overrides(trained["root"]))
    with pytest.raises(OutputDirError, match="already holds another run"):
        train(cfg)
    with pytest.raises(OutputDirError, match="hydra.run.dir"):
        evaluate(eval_config(trained, Path(trained["run"])))


# -- bad inputs ---------------------------------------------------------------------------------
def test_silent_and_cancelling_files_are_scored_and_named(trained: dict, tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    eval_files = sorted((root / "LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))
    sf.write(eval_files[0], np.zeros(12000, np.float32), 16000, subtype="PCM_16")
    left = tone(0.8)
    sf.write(eval_files[1], np.stack([left, -left], axis=1), 16000, subtype="PCM_16")
    cfg = compose_config(
        tmp_path / "e",
        *la_data_overrides(root),
        f"ckpt_path={trained['ckpt']}",
        config_name="eval",
    )
    evaluate(cfg)
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    silent = saved["test_sets"]["asvspoof2019_la"]["flags"]["silent"]
    assert sorted(silent) == sorted(f.stem for f in eval_files[:2])
    report = (tmp_path / "e" / "report.md").read_text()
    assert "2 utterances silent" in report and eval_files[0].name in report
    rows = read_score_file(tmp_path / "e" / "scores" / "asvspoof2019_la.tsv")
    assert len(rows) == 24 and all(np.isfinite(float(r["score"])) for r in rows)


def test_huge_float_samples_score_like_the_normal_clip(trained: dict, tmp_path: Path) -> None:
    scorer = SpoofScorer.from_checkpoint(trained["ckpt"])
    clip = torch.from_numpy(tone(0.8))
    with torch.inference_mode():
        normal, huge = scorer(clip[None]), scorer((clip * 3e38 / clip.abs().max())[None])
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge, normal, atol=1e-4, rtol=1e-4)


def test_non_finite_loss_stops_naming_the_files_or_is_skipped(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    victim = sorted((root / "LA/ASVspoof2019_LA_train/flac").glob("*.flac"))[0]
    wav = victim.with_suffix(".wav")
    sf.write(wav, tone(0.8) * 3e38, 16000, subtype="FLOAT")
    wav.rename(victim)  # a float file under the .flac name soundfile reads by content
    base = [*tiny_la_overrides(root), "trainer.max_epochs=1", "data.normalize=none"]
    with pytest.raises(Exception, match=rf"non-finite loss.*{victim.name}.*bad_audio=skip"):
        train(compose_config(tmp_path / "r1", *base, "data.batch_size=36"))
    metrics = train(compose_config(tmp_path / "r2", *base, "data.bad_audio=skip"))
    saved = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert saved["skipped"]["train non-finite loss (batches skipped)"] == 1  # 1 epoch
    assert np.isfinite(metrics["test/eer"])


def test_truncated_eval_file_stops_before_training(tmp_path: Path) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES, seconds=(1.0, 1.5))
    victim = sorted((root / "LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])  # the header still promises every frame
    with pytest.raises(Exception, match=rf"{victim.name}.*truncated"):
        train(compose_config(tmp_path / "r", *tiny_la_overrides(root), "data.validate=header"))
    assert not (tmp_path / "r" / "checkpoints").exists()
    metrics = train(
        compose_config(
            tmp_path / "s", *tiny_la_overrides(root), "data.validate=header", "data.bad_audio=skip"
        )
    )
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["skipped"] == {"scan asvspoof2019_la:eval": 1}
    assert np.isfinite(metrics["test/eer"])


def test_rows_without_audio_are_counted_in_the_log_metrics_and_report(
    trained: dict, tmp_path: Path, caplog
) -> None:
    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    gone = sorted((root / "LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[2]
    gone.unlink()
    cfg = compose_config(
        tmp_path / "e",
        *la_data_overrides(root),
        "data.corpora.asvspoof2019_la.missing_audio=skip",
        f"ckpt_path={trained['ckpt']}",
        config_name="eval",
    )
    with caplog.at_level("WARNING"):
        evaluate(cfg)
    assert gone.name in caplog.text
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["skipped"] == {"missing_audio asvspoof2019_la:eval": 1}
    assert saved["data"]["asvspoof2019_la:eval"]["missing_examples"] == [str(gone)]
    report = (tmp_path / "e" / "report.md").read_text()
    assert "| asvspoof2019_la:eval | 23 | 1 | 0 | 0 |" in report
