"""Every config composes, and what it describes instantiates."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    CONF,
    ROOT,
    TINY_W2V2,
    compose_config,
    la_data_overrides,
    tiny_la_overrides,
)
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf
from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.config import WANDB_MISSING
from deepfake_detect.data.datamodule import SpoofDataModule
from deepfake_detect.errors import ConfigError
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.pipeline import evaluate, train


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def read_csv_column(path: Path, column: str) -> list[float]:
    with open(path, newline="") as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


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


REQUIRED_CALLBACK_KEYS = {"qat": ["callbacks.qat.init_from=null"]}
"""Keys a callbacks config leaves required (``???``), given here so that it instantiates."""


@pytest.mark.parametrize("callbacks", group("callbacks"))
def test_callbacks_instantiate(compose_cfg, callbacks: str) -> None:
    cfg = compose_cfg(f"callbacks={callbacks}", *REQUIRED_CALLBACK_KEYS.get(callbacks, []))
    for entry in (cfg.callbacks or {}).values():
        instantiate(entry)


@pytest.mark.parametrize("debug", group("debug"))
def test_debug_configs_compose(compose_cfg, debug: str) -> None:
    cfg = compose_cfg(f"debug={debug}")
    assert cfg.data.num_workers == 0
    # debug runs go to logs/debug/runs, apart from real ones
    assert cfg.task_name == "debug"
    run_dir = OmegaConf.to_container(OmegaConf.load(CONF / "hydra" / "default.yaml"))["run"]["dir"]
    assert run_dir.startswith("${paths.log_dir}/${task_name}/")
    instantiate(cfg.trainer, logger=False)


def test_experiments_set_their_own_tags(compose_cfg) -> None:
    # the root config comes first in train.yaml's defaults: experiments override it
    assert compose_cfg().tags == ["demo"]
    assert compose_cfg("experiment=w2v2_frozen").tags == ["asvspoof2019_la", "w2v2", "frozen"]
    assert compose_cfg("experiment=distill").tags == ["asvspoof2019_la", "lcnn", "distill"]
    assert compose_cfg("~experiment").tags == ["dev"]
    # ... and the command line overrides everything
    assert compose_cfg("experiment=w2v2_frozen", "tags=[mine]").tags == ["mine"]
    assert compose_cfg("experiment=w2v2_frozen", "seed=7").seed == 7


def test_data_choices_are_the_data_configs_only() -> None:
    """`python train.py --help` lists the data group's options; the shared base is not one."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert loader.get_group_options("data") == group("data")
        assert "data/base" not in loader.list_groups("data")
    GlobalHydra.instance().clear()
    assert group("data") == ["asvspoof2019_la", "demo", "mini"]


@pytest.mark.parametrize("model", group("model"))
def test_models_carry_a_memory_safe_batch(compose_cfg, model: str) -> None:
    cfg = compose_cfg("~experiment", f"model={model}", "data=asvspoof2019_la")
    assert isinstance(cfg.model.batch_size, int) and 1 <= cfg.model.batch_size <= 64
    assert cfg.data.batch_size == cfg.model.batch_size
    # a data config's own batch (the demo's 1 s crops), an experiment and the command line win
    assert compose_cfg("~experiment", f"model={model}").data.batch_size == 16
    assert compose_cfg(f"model={model}", "data.batch_size=3").data.batch_size == 3


def test_aasist_fits_a_16_gb_machine(compose_cfg) -> None:
    # 32 x 4 s needed about 19 GiB of RAM; the reference batch is 24 (on a GPU)
    assert compose_cfg("experiment=w2v2_frozen").data.batch_size == 4
    assert compose_cfg("~experiment", "model=aasist", "data=mini").data.batch_size <= 12


def test_wandb_is_optional(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    cfg = compose_cfg("logger=wandb")
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.logger.wandb)
    assert isinstance(err.value.__cause__, ImportError)
    assert str(err.value.__cause__) == WANDB_MISSING
    assert "pip install -e '.[wandb]'" in WANDB_MISSING
    instantiate(compose_cfg("logger=csv").logger.csv)


def test_debug_overfit_drives_the_training_loss_to_zero(tiny_la: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        tmp_path / "run",
        "~experiment",
        *la_data_overrides(tiny_la),
        "debug=overfit",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    )
    metrics = train(cfg)
    losses = read_csv_column(tmp_path / "run" / "csv" / "metrics.csv", "train/loss_epoch")
    assert len(losses) == 40 and losses[0] > 0.3, losses[:3]
    assert metrics["train/loss_epoch"] < 0.05, losses[-5:]
    assert cfg.task_name == "debug" and not cfg.test


def test_eval_config_requires_a_checkpoint(compose_cfg) -> None:
    cfg = compose_cfg(config_name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")
    with pytest.raises(ConfigError, match=r"^eval.py needs a checkpoint: python eval.py "):
        evaluate(cfg)


NO_WANDB = (
    "import runpy, sys; sys.modules['wandb'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_saved_config_reruns_into_logs(tiny_la: Path, tmp_path: Path) -> None:
    """`--config-path <run>/.hydra --config-name config` starts a new run under
    logs/<task_name>/runs, not outputs/. The first run also shows that the package runs
    without wandb installed."""
    overrides = [o for o in tiny_la_overrides(tiny_la) if not o.startswith("trainer.max_epochs")]
    logs = tmp_path / "logs"
    run_python(
        ["-c", NO_WANDB, str(ROOT / "train.py"), *overrides, "trainer.max_epochs=1",
         f"paths.log_dir={logs}"],
        cwd=tmp_path,
    )  # fmt: skip
    (first,) = (logs / "train" / "runs").iterdir()
    saved = OmegaConf.to_container(OmegaConf.load(first / ".hydra" / "config.yaml"))
    run_dir = "${paths.log_dir}/${task_name}/runs/${now:%Y-%m-%d}_${now:%H-%M-%S}"
    assert saved["hydra"]["run"]["dir"] == run_dir

    run_python(
        [str(ROOT / "train.py"), "--config-path", str(first / ".hydra"), "--config-name", "config"],
        cwd=tmp_path,
    )
    second = next(r for r in (logs / "train" / "runs").iterdir() if r != first)
    assert (second / "metrics.json").is_file()
    resaved = OmegaConf.to_container(OmegaConf.load(second / ".hydra" / "config.yaml"))
    assert resaved == saved  # the re-run's saved config re-runs the same way
    assert not (tmp_path / "outputs").exists()
