"""RNGState: the global random generators travel in the checkpoint, so a resumed run continues
with the random state (dropout masks, loader seeds) that the uninterrupted run had; and the first
resumed epoch draws its batches from the restored epoch's order."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def collect_rng_states() -> dict[str, Any]:
    """Python ``random``, numpy's global and torch's CPU generator, and the current CUDA
    device's generator when CUDA is in use; as tensors and plain values, so the checkpoint
    still loads with ``torch.load(weights_only=True)``."""
    version, mt, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`collect_rng_states` returned."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["torch.cuda"])


class RNGState(Callback):
    """Stores the global RNG states in every checkpoint and, when a fit resumes from one,
    restores them just before the first resumed epoch, so that epoch's batches, crops and
    dropout masks are the uninterrupted run's.

    The states are captured when the checkpoint is written (``last.ckpt`` at the end of an
    epoch). Lightning hands them back early (with the other callbacks' state, after
    ``seed_everything`` and the ``setup`` hooks); they are held until ``on_train_start``, after
    everything a resumed fit does that the uninterrupted run did not (building the model and
    the optimizers, making the loaders' iterators; the sanity check is RNG-isolated anyway).

    The training order is random state too. Lightning makes the first resumed epoch's iterator
    before it calls the sampler's ``set_epoch`` with the restored epoch (Lightning issue #21938),
    and a loader with workers draws its first indices as it is made: that epoch would replay
    epoch 0's order. So at the start of a resumed fit this callback sets the training samplers'
    epoch itself, restores the states, and makes the epoch's iterator afresh, as the epoch loop
    does at the start of every later epoch (one private attribute, ``FitLoop._data_fetcher``).

    Testing or validating a checkpoint leaves the process's generators alone. Under DDP the
    checkpoint holds the saving process's states and every process restores them: with one seed
    and the same work per process (equal shards, fixed crop lengths) all processes hold the same
    states. CUDA's is the current device's.
    """

    def __init__(self) -> None:
        self._restored: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restored = None  # runs before Lightning restores a checkpoint

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        epoch = trainer.fit_loop.epoch_progress.current.processed  # what set_epoch will get
        for sampler in _samplers(trainer.train_dataloader):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
        if self._restored is not None:
            set_rng_states(self._restored)
            self._restored = None
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is not None:
            iter(fetcher)


def _samplers(loaders: Any) -> Iterator[Any]:
    """The samplers of a training loader or of a list / dict of them."""
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        for loader in loaders:
            yield from _samplers(loader)
        return
    yield getattr(loaders, "sampler", None)
    yield getattr(getattr(loaders, "batch_sampler", None), "sampler", None)
