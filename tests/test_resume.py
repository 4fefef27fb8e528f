"""Exact resume: the epoch sampler (order and item seeds a pure function of (seed, epoch)), the
RNG states in checkpoints, and a run killed mid-epoch that resumes to the uninterrupted result."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_la_overrides
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from deepfake_detect.callbacks.rng_state import RNGState, set_rng_states
from deepfake_detect.data.sampling import ITEM_SEED_BOUND, EpochSampler


def keys(sampler: EpochSampler, epoch: int) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


# -- EpochSampler ---------------------------------------------------------------------------------
def test_order_and_seeds_are_a_function_of_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=7), EpochSampler(50, seed=7)
    assert keys(a, 3) == keys(b, 3)
    keys(a, 9)
    assert keys(a, 3) == keys(b, 3)  # no state carried from one epoch to the next
    assert keys(a, 0) != keys(a, 1)
    assert keys(a, 0) != keys(EpochSampler(50, seed=8), 0)


def test_global_rngs_do_not_change_the_order() -> None:
    sampler = EpochSampler(20, seed=1)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    first = keys(sampler, 2)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    assert keys(sampler, 2) == first


def test_permutation_covers_every_row_once() -> None:
    sampler = EpochSampler(37, seed=0)
    for epoch in range(3):
        rows = [row for row, _ in keys(sampler, epoch)]
        assert sorted(rows) == list(range(37))
    assert len(sampler) == 37


def test_item_seeds_differ_per_item_and_epoch() -> None:
    sampler = EpochSampler(200, seed=0)
    first = [s for _, s in keys(sampler, 0)]
    second = [s for _, s in keys(sampler, 1)]
    assert len(set(first)) == 200
    assert not set(first) & set(second)
    assert all(isinstance(s, int) and 0 <= s < ITEM_SEED_BOUND for s in first + second)
    row_seed = dict(keys(sampler, 0))
    assert row_seed != dict(keys(sampler, 1))  # a row gets a new crop every epoch


def test_weighted_draws_follow_the_weights() -> None:
    sampler = EpochSampler(3, seed=0, weights=[1.0, 0.0, 3.0], num_samples=20000)
    assert len(sampler) == 20000
    counts = Counter(row for row, _ in keys(sampler, 0))
    assert counts[1] == 0
    assert counts[2] / 20000 == pytest.approx(0.75, abs=0.02)
    assert keys(sampler, 0) != keys(sampler, 1)
    assert len(EpochSampler(5, seed=0, weights=[1] * 5)) == 5  # num_samples: num_rows
    torch_weights = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)  # what the data module has
    assert keys(EpochSampler(3, seed=0, weights=torch_weights, num_samples=20000), 0) == keys(
        sampler, 0
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"num_rows": 0},
        {"seed": -1},
        {"weights": [1.0, 2.0]},
        {"weights": [0.0, 0.0, 0.0]},
        {"weights": [1.0, -1.0, 1.0]},
        {"num_samples": 4},
        {"num_replicas": 2, "rank": 2},
    ],
)
def test_invalid_arguments_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        EpochSampler(**{"num_rows": 3, "seed": 0, **bad})


@pytest.mark.parametrize(("num_rows", "world"), [(12, 3), (13, 4), (5, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(num_rows: int, world: int, weighted: bool):
    weights = np.linspace(1, 2, num_rows) if weighted else None
    whole = keys(EpochSampler(num_rows, seed=3, weights=weights), 4)
    shards = [
        keys(EpochSampler(num_rows, seed=3, weights=weights, num_replicas=world, rank=r), 4)
        for r in range(world)
    ]
    per_rank = math.ceil(num_rows / world)
    assert all(len(shard) == per_rank for shard in shards)  # equal lengths: no DDP hang
    # position j of rank r is position j * world + r of the whole epoch, with the same seed,
    # padded by repeating the epoch's head
    padded = whole + whole[: per_rank * world - num_rows]
    for r, shard in enumerate(shards):
        assert shard == padded[r::world]
    interleaved = [key for group in zip(*shards, strict=True) for key in group]
    assert interleaved[:num_rows] == whole
    if not weighted:  # each row once, save the padding
        assert sorted(row for row, _ in interleaved[:num_rows]) == list(range(num_rows))


def test_lightning_uses_it_as_is_and_sets_its_epoch() -> None:
    """Lightning wraps only samplers that are not a ``DistributedSampler`` (and its wrapper
    forwards ``set_epoch`` only in recent versions); this one is, so it shards itself."""
    sampler = EpochSampler(10, seed=0, num_replicas=2, rank=1)
    assert isinstance(sampler, DistributedSampler)
    loader = DataLoader(list(range(10)), sampler=sampler, batch_size=2)
    _set_sampler_epoch(loader, 5)
    assert sampler.epoch == 5


class ShardRecorder(L.LightningModule):
    """Records, per epoch, the training sampler this process really iterates and its rows."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out
        self.layer = torch.nn.Linear(1, 1)
        self.rows: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.rows += batch["index"].tolist()
        return self.layer(batch["index"].float()[:, None]).sum()

    def on_train_epoch_end(self) -> None:
        sampler = self.trainer.train_dataloader.sampler
        seen = (type(sampler).__name__, sampler.num_replicas, sampler.rank, self.rows)
        gathered = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, seen)
        if self.global_rank == 0:
            (self.out / f"epoch{self.current_epoch}.json").write_text(json.dumps(gathered))
        self.rows = []

    def train_dataloader(self) -> DataLoader:
        return DataLoader(KeyRecorder(10), sampler=EpochSampler(10, seed=0), batch_size=2)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_under_ddp_each_process_draws_its_own_shard(tmp_path: Path) -> None:
    """Two CPU processes: Lightning keeps the sampler (no wrapper), which shards itself by the
    process group's rank and draws a new order every epoch."""
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(ShardRecorder(tmp_path))
    epochs = [json.loads((tmp_path / f"epoch{e}.json").read_text()) for e in range(2)]
    for gathered in epochs:
        assert [(name, world, rank) for name, world, rank, _ in gathered] == [
            ("EpochSampler", 2, 0),
            ("EpochSampler", 2, 1),
        ]
        rank0, rank1 = gathered[0][3], gathered[1][3]
        assert len(rank0) == len(rank1) == 5
        assert sorted(rank0 + rank1) == list(range(10))
    assert epochs[0][0][3] != epochs[1][0][3]


