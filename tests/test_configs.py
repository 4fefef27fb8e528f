"""Every config composes, and what it describes instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONF, TINY_W2V2
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf
from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.data.datamodule import SpoofDataModule
from deepfake_detect.errors import ConfigError
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.pipeline import evaluate


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.fixture(scope="module")
def local_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Wav2Vec2 standing in for a downloaded facebook/wav2vec2-base."""
    path = tmp_path_factory.mktemp("encoder") / "tiny-wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V2)).save_pretrained(path)
    return path


def test_groups_exist() -> None:
    for name in ("data", "model", "trainer", "logger", "callbacks", "paths", "experiment", "debug"):
        assert group(name), name
    assert {"demo", "w2v2_frozen", "w2v2_finetune"} <= set(group("experiment"))


@pytest.mark.parametrize("experiment", group("experiment"))
def test_experiments_compose_and_instantiate(compose_cfg, experiment: str, local_encoder) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    if "source" in cfg.model.net:  # a pretrained Wav2Vec2: the local stand-in, no download
        cfg = compose_cfg(f"experiment={experiment}", f"model.net.source={local_encoder}")
    model = instantiate(cfg.model)
    assert isinstance(model, SpoofDetector)
    assert isinstance(instantiate(cfg.data), SpoofDataModule)
    if experiment.startswith("w2v2_"):
        assert cfg.data.max_len == 64000 and cfg.data.batch_size == 4
        assert cfg.trainer.max_epochs == 5
        assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
        assert cfg.model.scheduler.warmup_ratio > 0
        assert cfg.model.net.pretrained and cfg.model.net.layer == -1
        expected = "all" if experiment == "w2v2_frozen" else "none"
        assert model.net.freeze_mode == expected


def test_default_experiment_is_the_demo(compose_cfg) -> None:
    cfg = compose_cfg()
    assert cfg.data.train == "demo:train" and cfg.data.test == ["demo:eval"]
    assert cfg.model.net.pretrained is False
    assert cfg.trainer.accelerator == "cpu"
    # corpora that a run does not use may stay unset
    assert OmegaConf.is_missing(cfg.data.corpora.asvspoof2019_la, "root")


@pytest.mark.parametrize("model", group("model"))
def test_models_instantiate(compose_cfg, model: str, local_encoder) -> None:
    cfg = compose_cfg(f"model={model}")
    if cfg.model.net.get("pretrained") and "source" in cfg.model.net:
        # a pretrained Wav2Vec2 (w2v2_linear, w2v2_layersum, w2v2_aasist): the local stand-in
        cfg = compose_cfg(f"model={model}", f"model.net.source={local_encoder}")
    detector = instantiate(cfg.model)
    scores = detector.eval()(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert scores.shape == (2,) and torch.isfinite(scores).all()


@pytest.mark.parametrize("data", group("data"))
def test_data_configs_instantiate(compose_cfg, data: str) -> None:
    dm = instantiate(compose_cfg(f"data={data}").data)
    assert dm.train_specs and dm.test_specs
    assert set(dm.corpus_configs) >= {"demo", "asvspoof2019_la", "in_the_wild", "wavefake"}


@pytest.mark.parametrize("trainer", group("trainer"))
def test_trainers_compose(compose_cfg, trainer: str) -> None:
    cfg = compose_cfg(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.precision == "bf16-mixed"
        return
    instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize("logger", group("logger"))
def test_loggers_instantiate(compose_cfg, logger: str) -> None:
    cfg = compose_cfg(f"logger={logger}")
    loggers = [instantiate(entry) for entry in cfg.logger.values()]
    kinds = {type(x) for x in loggers}
    assert CSVLogger in kinds
    if logger == "wandb":
        assert WandbLogger in kinds
        assert cfg.logger.wandb.offline is True  # no API key on a test machine


@pytest.mark.parametrize("callbacks", group("callbacks"))
def test_callbacks_instantiate(compose_cfg, callbacks: str) -> None:
    cfg = compose_cfg(f"callbacks={callbacks}")
    for entry in (cfg.callbacks or {}).values():
        instantiate(entry)


@pytest.mark.parametrize("debug", group("debug"))
def test_debug_configs_compose(compose_cfg, debug: str) -> None:
    cfg = compose_cfg(f"debug={debug}")
    assert cfg.data.num_workers == 0
    instantiate(cfg.trainer, logger=False)


def test_eval_config_requires_a_checkpoint(compose_cfg) -> None:
    cfg = compose_cfg(config_name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")
    with pytest.raises(ConfigError, match=r"^eval.py needs a checkpoint: python eval.py "):
        evaluate(cfg)
