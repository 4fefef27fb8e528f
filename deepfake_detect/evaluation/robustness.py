"""Test-time robustness: the test sets scored again under channel conditions (``eval.py
robustness=standard``; the ``robustness/`` config group).

A condition is one waveform transform of :mod:`deepfake_detect.augment` with fixed values,
applied to every test item (``p`` must be 1) after resampling, like a training augmentation.
Item ``i`` of a test set draws from ``numpy.random.default_rng([seed, i])``
(:class:`~deepfake_detect.data.dataset.SpoofDataset`'s ``transform_seed``): the same condition,
seed and item always give the same audio, whatever worker loads it, and an item gets the same
noise draw at every SNR of a family (only the gain changes). Babble talkers are drawn from the
bona fide utterances of the test set being scored (an utterance may appear in its own babble);
reverberation rooms are simulated once per condition, from their own seed.

The clean condition is the normal test of the same run (its records, not a re-score). Each
condition's scores become result records like the clean ones
(:func:`deepfake_detect.pipeline.build_results`); the files are views of their EERs, written
next to the normal report:

- ``robustness.csv``: one row per condition and test set, clean first (:data:`CSV_FIELDS`; EER
  as a fraction in float64, an empty cell where undefined);
- ``robustness.md``: EER % per condition (rows, clean first) and test set (columns), the plot,
  and what each condition is;
- ``robustness_snr.png``: EER against SNR, one line per test set and noise family, each set's
  clean EER dashed.

Metrics: ``robustness/<condition>/<set>/eer`` (clean included).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from deepfake_detect.augment.base import Augmentation, AugmentConfigError, AugmentContext
from deepfake_detect.augment.chain import build_augmentation
from deepfake_detect.console import announce
from deepfake_detect.errors import ConfigError
from deepfake_detect.evaluation.plots import DPI
from deepfake_detect.evaluation.record import TestSetResult

log = logging.getLogger(__name__)

ROOT = "robustness"
CLEAN = "clean"
ROBUSTNESS_MD = "robustness.md"
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_PNG = "robustness_snr.png"
CSV_FIELDS = ("condition", "family", "snr_db", "test_set", "eer", "n_bonafide", "n_spoof")
PLOT_KEYS = ("family", "snr")
"""Keys of a condition entry that place it on the plot; the rest configures its transform."""


@dataclass(frozen=True)
class Condition:
    """One test-time condition: a transform applied to every test item (None: clean)."""

    name: str
    transform: Augmentation | None
    family: str | None = None
    """The plot line it belongs to (white, babble...); None: not on the plot."""
    snr: float | None = None
    """Its x on the plot (dB)."""
    description: str = ""


@dataclass(frozen=True)
class RobustnessPlan:
    conditions: list[Condition]
    seed: int


# -- config -----------------------------------------------------------------------------------
def _describe(entry: Mapping[str, Any]) -> str:
    target = str(entry["_target_"]).rpartition(".")[2]
    options = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "_target_")
    return f"{target}({options})"


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def build_condition(name: str, entry: Any, root: str = f"{ROOT}.conditions") -> Condition:
    """One condition from its config entry (a ``_target_`` transform config plus the optional
    plot keys ``family`` and ``snr``; ``snr`` defaults to a single-number ``snr_db``). A bad
    value raises :class:`ConfigError` naming its key (``robustness.conditions.white_5.snr_db``)."""
    key = f"{root}.{name}"
    if name == CLEAN:
        raise ConfigError(
            f"{key}: '{CLEAN}' is the unconditioned test; name the condition otherwise"
        )
    if isinstance(entry, DictConfig):
        try:
            entry = OmegaConf.to_container(entry, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            raise ConfigError(f"{key}.{exc.key}: required, but not set (???)") from None
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        raise ConfigError(f"{key}: expected a transform config with a _target_, got {entry!r}")
    options = {k: v for k, v in entry.items() if k not in PLOT_KEYS}
    waves, masking = build_augmentation({name: options}, root=root)
    if masking is not None or len(waves) != 1:
        raise ConfigError(f"{key}: a condition is a waveform transform, not a feature masking")
    transform = waves[0]
    if transform.p != 1.0:
        raise ConfigError(f"{key}.p: a condition applies to every test item, p must be 1")
    snr = entry.get("snr")
    if snr is None and isinstance(options.get("snr_db"), (int, float)):
        snr = options["snr_db"]
    snr = None if snr is None else _number(f"{key}.snr", snr)
    family = entry.get("family")
    if family is not None and not isinstance(family, str):
        raise ConfigError(f"{key}.family: expected a name, got {family!r}")
    if snr is not None and family is None:
        family = transform.name
    return Condition(name, transform, family, snr, _describe(options))


def build_plan(cfg: DictConfig) -> RobustnessPlan | None:
    """The run's conditions, from ``cfg.robustness`` (None: robustness evaluation is off). Every
    condition is built and checked here, before anything is scored."""
    node = cfg.get(ROOT)
    if not node:
        return None
    fusion = cfg.get("fusion")
    if fusion and fusion.get("ckpt_paths"):
        raise ConfigError(f"{ROOT}: scores one checkpoint; it does not run with fusion.ckpt_paths")
    unknown = sorted(set(node) - {"seed", "conditions"})
    if unknown:
        raise ConfigError(f"{ROOT}.{unknown[0]}: unknown key (expected seed, conditions)")
    seed = node.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{ROOT}.seed: expected an integer >= 0, got {seed!r}")
    entries = node.get("conditions") or {}
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{ROOT}.conditions: expected a mapping of name to transform config")
    conditions = [build_condition(str(k), v) for k, v in entries.items() if v is not None]
    if not conditions:
        raise ConfigError(f"{ROOT}.conditions: no condition to score")
    return RobustnessPlan(conditions, seed)


# -- scoring ----------------------------------------------------------------------------------
def bind_condition(
    condition: Condition, test_sets: Mapping[str, Sequence[Any]], sample_rate: int
) -> dict[str, list[Augmentation]]:
    """Per test set, a copy of the condition's transform prepared on that set's rows (babble
    draws its talkers from its bona fide utterances; simulated rooms are built once). A set the
    transform cannot be prepared on (no bona fide utterance for babble) gets it prepared on all
    test sets' rows together."""
    assert condition.transform is not None
    key = f"{ROOT}.conditions.{condition.name}"
    every_row = [row for rows in test_sets.values() for row in rows]
    base = condition.transform
    bound: dict[str, list[Augmentation]] = {}
    for name, rows in test_sets.items():
        transform = copy.deepcopy(base)
        try:
            transform.prepare(AugmentContext(sample_rate, rows))
        except AugmentConfigError as exc:
            log.warning(
                "%s: not applicable to test set %s alone (%s): prepared on all test sets",
                key,
                name,
                exc.detail,
            )
            try:
                transform.prepare(AugmentContext(sample_rate, every_row))
            except AugmentConfigError as again:
                raise ConfigError(f"{key}: not applicable to the test sets: {again}") from None
        bound[name] = [transform]
        base = transform  # what it built (simulated rooms) is copied, not built again
    return bound