class KeyRecorder(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key
        return {"index": index, "crop": int(np.random.default_rng(seed).integers(1000))}


def test_a_dataloader_hands_the_keys_to_the_dataset() -> None:
    sampler = EpochSampler(10, seed=0)
    loader = DataLoader(KeyRecorder(10), sampler=sampler, batch_size=4)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [4, 4, 2]
    assert torch.cat([b["index"] for b in batches]).tolist() == [r for r, _ in keys(sampler, 0)]
    with_workers = DataLoader(KeyRecorder(10), sampler=sampler, batch_size=4, num_workers=2)
    assert [b["crop"].tolist() for b in with_workers] == [b["crop"].tolist() for b in batches]


# -- RNGState -------------------------------------------------------------------------------------
def draws() -> tuple:
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), torch.rand(3))


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    torch.save({"rng": RNGState().state_dict()}, tmp_path / "state.pt")
    expected = draws()
    draws(), torch.randn(100), np.random.rand(7)  # the generators move on
    state = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]  # plain types only
    set_rng_states(state)
    again = draws()
    assert again[:3] == expected[:3]
    assert torch.equal(again[3], expected[3])


# -- Lightning resumes: set_epoch with the restored epoch, RNG states restored ------------------
class Rows(Dataset):
    """Regression rows with a random "crop": noise drawn from the item seed."""

    def __init__(self, n: int = 24) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=gen)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        noise = np.random.default_rng(seed).normal(0, 0.1, 8).astype(np.float32)
        return self.x[index] + torch.from_numpy(noise), self.y[index]


