"""What the configs name besides classes: the OmegaConf resolvers (registered on import of the
package), the W&B logger factory and the Hydra callback that makes a run's saved config
re-runnable."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

WANDB_MISSING = (
    "logger=wandb needs the wandb package, which is not installed: "
    "pip install -e '.[wandb]' (or pip install wandb), or use the default logger=csv"
)


def wandb_offline() -> bool:
    """True unless a W&B API key is configured (WANDB_API_KEY or ~/.netrc), so runs on machines
    without credentials log to the run directory instead of failing."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def wandb_logger(**kwargs: Any) -> Any:
    """Lightning's ``WandbLogger``, or an ImportError that says how to install wandb (an
    optional extra: the rest of the package runs without it).

    ``log_model`` on an offline run, which Lightning refuses, is kept as ``requested_log_model``:
    the pipeline then logs the best checkpoint itself, as an artifact of the offline run
    (``wandb sync`` uploads it with the run)."""
    try:
        import wandb  # noqa: F401
    except ImportError as exc:
        raise ImportError(WANDB_MISSING) from exc
    from lightning.pytorch.loggers import WandbLogger

    requested = kwargs.get("log_model", False)
    if kwargs.get("offline") and requested:
        kwargs["log_model"] = False
    logger = WandbLogger(**kwargs)
    logger.requested_log_model = requested
    return logger


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)


RERUN_KEYS = ("run", "sweep", "callbacks")
"""The ``hydra`` settings (conf/hydra/default.yaml) copied into a run's ``.hydra/config.yaml``."""


class RerunnableConfig(Callback):
    """Adds this project's ``hydra`` settings (run and sweep directories, this callback, the
    working directory policy) to the run's ``.hydra/config.yaml``, unresolved.

    Hydra saves the job config without its ``hydra`` node, so ``python train.py --config-path
    <run>/.hydra --config-name config`` would otherwise write to Hydra's default ``outputs/``
    instead of ``logs/<task_name>/runs/<time>``."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        if hydra.output_subdir is None:  # e.g. Lightning's DDP worker processes
            return
        path = Path(hydra.runtime.output_dir) / hydra.output_subdir / "config.yaml"
        if not path.is_file():
            return
        settings: dict[str, Any] = {
            key: OmegaConf.to_container(hydra[key], resolve=False) for key in RERUN_KEYS
        }
        settings["job"] = {"chdir": hydra.job.chdir}
        saved = OmegaConf.load(path)
        saved.hydra = settings
        OmegaConf.save(saved, path)
