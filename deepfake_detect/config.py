"""OmegaConf resolvers the configs use (registered on import of the package)."""

from __future__ import annotations

import netrc
import os

from omegaconf import OmegaConf


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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
