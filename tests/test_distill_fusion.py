"""Distillation (a small student learns a frozen teacher's scores) and score-level fusion of
several checkpoints (fitted on dev, evaluated like one model)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (
    TINY_SIZES,
    compose_config,
    la_data_overrides,
    tiny_la_overrides,
    write_la_corpus,
)
from omegaconf import OmegaConf

from deepfake_detect.evaluation.scorefile import read_score_file
from deepfake_detect.fusion import LogisticFusion, MeanFusion, align_scores
from deepfake_detect.losses import DistillationLoss, distillation_kl
from deepfake_detect.metrics import compute_eer
from deepfake_detect.pipeline import evaluate, load_detector, train

TEST_SET = "asvspoof2019_la"


def _scores(run: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = read_score_file(run / "scores" / f"{TEST_SET}.tsv")
    scores = np.array([float(r["score"]) for r in rows])
    return scores, np.array([r["label"] == "bonafide" for r in rows])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_la_corpus(tmp_path_factory.mktemp("distill_la"), TINY_SIZES)


@pytest.fixture(scope="module")
def systems(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    """Two trained LCNNs without LSTM (158 k parameters; LFCC and log-mel front ends): their
    last checkpoints."""
    out, paths = tmp_path_factory.mktemp("systems"), []
    base = [*tiny_la_overrides(corpus), "model=lcnn", "model.net.lstm=false", "test=false"]
    base += ["model.optimizer.lr=3e-3"]
    for name, frontend, epochs in (("lfcc", "lfcc", 6), ("logmel", "logmel", 3)):
        cfg = compose_config(
            out / name, *base, f"model.net.frontend={frontend}", f"trainer.max_epochs={epochs}"
        )
        train(cfg)
        paths.append(out / name / "checkpoints" / "last.ckpt")
    yield paths


# -- distillation ---------------------------------------------------------------------------------
def test_distillation_kl_is_hintons_soft_target_loss_for_two_classes() -> None:
    torch.manual_seed(0)
    student, teacher = 3 * torch.randn(32, 2), 3 * torch.randn(32, 2)
    for t in (1.0, 2.0, 4.0):
        hinton = F.kl_div(
            F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
        )
        ours = distillation_kl(student[:, 1] - student[:, 0], teacher[:, 1] - teacher[:, 0], t)
        assert ours.item() == pytest.approx(t**2 * hinton.item(), rel=1e-5)
    score = torch.randn(8)
    assert distillation_kl(score, score, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    loss = DistillationLoss(temperature=2.0, alpha=0.25)
    hard = torch.tensor(0.7)
    soft = distillation_kl(score, -score, 2.0)
    assert loss(score, -score, hard).item() == pytest.approx(0.25 * soft.item() + 0.75 * 0.7)


def test_distill_experiment_needs_a_teacher(tmp_path: Path) -> None:
    cfg = compose_config(tmp_path / "run", "experiment=distill")
    assert OmegaConf.is_missing(cfg.model.distill, "teacher_ckpt")
    assert cfg.model.net._target_.endswith("LCNN") and not cfg.model.net.lstm


def test_teacher_is_frozen_in_eval_mode_and_not_part_of_the_student(
    systems: list[Path], tmp_path: Path
) -> None:
    cfg = compose_config(
        tmp_path / "run", "experiment=distill", f"model.distill.teacher_ckpt={systems[0]}"
    )
    from hydra.utils import instantiate

    student = instantiate(cfg.model)
    own_keys = set(student.state_dict())
    student.on_fit_start()
    teacher = student.teacher
    assert teacher is not None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    student.train()
    assert not teacher.training  # the student's train() does not reach the teacher
    assert set(student.state_dict()) == own_keys
    assert all(not name.startswith("_teacher") for name, _ in student.named_modules() if name)


def test_student_learns_the_teachers_scores_and_its_checkpoint_stands_alone(
    corpus: Path, systems: list[Path], tmp_path: Path
) -> None:
    teacher_ckpt = tmp_path / "teacher.ckpt"
    shutil.copy(systems[0], teacher_ckpt)
    teacher_cfg = compose_config(
        tmp_path / "teacher_eval",
        *la_data_overrides(corpus),
        f"ckpt_path={teacher_ckpt}",
        config_name="eval",
    )
    evaluate(teacher_cfg)
    teacher_scores, bona = _scores(tmp_path / "teacher_eval")

    overrides = [
        o for o in tiny_la_overrides(corpus) if o not in ("~experiment", "model=w2v2_tiny")
    ]
    cfg = compose_config(
        tmp_path / "student",
        "experiment=distill",
        *overrides,
        f"model.distill.teacher_ckpt={teacher_ckpt}",
        "model.distill.alpha=1.0",  # soft targets only: all it knows comes from the teacher
        "model.optimizer.lr=3e-3",
        "trainer.max_epochs=5",
    )
    metrics = train(cfg)
    student_scores, student_bona = _scores(tmp_path / "student")
    assert np.array_equal(bona, student_bona)
    assert np.corrcoef(teacher_scores, student_scores)[0, 1] > 0.9
    assert metrics["test/eer"] <= 0.1

    # the student's checkpoint holds the student only, and loads and evaluates without the teacher
    student_ckpt = Path(metrics["best_checkpoint"])
    saved = torch.load(student_ckpt, map_location="cpu", weights_only=True)
    n_saved = sum(v.numel() for k, v in saved["state_dict"].items() if k.startswith("scorer.net."))
    assert n_saved < 60_000  # the 49 k-parameter LCNN; the teacher has 158 k
    assert not any("teacher" in k for k in saved["state_dict"])
    assert student_ckpt.stat().st_size < teacher_ckpt.stat().st_size / 2
    assert not set(saved["state_dict"]) - set(load_detector(student_ckpt).state_dict())
    teacher_ckpt.unlink()
    eval_cfg = compose_config(
        tmp_path / "student_eval",
        *la_data_overrides(corpus),
        f"ckpt_path={student_ckpt}",
        config_name="eval",
    )
    assert evaluate(eval_cfg)["test/eer"] == pytest.approx(metrics["test/eer"])


# -- fusion ---------------------------------------------------------------------------------------
def complementary_systems(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two systems' scores: system 0 catches attack A only, system 1 attack B only; each is
    blind to the other attack (its spoofs score like bona fide)."""
    rng = np.random.default_rng(seed)
    attack = rng.choice(["-", "A", "B"], size=n)
    bona = attack == "-"
    scores = rng.normal(1.0, 1.0, size=(n, 2))
    scores[attack == "A", 0] -= 4.0
    scores[attack == "B", 1] -= 4.0
    return scores, bona.astype(int), attack