def score_conditions(
    plan: RobustnessPlan,
    model: Any,
    datamodule: Any,
    trainer: Any,
    info: Mapping[str, Any],
) -> dict[str, list[TestSetResult]]:
    """Each condition's result records: one test pass of ``trainer`` over every test set with
    the condition applied to every item. The model's skipped-file counts are those of the
    normal test afterwards (a condition re-reads the same files)."""
    from deepfake_detect.pipeline import build_results  # the pipeline imports this module

    skipped = dict(model.skipped)
    out: dict[str, list[TestSetResult]] = {}
    try:
        for i, condition in enumerate(plan.conditions, 1):
            log.info("robustness %d/%d: %s", i, len(plan.conditions), condition.description)
            rate = datamodule.preprocessing.sample_rate
            datamodule.test_transforms = bind_condition(condition, datamodule.test_sets, rate)
            datamodule.test_transform_seed = plan.seed
            trainer.test(model, datamodule=datamodule, verbose=False)
            where = {**info, ROOT: {"condition": condition.name, "seed": plan.seed}}
            out[condition.name] = build_results(model.test_outputs, datamodule, where)
    finally:
        datamodule.test_transforms = {}
        model.skipped = skipped
    return out


# -- views ------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def robustness_rows(
    conditions: Sequence[Condition],
    results: Mapping[str, Sequence[TestSetResult]],
) -> list[dict[str, Any]]:
    """One dict per condition and test set (:data:`CSV_FIELDS`), in the order of
    ``conditions`` (clean first), test sets in the run's order; ``None`` where undefined."""
    rows = []
    for condition in conditions:
        for result in results[condition.name]:
            metrics = result.metrics
            counts = {k: metrics.get(k) for k in ("n_bonafide", "n_spoof")}
            rows.append(
                {
                    "condition": condition.name,
                    "family": condition.family,
                    "snr_db": condition.snr,
                    "test_set": result.name,
                    "eer": _finite(metrics.get("eer")),
                    **{k: None if v is None else int(v) for k, v in counts.items()},
                }
            )
    return rows


