"""Compare runs: read run directories (or W&B runs) into records, group them into experiments,
aggregate seeds, and write one table (Markdown + CSV) and one figure.

Data first, views second: :func:`read_run_dir` / :func:`wandb_records` turn a run into a
:class:`RunRecord`; :func:`compare_runs` (pure) groups records into :class:`Experiment` rows
(by default model x freeze mode x training data x augmentation) and lists every run it could
not put in the table (failed, running, stopped, unreadable) or that lacks a test set the others
have; :func:`markdown_report`, :func:`write_csv` and :func:`plot_comparison` are views of it.

Where a run's facts come from, in order:

- status: ``.run.json``'s ``status`` (written by the pipeline); without it a run with
  ``metrics.json`` is finished, else ``running`` if its pid is alive on this host, else
  ``stopped`` (failed or killed), ``unknown`` when it ran on another host;
- experiment fields and costs: ``metrics.json``'s ``run`` section; without it the resolved
  config (``.hydra/config.yaml``), Hydra's config-group choices (``.hydra/hydra.yaml``) and
  overrides (``.hydra/overrides.yaml``);
- training time: ``run.train_seconds``; else wall time from ``.run.json``'s ``started`` to its
  ``ended`` (or to ``metrics.json``'s modification time), which includes testing;
- parameters: ``run.params`` / ``run.trainable_params``; else the tested checkpoint's tensor sizes
  (memory-mapped, nothing read), and trainable ones by rebuilding the net offline when asked
  (``count_trainable``; freeze ``none`` needs no rebuild: all are trainable).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import socket
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUN_MARKER = ".run.json"  # the pipeline's RUN_MARKER (not imported: it pulls in torch)
METRICS_JSON = "metrics.json"
HYDRA_DIR = ".hydra"
OPTUNA_RESULTS = "optimization_results.yaml"
COMPARISON_MD = "comparison.md"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PNG = "comparison.png"

FIELDS = ("task", "experiment", "model", "freeze", "train_data", "augment", "seed")
"""Fields of a run's ``run`` section that describe what was trained (and :func:`compare_runs`'s
``group_by`` choices besides dotted config keys)."""
DEFAULT_GROUP_BY = ("model", "freeze", "train_data", "augment")
METRICS = ("eer", "min_tdcf")
"""Metrics compared per test set (lower is better for both)."""
SPREADS = ("half-range", "std")
STATUSES = ("finished", "running", "failed", "interrupted", "stopped", "unknown", "unreadable")
NOT_SEARCHED = {"checkpoints", "scores", "csv", "wandb", "manifests", "lightning_logs", ".hydra"}
"""Folders of a run that never hold another run (not walked when looking for runs)."""

_TEST_KEY = re.compile(r"^test/(?P<set>[^/]+)/(?P<metric>eer|min_tdcf)$")
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_WANDB_STATES = {
    "finished": "finished",
    "running": "running",
    "failed": "failed",
    "crashed": "failed",
    "killed": "interrupted",
}


class CompareError(ValueError):
    """Nothing to compare, or an input that is not a run, a sweep or a W&B project."""


# -- records -------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One run as the comparison sees it. ``results``: test set -> {metric: value} (EER as a
    fraction); ``fields``: :data:`FIELDS`; ``config``: the resolved config (for dotted
    ``group_by`` keys); ``time_source``: ``train`` (training only) or ``wall`` (whole run)."""

    source: str
    status: str
    error: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float | None = None
    time_source: str = ""
    gpu_hours: float | None = None
    params: int | None = None
    trainable_params: int | None = None
    optimized_value: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    def value(self, key: str) -> Any:
        """A grouping key's value: one of :data:`FIELDS`, else a dotted config key."""
        if key in FIELDS:
            return self.fields.get(key)
        return lookup(self.config, key)


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """``config``'s value at ``a.b.c``, nested or flattened (``a.b.c`` / ``a/b/c`` keys); None
    when absent."""
    for flat in (dotted, dotted.replace(".", "/")):
        if flat in config:
            return config[flat]
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _test_results(metrics_json: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Test set -> {eer, min_tdcf} from the result records, else from the flat metrics."""
    results: dict[str, dict[str, float]] = {}
    for name, record in (metrics_json.get("test_sets") or {}).items():
        values = (record or {}).get("metrics") or {}
        results[name] = {m: float(values[m]) for m in METRICS if _is_number(values.get(m))}
    for key, value in (metrics_json.get("metrics") or {}).items():
        match = _TEST_KEY.match(key)
        if match and _is_number(value):
            results.setdefault(match["set"], {}).setdefault(match["metric"], float(value))
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _join(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return "+".join(str(v) for v in value)
    return str(value)


def _augment_name(config: Mapping[str, Any], choices: Mapping[str, Any], overrides: list[str]):
    """The augment group's choice, with any ``augment.*`` overrides appended; else the
    non-empty entries of the resolved ``augment`` config."""
    tweaks = [o for o in overrides if o.lstrip("+~").startswith("augment.")]
    name = choices.get("augment")
    if name is None:
        augment = config.get("augment")
        if isinstance(augment, Mapping):
            name = "+".join(sorted(k for k, v in augment.items() if v)) or "none"
    if name is not None and tweaks:
        name = f"{name} ({', '.join(tweaks)})"
    return name


def config_fields(
    config: Mapping[str, Any], choices: Mapping[str, Any], overrides: list[str]
) -> dict[str, Any]:
    """:data:`FIELDS` from a resolved config, Hydra's group choices and the overrides (for runs
    written before ``metrics.json`` had a ``run`` section)."""
    target = lookup(config, "model.net._target_")
    experiment = choices.get("experiment")
    for override in overrides:
        if override.startswith(("experiment=", "+experiment=")):
            experiment = override.partition("=")[2]
    return {
        "task": config.get("task_name"),
        "experiment": experiment,
        "model": choices.get("model") or (str(target).rpartition(".")[2] if target else None),
        "freeze": lookup(config, "model.freeze") or lookup(config, "model.net.freeze"),
        "train_data": _join(lookup(config, "data.train")),
        "augment": _augment_name(config, choices, overrides),
        "seed": config.get("seed"),
    }


def gpu_hours_from_config(config: Mapping[str, Any], seconds: float | None) -> float | None:
    """Device-hours from ``trainer.accelerator`` / ``devices`` / ``num_nodes``: 0 on a CPU, None
    when the accelerator or device count is not explicit (``auto``)."""
    if seconds is None:
        return None
    accelerator = str(lookup(config, "trainer.accelerator") or "")
    if accelerator == "cpu":
        return 0.0
    if accelerator not in ("gpu", "cuda"):
        return None
    devices = lookup(config, "trainer.devices")
    if isinstance(devices, list | tuple):
        devices = len(devices)
    if not isinstance(devices, int) or devices < 1:
        return None
    nodes = lookup(config, "trainer.num_nodes") or 1
    return seconds * devices * int(nodes) / 3600.0


def checkpoint_params(path: str | Path) -> int:
    """Parameters in a checkpoint's scorer (tensor sizes, BatchNorm statistics excluded), read
    memory-mapped: no weights are loaded."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    return sum(
        t.numel()
        for key, t in state.items()
        if key.startswith("scorer.") and not key.endswith(_BN_BUFFERS) and hasattr(t, "numel")
    )