def _eer(scores: np.ndarray, labels: np.ndarray) -> float:
    return compute_eer(scores[labels == 1], scores[labels == 0])[0]


def test_fusion_of_complementary_systems_beats_both() -> None:
    dev, dev_labels, _ = complementary_systems(600, seed=0)
    test, labels, _ = complementary_systems(2000, seed=1)
    single = [_eer(test[:, k], labels) for k in range(2)]
    logistic = LogisticFusion().fit(dev, dev_labels)
    mean = MeanFusion().fit(dev, dev_labels)
    assert _eer(logistic(test), labels) < 0.5 * min(single)
    assert _eer(mean(test), labels) < 0.5 * min(single)
    assert np.all(logistic.weights > 0)


def test_logistic_fusion_outputs_a_calibrated_llr() -> None:
    # bona fide ~ N(1, 1), spoof ~ N(-1, 1): the true log-likelihood ratio is 2 s
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    scores = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    for prior in (0.5, 0.1):
        fusion = LogisticFusion(prior=prior, l2=0.0).fit(3.0 * scores + 5.0, labels)
        # raw scores were scaled and shifted: the fitted map undoes it
        assert fusion.weights[0] * 3.0 == pytest.approx(2.0, abs=0.1)
        assert fusion.bias + 5.0 * fusion.weights[0] == pytest.approx(0.0, abs=0.1)
    separable = LogisticFusion().fit([[-2.0], [-1.0], [1.0], [2.0]], [0, 0, 1, 1])
    assert np.isfinite(separable.weights).all() and separable.weights[0] > 0


def test_align_scores_refuses_systems_that_scored_other_trials() -> None:
    a = {"index": np.array([0, 1, 2]), "scores": np.zeros(3), "labels": np.array([0, 1, 1])}
    b = {"index": np.array([0, 2, 3]), "scores": np.ones(3), "labels": np.array([0, 1, 1])}
    index, matrix, labels = align_scores([a, a])
    assert matrix.shape == (3, 2) and list(index) == [0, 1, 2]
    with pytest.raises(ValueError, match="other trials"):
        align_scores([a, b])


@pytest.fixture(scope="module")
def single_scores(
    corpus: Path, systems: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> list[np.ndarray]:
    """Each system's test scores, from eval.py's single-checkpoint path."""
    out, singles = tmp_path_factory.mktemp("singles"), []
    for k, path in enumerate(systems):
        cfg = compose_config(
            out / str(k),
            *la_data_overrides(corpus),
            f"ckpt_path={path}",
            config_name="eval",
        )
        evaluate(cfg)
        singles.append(_scores(out / str(k))[0])
    return singles


@pytest.mark.parametrize("method", ["logistic", "mean"])
def test_fused_eval_of_two_checkpoints(
    corpus: Path,
    systems: list[Path],
    single_scores: list[np.ndarray],
    tmp_path: Path,
    method: str,
) -> None:
    paths = ",".join(str(p) for p in systems)
    cfg = compose_config(
        tmp_path / "fused",
        *la_data_overrides(corpus),
        f"fusion.ckpt_paths=[{paths}]",
        f"fusion.method={method}",
        config_name="eval",
    )
    assert OmegaConf.is_missing(cfg, "ckpt_path")  # not needed for a fused system
    metrics = evaluate(cfg)
    run = tmp_path / "fused"
    scores, bona = _scores(run)
    assert len(scores) == 24
    assert metrics["test/eer"] == pytest.approx(compute_eer(scores[bona], scores[~bona])[0])
    assert metrics["test/eer"] == metrics[f"test/{TEST_SET}/eer"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["metrics"]["test/eer"] == pytest.approx(metrics["test/eer"])
    assert (run / "report.md").is_file()

    fusion = json.loads((run / "fusion.json").read_text())
    assert fusion["fusion"]["method"] == method
    assert [s["ckpt_path"] for s in fusion["systems"]] == [str(p) for p in systems]
    assert all(0 <= s["test_eer"][TEST_SET] <= 1 for s in fusion["systems"])
    # the written parameters reproduce the fused scores from the systems' own scores
    matrix = np.stack(single_scores, axis=1)
    params = fusion["fusion"]
    if method == "logistic":
        expected = matrix @ np.array(params["weights"]) + params["bias"]
    else:
        expected = ((matrix - params["mean"]) / params["std"]).mean(axis=1)
    assert np.allclose(scores, expected, atol=1e-3)
