"""Shared fixtures: composed configs, a tiny ASVspoof2019-LA-layout corpus, a tiny Wav2Vec2."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Nothing in the tests may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from deepfake_detect.models.save_encoder import TINY_CONFIG  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

TINY_W2V2 = TINY_CONFIG


def tone(seconds: float, rate: int = 16000, seed: int = 0, bonafide: bool = True) -> np.ndarray:
    """A short test signal; bona fide and spoof differ in spectrum so a model can separate them."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 200)
    harmonics = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    noise = rng.normal(0, 0.3 if bonafide else 0.02, t.size)
    return (0.1 * (harmonics + noise)).astype(np.float32)


def write_la_corpus(
    root: Path, per_split: dict[str, dict[str, int]], seconds: tuple[float, float] = (0.5, 1.2)
) -> Path:
    """An ASVspoof2019 LA corpus in the exact layout: ``per_split[split][attack or '-'] = n``."""
    prefix = {"train": "T", "dev": "D", "eval": "E"}
    suffix = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    protocols = root / "LA" / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    file_no = 1000000
    for split, attacks in per_split.items():
        audio = root / "LA" / f"ASVspoof2019_LA_{split}" / "flac"
        audio.mkdir(parents=True, exist_ok=True)
        lines = []
        for attack, n in attacks.items():
            for i in range(n):
                file_no += 1
                file_id = f"LA_{prefix[split]}_{file_no}"
                bona = attack == "-"
                dur = np.random.default_rng(file_no).uniform(*seconds)
                sf.write(
                    audio / f"{file_id}.flac",
                    tone(dur, seed=file_no, bonafide=bona),
                    16000,
                    subtype="PCM_16",
                )
                key = "bonafide" if bona else "spoof"
                lines.append(f"LA_{split[0].upper()}{i % 3:03d} {file_id} - {attack} {key}")
        (protocols / f"ASVspoof2019.LA.cm.{suffix[split]}.txt").write_text("\n".join(lines) + "\n")
    return root


TINY_SIZES = {
    "train": {"-": 12, "A01": 12, "A02": 12},
    "dev": {"-": 6, "A01": 6, "A02": 6},
    "eval": {"-": 6, "A01": 6, "A02": 6, "A05": 6},
}


@pytest.fixture(scope="session")
def tiny_la(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_la_corpus(tmp_path_factory.mktemp("tiny_la"), TINY_SIZES)


def compose_config(out_dir: Path, *overrides: str, config_name: str = "train") -> DictConfig:
    """Compose a real config (``train`` or ``eval``) whose run writes into ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir.parent / "logs")
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """:func:`compose_config` with the run in ``tmp_path / "run"``."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(tmp_path / "run", *overrides, config_name=config_name)

    return _compose


def la_data_overrides(root: Path) -> list[str]:
    """The ASVspoof2019 LA data config on a corpus at ``root``, loaded in-process."""
    return [
        "data=asvspoof2019_la",
        f"data.corpora.asvspoof2019_la.root={root}",
        "data.num_workers=0",
    ]


def assert_padding_invariant(net: torch.nn.Module) -> None:
    """An utterance padded in a batch scores as it does alone (eval mode)."""
    short, long = torch.randn(6000), torch.randn(9000)
    batch = torch.zeros(2, 9000)
    batch[0, :6000], batch[1] = short, long
    with torch.inference_mode():
        batched = net(batch, torch.tensor([6000, 9000]))
        alone = net(short[None], torch.tensor([6000]))
    assert torch.allclose(batched[0], alone[0], atol=1e-5)


def tiny_la_overrides(root: Path) -> list[str]:
    """Train the tiny Wav2Vec2 on the tiny corpus, quickly and single-process."""
    return [
        "~experiment",
        *la_data_overrides(root),
        "model=w2v2_tiny",
        "trainer=cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.batch_size=8",
        "data.max_len=8000",
    ]
