"""End to end: compose the real configs, train, checkpoint, evaluate; entry points as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config, la_data_overrides, tiny_la_overrides
from omegaconf import open_dict

from deepfake_detect.evaluation.scorefile import read_score_file
from deepfake_detect.metrics import compute_eer
from deepfake_detect.pipeline import evaluate, train


def test_train_then_eval_reproduces_the_test_eer(compose_cfg, tiny_la: Path, tmp_path) -> None:
    cfg = compose_cfg(*tiny_la_overrides(tiny_la), "logger=wandb")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    best = Path(metrics["best_checkpoint"])
    assert best.is_file() and best.parent == run / "checkpoints"
    assert 0.0 <= metrics["test/eer"] <= 1.0
    assert metrics["test/eer"] == metrics["test/asvspoof2019_la/eer"]
    assert {"val/eer", "test/asvspoof2019_la/eer_A05", "train/loss_epoch"} <= set(metrics)

    # the score file is complete and its EER is the logged one
    rows = read_score_file(run / "scores" / "asvspoof2019_la.tsv")
    assert len(rows) == 24 and set(rows[0]) == {"utt_id", "score", "label", "attack"}
    scores = np.array([float(r["score"]) for r in rows])
    bona = np.array([r["label"] == "bonafide" for r in rows])
    assert compute_eer(scores[bona], scores[~bona])[0] == pytest.approx(metrics["test/eer"])
    a05 = np.array([r["attack"] == "A05" for r in rows])
    assert compute_eer(scores[bona], scores[a05])[0] == pytest.approx(
        metrics["test/asvspoof2019_la/eer_A05"]
    )
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"]["test/eer"] == pytest.approx(metrics["test/eer"])
    assert "| asvspoof2019_la |" in (run / "report.md").read_text()
    assert any((run / "wandb").glob("offline-run-*")), "W&B ran offline into the run directory"

    eval_cfg = compose_cfg(
        *la_data_overrides(tiny_la),
        f"ckpt_path={best}",
        config_name="eval",
    )
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval_run")
    eval_metrics = evaluate(eval_cfg)
    assert eval_metrics["test/eer"] == pytest.approx(metrics["test/eer"], abs=1e-9)
    eval_rows = read_score_file(tmp_path / "eval_run" / "scores" / "asvspoof2019_la.tsv")
    # eval batches differently (batch 32, not 8): padding is masked, so scores agree to rounding
    assert [r["utt_id"] for r in eval_rows] == [r["utt_id"] for r in rows]
    eval_scores = np.array([float(r["score"]) for r in eval_rows])
    assert np.allclose(eval_scores, scores, atol=1e-4)
    assert (tmp_path / "eval_run" / "report.md").is_file()


def test_class_weights_reach_the_loss(compose_cfg, tiny_la: Path) -> None:
    cfg = compose_cfg(*tiny_la_overrides(tiny_la), "trainer.max_epochs=1", "test=false")
    from hydra.utils import instantiate

    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=datamodule)
    assert model.class_weights.tolist() == pytest.approx([36 / 48, 36 / 24])


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_multirun_over_freeze_modes(tiny_la: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_la_overrides(tiny_la) if not o.startswith("trainer.max_epochs")]
    result = _run(
        [
            str(ROOT / "train.py"),
            "-m",
            "model.freeze=all,none",
            *overrides,
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/*/metrics.json"))
    assert len(jobs) == 2
    freezes = [
        (job.parent / ".hydra" / "overrides.yaml").read_text().split("model.freeze=")[1][:4]
        for job in jobs
    ]
    assert sorted(f.strip() for f in freezes) == ["all", "none"]


def _gather_worker(rank: int, world: int, port: int, scores: np.ndarray, labels, out) -> None:
    import torch.distributed as dist

    from deepfake_detect.metrics.collector import ScoreCollector

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    collector = ScoreCollector()
    # a distributed sampler's shards: interleaved, the last index repeated to even them out
    index = list(range(rank, len(scores), world))
    if rank == world - 1:
        index.append(index[-1])
    idx = torch.tensor(index)
    collector.update(idx, torch.tensor(scores)[idx], torch.tensor(labels)[idx])
    result = collector.compute()
    if rank == 0:
        out.put({k: v.tolist() for k, v in result.items()})
    dist.destroy_process_group()


def test_scores_are_gathered_across_processes_before_eer() -> None:
    import torch.multiprocessing as mp

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 41)
    scores = rng.normal(size=41) + labels
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + int(rng.integers(0, 1000))
    mp.spawn(_gather_worker, args=(2, port, scores, labels, queue), nprocs=2, join=True)
    got = queue.get(timeout=30)
    assert got["index"] == list(range(41))  # every utterance once, duplicates removed
    assert np.allclose(got["scores"], scores)
    full = compute_eer(scores[labels == 1], scores[labels == 0])[0]
    gathered = np.array(got["scores"])
    glabels = np.array(got["labels"])
    assert compute_eer(gathered[glabels == 1], gathered[glabels == 0])[0] == full


def test_damaged_file_found_mid_run_is_skipped_and_reported(compose_cfg, tmp_path: Path) -> None:
    import soundfile as sf
    from conftest import TINY_SIZES, tone, write_la_corpus

    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    victim = sorted((root / "LA/ASVspoof2019_LA_eval/flac").glob("*.flac"))[0]
    samples = tone(0.8)
    samples[5] = np.nan
    sf.write(victim, samples, 16000, format="WAV", subtype="FLOAT")  # header fine, samples not
    # the header scan does not decode the middle of the file: found mid-run, skipped, counted
    base = [*tiny_la_overrides(root), "trainer.max_epochs=1", "data.validate=header"]
    cfg = compose_cfg(*base, "data.bad_audio=skip", "data.cache_dir=null")
    metrics = train(cfg)
    report = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert report["skipped"] == {"test": 1}
    rows = read_score_file(Path(cfg.paths.output_dir) / "scores" / "asvspoof2019_la.tsv")
    assert len(rows) == 23 and victim.stem not in {r["utt_id"] for r in rows}
    assert 0 <= metrics["test/eer"] <= 1

    # the default scan (validate=auto) decodes evaluation selections: found before training
    cfg = compose_config(tmp_path / "run2", *tiny_la_overrides(root), "data.bad_audio=skip")
    train(cfg)
    report = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert report["skipped"] == {"scan asvspoof2019_la:eval": 1}
    assert report["data"]["asvspoof2019_la:eval"]["unusable_audio"] == 1

    cfg = compose_config(tmp_path / "run3", *tiny_la_overrides(root))  # bad_audio=fail
    with pytest.raises(Exception, match=rf"{victim.stem}.*NaN.*data.bad_audio=skip"):
        train(cfg)
    assert not (tmp_path / "run3" / "checkpoints").exists()  # stopped before training


def test_min_tdcf_reported_when_the_asv_scores_exist(compose_cfg, tmp_path: Path) -> None:
    from conftest import TINY_SIZES, write_la_corpus

    from deepfake_detect.metrics import compute_tdcf_legacy

    root = write_la_corpus(tmp_path / "c", TINY_SIZES)
    asv_dir = root / "LA" / "ASVspoof2019_LA_asv_scores"
    asv_dir.mkdir()
    rng = np.random.default_rng(0)
    lines = [f"bonafide target {s:.4f}" for s in rng.normal(3, 1, 40)]
    lines += [f"bonafide nontarget {s:.4f}" for s in rng.normal(-2, 1, 40)]
    lines += [f"A05 spoof {s:.4f}" for s in rng.normal(1, 1, 40)]
    (asv_dir / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt").write_text("\n".join(lines) + "\n")
    cfg = compose_cfg(*tiny_la_overrides(root), "trainer.max_epochs=1")
    metrics = train(cfg)
    rows = read_score_file(Path(cfg.paths.output_dir) / "scores" / "asvspoof2019_la.tsv")
    scores = np.array([float(r["score"]) for r in rows])
    bona = np.array([r["label"] == "bonafide" for r in rows])
    asv = np.array([float(line.split()[2]) for line in lines])
    expected = compute_tdcf_legacy(scores[bona], scores[~bona], asv[:40], asv[40:80], asv[80:])[0]
    assert metrics["test/min_tdcf"] == pytest.approx(expected, abs=1e-6)
    assert metrics["test/asvspoof2019_la/min_tdcf"] == pytest.approx(expected, abs=1e-6)


def test_last_checkpoint_follows_every_epoch(compose_cfg, tiny_la: Path) -> None:
    cfg = compose_cfg(*tiny_la_overrides(tiny_la), "trainer.max_epochs=3", "test=false")
    train(cfg)
    last = torch.load(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
        map_location="cpu",
        weights_only=True,
    )
    assert last["epoch"] == 2  # written after the final epoch, whatever val/eer did
    assert [p.name for p in (Path(cfg.paths.output_dir) / "checkpoints").iterdir()].count(
        "last.ckpt"
    ) == 1


def test_ddp_on_two_processes_gathers_all_scores(tiny_la: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_la_overrides(tiny_la) if not o.startswith("trainer=")]
    result = _run(
        [
            str(ROOT / "train.py"),
            *overrides,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.sync_batchnorm=false",
            f"paths.log_dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test EER:") == 1  # printed once, by rank 0
    (run,) = (tmp_path / "train" / "runs").iterdir()
    rows = read_score_file(run / "scores" / "asvspoof2019_la.tsv")
    assert len(rows) == 24  # both processes' halves, no duplicates
    scores = np.array([float(r["score"]) for r in rows])
    bona = np.array([r["label"] == "bonafide" for r in rows])
    logged = json.loads((run / "metrics.json").read_text())["metrics"]["test/eer"]
    assert compute_eer(scores[bona], scores[~bona])[0] == pytest.approx(logged, abs=1e-6)


def test_demo_experiment_runs_as_a_script(tmp_path: Path) -> None:
    """`python train.py experiment=demo trainer.max_epochs=1`, generating the demo corpus."""
    env_cache = tmp_path / "cache"
    result = _run(
        [
            str(ROOT / "train.py"),
            "experiment=demo",
            "trainer.max_epochs=1",
            f"paths.cache_dir={env_cache}",
            f"paths.log_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test EER:" in result.stdout
    assert (env_cache / "demo_la" / "LA" / "ASVspoof2019_LA_cm_protocols").is_dir()
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "scores" / "demo.tsv").is_file()


@pytest.mark.slow
def test_default_demo_learns(tmp_path: Path) -> None:
    """`python train.py` as the README runs it: the demo must learn (test EER well under 50%)."""
    result = _run(
        [str(ROOT / "train.py"), f"paths.log_dir={tmp_path}", "trainer.enable_progress_bar=false"],
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["test/eer"] < 0.2
    assert metrics["test/demo/eer_A04"] < 0.35  # the attack never seen in training
