"""`deepfake-detect compare`: run folders (one real tiny run, and copies of its files with
chosen values) -> experiments aggregated over seeds, best marked, failed / running / incomplete
runs listed, Markdown + CSV + PNG written; sweeps, W&B through a fake Api, bad inputs."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from conftest import compose_config, tiny_la_overrides
from omegaconf import OmegaConf

from deepfake_detect.cli import build_parser, main
from deepfake_detect.cli import compare as compare_cli
from deepfake_detect.evaluation import compare as compare_module
from deepfake_detect.evaluation.compare import (
    CompareError,
    aggregate,
    checkpoint_params,
    compare_runs,
    find_run_dirs,
    read_run_dir,
    read_sweep,
    write_comparison,
)

LA, WILD = "asvspoof2019_la", "in_the_wild"


@pytest.fixture(scope="module")
def real_run(tiny_la: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real 1-epoch run of the tiny Wav2Vec2 (frozen encoder) with its resolved config
    saved where Hydra saves it."""
    from deepfake_detect.pipeline import train

    run = tmp_path_factory.mktemp("real") / "run"
    cfg = compose_config(
        run, *tiny_la_overrides(tiny_la), "trainer.max_epochs=1", "model.freeze=all", "seed=3"
    )
    train(cfg)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run


def write_run(
    folder: Path,
    template: Path,
    *,
    model: str,
    freeze: str = "none",
    seed: int = 0,
    eers: dict[str, float] | None = None,
    tdcf: dict[str, float] | None = None,
    status: str | None = "finished",
    run_section: dict[str, Any] | None = None,
    error: str = "",
) -> Path:
    """A run folder written from the real run's files, with the given facts. ``eers`` None:
    no metrics.json (the run never finished)."""
    folder.mkdir(parents=True)
    config = yaml.safe_load((template / ".hydra" / "config.yaml").read_text())
    config["model"]["freeze"], config["seed"] = freeze, seed
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"runtime": {"choices": {"model": model, "augment": "none"}}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}"]))
    marker = {"pid": 999_999_999, "host": socket.gethostname(), "started": 1000.0}
    if status is not None:
        marker.update(status=status, ended=1600.0)
    if error:
        marker["error"] = error
    (folder / ".run.json").write_text(json.dumps(marker))
    if eers is None:
        return folder
    metrics = json.loads((template / "metrics.json").read_text())
    record = next(iter(metrics["test_sets"].values()))
    metrics["test_sets"], flat = {}, {}
    for name, eer in eers.items():
        entry = copy.deepcopy(record)
        entry["metrics"]["eer"] = eer
        if tdcf and name in tdcf:
            entry["metrics"]["min_tdcf"] = tdcf[name]
        metrics["test_sets"][name] = entry
        flat[f"test/{name}/eer"] = eer
    metrics["metrics"] = {k: v for k, v in metrics["metrics"].items() if not k.startswith("test")}
    metrics["metrics"].update(flat)
    metrics.pop("run", None)  # the real run's own; these runs say what they were by config
    if run_section is not None:
        metrics["run"] = run_section
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def four_runs(real_run: Path, tmp_path: Path) -> Path:
    """Two seeds of one experiment, one run of another (no in_the_wild result), one failed."""
    root = tmp_path / "runs"
    write_run(root / "a1", real_run, model="lcnn", seed=1, eers={LA: 0.10, WILD: 0.30})
    write_run(root / "a2", real_run, model="lcnn", seed=2, eers={LA: 0.14, WILD: 0.34})
    write_run(
        root / "b1",
        real_run,
        model="w2v2_aasist",
        freeze="all",
        seed=1,
        eers={LA: 0.08},
        tdcf={LA: 0.21},
        run_section={
            "model": "w2v2_aasist",
            "freeze": "all",
            "train_data": "asvspoof2019_la:train",
            "augment": "none",
            "seed": 1,
            "train_seconds": 7200.0,
            "gpu_hours": 4.0,
            "params": 300_000_000,
            "trainable_params": 400_000,
        },
    )
    write_run(root / "c1", real_run, model="lcnn", seed=3, status="failed", error="CUDA OOM")
    return root