class Regressor(L.LightningModule):
    def __init__(
        self, num_workers: int = 0, early_loader: bool = False, own_generator: bool = False
    ) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.early_loader = early_loader
        self.own_generator = own_generator
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
        )
        self.epochs_seen: list[int] = []
        self.first_rows: list[list[int]] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        if batch_idx == 0:
            self.first_rows.append(y.view(-1).tolist())
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_epoch_start(self) -> None:
        self.epochs_seen.append(self.trainer.train_dataloader.sampler.epoch)

    def train_dataloader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            Rows(),
            sampler=EpochSampler(24, seed=5),
            batch_size=5,
            num_workers=workers,
            persistent_workers=workers > 0,
            # None: making an iterator draws the workers' base seed from the global torch RNG
            generator=torch.Generator().manual_seed(5) if self.own_generator else None,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.early_loader:  # as a scheduler sized by the number of steps does
            assert self.trainer.estimated_stepping_batches > 0
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(
    out: Path,
    max_epochs: int,
    ckpt_path: Path | None = None,
    rng_state: bool = True,
    **options,
) -> Regressor:
    L.seed_everything(0)
    model = Regressor(**options)
    callbacks = [ModelCheckpoint(dirpath=out, filename="last", monitor=None)]
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, RNGState()] if rng_state else callbacks,
    )
    trainer.fit(model, ckpt_path=ckpt_path)
    return model


@pytest.mark.parametrize("own_generator", [False, True])
@pytest.mark.parametrize("early_loader", [False, True])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_lightning_resume_sets_the_restored_epoch_and_continues_exactly(
    tmp_path: Path, num_workers: int, early_loader: bool, own_generator: bool
) -> None:
    """With workers, Lightning makes the first resumed epoch's iterator (which draws indices at
    once) before it sets the restored epoch: RNGState makes it again."""
    options = {
        "num_workers": num_workers,
        "early_loader": early_loader,
        "own_generator": own_generator,
    }
    full = _fit(tmp_path / "full", max_epochs=3, **options)
    assert full.epochs_seen == [0, 1, 2]
    _fit(tmp_path / "part", max_epochs=1, **options)
    last = tmp_path / "part" / "last.ckpt"
    resumed = _fit(tmp_path / "part", max_epochs=3, ckpt_path=last, **options)
    assert resumed.epochs_seen == [1, 2]
    assert resumed.first_rows == full.first_rows[1:]
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_without_rng_state_the_dropout_masks_differ(tmp_path: Path) -> None:
    """The control: the same resume, but seed_everything's state is the one in force."""
    full = _fit(tmp_path / "full", max_epochs=3, rng_state=False)
    _fit(tmp_path / "part", max_epochs=1, rng_state=False)
    last = tmp_path / "part" / "last.ckpt"
    resumed = _fit(tmp_path / "part", max_epochs=3, ckpt_path=last, rng_state=False)
    assert not torch.equal(full.net[0].weight, resumed.net[0].weight)


# -- end to end: train.py killed with SIGKILL mid-epoch, resumed from last.ckpt ------------------
KILLER = '''
import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL this process when the optimizer step ``step`` is about to run: no clean-up."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
'''

EPOCHS = 3
BATCH_SIZE = 4
KILL_AT_STEP = 13
"""36 training rows in batches of 4: 9 steps an epoch; step 13 is mid-epoch 1. More batches
than a loader with 2 workers prefetches (4), so worker-side randomness would show."""


