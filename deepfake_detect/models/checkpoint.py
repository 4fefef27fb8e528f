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
        # torch names the refused global ("Unsupported global: GLOBAL os.system ..." or
        # "unsupported GLOBAL posix.system whose module posix is blocked")
        refused = next((line for line in str(exc).splitlines() if "GLOBAL" in line), "")
        if not refused:  # the unpickler choked on bytes that are no pickle at all
            raise CheckpointError(f"cannot read {what} {path}: truncated or corrupt") from None
        raise CheckpointError(
            f"{path} is not a {what} this project wrote: it holds objects other than tensors "
            f"and plain containers, and such files are never loaded (they can run code). "
            f"({refused.strip()[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        detail = (str(exc).splitlines() or [""])[0]
        # torch's advice for old-format files (load with weights_only=False) is not ours to give
        detail = "" if "weights_only" in detail or isinstance(exc, KeyError) else detail
        raise CheckpointError(
            f"cannot read {what} {path}: truncated or corrupt"
            + (f" ({detail[:200]})" if detail else "")
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