def robustness_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {
        f"{ROOT}/{row['condition']}/{row['test_set']}/eer": row["eer"]
        for row in rows
        if row["eer"] is not None
    }


def _grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], dict]:
    conditions = list(dict.fromkeys(row["condition"] for row in rows))
    sets = list(dict.fromkeys(row["test_set"] for row in rows))
    eer = {(row["condition"], row["test_set"]): row["eer"] for row in rows}
    return conditions, sets, eer


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _snr(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def robustness_table(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Cells: a header, then one line per condition (EER % per test set)."""
    conditions, sets, eer = _grid(rows)
    meta = {row["condition"]: row for row in rows}
    table = [["condition", "family", "SNR dB", *sets]]
    for name in conditions:
        cells = [_pct(eer.get((name, s))) for s in sets]
        table.append([name, meta[name]["family"] or "–", _snr(meta[name]["snr_db"]), *cells])
    return table


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain text for a terminal: EER % per condition (rows) and test set (columns)."""
    table = robustness_table(rows)
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            [
                line[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)),
            ]
        )
        for line in table
    )


def markdown(
    rows: Sequence[Mapping[str, Any]],
    conditions: Sequence[Condition],
    seed: int,
    plot: str | None,
) -> str:
    table = robustness_table(rows)
    lines = [
        "# Robustness\n",
        "EER % of every test set under each condition (clean: the normal test of this run). "
        f"Each item is transformed with its own generator (seed {seed}, row index).\n",
        "| " + " | ".join(table[0]) + " |",
        "|" + "---|" * len(table[0]),
        *("| " + " | ".join(line) + " |" for line in table[1:]),
        "",
    ]
    if plot:
        lines += [f"![EER against SNR]({plot})\n"]
    lines += ["## Conditions\n", "| condition | transform |", "|---|---|"]
    lines += [f"| {c.name} | `{c.description}` |" for c in conditions if c.transform is not None]
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # None is written as an empty cell, floats in full precision


MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", "-.", ":")


