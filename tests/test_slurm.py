"""Clusters: the submitit launcher configs (the sbatch script they make, a local job), and
``resume=auto``: a run started again in its directory resumes from its last checkpoint, also
after a SIGTERM (what a scheduler sends before it stops a job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_config, tiny_la_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from deepfake_detect.console import INTERRUPTED, RUN_MARKER, run_task
from deepfake_detect.errors import ConfigError
from deepfake_detect.pipeline import OutputDirError, train


def compose_hydra(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def sbatch_script(cfg, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """The sbatch script and requeue limit submitit makes of ``hydra.launcher``, as the Hydra
    launcher hands it over (keys of its base config as they are, the rest ``slurm_``-prefixed);
    a stand-in ``srun`` on PATH lets submitit build it off a cluster."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (folder / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"),
        cluster="slurm",
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    inner = executor._executor
    return inner._make_submission_file_text("python -u train.py", "0"), inner.max_num_timeout


def test_the_slurm_launcher_asks_for_what_the_trainer_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_hydra(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.qos=high",
        "hydra.launcher.account=proj",
        "hydra.launcher.timeout_min=600",
        "hydra.launcher.signal_delay_s=240",
        "hydra.launcher.max_num_timeout=7",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    script, requeues = sbatch_script(cfg, tmp_path, monkeypatch)
    for line in (
        "--nodes=2",
        "--ntasks-per-node=4",  # one task per GPU: Lightning's DDP under SLURM
        "--gpus-per-node=4",
        "--partition=gpu",
        "--qos=high",
        "--account=proj",
        "--time=600",
        "--signal=USR2@240",
        "--cpus-per-task=8",
        "--mem=64GB",
    ):
        assert f"#SBATCH {line}\n" in script, line
    assert requeues == 7
    assert f"{tmp_path / 'sweep'}/.submitit/" in script


def test_the_trainer_configs_expose_nodes_precision_and_accumulation() -> None:
    for trainer in ("default", "cpu", "gpu", "ddp"):
        cfg = compose_hydra(f"trainer={trainer}")
        for key in ("devices", "num_nodes", "precision", "accumulate_grad_batches"):
            assert key in cfg.trainer, (trainer, key)
    ddp = compose_hydra("trainer=ddp", "trainer.num_nodes=4", "trainer.precision=16-mixed")
    assert (ddp.trainer.strategy, ddp.trainer.num_nodes, ddp.trainer.precision) == (
        "ddp",
        4,
        "16-mixed",
    )
    assert compose_hydra("trainer=gpu").trainer.precision == "bf16-mixed"


def test_the_local_launcher_composes() -> None:
    cfg = compose_hydra("hydra/launcher=local")
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 0


# -- resume=auto ------------------------------------------------------------------------------
def _cfg(out: Path, root: Path, *overrides: str):
    return compose_config(
        out,
        *tiny_la_overrides(root),
        "trainer.limit_train_batches=2",
        "test=false",
        *overrides,
    )


def _epoch(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]


def test_resume_auto_continues_the_run_in_its_directory(tiny_la: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_task(train, _cfg(out, tiny_la, "trainer.max_epochs=1"))
    last = out / "checkpoints" / "last.ckpt"
    assert _epoch(last) == 0
    with pytest.raises(OutputDirError, match="resume=auto"):  # the directory is taken
        train(_cfg(out, tiny_la, "trainer.max_epochs=2"))
    metrics = run_task(train, _cfg(out, tiny_la, "trainer.max_epochs=2", "resume=auto"))
    assert _epoch(last) == 1
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
    assert json.loads((out / RUN_MARKER).read_text())["status"] == "finished"
    assert "val/eer_best" in metrics


def test_resume_auto_without_a_checkpoint_starts_fresh_there(tiny_la: Path, tmp_path: Path) -> None:
    """A job requeued before its first epoch ended: the directory holds its marker only."""
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_MARKER).write_text(json.dumps({"status": "running", "pid": 1, "started": 0}))
    run_task(train, _cfg(out, tiny_la, "trainer.max_epochs=1", "resume=auto"))
    assert _epoch(out / "checkpoints" / "last.ckpt") == 0
    marker = json.loads((out / RUN_MARKER).read_text())
    assert marker["status"] == "finished" and marker["pid"] == os.getpid()


def test_resume_takes_false_or_auto(tiny_la: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resume='yes': expected false or auto"):
        train(_cfg(tmp_path / "run", tiny_la, "resume=yes"))


# -- subprocesses: SIGTERM, the local submitit launcher ------------------------------------------
SIGTERMER = '''
import os
import signal

from lightning.pytorch.callbacks import Callback


class TermAtStep(Callback):
    """Send this process SIGTERM (a scheduler stopping the job) before optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
'''


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_sigterm_stops_the_run_interrupted_and_resume_auto_finishes_it(
    tiny_la: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-epoch 1 (2 steps an epoch): Lightning stops the fit, the run is marked
    interrupted (exit 130, the resume command printed); the same command with resume=auto
    resumes from last.ckpt (epoch 0) and runs to max_epochs."""
    (tmp_path / "term_at_step.py").write_text(SIGTERMER)
    run = tmp_path / "run"
    common = [
        *tiny_la_overrides(tiny_la),
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "test=false",
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    term = ["+callbacks.term._target_=term_at_step.TermAtStep", "+callbacks.term.step=3"]
    result = _train([*common, *term], tmp_path)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "resume it with" in result.stderr
    marker = json.loads((run / RUN_MARKER).read_text())
    assert marker["status"] == "interrupted"
    assert (run / INTERRUPTED).is_file()
    assert _epoch(run / "checkpoints" / "last.ckpt") == 0

    result = _train([*common, "resume=auto"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _epoch(run / "checkpoints" / "last.ckpt") == 2
    assert json.loads((run / RUN_MARKER).read_text())["status"] == "finished"
    assert not (run / INTERRUPTED).exists()


SLURM_SIGNALS = '''
import os
import signal

from lightning.pytorch.callbacks import Callback


class RequeueAtStep(Callback):
    """SLURM's requeue signal (SIGUSR1) before optimizer step ``step``, then the job's end
    (SIGKILL) one step later, as a scheduler stops it after the grace time."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)
        elif trainer.global_step == self.step + 1:
            os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
def test_under_slurm_sigusr1_writes_a_checkpoint_requeues_and_resume_auto_takes_it(
    tiny_la: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SLURM job's environment (Lightning detects it) and a stand-in ``scontrol``: SIGUSR1
    at the start of epoch 1 (2 steps an epoch) makes Lightning write ``hpc_ckpt_1.ckpt`` into
    the run directory and call ``scontrol requeue <job id>``; the requeued job (the same
    command, ``resume=auto``) resumes from that checkpoint, newer than last.ckpt, and runs to
    max_epochs."""
    (tmp_path / "slurm_signals.py").write_text(SLURM_SIGNALS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODELIST": "localhost",
    }.items():
        monkeypatch.setenv(key, value)
    run = tmp_path / "run"
    common = [
        *tiny_la_overrides(tiny_la),
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        "test=false",
        "resume=auto",
        f"hydra.run.dir={run}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    signals = ["+callbacks.slurm._target_=slurm_signals.RequeueAtStep", "+callbacks.slurm.step=2"]
    result = _train([*common, *signals], tmp_path)
    assert result.returncode == -9, result.stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    hpc = run / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == 2
    assert _epoch(run / "checkpoints" / "last.ckpt") == 0

    result = _train(common, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {hpc}" in result.stdout + result.stderr
    assert _epoch(run / "checkpoints" / "last.ckpt") == 2
    assert json.loads((run / RUN_MARKER).read_text())["status"] == "finished"


@pytest.mark.slow
def test_the_local_submitit_launcher_runs_a_job(tiny_la: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = _train(
        [
            "-m",
            "hydra/launcher=local",
            *tiny_la_overrides(tiny_la),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            f"hydra.sweep.dir={sweep}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((sweep / "0" / "metrics.json").read_text())
    assert saved["run"]["optimized_metric"] == "val/eer_best"
    assert json.loads((sweep / "0" / RUN_MARKER).read_text())["status"] == "finished"
    assert any((sweep / ".submitit").rglob("*_log.out"))  # ran as a submitit job
