"""What a user sees: our error messages once and readable, config values checked naming the key,
runs without validation, the final table, the per-epoch log line, run directories of failed and
interrupted runs, Ctrl-C and its resume command, dependency noise silenced."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config, la_data_overrides, tiny_la_overrides
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf, open_dict

from deepfake_detect.console import (
    FAILED,
    INTERRUPTED,
    ReportedError,
    quiet_dependencies,
    run_task,
    settle_failed_run,
)
from deepfake_detect.data.datamodule import SetSpec, SpoofDataModule
from deepfake_detect.data.manifest import CorpusError
from deepfake_detect.errors import ConfigError, RunInterrupted, find_user_error
from deepfake_detect.evaluation.report import text_table
from deepfake_detect.pipeline import evaluate, train


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env = {**base, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **env}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _assert_one_clean_error(stderr: str, message: str) -> None:
    assert stderr.count("error: ") == 1, stderr
    assert message in stderr, stderr
    assert "Traceback" not in stderr and "\\n" not in stderr, stderr
    assert "InstantiationException" not in stderr


# -- errors: found under Hydra's wrappers, printed once ---------------------------------------
def test_user_errors_are_found_under_hydras_wrappers(tmp_path: Path) -> None:
    nested = {
        "_target_": "builtins.dict",
        "inner": {
            "_target_": "deepfake_detect.data.datamodule.SpoofDataModule",
            "corpora": {},
            "batch_size": "abc",
        },
    }
    with pytest.raises(Exception) as caught:
        instantiate(nested)
    assert "\\n" in str(caught.value) or "InstantiationException" in repr(caught.value)
    error, message = find_user_error(caught.value)
    assert isinstance(error, ConfigError)
    assert message == "data.batch_size must be a positive integer, got 'abc'"

    # our error two instantiations deep (the module builds its net): the message alone
    source = tmp_path / "nowhere"
    cfg = compose_config(tmp_path / "run", "model=w2v2_linear", f"model.net.source={source}")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model)
    assert "InstantiationException(" in str(caught.value)  # what Hydra would print
    error, message = find_user_error(caught.value)
    assert type(error).__name__ == "EncoderLoadError"
    assert message == f"encoder directory not found: {source} (check model.net.source)"

    # a constructor's plain ValueError for a config value: named by the config key
    cfg = compose_config(tmp_path / "run", "model=w2v2_tiny", "model.freeze=al")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model)
    _, message = find_user_error(caught.value)
    assert message == "model: freeze must be one of ('none', 'feature_encoder', 'all'), got 'al'"
    cfg = compose_config(tmp_path / "run", "model=w2v2_tiny", "+model.net.bogus=1")
    with pytest.raises(Exception) as caught:
        instantiate(cfg.model)  # the net is instantiated inside the module's constructor
    _, message = find_user_error(caught.value)
    assert message.startswith("model: ") and "unexpected keyword argument 'bogus'" in message

    # a bug keeps its traceback
    def buggy() -> None:
        try:
            {}["key"]
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc

    with pytest.raises(RuntimeError) as caught:
        buggy()
    assert find_user_error(caught.value) is None


def test_data_settings_are_checked_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"^data.batch_size must be a positive integer, got 'abc'$"
    ):
        SpoofDataModule(corpora={}, batch_size="abc")
    with pytest.raises(ConfigError, match=r"data.num_workers must be an integer >= 0, got -1"):
        SpoofDataModule(corpora={}, num_workers=-1)
    with pytest.raises(ConfigError, match=r"data.max_len must be a positive integer or null, got"):
        SpoofDataModule(corpora={}, max_len=4.5)
    with pytest.raises(ConfigError, match="data.batch_size .* got True"):
        SpoofDataModule(corpora={}, batch_size=True)
    SpoofDataModule(corpora={}, batch_size=4, max_len=None, limit_per_set=None)


def test_a_missing_corpus_root_names_the_setting_it_came_from(tmp_path: Path) -> None:
    # data=mini interpolates every root from paths.data_dir: that is the setting to change
    cfg = compose_config(tmp_path / "run", "data=mini", "data.test=in_the_wild:all")
    with open_dict(cfg):
        cfg.paths.data_dir = "data"
    with pytest.raises(CorpusError) as caught:
        train(cfg)
    message = str(caught.value)
    assert message.startswith("ASVspoof2019 LA root not found: data/mini_la (")
    assert "data.corpora.asvspoof2019_la.root is ${paths.data_dir}/mini_la" in message
    assert "set paths.data_dir to the folder that holds the corpora" in message
    assert f"relative paths start at {os.getcwd()}" in message

    # a root set directly: that key (the data module alone knows no more than the key)
    cfg = compose_config(tmp_path / "run", "data=mini", "data.corpora.in_the_wild.root=/nowhere")
    datamodule = instantiate(cfg.data)
    with pytest.raises(CorpusError, match=r"set data.corpora.in_the_wild.root=/path/to/corpus\)$"):
        datamodule.rows(SetSpec.parse("in_the_wild:all"))


def test_entry_points_print_our_message_once(tmp_path: Path) -> None:
    # a corpus root that does not exist: the message and the setting, no traceback
    result = _run(
        [str(ROOT / "train.py"), "data=mini", f"paths.log_dir={tmp_path}/logs"], cwd=tmp_path
    )
    assert result.returncode == 1
    _assert_one_clean_error(result.stderr, "root not found: ")
    assert "set paths.data_dir to the folder that holds the corpora" in result.stderr
    # the run left nothing of value: its directory is gone
    assert not list((tmp_path / "logs" / "train" / "runs").iterdir())

    # a checkpoint that does not exist
    eval_py = str(ROOT / "eval.py")
    missing = tmp_path / "missing.ckpt"
    result = _run([eval_py, f"ckpt_path={missing}", f"paths.log_dir={tmp_path}/logs"], tmp_path)
    assert result.returncode == 1
    _assert_one_clean_error(result.stderr, f"error: checkpoint not found: {missing}")

    # no checkpoint at all: one line with a command to copy
    result = _run([eval_py, f"paths.log_dir={tmp_path}/logs"], cwd=tmp_path)
    assert result.returncode == 1
    _assert_one_clean_error(
        result.stderr,
        "error: eval.py needs a checkpoint: python eval.py "
        "ckpt_path=logs/train/runs/<run>/checkpoints/epoch_NNN.ckpt data=<data config>",
    )
    assert "MissingMandatoryValue" not in result.stderr

    # the full trace stays available
    result = _run([eval_py, f"ckpt_path={missing}"], cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "CheckpointError" in result.stderr


def test_run_task_marks_or_removes_failed_runs(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}})
    run = tmp_path / "run"

    def fails(_: object) -> None:
        raise CorpusError("protocol not found: x.txt")

    (run / ".hydra").mkdir(parents=True)
    (run / "csv").mkdir()
    (run / "train.log").write_text("")
    with pytest.raises(ReportedError, match=r"^error: protocol not found: x.txt$"):
        run_task(fails, cfg)
    assert not run.exists()  # no checkpoint, no metrics: removed

    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ReportedError) as caught:
        run_task(fails, cfg)
    assert f"run directory {run} marked FAILED" in str(caught.value)
    marker = (run / FAILED).read_text()
    assert marker.startswith("protocol not found: x.txt") and "Traceback" in marker

    def interrupted(_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        run_task(interrupted, cfg)
    assert exited.value.code == 130
    assert (run / INTERRUPTED).read_text().startswith(f"interrupted: {run}")

    assert run_task(lambda _: 7, cfg) == 7  # a run that ends well clears the marks
    assert not (run / FAILED).exists() and not (run / INTERRUPTED).exists()

    # a bug keeps its directory and its trace (Hydra prints it)
    with pytest.raises(KeyError):
        run_task(lambda _: {}["key"], cfg)
    assert "KeyError" in (run / FAILED).read_text()
    assert settle_failed_run(None, "x") is None


# -- runs without validation, the final table, the epoch line -----------------------------------
def test_no_validation_tests_the_final_weights(tiny_la: Path, tmp_path: Path, caplog) -> None:
    cfg = compose_config(
        tmp_path / "run", *tiny_la_overrides(tiny_la), "trainer.limit_val_batches=0"
    )
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg)
    assert "no validation (trainer.limit_val_batches=0)" in caplog.text
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt"]  # no best checkpoint: nothing chose it
    assert metrics["best_checkpoint"] == "" and 0 <= metrics["test/eer"] <= 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    tested = saved["provenance"]["checkpoint"]
    assert tested == f"the final weights of epoch 1, saved as {tmp_path}/run/checkpoints/last.ckpt"


def test_a_fast_dev_run_says_what_it_tested(tiny_la: Path, tmp_path: Path, capsys) -> None:
    cfg = compose_config(tmp_path / "run", *tiny_la_overrides(tiny_la), "debug=fdr")
    train(cfg)
    out = capsys.readouterr().out
    assert "(tested: the final weights of epoch 0 (no checkpoint written))" in out
    assert "checkpoint: last" not in out


def test_final_table_epoch_lines_and_eval_run_dir(
    tiny_la: Path, tmp_path: Path, caplog, capsys
) -> None:
    two_sets = "data.test=[asvspoof2019_la:eval,asvspoof2019_la:dev]"
    cfg = compose_config(tmp_path / "run", *tiny_la_overrides(tiny_la), two_sets)
    with caplog.at_level(logging.INFO, logger="deepfake_detect.callbacks.epoch_log"):
        metrics = train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("epoch_log")]
    assert [line.split("  ")[0] for line in lines] == ["epoch 0", "epoch 1"]
    assert all("train/loss " in line and "val/eer " in line for line in lines), lines
    assert "best " in lines[1] and "elapsed 0:00:" in lines[1] and "samples/s" in lines[1]

    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == f"run directory: {tmp_path / 'run'}"
    header = next(i for i, line in enumerate(out) if line.startswith("test set"))
    assert out[header].split() == "test set EER % minDCF Cllr bona fide spoof".split()
    rows = {line.split()[0]: line.split() for line in out[header + 1 : header + 3]}
    eer = 100 * metrics["test/asvspoof2019_la_eval/eer"]
    assert rows["asvspoof2019_la_eval"][1] == f"{eer:.2f}"
    assert rows["asvspoof2019_la_eval"][-2:] == ["6", "18"]  # bona fide, spoof
    assert rows["asvspoof2019_la_dev"][-2:] == ["6", "12"]
    assert any(line.startswith("test EER: ") for line in out[:header])

    eval_cfg = compose_config(
        tmp_path / "eval_run",
        *la_data_overrides(tiny_la),
        f"ckpt_path={metrics['best_checkpoint']}",
        config_name="eval",
    )
    evaluate(eval_cfg)
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == f"run directory: {tmp_path / 'eval_run'}"


def test_text_table_is_compact_and_complete() -> None:
    table = text_table(
        {
            "asvspoof2019_la": {"eer": 0.0655, "min_tdcf": 0.2, "min_dcf": 0.12, "cllr": 0.8},
            "in_the_wild_with_a_long_name": {"eer": 0.3312, "min_dcf": 0.9, "cllr": 1.4},
        }
    ).splitlines()
    assert table[0].split() == "test set EER % min t-DCF minDCF Cllr bona fide spoof".split()
    assert table[1].split()[:5] == ["asvspoof2019_la", "6.55", "0.2000", "0.1200", "0.8000"]
    assert table[2].split()[:3] == ["in_the_wild_with_a_long_name", "33.12", "–"]
    assert len({len(line) for line in table}) == 1  # aligned columns
    assert "min t-DCF" not in text_table({"a": {"eer": 0.1}})


# -- Ctrl-C ---------------------------------------------------------------------------------------
class InterruptAt(Callback):
    """Raise KeyboardInterrupt (as Ctrl-C does) at a training step, unless NO_INTERRUPT is set."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if os.environ.get("NO_INTERRUPT"):
            return
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


