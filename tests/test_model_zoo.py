"""The baseline networks (RawNet2, LCNN, AASIST, AASIST-L), built from their Hydra configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from deepfake_detect.models.aasist import AASIST
from deepfake_detect.models.lcnn import LCNN
from deepfake_detect.models.rawnet2 import RawNet2

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SAMPLE_RATE = 16000

# Exact counts: AASIST and AASIST-L are the published numbers; RawNet2 is the ASVspoof 2021
# baseline config; LCNN is the 2021 LFCC-LCNN baseline plus one output unit (two logits).
PARAMETERS = {"rawnet2": 17_621_410, "lcnn": 269_826, "aasist": 297_866, "aasist_l": 85_306}
EMBEDDING_DIMS = {"rawnet2": 1024, "lcnn": 96, "aasist": 160, "aasist_l": 160}
MODELS = list(PARAMETERS)


def build(name: str, **overrides: object) -> nn.Module:
    """The net of ``model=<name>`` as the real train config composes it."""
    args = [f"model.net.{key}={value}" for key, value in overrides.items()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose(config_name="train", overrides=["~experiment", f"model={name}", *args])
    torch.manual_seed(0)
    return instantiate(config.model.net)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {name: build(name).eval() for name in MODELS}


def waves(*seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of noise clips and their lengths in samples."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * SAMPLE_RATE) for s in seconds])
    batch = torch.zeros(len(seconds), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        batch[i, :n] = 0.1 * torch.randn(n, generator=generator)
    return batch, lengths


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count(nets: dict[str, nn.Module], name: str) -> None:
    assert count(nets[name]) == PARAMETERS[name]


def test_aasist_defaults_are_the_paper_config() -> None:
    assert count(AASIST()) == PARAMETERS["aasist"]
    assert count(RawNet2()) == PARAMETERS["rawnet2"]
    assert count(LCNN()) == PARAMETERS["lcnn"]


def test_lcnn_small_variant() -> None:
    assert count(build("lcnn", width=0.55, lstm=False)) == 49_446


@pytest.mark.parametrize("name", MODELS)
def test_shapes_across_lengths(nets: dict[str, nn.Module], name: str) -> None:
    net = nets[name]
    with torch.inference_mode():
        for seconds in (0.5, 1.0, 4.0):
            batch, lengths = waves(seconds, seconds)
            embedding = net.embed(batch, lengths)
            assert embedding.shape == (2, EMBEDDING_DIMS[name])
            assert net.embedding_dim == EMBEDDING_DIMS[name]
            logits = net.classify(embedding)
            assert logits.shape == (2, 2)
            assert torch.isfinite(logits).all()
        assert net(waves(0.5, 0.5)[0]).shape == (2, 2)


@pytest.mark.parametrize("name", MODELS)
def test_padding_is_ignored(nets: dict[str, nn.Module], name: str) -> None:
    """Every model masks padding: a padded item scores as it does alone (eval mode)."""
    net = nets[name]
    batch, lengths = waves(2.0, 0.5, 1.0)
    with torch.inference_mode():
        together = net(batch, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = net(batch[i : i + 1, :n])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(nets: dict[str, nn.Module], name: str) -> None:
    batch, lengths = waves(1.0, 0.6, seed=1)
    with torch.inference_mode():
        first = nets[name](batch, lengths)
        second = nets[name](batch, lengths)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    net = build(name).train()
    batch, lengths = waves(1.0, 0.7, seed=2)
    loss = nn.functional.cross_entropy(net(batch, lengths), torch.tensor([0, 1]))
    loss.backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize(
    ("frontend", "options", "dims"),
    [
        ("lfcc", {}, 60),
        ("logmel", {"n_filters": 40, "f_max": 8000.0}, 120),
        ("linear", {"n_fft": 512, "deltas": False}, 129),
        ("linear", {"n_fft": 256, "win_length": 256, "f_max": 8000.0, "deltas": False}, 129),
    ],
)
def test_lcnn_frontends(frontend: str, options: dict[str, object], dims: int) -> None:
    net = LCNN(frontend=frontend, **options).eval()
    assert net.frontend.dims == dims
    assert net.embedding_dim == (dims // 16) * 32
    batch, lengths = waves(1.0, 0.5, seed=3)
    with torch.inference_mode():
        features = net.frontend(batch, lengths)
        assert features.shape == (2, SAMPLE_RATE // 160 + 1, dims)
        together = net(batch, lengths)
        alone = net(batch[1:, : int(lengths[1])])
    assert together.shape == (2, 2)
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-4)


def test_lcnn_rejects_unknown_frontend() -> None:
    with pytest.raises(ValueError, match="unknown frontend"):
        LCNN(frontend="cqt")  # type: ignore[arg-type]


def test_lfcc_matches_the_baseline_definition() -> None:
    """The first coefficient is log10 frame energy and deltas are x[t+1] - x[t-1]."""
    frontend = LCNN().frontend
    batch, _ = waves(0.5, seed=4)
    features = frontend(batch)
    emphasised = torch.cat([batch[:, :1], batch[:, 1:] - 0.97 * batch[:, :-1]], dim=1)
    power = frontend.spectrogram(emphasised).transpose(1, 2)
    energy = torch.log10(power.sum(dim=-1) / 1024 + torch.finfo(torch.float32).eps)
    torch.testing.assert_close(features[..., 0], energy)
    static = features[..., :20]
    torch.testing.assert_close(features[:, 5, 20:40], static[:, 6] - static[:, 4])
    torch.testing.assert_close(features[:, -1, 20:40], static[:, -1] - static[:, -2])


def test_aasist_padding_under_bf16_autocast() -> None:
    """Fully padded attention columns must not turn into NaN in half precision."""
    torch.manual_seed(0)
    net = AASIST(sinc_filters=12, encoder_channels=(4, 4, 8, 8, 8, 8), gat_dims=(8, 8)).train()
    batch, lengths = waves(2.0, 0.5, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(batch, lengths)
    logits.float().sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