def trainable_params(path: str | Path) -> tuple[int, int]:
    """(parameters, trainable parameters) of a checkpoint's net as its freeze mode leaves it,
    rebuilt offline from its hyper-parameters (random weights; nothing downloaded)."""
    from deepfake_detect.models.checkpoint import checkpoint_hparams, read_checkpoint
    from deepfake_detect.models.scorer import SpoofScorer

    hparams = checkpoint_hparams(read_checkpoint(path), path)
    scorer = SpoofScorer.from_hparams(hparams)
    params = list(scorer.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _tested_checkpoint(run_dir: Path, metrics_json: Mapping[str, Any]) -> Path | None:
    candidates = [
        (metrics_json.get("provenance") or {}).get("checkpoint"),
        (metrics_json.get("metrics") or {}).get("best_checkpoint"),
    ]
    for candidate in candidates:
        if candidate and str(candidate).endswith(".ckpt"):
            path = Path(candidate)
            if not path.is_absolute():
                path = run_dir / path
            if path.is_file():
                return path
            moved = run_dir / "checkpoints" / path.name  # a run directory copied elsewhere
            if moved.is_file():
                return moved
    return None


def _status(run_dir: Path, marker: Mapping[str, Any], has_metrics: bool) -> tuple[str, str]:
    """(status, detail) by the marker's status, else by the files and the process. A marker
    still saying ``running`` under a ``metrics.json`` written after the run started is a
    finished run (``pipeline.train`` called in-process: only the entry point ends the marker)."""
    status = marker.get("status")
    pid, host = marker.get("pid"), marker.get("host")
    here = host == socket.gethostname()
    if status == "running" and has_metrics and _is_number(marker.get("started")):
        if (run_dir / METRICS_JSON).stat().st_mtime >= marker["started"]:
            return "finished", ""
    if status == "running" and here and isinstance(pid, int) and not pid_alive(pid):
        return "stopped", f"marked running, but its process (pid {pid} on {host}) is gone"
    if status in STATUSES:
        return status, str(marker.get("error") or "")
    if has_metrics:
        return "finished", ""
    if not marker:
        return "unknown", f"no {METRICS_JSON} and no {RUN_MARKER}"
    if not here:
        return "unknown", f"no {METRICS_JSON}; it runs or ran on {host} (pid {pid})"
    if isinstance(pid, int) and pid_alive(pid):
        return "running", f"pid {pid} on {host}"
    return "stopped", f"no {METRICS_JSON} and its process (pid {pid} on {host}) is gone"


def read_run_dir(
    run_dir: str | Path, *, count_params: bool = True, count_trainable: bool = False
) -> RunRecord:
    """One run directory as a record; never raises for a broken run (it becomes a record with
    status ``unreadable`` and the reason)."""
    run_dir = Path(run_dir)
    record = RunRecord(source=str(run_dir), status="unknown")
    marker: dict[str, Any] = {}
    if (run_dir / RUN_MARKER).is_file():
        try:
            marker = _read_json(run_dir / RUN_MARKER)
        except (OSError, ValueError) as exc:
            record.error = f"{RUN_MARKER} unreadable ({exc})"
    metrics_path = run_dir / METRICS_JSON
    metrics_json: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics_json = _read_json(metrics_path)
        except (OSError, ValueError) as exc:
            record.status, record.error = "unreadable", f"{metrics_path}: {exc}"
    config = _read_yaml(run_dir / HYDRA_DIR / "config.yaml")
    record.config = config if isinstance(config, dict) else {}
    hydra = _read_yaml(run_dir / HYDRA_DIR / "hydra.yaml")
    choices = lookup(hydra, "hydra.runtime.choices") if isinstance(hydra, dict) else None
    overrides = _read_yaml(run_dir / HYDRA_DIR / "overrides.yaml")
    record.overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []

    run = metrics_json.get("run") if isinstance(metrics_json.get("run"), dict) else {}
    fields = config_fields(record.config, choices or {}, record.overrides)
    record.fields = {k: run.get(k, fields.get(k)) for k in FIELDS}
    for k in ("model", "train_data", "augment"):
        record.fields[k] = _join(record.fields[k])
    if record.status == "unreadable":
        return record
    status, detail = _status(run_dir, marker, bool(metrics_json))
    if status == "finished" and not metrics_json:
        status, detail = "unreadable", f"marked finished, but {metrics_path} is missing"
    record.status, record.error = status, detail or record.error
    record.results = _test_results(metrics_json)
    record.optimized_value = run.get("optimized_value")

    if _is_number(run.get("train_seconds")):
        record.train_seconds, record.time_source = float(run["train_seconds"]), "train"
    elif _is_number(marker.get("started")):
        end = marker.get("ended")
        if not _is_number(end) and metrics_path.is_file():
            end = metrics_path.stat().st_mtime
        if _is_number(end):
            record.train_seconds, record.time_source = end - marker["started"], "wall"
    gpu_hours = run.get("gpu_hours")
    record.gpu_hours = (
        float(gpu_hours)
        if _is_number(gpu_hours)
        else gpu_hours_from_config(record.config, record.train_seconds)
    )
    record.params = run.get("params")
    record.trainable_params = run.get("trainable_params")
    if record.params is None or record.trainable_params is None:
        _count_params(record, run_dir, metrics_json, count_params, count_trainable)
    return record


_TRAINABLE_CACHE: dict[str, tuple[int, int]] = {}


def _count_params(
    record: RunRecord,
    run_dir: Path,
    metrics_json: Mapping[str, Any],
    count_params: bool,
    count_trainable: bool,
) -> None:
    checkpoint = _tested_checkpoint(run_dir, metrics_json)
    if checkpoint is None or not (count_params or count_trainable):
        return
    try:
        if count_trainable and record.trainable_params is None:
            key = json.dumps(
                [lookup(record.config, "model.net"), record.fields["freeze"]], default=str
            )
            if key not in _TRAINABLE_CACHE or not record.config:
                _TRAINABLE_CACHE[key] = trainable_params(checkpoint)
            params, trainable = _TRAINABLE_CACHE[key]
            record.params = record.params if record.params is not None else params
            record.trainable_params = trainable
        if record.params is None:
            record.params = checkpoint_params(checkpoint)
    except Exception as exc:  # a broken checkpoint costs its cells, not the comparison
        record.error = record.error or f"parameters not counted: {str(exc).splitlines()[0]}"
    if record.trainable_params is None and record.fields.get("freeze") == "none":
        record.trainable_params = record.params


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: runs themselves, glob patterns, or folders holding
    runs at any depth (a folder with ``metrics.json``, ``.run.json`` or ``.hydra/`` is a run).
    Sorted, without duplicates; a path that matches nothing is a :class:`CompareError`."""
    found: dict[Path, None] = {}
    for raw in paths:
        matches = sorted(glob.glob(str(raw))) if glob.has_magic(str(raw)) else [str(raw)]
        if not matches or not any(Path(m).exists() for m in matches):
            raise CompareError(f"{raw}: no such file or folder")
        for match in matches:
            for run in _runs_under(Path(match)):
                found[run] = None
    return sorted(found, key=_natural_key)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in (METRICS_JSON, RUN_MARKER, HYDRA_DIR)
    )


def _runs_under(root: Path) -> list[Path]:
    if root.is_file() and root.name in (METRICS_JSON, RUN_MARKER):
        root = root.parent
    if is_run_dir(root):
        return [root]
    runs = []
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        if is_run_dir(here):
            runs.append(here)
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in NOT_SEARCHED]
    return runs


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


# -- sweeps --------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    """A Hydra multirun folder: its jobs and, for an Optuna sweep, the best trial."""

    path: str
    jobs: list[Path]
    sweeper: str | None = None
    best_params: dict[str, Any] | None = None
    best_value: float | None = None
    best_jobs: list[str] = field(default_factory=list)


def _same_value(a: Any, b: Any) -> bool:
    a = yaml.safe_load(str(a)) if isinstance(a, str) else a
    b = yaml.safe_load(str(b)) if isinstance(b, str) else b
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def read_sweep(sweep_dir: str | Path) -> SweepSummary:
    """The jobs of a multirun folder (``<sweep>/<job num>/``, any depth) and, when
    ``optimization_results.yaml`` is there, the best trial and which job(s) ran it (matched
    by the job's overrides)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CompareError(f"{sweep_dir}: not a folder (--sweep takes a multirun folder)")
    jobs = sorted(_runs_under(sweep_dir), key=_natural_key)
    summary = SweepSummary(str(sweep_dir), jobs)
    results = _read_yaml(sweep_dir / OPTUNA_RESULTS)
    if isinstance(results, dict):
        summary.sweeper = str(results.get("name", "optuna"))
        summary.best_params = dict(results.get("best_params") or {})
        best = results.get("best_value")
        summary.best_value = float(best) if _is_number(best) else None
        for job in jobs:
            overrides = _read_yaml(job / HYDRA_DIR / "overrides.yaml") or []
            pairs = dict(str(o).lstrip("+").partition("=")[::2] for o in overrides if "=" in o)
            if summary.best_params and all(
                k in pairs and _same_value(pairs[k], v) for k, v in summary.best_params.items()
            ):
                summary.best_jobs.append(str(job))
    return summary


# -- W&B -----------------------------------------------------------------------------------------
def _mapping(obj: Any) -> dict[str, Any]:
    """A W&B summary or config as a plain dict (the API's objects keep it in ``_json_dict``)."""
    raw = getattr(obj, "_json_dict", None)
    if isinstance(raw, dict):
        return raw
    try:
        return dict(obj or {})
    except (TypeError, ValueError):
        return {}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def wandb_api() -> Any:
    """``wandb.Api()`` (reads the key ``wandb login`` stored, or ``WANDB_API_KEY``)."""
    import wandb

    return wandb.Api()


def check_wandb_project(project: str) -> None:
    if project.count("/") != 1 or not all(project.split("/")):
        raise CompareError(f"--wandb {project}: expected ENTITY/PROJECT")


def wandb_records(api: Any, project: str) -> list[RunRecord]:
    """Records of every run of the W&B project ``ENTITY/PROJECT`` read through ``api`` (a
    ``wandb.Api()``, or any object with its ``runs(path)``): test metrics from the summary
    (``test/<set>/eer``), fields from the ``run`` section (config or ``run/<field>`` summary
    keys), else from the logged config."""
    check_wandb_project(project)
    try:
        runs = list(api.runs(project))
    except Exception as exc:  # wandb's CommError, a missing project, no network
        raise CompareError(f"--wandb {project}: {_first_line(exc)}") from None
    records = []
    for run in runs:
        summary, config = _mapping(run.summary), _mapping(run.config)
        section = config.get("run") if isinstance(config.get("run"), dict) else {}
        section = {**section, **{k[4:]: v for k, v in summary.items() if k.startswith("run/")}}
        fields = config_fields(config, {}, [])
        state = str(getattr(run, "state", "unknown"))
        record = RunRecord(
            source=f"wandb:{project}/{run.id} ({getattr(run, 'name', run.id)})",
            status=_WANDB_STATES.get(state, "unknown"),
            error="" if state in ("finished", "running") else f"W&B state {state}",
            fields={k: section.get(k, fields.get(k)) for k in FIELDS},
            config=config,
        )
        record.results = _test_results({"metrics": summary})
        seconds = section.get("train_seconds", summary.get("_runtime"))
        if _is_number(seconds):
            record.train_seconds = float(seconds)
            record.time_source = "train" if "train_seconds" in section else "wall"
        gpu_hours = section.get("gpu_hours")
        record.gpu_hours = (
            float(gpu_hours)
            if _is_number(gpu_hours)
            else gpu_hours_from_config(config, record.train_seconds)
        )
        record.params = section.get("params")
        record.trainable_params = section.get("trainable_params")
        if record.trainable_params is None and record.fields.get("freeze") == "none":
            record.trainable_params = record.params
        record.optimized_value = section.get("optimized_value")
        records.append(record)
    return records


# -- comparison ----------------------------------------------------------------------------------
@dataclass
class Cell:
    """A value over the seeds of one experiment: mean, spread (None for one value), count."""

    mean: float
    spread: float | None
    n: int


def aggregate(values: Sequence[float], spread: str = "half-range") -> Cell | None:
    """Mean and spread of ``values`` (NaN dropped): ``half-range`` = (max - min) / 2, ``std`` =
    sample standard deviation; None for no values."""
    if spread not in SPREADS:
        raise CompareError(f"spread must be one of {SPREADS}, got {spread!r}")
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return None
    if len(clean) == 1:
        return Cell(clean[0], None, 1)
    width = (max(clean) - min(clean)) / 2 if spread == "half-range" else statistics.stdev(clean)
    return Cell(statistics.fmean(clean), width, len(clean))


@dataclass
class Experiment:
    """One row: the finished runs sharing the grouping key, aggregated over seeds."""

    key: tuple[Any, ...]
    runs: list[RunRecord]
    cells: dict[tuple[str, str], Cell]
    train_seconds: Cell | None
    gpu_hours: Cell | None
    params: int | None
    trainable_params: int | None

    @property
    def seeds(self) -> list[Any]:
        return [r.fields.get("seed") for r in self.runs]


@dataclass
class Problem:
    """A run left out of the table (or only partly in it) and why."""

    run: RunRecord
    reason: str


@dataclass
class Comparison:
    group_by: tuple[str, ...]
    spread: str
    metric: str
    test_sets: list[str]
    metrics: list[str]
    experiments: list[Experiment]
    problems: list[Problem]
    best: dict[tuple[str, str], set[int]]
    """(test set, metric) -> indexes into ``experiments`` with the lowest mean."""
    n_runs: int
    sweep: SweepSummary | None = None
    notes: list[str] = field(default_factory=list)
    """Warnings about the grouping (an experiment mixing models of different sizes)."""
    runs: list[RunRecord] = field(default_factory=list)
    """Every record compared, in the order given."""


def _label(value: Any) -> str:
    return "—" if value is None else str(value)


def compare_runs(
    records: Sequence[RunRecord],
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    spread: str = "half-range",
    metric: str = "eer",
    sweep: SweepSummary | None = None,
) -> Comparison:
    """Group finished runs into experiments by ``group_by`` (fields or dotted config keys),
    aggregate each (test set, metric) over seeds, mark the lowest mean per column, and list
    every run that is not finished, or lacks a test set another finished run has. Rows are
    sorted by ``metric`` averaged over the test sets (experiments missing one last)."""
    if metric not in METRICS:
        raise CompareError(f"--metric must be one of {METRICS}, got {metric!r}")
    if not records:
        raise CompareError("no runs to compare")
    group_by = tuple(group_by)
    for key in group_by:
        if key not in FIELDS and all(lookup(r.config, key) is None for r in records):
            raise CompareError(
                f"--group-by {key}: neither a field ({', '.join(FIELDS)}) nor a config key "
                "of any run"
            )
    finished = [r for r in records if r.status == "finished"]
    problems = [
        Problem(r, r.status + (f": {r.error}" if r.error else ""))
        for r in records
        if r.status != "finished"
    ]
    test_sets = sorted({name for r in finished for name in r.results})
    present = [m for m in METRICS if any(m in v for r in finished for v in r.results.values())]
    for r in finished:
        missing = [name for name in test_sets if "eer" not in r.results.get(name, {})]
        if not r.results:
            problems.append(Problem(r, "finished without test results"))
        elif missing:
            problems.append(Problem(r, "no result for " + ", ".join(missing)))

    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in finished:
        groups.setdefault(tuple(_label(r.value(k)) for k in group_by), []).append(r)
    experiments = []
    for key, runs in groups.items():
        cells = {}
        for name in test_sets:
            for m in present:
                values = [r.results[name][m] for r in runs if m in r.results.get(name, {})]
                cell = aggregate(values, spread)
                if cell is not None:
                    cells[name, m] = cell
        params = [r.params for r in runs if r.params is not None]
        trainable = [r.trainable_params for r in runs if r.trainable_params is not None]
        experiments.append(
            Experiment(
                key=key,
                runs=runs,
                cells=cells,
                train_seconds=aggregate([r.train_seconds for r in runs], spread),
                gpu_hours=aggregate([r.gpu_hours for r in runs], spread),
                params=max(params) if params else None,
                trainable_params=max(trainable) if trainable else None,
            )
        )

    def order(exp: Experiment) -> tuple[int, float, tuple[str, ...]]:
        values = [exp.cells[name, metric].mean for name in test_sets if (name, metric) in exp.cells]
        complete = len(values) == len(test_sets)
        return (0 if complete else 1, statistics.fmean(values) if values else math.inf, exp.key)

    experiments.sort(key=order)
    notes = []
    for exp in experiments:
        sizes = sorted({r.params for r in exp.runs if r.params is not None})
        if len(sizes) > 1:
            notes.append(
                f"{' / '.join(exp.key)} mixes nets of {', '.join(map(format_count, sizes))} "
                "parameters: add a key that tells them apart (e.g. --group-by ... "
                "model.net.source)"
            )
    best: dict[tuple[str, str], set[int]] = {}
    for column in ((name, m) for name in test_sets for m in present):
        means = {i: e.cells[column].mean for i, e in enumerate(experiments) if column in e.cells}
        if means:
            low = min(means.values())
            best[column] = {i for i, v in means.items() if v <= low + 1e-12}
    return Comparison(
        group_by=group_by,
        spread=spread,
        metric=metric,
        test_sets=test_sets,
        metrics=present,
        experiments=experiments,
        problems=problems,
        best=best,
        n_runs=len(records),
        sweep=sweep,
        notes=notes,
        runs=list(records),
    )


# -- views ---------------------------------------------------------------------------------------
METRIC_TITLES = {"eer": "EER %", "min_tdcf": "min t-DCF"}
_SCALE = {"eer": 100.0, "min_tdcf": 1.0}
_DIGITS = {"eer": 2, "min_tdcf": 4}


def format_cell(cell: Cell | None, metric: str, n_seeds: int | None = None) -> str:
    """``12.34 ± 0.56`` (EER in %), ``(n=1)`` appended when fewer runs than the row has."""
    if cell is None:
        return "—"
    scale, digits = _SCALE[metric], _DIGITS[metric]
    text = f"{cell.mean * scale:.{digits}f}"
    if cell.spread is not None:
        text += f" ± {cell.spread * scale:.{digits}f}"
    if n_seeds is not None and cell.n < n_seeds:
        text += f" (n={cell.n})"
    return text


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_count(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _columns(comparison: Comparison) -> list[tuple[str, str]]:
    """(test set, metric) pairs that some experiment or listed run has a value for."""
    runs = [r for e in comparison.experiments for r in e.runs] + [
        p.run for p in comparison.problems
    ]
    return [
        (name, m)
        for name in comparison.test_sets
        for m in comparison.metrics
        if m == "eer" or any(m in r.results.get(name, {}) for r in runs)
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(comparison: Comparison) -> str:
    """The experiments table: group fields, seeds, one column per (test set, metric), training
    time, GPU-hours, parameters, trainable parameters; the best mean per column in bold."""
    columns = _columns(comparison)
    header = [
        *comparison.group_by,
        "runs",
        *(f"{name} {METRIC_TITLES[m]}" for name, m in columns),
        "train time",
        "GPU-h",
        "params",
        "trainable",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, exp in enumerate(comparison.experiments):
        n = len(exp.runs)
        cells = []
        for column in columns:
            text = format_cell(exp.cells.get(column), column[1], n)
            cells.append(f"**{text}**" if i in comparison.best.get(column, ()) else text)
        gpu = exp.gpu_hours
        row = [
            *(_md_escape(k) for k in exp.key),
            str(n),
            *cells,
            format_duration(exp.train_seconds.mean if exp.train_seconds else None),
            "—" if gpu is None else f"{gpu.mean:.2f}",
            format_count(exp.params),
            format_count(exp.trainable_params),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_report(comparison: Comparison, figure: str | None = None) -> str:
    """The whole Markdown file: a summary line, the table, how to read it, the runs left out
    (or incomplete) with their reasons, and the sweep's best trial."""
    finished = sum(len(e.runs) for e in comparison.experiments)
    spread = (
        "half-range, (max − min) / 2"
        if comparison.spread == "half-range"
        else "sample standard deviation"
    )
    wall = any(r.time_source == "wall" for e in comparison.experiments for r in e.runs)
    parts = [
        "# Run comparison",
        "",
        f"{comparison.n_runs} runs: {finished} finished in {len(comparison.experiments)} "
        f"experiments (grouped by {', '.join(comparison.group_by)}); "
        f"{len({id(p.run) for p in comparison.problems})} listed under *Runs not compared "
        "or incomplete*.",
        "",
    ]
    if comparison.experiments:
        parts += [
            markdown_table(comparison),
            "",
            f"Mean ± spread over a row's runs (spread: {spread}); `(n=k)`: only k of the row's "
            "runs have that value. **Bold**: lowest mean in its column. EER in %. "
            "Train time and GPU-h: mean per run"
            + (
                "; train time is wall time of the whole run (training and testing) where the "
                "run did not record its training time."
                if wall
                else "."
            ),
            "",
        ]
    else:
        parts += ["No finished run has test results to compare.", ""]
    if comparison.notes:
        parts += ["## Notes", "", *(f"- {note}" for note in comparison.notes), ""]
    if figure:
        parts += [f"![{METRIC_TITLES[comparison.metric]} per test set]({figure})", ""]
    if comparison.problems:
        parts += [
            "## Runs not compared or incomplete",
            "",
            "| run | status | reason |",
            "|---|---|---|",
        ]
        for problem in comparison.problems:
            parts.append(
                f"| {_md_escape(problem.run.source)} | {problem.run.status} | "
                f"{_md_escape(problem.reason)} |"
            )
        parts.append("")
    sweep = comparison.sweep
    if sweep is not None:
        parts += ["## Sweep", "", f"{sweep.path}: {len(sweep.jobs)} jobs."]
        if sweep.best_params is not None:
            params = ", ".join(f"{k}={v}" for k, v in sweep.best_params.items())
            jobs = ", ".join(sweep.best_jobs) or "no job folder matches its overrides"
            parts += [
                "",
                f"Best trial ({sweep.sweeper}): {params}; value {sweep.best_value}; job: {jobs}.",
            ]
        jobs = {str(job) for job in sweep.jobs}
        rows = [r for r in comparison.runs if r.source in jobs]
        if any(r.optimized_value is not None for r in rows):
            parts += ["", "| job | status | objective |", "|---|---|---|"]
            for r in rows:
                value = "—" if r.optimized_value is None else f"{r.optimized_value:.6g}"
                best = " (best)" if r.source in sweep.best_jobs else ""
                parts.append(f"| {_md_escape(r.source)}{best} | {r.status} | {value} |")
        parts.append("")
    return "\n".join(parts)


def csv_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per experiment (status ``finished``) and one per listed run (its own status):
    group fields, ``<set>/<metric>_mean`` / ``_spread`` / ``_n`` / ``_best`` (EER in %),
    costs, and the runs' directories."""
    columns = _columns(comparison)
    rows = []
    for i, exp in enumerate(comparison.experiments):
        row: dict[str, Any] = {"kind": "experiment", "status": "finished", "reason": ""}
        row.update(dict(zip(comparison.group_by, exp.key, strict=True)))
        row["n_runs"] = len(exp.runs)
        row["seeds"] = ";".join(_label(s) for s in exp.seeds)
        for name, m in columns:
            cell = exp.cells.get((name, m))
            prefix = f"{name}/{'eer_pct' if m == 'eer' else m}"
            row[f"{prefix}_mean"] = None if cell is None else cell.mean * _SCALE[m]
            spread = None if cell is None or cell.spread is None else cell.spread * _SCALE[m]
            row[f"{prefix}_spread"] = spread
            row[f"{prefix}_n"] = 0 if cell is None else cell.n
            row[f"{prefix}_best"] = int(i in comparison.best.get((name, m), ()))
        row["train_seconds_mean"] = exp.train_seconds.mean if exp.train_seconds else None
        row["gpu_hours_mean"] = exp.gpu_hours.mean if exp.gpu_hours else None
        row["params"] = exp.params
        row["trainable_params"] = exp.trainable_params
        row["runs"] = ";".join(r.source for r in exp.runs)
        rows.append(row)
    for problem in comparison.problems:
        run = problem.run
        row = {"kind": "run", "status": run.status, "reason": problem.reason}
        row.update({k: run.value(k) for k in comparison.group_by})
        row["n_runs"] = 1
        row["seeds"] = _label(run.fields.get("seed"))
        for name, m in columns:
            value = run.results.get(name, {}).get(m)
            prefix = f"{name}/{'eer_pct' if m == 'eer' else m}"
            row[f"{prefix}_mean"] = None if value is None else value * _SCALE[m]
            row[f"{prefix}_n"] = int(value is not None)
        row["train_seconds_mean"] = run.train_seconds
        row["gpu_hours_mean"] = run.gpu_hours
        row["params"] = run.params
        row["trainable_params"] = run.trainable_params
        row["runs"] = run.source
        rows.append(row)
    return rows


def write_csv(comparison: Comparison, path: str | Path) -> None:
    """:func:`csv_rows` as CSV; an empty cell is a value that does not exist."""
    rows = csv_rows(comparison)
    fieldnames: list[str] = []
    for row in rows:
        fieldnames += [k for k in row if k not in fieldnames]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def plot_comparison(comparison: Comparison, path: str | Path) -> bool:
    """A heatmap of ``comparison.metric``: experiments (rows, in table order) x test sets, each
    cell annotated mean ± spread; grey = no value. False (nothing written) without values."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric, sets, exps = comparison.metric, comparison.test_sets, comparison.experiments
    if not exps or not sets or metric not in comparison.metrics:
        return False
    values = np.full((len(exps), len(sets)), np.nan)
    for i, exp in enumerate(exps):
        for j, name in enumerate(sets):
            if (name, metric) in exp.cells:
                values[i, j] = exp.cells[name, metric].mean * _SCALE[metric]
    labels = [" / ".join(exp.key) + f"  (n={len(exp.runs)})" for exp in exps]
    width = 3.0 + 0.09 * max(len(label) for label in labels) + 1.5 * len(sets)
    fig = Figure(figsize=(min(width, 24), 1.4 + 0.45 * len(exps)), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(values)
    cmap = colormaps["viridis_r"].with_extremes(bad="0.85")
    image = ax.imshow(masked, aspect="auto", cmap=cmap)
    fig.colorbar(image, ax=ax, label=METRIC_TITLES[metric], fraction=0.04, pad=0.02)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i, exp in enumerate(exps):
        for j, name in enumerate(sets):
            cell = exp.cells.get((name, metric))
            text = format_cell(cell, metric) if cell else "—"
            bold = i in comparison.best.get((name, metric), ())
            dark = cell is not None and values[i, j] < middle
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if bold else "normal",
                color="white" if not dark and cell is not None else "black",
            )
    ax.set_xticks(range(len(sets)), sets, fontsize=8)
    ax.set_yticks(range(len(exps)), labels, fontsize=8)
    ax.xaxis.tick_top()
    spread = "half-range" if comparison.spread == "half-range" else "std"
    ax.set_title(
        f"{METRIC_TITLES[metric]} per test set, mean ± {spread} over runs (bold: best)",
        fontsize=9,
        pad=22,
    )
    fig.tight_layout()
    fig.savefig(path)
    return True


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """``comparison.md``, ``comparison.csv`` and (when there are values) ``comparison.png`` in
    ``out_dir``; returns the paths written by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    png = out_dir / COMPARISON_PNG
    if plot_comparison(comparison, png):
        written["png"] = png
    md = out_dir / COMPARISON_MD
    md.write_text(markdown_report(comparison, png.name if "png" in written else None))
    written["md"] = md
    write_csv(comparison, out_dir / COMPARISON_CSV)
    written["csv"] = out_dir / COMPARISON_CSV
    return written


def collect(
    run_paths: Sequence[str | Path] = (),
    sweep_dir: str | Path | None = None,
    wandb_project: str | None = None,
    api_factory: Callable[[], Any] | None = None,
    count_params: bool = True,
    count_trainable: bool = False,
) -> tuple[list[RunRecord], SweepSummary | None]:
    """Records from run paths, a sweep folder and/or a W&B project (``api_factory``: what makes
    the ``wandb.Api``, replaced in tests). :class:`CompareError` when nothing is found."""
    records: list[RunRecord] = []
    sweep = None
    dirs = find_run_dirs(run_paths) if run_paths else []
    if sweep_dir is not None:
        sweep = read_sweep(sweep_dir)
        if not sweep.jobs:
            raise CompareError(f"{sweep_dir}: no run folders in this sweep")
        dirs += [job for job in sweep.jobs if job not in dirs]
    if run_paths and not dirs:
        raise CompareError(
            f"no runs under {', '.join(map(str, run_paths))} (a run folder holds "
            f"{METRICS_JSON}, {RUN_MARKER} or {HYDRA_DIR}/)"
        )
    records += [
        read_run_dir(d, count_params=count_params, count_trainable=count_trainable) for d in dirs
    ]
    if wandb_project is not None:
        check_wandb_project(wandb_project)
        try:
            api = (api_factory or wandb_api)()
        except Exception as exc:  # not installed, no API key (wandb login), no network
            raise CompareError(f"--wandb: cannot use the W&B API ({_first_line(exc)})") from None
        found = wandb_records(api, wandb_project)
        if not found:
            raise CompareError(f"--wandb {wandb_project}: the project has no runs")
        records += found
    if not records:
        raise CompareError("no runs to compare: give run folders, --sweep DIR or --wandb")
    return records, sweep
