"""Reading checkpoints safely: every load path of the project goes through :func:`read_checkpoint`,
which never executes pickled code (``weights_only=True``, whatever the environment says) and turns
every failure into one line that names the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, or not written by us."""


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint's dictionary, loaded on the CPU without running any pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a {what} this project wrote: it holds objects other than tensors "
            f"and plain containers, and such files are never loaded (they can run code). "
            f"({str(exc).splitlines()[0][:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {what} {path}: truncated or corrupt ({str(exc).splitlines()[0][:200]})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a {what} this project wrote (no state_dict)")
    return checkpoint


def checkpoint_hparams(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or "net" not in hparams:
        raise CheckpointError(
            f"{path} has no model hyper-parameters: it was not written by this project's trainer"
        )
    return hparams