def plot_eer_vs_snr(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """EER % against SNR: one line per test set (colour) and family (marker and line style),
    each set's clean EER as a dotted horizontal line. None (nothing written) when no condition
    has an SNR."""
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    clean: dict[str, float] = {}
    for row in rows:
        if row["eer"] is None:
            continue
        if row["condition"] == CLEAN:
            clean[row["test_set"]] = 100 * row["eer"]
        elif row["snr_db"] is not None:
            line = lines.setdefault((row["test_set"], row["family"]), [])
            line.append((row["snr_db"], 100 * row["eer"]))
    if not lines:
        return None
    sets = list(dict.fromkeys([*clean, *(s for s, _ in lines)]))
    families = list(dict.fromkeys(f for _, f in lines))
    fig = Figure(figsize=(6.4, 4.6), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {name: f"C{i % 10}" for i, name in enumerate(sets)}
    for (name, family), points in lines.items():
        k = families.index(family)
        x, y = zip(*sorted(points), strict=True)
        ax.plot(
            x,
            y,
            color=colors[name],
            marker=MARKERS[k % len(MARKERS)],
            ls=LINESTYLES[k % len(LINESTYLES)],
            label=f"{name}, {family}",
        )
    for name, eer in clean.items():
        ax.axhline(eer, color=colors[name], ls=":", lw=1.0, label=f"{name}, clean")
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("EER (%)")
    ax.set_title("EER against SNR (dotted: clean)")
    ax.set_ylim(bottom=0)
    ax.grid(True, color="0.85", lw=0.6)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_robustness(
    out_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    conditions: Sequence[Condition],
    seed: int,
) -> None:
    """``robustness.csv``, ``robustness.md`` and ``robustness_snr.png`` in ``out_dir``, from
    :func:`robustness_rows`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / ROBUSTNESS_CSV, rows)
    plot = plot_eer_vs_snr(out_dir / ROBUSTNESS_PNG, rows)
    text = markdown(rows, conditions, seed, ROBUSTNESS_PNG if plot else None)
    (out_dir / ROBUSTNESS_MD).write_text(text)


def log_robustness_files(logger: Any, out_dir: str | Path) -> Any:
    """Log the robustness files to W&B (as :func:`~deepfake_detect.evaluation.report.
    log_run_files` logs the report): the plot as an image, the CSV as a table, the three files
    as one artifact (returned)."""
    import wandb

    run = logger.experiment
    out_dir = Path(out_dir)
    media: dict[str, Any] = {}
    if (out_dir / ROBUSTNESS_PNG).is_file():
        media[f"{ROOT}/eer_vs_snr"] = wandb.Image(str(out_dir / ROBUSTNESS_PNG))
    if (out_dir / ROBUSTNESS_CSV).is_file():
        with (out_dir / ROBUSTNESS_CSV).open(newline="") as f:
            data = [[row[k] for k in CSV_FIELDS] for row in csv.DictReader(f)]
        media[f"{ROOT}/eer"] = wandb.Table(columns=list(CSV_FIELDS), data=data)
    if media:
        run.log(media)
    artifact = wandb.Artifact(f"robustness-{run.id}", type="robustness")
    for name in (ROBUSTNESS_MD, ROBUSTNESS_CSV, ROBUSTNESS_PNG):
        if (out_dir / name).is_file():
            artifact.add_file(str(out_dir / name))
    run.log_artifact(artifact)
    return artifact


# -- the run ----------------------------------------------------------------------------------
def evaluate_robustness(
    plan: RobustnessPlan,
    cfg: DictConfig,
    model: Any,
    datamodule: Any,
    clean: Sequence[TestSetResult],
    info: Mapping[str, Any],
    loggers: Sequence[Logger] = (),
) -> dict[str, float]:
    """Score every condition of ``plan`` (after the normal test, whose records are ``clean``),
    write the robustness files into ``cfg.paths.output_dir``, log them to W&B when a
    WandbLogger is configured, print the table; return the ``robustness/...`` metrics."""
    # a trainer of its own: the conditions' test losses must not reach the run's loggers
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    results = {CLEAN: list(clean), **score_conditions(plan, model, datamodule, trainer, info)}
    conditions = [Condition(CLEAN, None), *plan.conditions]
    rows = robustness_rows(conditions, results)
    if trainer.is_global_zero:
        out_dir = Path(cfg.paths.output_dir)
        write_robustness(out_dir, rows, conditions, plan.seed)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                log_robustness_files(logger, out_dir)
        title = f"robustness, EER % ({out_dir / ROBUSTNESS_MD}):"
        announce("\n".join(["", title, text_table(rows)]))
    return robustness_metrics(rows)
