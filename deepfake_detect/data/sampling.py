"""EpochSampler: the training order and each item's random seed as a pure function of
(seed, epoch), so a resumed run replays exactly the epochs an uninterrupted run would."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

ITEM_SEED_BOUND = 2**63
"""Item seeds are drawn from ``[0, 2**63)``."""


def _world() -> tuple[int, int]:
    """(number of processes, this process's rank): (1, 0) unless torch.distributed is set up."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class EpochSampler(DistributedSampler):
    """Yields ``(row index, item seed)`` keys: a permutation of ``num_rows`` rows each epoch, or,
    with ``weights``, ``num_samples`` draws with replacement in proportion to the weights.

    The epoch's order and its item seeds come from one ``numpy`` Generator seeded with
    ``(seed, epoch)`` and nothing else: not the global RNGs, not the worker processes. Lightning
    calls :meth:`set_epoch` before every training epoch, with the restored epoch after a resume
    (too late for a loader with workers: :class:`~deepfake_detect.callbacks.rng_state.RNGState`
    sets it in time).

    Under DDP each process keeps every ``num_replicas``-th key of the epoch's list, starting at
    its ``rank``; the list is padded by repeating its head so that every process gets
    ``len(self)`` keys (as ``DistributedSampler`` does). An item's seed depends on its position
    in the whole epoch, so it is the same whatever the number of processes. Being a
    ``DistributedSampler``, it is used as is: Lightning only wraps samplers that are not.
    """

    def __init__(
        self,
        num_rows: int,
        seed: int,
        weights: Sequence[float] | None = None,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        epoch: int = 0,
    ) -> None:
        # DistributedSampler.__init__ wants a dataset and an initialised process group: the
        # attributes it would set are set here instead (Lightning and torch read them).
        if num_rows < 1:
            raise ValueError(f"num_rows must be positive, got {num_rows}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        world, own_rank = _world()
        self.num_replicas = world if num_replicas is None else num_replicas
        self.rank = own_rank if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.num_rows = num_rows
        self.seed = seed
        self.epoch = epoch
        self.shuffle = True
        self.drop_last = False
        self.probabilities = None if weights is None else _probabilities(weights, num_rows)
        if num_samples is not None and weights is None and num_samples != num_rows:
            raise ValueError("num_samples is for weighted draws; a permutation has num_rows")
        self.epoch_size = num_rows if num_samples is None else num_samples
        if self.epoch_size < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples = math.ceil(self.epoch_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole epoch (every process's share): row indices and their item seeds."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.probabilities is None:
            rows = rng.permutation(self.num_rows)
        else:
            rows = rng.choice(self.num_rows, size=self.epoch_size, p=self.probabilities)
        seeds = rng.integers(0, ITEM_SEED_BOUND, size=self.epoch_size, dtype=np.int64)
        return rows, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rows, seeds = self.epoch_keys()
        padding = self.total_size - self.epoch_size
        if padding:
            repeats = math.ceil(padding / self.epoch_size)
            rows = np.concatenate([rows, np.tile(rows, repeats)[:padding]])
            seeds = np.concatenate([seeds, np.tile(seeds, repeats)[:padding]])
        shard = slice(self.rank, self.total_size, self.num_replicas)
        return zip(rows[shard].tolist(), seeds[shard].tolist(), strict=True)

    def __len__(self) -> int:
        return self.num_samples


def _probabilities(weights: Sequence[float], num_rows: int) -> np.ndarray:
    p = np.asarray(weights, dtype=np.float64)
    if p.shape != (num_rows,):
        raise ValueError(f"expected {num_rows} weights (one per row), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return p / p.sum()