def test_real_run_is_read_back(real_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((real_run / "metrics.json").read_text())
    record = read_run_dir(real_run)
    assert record.status == "finished"  # metrics.json written after the marker's start
    assert record.results[LA]["eer"] == metrics["test_sets"][LA]["metrics"]["eer"]
    assert record.fields["model"] == "Wav2Vec2Classifier"  # no hydra.yaml: the net's class
    assert record.fields["freeze"] == "all" and record.fields["seed"] == 3
    assert record.fields["train_data"] == "asvspoof2019_la:train"
    assert record.gpu_hours == 0.0 and record.train_seconds > 0
    if "run" in metrics:  # the pipeline's own account wins
        assert record.train_seconds == metrics["run"]["train_seconds"]
        assert record.params == metrics["run"]["params"]

    # an older run: no "run" section, no status in .run.json -> config, marker, checkpoint
    old = tmp_path / "old"
    shutil.copytree(real_run, old)
    metrics.pop("run", None)
    (old / "metrics.json").write_text(json.dumps(metrics))
    marker = json.loads((old / ".run.json").read_text())
    marker.pop("status", None)
    (old / ".run.json").write_text(json.dumps(marker))
    record = read_run_dir(old, count_trainable=True)
    assert record.status == "finished" and record.time_source == "wall"
    assert record.gpu_hours == 0.0  # trainer=cpu

    from deepfake_detect.models.scorer import SpoofScorer

    checkpoint = metrics["provenance"]["checkpoint"]
    scorer = SpoofScorer.from_checkpoint(checkpoint)
    n_params = sum(p.numel() for p in scorer.parameters())
    assert checkpoint_params(checkpoint) == n_params
    assert record.params == n_params
    encoder = sum(p.numel() for p in scorer.net.encoder.parameters())
    assert record.trainable_params == n_params - encoder  # freeze=all: the head only


def test_three_finished_runs_one_failed(four_runs: Path, tmp_path: Path) -> None:
    records = [read_run_dir(d) for d in find_run_dirs([four_runs])]
    assert [Path(r.source).name for r in records] == ["a1", "a2", "b1", "c1"]
    comparison = compare_runs(records)
    keys = [e.key for e in comparison.experiments]
    assert keys == [
        ("lcnn", "none", "asvspoof2019_la:train", "none"),
        ("w2v2_aasist", "all", "asvspoof2019_la:train", "none"),  # lacks a test set: last
    ]
    a, b = comparison.experiments
    assert a.cells[LA, "eer"].mean == pytest.approx(0.12)
    assert a.cells[LA, "eer"].spread == pytest.approx(0.02)  # half-range of 0.10, 0.14
    assert a.cells[WILD, "eer"].n == 2 and a.seeds == [1, 2]
    assert a.train_seconds.mean == 600.0 and a.gpu_hours.mean == 0.0  # wall time, CPU
    assert b.train_seconds.mean == 7200.0 and b.gpu_hours.mean == 4.0  # the run section
    assert (b.params, b.trainable_params) == (300_000_000, 400_000)
    assert comparison.best[LA, "eer"] == {1} and comparison.best[WILD, "eer"] == {0}
    assert comparison.best[LA, "min_tdcf"] == {1}
    reasons = {Path(p.run.source).name: (p.run.status, p.reason) for p in comparison.problems}
    assert reasons == {
        "c1": ("failed", "failed: CUDA OOM"),
        "b1": ("finished", f"no result for {WILD}"),
    }

    std = compare_runs(records, spread="std")
    assert std.experiments[0].cells[LA, "eer"].spread == pytest.approx(0.0282842712)

    written = write_comparison(comparison, tmp_path / "out")
    md = written["md"].read_text()
    assert "| lcnn | none | asvspoof2019_la:train | none | 2 | 12.00 ± 2.00 | — |" in md
    assert "**8.00**" in md and "**0.2100**" in md and "**32.00 ± 2.00**" in md
    assert "| " + str(four_runs / "c1") + " | failed | failed: CUDA OOM |" in md
    assert f"no result for {WILD}" in md and "comparison.png" in md
    with open(written["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["status"], r["model"]) for r in rows] == [
        ("experiment", "finished", "lcnn"),
        ("experiment", "finished", "w2v2_aasist"),
        ("run", "failed", "lcnn"),
        ("run", "finished", "w2v2_aasist"),
    ]
    assert float(rows[0][f"{LA}/eer_pct_mean"]) == pytest.approx(12.0)
    assert float(rows[0][f"{LA}/eer_pct_spread"]) == pytest.approx(2.0)
    assert (rows[0][f"{LA}/eer_pct_best"], rows[1][f"{LA}/eer_pct_best"]) == ("0", "1")
    assert rows[1][f"{WILD}/eer_pct_mean"] == "" and rows[1]["n_runs"] == "1"
    assert rows[2]["reason"] == "failed: CUDA OOM" and rows[2][f"{LA}/eer_pct_mean"] == ""
    assert rows[0]["runs"] == f"{four_runs / 'a1'};{four_runs / 'a2'}"
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_paths_globs_and_parents(four_runs: Path) -> None:
    assert find_run_dirs([four_runs / "a*"]) == [four_runs / "a1", four_runs / "a2"]
    assert find_run_dirs([four_runs / "b1" / "metrics.json", four_runs / "a1"]) == [
        four_runs / "a1",
        four_runs / "b1",
    ]
    assert find_run_dirs([four_runs.parent]) == find_run_dirs([four_runs])
    with pytest.raises(CompareError, match="no such file or folder"):
        find_run_dirs([four_runs / "z*"])


def test_group_by_seed_and_config_keys(four_runs: Path) -> None:
    records = [read_run_dir(d) for d in find_run_dirs([four_runs])]
    by_seed = compare_runs(records, group_by=["seed"])
    assert sorted(e.key for e in by_seed.experiments) == [("1",), ("2",)]
    by_lr = compare_runs(records, group_by=["model.optimizer.lr"])
    assert len(by_lr.experiments) == 1 and len(by_lr.experiments[0].runs) == 3
    # the tiny nets (checkpoint) and the 300 M one (run section) in one row: said
    assert by_lr.notes and "35.3 k, 300.0 M parameters" in by_lr.notes[0]
    assert not compare_runs(records).notes
    with pytest.raises(CompareError, match="--group-by model.nope: neither a field"):
        compare_runs(records, group_by=["model.nope"])


def test_status_without_the_marker_status(real_run: Path, tmp_path: Path) -> None:
    """Older runs: metrics.json = finished; else the pid decides; a corrupt file is listed."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    cases = {
        "running": os.getpid(),
        "stopped": int(done.stdout),
    }
    for expected, pid in cases.items():
        folder = write_run(tmp_path / expected, real_run, model="lcnn", status=None)
        marker = json.loads((folder / ".run.json").read_text())
        (folder / ".run.json").write_text(json.dumps({**marker, "pid": pid}))
        assert read_run_dir(folder).status == expected
    elsewhere = write_run(tmp_path / "elsewhere", real_run, model="lcnn", status=None)
    marker = json.loads((elsewhere / ".run.json").read_text())
    (elsewhere / ".run.json").write_text(json.dumps({**marker, "host": "another-node"}))
    assert read_run_dir(elsewhere).status == "unknown"

    corrupt = write_run(tmp_path / "corrupt", real_run, model="lcnn", eers={LA: 0.1})
    (corrupt / "metrics.json").write_text('{"metrics": {"test/')  # a half-written file
    record = read_run_dir(corrupt)
    assert record.status == "unreadable" and str(corrupt / "metrics.json") in record.error
    ok = write_run(tmp_path / "ok", real_run, model="lcnn", eers={LA: 0.1})
    comparison = compare_runs([record, read_run_dir(ok)])
    assert len(comparison.experiments) == 1
    assert [p.run.status for p in comparison.problems] == ["unreadable"]


def test_aggregate_spreads() -> None:
    assert aggregate([0.1]).spread is None
    assert aggregate([0.1, 0.2, 0.6]).spread == pytest.approx(0.25)
    assert aggregate([0.1, 0.2, 0.6], "std").spread == pytest.approx(0.2645751311)
    assert aggregate([float("nan")]) is None
    with pytest.raises(CompareError):
        aggregate([0.1], "iqr")


def test_cli_on_a_sweep_folder(real_run: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "multiruns" / "2026-01-01_00-00-00"
    for job, lr, eer in ((0, 0.001, 0.2), (1, 0.0001, 0.1)):
        run = {"optimized_metric": "val/eer_best", "optimized_value": eer}
        folder = write_run(
            sweep / str(job), real_run, model="lcnn", eers={LA: eer}, run_section=run
        )
        overrides = [f"model.optimizer.lr={lr}", "model.freeze=none"]
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
        config["model"]["optimizer"]["lr"] = lr  # what Hydra resolves from the override
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "optimization_results.yaml").write_text(
        yaml.safe_dump(
            {"name": "optuna", "best_params": {"model.optimizer.lr": 0.0001}, "best_value": 0.1}
        )
    )
    assert read_sweep(sweep).best_jobs == [str(sweep / "1")]
    out = tmp_path / "out"
    code = main(
        ["compare", "--sweep", str(sweep), "-o", str(out), "--group-by", "model.optimizer.lr"]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "| 0.0001 | 1 | **10.00** |" in printed and "| 0.001 | 1 | 20.00 |" in printed
    assert f"best trial: {{'model.optimizer.lr': 0.0001}} = 0.1 ({sweep / '1'})" in printed
    assert f"wrote {out / 'comparison.csv'}" in printed
    md = (out / "comparison.md").read_text()
    assert "Best trial (optuna): model.optimizer.lr=0.0001" in md
    assert f"| {sweep / '1'} (best) | finished | 0.1 |" in md
    assert f"| {sweep / '0'} | finished | 0.2 |" in md


class FakeApi:
    """What compare uses of ``wandb.Api()``: ``runs(path)`` -> runs with id, name, state,
    config and summary."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def runs(self, path: str) -> list[SimpleNamespace]:
        self.paths.append(path)
        config = {
            "model": {"freeze": "all", "net": {"_target_": "x.Wav2Vec2Classifier"}},
            "data": {"train": "asvspoof2019_la:train"},
            "augment": {},
            "trainer": {"accelerator": "gpu", "devices": 2},
        }
        return [
            SimpleNamespace(
                id="r1",
                name="frozen-1",
                state="finished",
                config={**config, "seed": 1},
                summary={f"test/{LA}/eer": 0.05, "_runtime": 3600.0},
            ),
            SimpleNamespace(
                id="r2",
                name="frozen-2",
                state="finished",
                config={**config, "seed": 2},
                summary={f"test/{LA}/eer": 0.07, "_runtime": 5400.0},
            ),
            SimpleNamespace(id="r3", name="oom", state="crashed", config=config, summary={}),
        ]


def test_cli_reads_wandb_through_an_injected_api(tmp_path: Path, capsys) -> None:
    api = FakeApi()
    args = build_parser().parse_args(["compare", "--wandb", "me/asv", "-o", str(tmp_path)])
    assert compare_cli.run(args, wandb_api=lambda: api) == 0
    printed = capsys.readouterr().out
    assert api.paths == ["me/asv"]
    # GPU-hours: wall time x 2 devices, mean of 2 h and 3 h
    assert (
        "| Wav2Vec2Classifier | all | asvspoof2019_la:train | none | 2 | **6.00 ± 1.00** | "
        "75.0 min | 2.50 |" in printed
    )
    assert "wandb:me/asv/r3 (oom): failed: W&B state crashed" in printed


def test_cli_user_errors(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line and exit 2; the W&B Api is a fake with no runs (never the network)."""
    monkeypatch.setattr(compare_module, "wandb_api", lambda: SimpleNamespace(runs=lambda p: []))
    (tmp_path / "empty").mkdir()
    cases = [
        (["compare", str(tmp_path / "empty")], "no runs under"),
        (["compare", str(tmp_path / "missing")], "no such file or folder"),
        (["compare"], "nothing to compare"),
        (["compare", "--wandb", "justaproject"], "expected ENTITY/PROJECT"),
        (["compare", "--sweep", str(tmp_path / "empty")], "no run folders in this sweep"),
        (["compare", "--wandb", "me/nothing"], "--wandb me/nothing: the project has no runs"),
    ]
    for argv, message in cases:
        assert main([*argv, "-o", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err


# -- benchmarks/gpu_finetune_mfu.py's CPU path (the GPU measurement needs CUDA) ---------------
def _mfu_script() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_finetune_mfu.py"
    spec = importlib.util.spec_from_file_location("gpu_finetune_mfu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_mfu_script_counts_flops_on_cpu(capsys) -> None:
    import torch

    mfu = _mfu_script()
    counted, analytic = mfu.linear_flops_check(batch=4, sizes=(16, 24, 8))
    assert analytic == 2 * 4 * (16 * 24 + 24 * 8) + 2 * 4 * (16 * 24 + 24 * 8) + 2 * 4 * 24 * 8
    assert abs(counted - analytic) <= 0.1 * analytic
    model = mfu.Classifier(**mfu.TINY)
    both = mfu.step_flops(model, 2, 16000, "cpu")
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as forward:
        model(torch.randn(2, 16000))
    assert 2.0 <= both / forward.get_total_flops() <= 3.5  # backward ~ twice the forward
    conv = torch.nn.Conv1d(32, 64, 8, stride=2, groups=4)  # as Wav2Vec2's positional conv
    x = torch.randn(2, 32, 100, requires_grad=True)
    with mfu.flop_counter() as counted:
        conv(x).sum().backward()
    analytic = 2 * 2 * 47 * 64 * (32 // 4) * 8  # 2 x batch x out frames x c_out x c_in/g x k
    assert counted.get_total_flops() == 3 * analytic  # forward, input and weight gradients
    assert mfu.peak_tflops("NVIDIA H200", None) == mfu.peak_tflops("NVIDIA H100 80GB HBM3", None)
    assert mfu.peak_tflops("Some GPU", 123.0) == 123.0
    assert mfu.main(["--dry-run", "--crop-seconds", "0.5"]) == 0
    assert "GFLOPs per forward + backward" in capsys.readouterr().out