def _train(args: list[str], cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_killed_run_resumes_to_the_uninterrupted_result(
    tiny_la: Path, tmp_path: Path, num_workers: int
) -> None:
    """Train 3 epochs; train again but SIGKILL in the middle of epoch 1 and resume from
    last.ckpt (written after epoch 0) into the same run directory: the final weights, the val
    and test metrics and the test scores are the uninterrupted run's, bit for bit (CPU, one
    process: the same operations in the same order)."""
    (tmp_path / "resume_killer.py").write_text(KILLER)
    replaced = ("trainer.max_epochs=", "data.num_workers=", "data.batch_size=")
    common = [
        *(o for o in tiny_la_overrides(tiny_la) if not o.startswith(replaced)),
        f"trainer.max_epochs={EPOCHS}",
        f"data.num_workers={num_workers}",
        f"data.batch_size={BATCH_SIZE}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"

    result = _train([*common, f"hydra.run.dir={full}"], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    killer = [
        "+callbacks.killer._target_=resume_killer.KillAtStep",
        f"+callbacks.killer.step={KILL_AT_STEP}",
    ]
    result = _train([*common, f"hydra.run.dir={cut}", *killer], tmp_path, tmp_path)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    last = cut / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    assert not (cut / "metrics.json").exists()

    result = _train([*common, f"hydra.run.dir={cut}", f"ckpt_path={last}"], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    expected = _weights(full / "checkpoints" / "last.ckpt")
    resumed = _weights(last)
    assert expected.keys() == resumed.keys()
    for name, value in expected.items():
        assert torch.equal(value, resumed[name]), f"{name} differs after resume"
    metrics = json.loads((full / "metrics.json").read_text())["metrics"]
    again = json.loads((cut / "metrics.json").read_text())["metrics"]
    assert Path(again.pop("best_checkpoint")).name == Path(metrics.pop("best_checkpoint")).name
    assert again.keys() == metrics.keys()
    assert any(key.startswith("val/") for key in metrics)
    assert any(key.startswith("test/") for key in metrics)
    for key, value in metrics.items():
        if key.endswith("_per_s"):
            continue  # throughput: wall-clock time
        assert again[key] == value or (math.isnan(value) and math.isnan(again[key])), key
    for scores in (full / "scores").glob("*.tsv"):
        assert (cut / "scores" / scores.name).read_text() == scores.read_text()
    # the best-so-far score (the objective) and the tested checkpoint survive the resume
    assert again["val/eer_best"] == metrics["val/eer_best"]
    run_full = json.loads((full / "metrics.json").read_text())["run"]
    run_cut = json.loads((cut / "metrics.json").read_text())["run"]
    assert run_cut["optimized_value"] == run_full["optimized_value"] == metrics["val/eer_best"]
    # so does the callbacks' state: early stopping's count and best, the best checkpoint's score
    states = [_callback_states(d / "checkpoints" / "last.ckpt") for d in (full, cut)]
    assert states[0]["EarlyStopping"] == states[1]["EarlyStopping"]
    assert states[0]["EarlyStopping"]["wait_count"] >= 0
    best = [s["ModelCheckpoint"] for s in states]
    assert best[0]["best_model_score"] == best[1]["best_model_score"]
    assert best[0]["best_model_path"] == best[1]["best_model_path"]
    assert json.loads((cut / ".run.json").read_text())["status"] == "finished"


PATH_KEYS = ("dirpath", "best_k_models", "kth_best_model_path", "last_model_path")
"""Callback state that names the run directory (two runs, two directories)."""


def _callback_states(ckpt: Path) -> dict[str, dict]:
    """The early-stopping and best-checkpoint (monitored) callbacks' states in a checkpoint,
    tensors as numbers, paths by file name."""
    states = torch.load(ckpt, map_location="cpu", weights_only=True)["callbacks"]
    out = {}
    for key, state in states.items():
        name = key.split("{")[0]
        if name == "EarlyStopping" or (name == "ModelCheckpoint" and "val/eer" in key):
            out[name] = {
                k: Path(v).name if k == "best_model_path" else getattr(v, "item", lambda v=v: v)()
                for k, v in state.items()
                if k not in PATH_KEYS
            }
    return out
