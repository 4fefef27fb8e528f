"""The model interface, checked on every model config in ``conf/model/`` (found, not listed):
padding invariance, score direction, gradient flow, and the scorer's handling of very short
and very long inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF, compose_config
from hydra.utils import instantiate
from omegaconf import open_dict

from deepfake_detect.data.preprocessing import Preprocessing
from deepfake_detect.losses import bonafide_score
from deepfake_detect.models.interface import SpoofNet
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.models.save_encoder import save_encoder
from deepfake_detect.models.scorer import SpoofScorer

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def test_every_model_config_is_found() -> None:
    assert len(MODELS) >= 8 and {"lcnn", "rawnet2", "aasist", "w2v2_tiny"} <= set(MODELS)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_encoder(tmp_path_factory.mktemp("enc") / "tiny")


def detector(name: str, encoder_dir: Path, tmp_path: Path, *overrides: str) -> SpoofDetector:
    cfg = compose_config(tmp_path / "run", "~experiment", f"model={name}", *overrides)
    if "source" in cfg.model.net:  # pretrained Wav2Vec2 configs: a local random stand-in
        with open_dict(cfg):
            cfg.model.net.source = str(encoder_dir)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def batch(*seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([max(1, int(s * 16000)) for s in seconds])
    wave = torch.zeros(len(seconds), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        wave[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wave, lengths


@pytest.mark.parametrize("name", MODELS)
def test_model_contract(name: str, encoder_dir: Path, tmp_path: Path) -> None:
    model = detector(name, encoder_dir, tmp_path)
    assert isinstance(model.net, SpoofNet) and isinstance(model.scorer, SpoofScorer)
    scorer = model.scorer.eval()
    wave, lengths = batch(1.0, 0.4, 0.7)
    with torch.inference_mode():
        # padding invariance: a padded utterance scores as it does alone
        together = scorer(wave, lengths)
        assert together.shape == (3,) and torch.isfinite(together).all()
        for i, n in enumerate(lengths.tolist()):
            alone = scorer(wave[i : i + 1, :n])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-4, rtol=1e-3)
        # score direction: the log-odds of bona fide (logit 1 = bona fide) of the prepared input
        embedding, logits = scorer.outputs(wave, lengths)
        assert logits is not None and logits.shape == (3, 2)
        assert embedding.shape == (3, model.net.embedding_dim)
        torch.testing.assert_close(together, bonafide_score(logits))
        p_bonafide = torch.softmax(logits, dim=-1)[:, 1]
        torch.testing.assert_close(torch.sigmoid(together), p_bonafide, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_trainable_parameter(
    name: str, encoder_dir: Path, tmp_path: Path
) -> None:
    model = detector(name, encoder_dir, tmp_path).train()
    wave, lengths = batch(1.0, 0.7, seed=2)
    loss, _ = model.loss_and_score(wave, lengths, torch.tensor([0, 1]))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for param_name, param in trainable:
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", MODELS)
def test_very_short_clips_are_tiled_to_the_minimum(
    name: str, encoder_dir: Path, tmp_path: Path
) -> None:
    """A 10 ms clip and a 1-sample clip score from their own samples, alone or in a batch."""
    scorer = detector(name, encoder_dir, tmp_path).scorer.eval()
    assert scorer.min_len >= scorer.preprocessing.min_len
    assert scorer.min_len >= scorer.net.min_input_len >= 1
    wave, lengths = batch(0.01, 1 / 16000, 0.5, seed=3)
    with torch.inference_mode():
        together = scorer(wave, lengths)
        assert torch.isfinite(together).all()
        for i, n in enumerate(lengths.tolist()):
            alone = scorer(wave[i : i + 1, :n])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-4, rtol=1e-3)
        tiled = wave[0, :160].repeat(scorer.min_len // 160 + 1)[: scorer.min_len]
        torch.testing.assert_close(together[:1], scorer(tiled[None]), atol=1e-4, rtol=1e-3)


def test_long_inputs_are_scored_in_windows(encoder_dir: Path, tmp_path: Path) -> None:
    """Longer than max_eval_len: the mean score of half-overlapping windows, each normalised
    alone (so a 10-minute clip never goes through the net in one piece)."""
    scorer = detector("lcnn", encoder_dir, tmp_path).scorer.eval()
    scorer.preprocessing = Preprocessing(max_eval_len=8000)
    long = batch(2.0, seed=4)[0][0]
    with torch.inference_mode():
        score = scorer(long[None])
        windows = torch.stack([long[s : s + 8000] for s in range(0, 32000 - 8000 + 1, 4000)])
        expected = scorer(windows).mean()
    torch.testing.assert_close(score[0], expected)
    assert scorer.window_scores(long).shape == (7,)