def test_ctrl_c_in_fit_is_an_interruption_with_the_checkpoint(tiny_la: Path, tmp_path: Path):
    cfg = compose_config(tmp_path / "run", *tiny_la_overrides(tiny_la), "test=false")
    with open_dict(cfg):
        cfg.callbacks.interrupt = {"_target_": f"{__name__}.InterruptAt"}
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C while it stops
    try:
        with pytest.raises(RunInterrupted) as caught:
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, sigint)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert caught.value.checkpoint == str(last)
    assert torch.load(last, weights_only=True)["epoch"] == 0


def test_ctrl_c_prints_the_command_that_resumes_in_the_same_directory(
    tiny_la: Path, tmp_path: Path
) -> None:
    overrides = [
        *tiny_la_overrides(tiny_la),
        "+callbacks.interrupt._target_=test_console.InterruptAt",
    ]
    pythonpath = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    result = _run(
        [str(ROOT / "train.py"), *overrides, f"paths.log_dir={tmp_path}"],
        cwd=tmp_path,
        PYTHONPATH=pythonpath,
    )
    assert result.returncode == 130, result.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert f"interrupted: {run}" in result.stderr
    command = result.stderr.split("resume it with:\n", 1)[1].strip().splitlines()[0]
    args = shlex.split(command)
    assert args[:2] == ["python", str(ROOT / "train.py")]
    assert args[-2:] == [f"ckpt_path={run}/checkpoints/last.ckpt", f"hydra.run.dir={run}"]
    assert (run / INTERRUPTED).read_text().strip().endswith(command)
    assert "Traceback" not in result.stderr

    resumed = _run(args[1:], cwd=tmp_path, PYTHONPATH=pythonpath, NO_INTERRUPT="1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dirpath has changed" not in resumed.stderr + resumed.stdout
    assert list((tmp_path / "train" / "runs").iterdir()) == [run]  # the same directory
    assert (run / "metrics.json").is_file() and (run / "report.md").is_file()
    assert not (run / INTERRUPTED).exists()
    # the epoch line reached the run's log file; the last thing shown is the run directory
    log_text = (run / "train.log").read_text()
    assert "epoch 1  train/loss " in log_text and f"run directory: {run}" in log_text
    assert resumed.stdout.rstrip().splitlines()[-1] == f"run directory: {run}"
    assert "💡" not in resumed.stdout + resumed.stderr
    assert "LeafSpec" not in resumed.stderr


# -- noise --------------------------------------------------------------------------------------
def test_dependency_noise_is_silenced(caplog) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependencies()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("something of ours", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something of ours"]
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging ... litlogger")
        rank_zero_info("GPU available: False")
    assert "Tip" not in caplog.text and "GPU available" in caplog.text
