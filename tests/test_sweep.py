"""Sweeps: the objective (the best val/eer, the score the tested checkpoint was chosen by), the
Optuna search spaces of conf/hparams_search/, a sweep end to end with a failed trial, the run
status and facts that ``compare`` reads, and W&B grouping, tags and finishing (offline)."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import CONF, ROOT, compose_config, la_data_overrides, tiny_la_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deepfake_detect.console import RUN_MARKER, end_run, run_task
from deepfake_detect.pipeline import experiment_name, objective, train, wandb_identity

SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
RUN_KEYS = {
    "task", "experiment", "model", "freeze", "train_data", "augment", "seed", "train_seconds",
    "accelerator", "devices", "num_nodes", "gpu_hours", "params", "trainable_params",
    "optimized_metric", "optimized_value",
}  # fmt: skip
"""metrics.json's "run" section: the contract ``compare`` reads."""


def compose_sweep(search: str, *overrides: str):
    """The train config of ``hparams_search=<search>`` with its ``hydra`` node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hparams_search={search}", *overrides], return_hydra_config=True
        )
    GlobalHydra.instance().clear()
    return cfg


def search_model(search: str) -> list[str]:
    """The model a search space is written for."""
    return ["model=lcnn"] if search.startswith("lcnn") else ["experiment=w2v2_frozen"]


# -- the search spaces ---------------------------------------------------------------------------
def test_there_are_search_spaces() -> None:
    assert {"lcnn_optuna", "w2v2_optuna"} <= set(SEARCHES)


@pytest.mark.parametrize("search", SEARCHES)
def test_search_space_composes_and_every_choice_is_a_valid_override(search: str) -> None:
    cfg = compose_sweep(search, *search_model(search))
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.direction == "minimize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert isinstance(sweeper.sampler.seed, int)
    assert sweeper.storage is None
    assert sweeper.n_trials > 0 and sweeper.n_jobs >= 1
    assert sweeper.max_failure_rate == 1.0  # a failed trial never ends the sweep
    assert cfg.optimized_metric == "val/eer_best"
    assert len(sweeper.params) >= 4
    for key, space in sweeper.params.items():
        if key != "augment":
            assert OmegaConf.select(cfg, key) is not None, f"{search}: {key} is not a config key"
        if space.startswith("choice("):  # every value composes (one trial's overrides)
            for value in space.removeprefix("choice(").removesuffix(")").split(","):
                trial = compose_sweep(search, *search_model(search), f"{key}={value.strip()}")
                if key == "augment" and value.strip() != "none":
                    assert any("_target_" in e for e in trial.augment.values() if e), value
        else:
            assert "interval(" in space, space


# -- the objective ---------------------------------------------------------------------------------
def test_objective_is_the_named_metric_and_none_fails_a_trial() -> None:
    """Optuna's sweeper records a trial whose value is not a float as failed and goes on; a NaN
    would raise inside it (optuna refuses to store NaN), so a multirun turns it into None."""
    metrics = {"val/eer": 0.3, "val/eer_best": 0.1, "test/eer": 0.2}
    assert objective(metrics, "val/eer_best", multirun=True) == 0.1
    assert objective(metrics, "test/eer", multirun=False) == 0.2
    for multirun in (False, True):  # no validation: nothing to return, as before
        assert objective(metrics, "val/missing", multirun=multirun) is None
    assert math.isnan(objective({"val/eer_best": float("nan")}, "val/eer_best", multirun=False))
    for bad in (float("nan"), float("inf")):
        assert objective({"val/eer_best": bad}, "val/eer_best", multirun=True) is None


def test_wandb_identity_groups_a_sweep_and_tags_the_run() -> None:
    facts = {
        "task": "train",
        "experiment": "w2v2_frozen",
        "model": "Wav2Vec2Classifier",
        "freeze": "all",
        "train_data": ["asvspoof2019_la:train", "mini_wild:train"],
        "augment_name": "rawboost+codec",
    }
    entry = OmegaConf.create({"_target_": "x.wandb_logger", "group": None})
    identity = wandb_identity(entry, facts, OmegaConf.create(["mine", "freeze:all"]))
    assert identity["group"] is None  # a single run (no Hydra multirun here)
    assert identity["tags"] == [
        "mine",
        "freeze:all",
        "experiment:w2v2_frozen",
        "model:Wav2Vec2Classifier",
        "data:asvspoof2019_la:train",
        "data:mini_wild:train",
        "augment:rawboost+codec",
    ]
    entry.group = "ablation"
    assert wandb_identity(entry, {**facts, "freeze": None}, None)["group"] == "ablation"


def test_the_experiment_name_is_hydra_s_choice_unless_set() -> None:
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_sweep("lcnn_optuna", "experiment=w2v2_frozen", "hydra.job.name=x")
    assert experiment_name(cfg) is None  # a composed config: no Hydra app
    HydraConfig.instance().set_config(cfg)
    try:
        assert experiment_name(cfg) == "w2v2_frozen"
        cfg.experiment_name = "mine"
        assert experiment_name(cfg) == "mine"
    finally:
        HydraConfig.instance().cfg = None


# -- the run status marker ------------------------------------------------------------------------
def test_end_run_records_only_this_process_s_run(tmp_path: Path) -> None:
    marker = tmp_path / RUN_MARKER
    marker.write_text(json.dumps({"status": "running", "pid": os.getpid(), "started": 1.0}))
    end_run(tmp_path, "failed", "bad value\n  for key x")
    state = json.loads(marker.read_text())
    assert state["status"] == "failed" and state["error"] == "bad value for key x"
    assert state["ended"] >= state["started"]
    end_run(tmp_path, "finished")
    assert "error" not in json.loads(marker.read_text())
    other = {"status": "running", "pid": os.getpid() + 1, "started": 1.0}
    marker.write_text(json.dumps(other))
    end_run(tmp_path, "failed", "not mine")
    assert json.loads(marker.read_text()) == other


# -- W&B records of an offline run ------------------------------------------------------------
def wandb_records(run_dir: Path) -> Iterator:
    """The records of an offline W&B run's ``run-*.wandb`` file (a LevelDB-style log of
    protobuf ``Record`` messages in 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # block padding
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last fragment
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(out_dir: Path) -> dict:
    """What an offline run in ``out_dir`` recorded: group, tags, config keys, exit code,
    artifacts."""
    runs = list((out_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    seen: dict = {"artifacts": [], "config": {}}
    for record in wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            seen["group"], seen["tags"] = record.run.run_group, list(record.run.tags)
        elif kind == "config":
            seen["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "exit":
            seen["exit_code"] = record.exit.exit_code
        elif kind == "artifact":
            seen["artifacts"].append((record.artifact.type, list(record.artifact.aliases)))
    return seen


# -- a run in-process: the best score, the run section, the marker, W&B ------------------------
def test_train_returns_the_best_val_eer_and_writes_the_run_facts(
    tiny_la: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = compose_config(
        out,
        *tiny_la_overrides(tiny_la),
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "callbacks.early_stopping=null",
        "logger=wandb",
        "logger.wandb.log_model=true",
        "augment=rawboost",
        "experiment_name=tiny",
        "tags=[mine]",
    )
    metrics = run_task(train, cfg)
    with open(out / "csv" / "metrics.csv") as f:
        per_epoch = [float(r["val/eer"]) for r in csv.DictReader(f) if r.get("val/eer")]
    assert len(per_epoch) == 3
    assert metrics["val/eer_best"] == pytest.approx(min(per_epoch))
    assert metrics["val/eer"] == pytest.approx(per_epoch[-1])  # the last epoch's, not the objective
    best_epoch = per_epoch.index(min(per_epoch))
    assert Path(metrics["best_checkpoint"]).name == f"epoch_{best_epoch:03d}.ckpt"

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["val/eer_best"] == metrics["val/eer_best"]
    run = saved["run"]
    assert set(run) == RUN_KEYS
    assert run["task"] == "train" and run["experiment"] == "tiny"
    assert run["model"] == "Wav2Vec2Classifier" and run["freeze"] == "none"
    assert run["train_data"] == "asvspoof2019_la:train"
    assert run["augment"].startswith("RawBoost(")
    assert (run["seed"], run["accelerator"], run["devices"], run["num_nodes"]) == (42, "cpu", 1, 1)
    assert run["gpu_hours"] == 0 and run["train_seconds"] > 0
    n_params = sum(p.numel() for p in instantiate(cfg.model).parameters())
    assert run["params"] == run["trainable_params"] == n_params
    assert run["optimized_metric"] == "val/eer_best"
    assert run["optimized_value"] == metrics["val/eer_best"]
    marker = json.loads((out / RUN_MARKER).read_text())
    assert marker["status"] == "finished" and marker["ended"] >= marker["started"]

    seen = wandb_run(out)
    assert seen["group"] == ""  # a single run: no group
    assert seen["tags"] == [
        "mine", "experiment:tiny", "model:Wav2Vec2Classifier", "freeze:none",
        "data:asvspoof2019_la:train", "augment:rawboost",
    ]  # fmt: skip
    config = seen["config"]  # the whole resolved config
    assert config["data"]["max_len"] == 8000 and config["seed"] == 42
    assert config["paths"]["output_dir"] == str(out)
    assert config["augment"]["rawboost"]["_target_"] == "deepfake_detect.augment.RawBoost"
    assert seen["exit_code"] == 0
    assert any(kind == "model" and "best" in aliases for kind, aliases in seen["artifacts"])


def test_a_run_that_raises_finishes_wandb_failed_and_records_the_error(
    tiny_la: Path, tmp_path: Path
) -> None:
    import wandb

    out = tmp_path / "run"
    cfg = compose_config(
        out,
        *tiny_la_overrides(tiny_la),
        "logger=wandb",
        # raises while the trainer is built, after W&B started
        "callbacks.early_stopping.mode=sideways",
    )
    with pytest.raises(Exception, match="sideways"):
        run_task(train, cfg)
    assert wandb.run is None
    assert wandb_run(out)["exit_code"] == 1
    marker = json.loads((out / RUN_MARKER).read_text())
    assert marker["status"] == "failed" and "sideways" in marker["error"]
    assert "\n" not in marker["error"]


# -- a sweep end to end --------------------------------------------------------------------------
def sweep(tmp_path: Path, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py hparams_search=lcnn_optuna`` on the tiny corpus: a small LCNN, one epoch of one
    or two batches per trial."""
    args = [
        "hparams_search=lcnn_optuna",
        "~experiment",
        *la_data_overrides(root),
        "model=lcnn",
        "model.net.width=0.25",
        "model.net.lstm=false",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "data.batch_size=8",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_two_trial_sweep_records_the_best_trial(tiny_la: Path, tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        tiny_la,
        "hydra.sweeper.n_trials=2",
        "augment=choice(none,rawboost)",
        "data.max_len=choice(8000,16000)",
        "logger=wandb",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "sweep"
    best = yaml.safe_load((root / "optimization_results.yaml").read_text())
    trials = {}
    for n in (0, 1):
        saved = json.loads((root / str(n) / "metrics.json").read_text())
        overrides = yaml.safe_load((root / str(n) / ".hydra" / "overrides.yaml").read_text())
        trials[n] = (saved["run"]["optimized_value"], overrides, saved)
        assert saved["run"]["optimized_value"] == saved["metrics"]["val/eer_best"]
        assert json.loads((root / str(n) / RUN_MARKER).read_text())["status"] == "finished"
    value, overrides, _ = min(trials.values(), key=lambda t: t[0])
    assert best["best_value"] == pytest.approx(value)
    for key, chosen in best["best_params"].items():
        assert f"{key}={chosen}" in overrides, (key, chosen, overrides)
    assert set(best["best_params"]) == {
        "model.optimizer.lr", "model.net.dropout", "data.max_len", "augment",
    }  # fmt: skip
    groups = {wandb_run(root / str(n))["group"] for n in (0, 1)}
    assert groups == {f"train-{root.name}"}  # the trials of one sweep share a W&B group


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tiny_la: Path, tmp_path: Path) -> None:
    """Dropout 7.0 fails its trial (the model refuses it); TPE seeded at 1234 draws it first
    twice, then 0.1. The study in a SQLite file shows the failures."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = sweep(
        tmp_path,
        tiny_la,
        "hydra.sweeper.n_trials=3",
        "model.net.dropout=choice(0.1,7.0)",
        "model.optimizer.lr=0.001",
        "augment=none",
        "data.max_len=8000",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        f"hydra.sweeper.storage={storage}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropout probability has to be between 0 and 1" in result.stderr + result.stdout
    study = optuna.load_study(study_name="lcnn_optuna", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") >= 1 and states.count("COMPLETE") >= 1, states
    assert len(states) == 3
    assert all(
        t.params["model.net.dropout"] == 0.1 for t in study.trials if t.state.name == "COMPLETE"
    )
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"model.net.dropout": 0.1}
    for trial in study.trials:  # a failed trial's directory stays, marked (compare lists it)
        marker = json.loads((tmp_path / "sweep" / str(trial.number) / RUN_MARKER).read_text())
        expected = "failed" if trial.state.name == "FAIL" else "finished"
        assert marker["status"] == expected
        if expected == "failed":
            assert "dropout probability" in marker["error"]
