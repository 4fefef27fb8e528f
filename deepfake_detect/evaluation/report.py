"""Reports of a test run, all views of its result records
(:class:`~deepfake_detect.evaluation.record.TestSetResult`): metrics JSON, the benchmark table,
per-set breakdowns and notes, figures, score files, and their upload to W&B.

Files written by :func:`write_test_report` into the run directory:

- ``benchmark.md`` / ``benchmark.csv`` / ``benchmark.json``: one row per test set
  (:data:`BENCHMARK_FIELDS`; rates in %, missing values empty / null);
- ``report.md``: the benchmark table, notes (silent / tiled / windowed files, tied scores), the
  figures, then per set its per-attack and per-condition EER tables;
- ``scores/<set>.tsv``: the project's score files;
- ``det_curves.png``, ``score_histograms.png``;
- ``scores/asvspoof/<set>.asvspoof2019_cm.txt``, ``<set>.asvspoof2021.txt``,
  ``<set>.asvspoof5.tsv`` and a ``README.txt`` (the formats: see ``evaluation/scorefile.py``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepfake_detect.evaluation.plots import plot_det_curves, plot_score_histograms
from deepfake_detect.evaluation.record import TestSetResult
from deepfake_detect.evaluation.scorefile import (
    is_token,
    write_asvspoof5,
    write_asvspoof2019_cm,
    write_asvspoof2021,
    write_score_file,
)
from deepfake_detect.evaluation.summary import ATTACK, Breakdown

log = logging.getLogger(__name__)

BENCHMARK_MD = "benchmark.md"
BENCHMARK_CSV = "benchmark.csv"
BENCHMARK_JSON = "benchmark.json"
REPORT_MD = "report.md"
DET_PNG = "det_curves.png"
HISTOGRAMS_PNG = "score_histograms.png"
CHALLENGE_DIR = Path("scores") / "asvspoof"

# (field in csv / json, markdown header, metric key, scale); scale 100 = a rate in %.
_BENCHMARK_SPEC: tuple[tuple[str, str, str, float], ...] = (
    ("eer_pct", "EER %", "eer", 100.0),
    ("acc_pct", "acc %", "acc", 100.0),
    ("min_tdcf", "min t-DCF", "min_tdcf", 1.0),
    ("min_dcf", "minDCF", "min_dcf", 1.0),
    ("act_dcf", "actDCF", "act_dcf", 1.0),
    ("cllr", "Cllr", "cllr", 1.0),
    ("min_cllr", "minCllr", "min_cllr", 1.0),
    ("n_bonafide", "bona fide", "n_bonafide", 1.0),
    ("n_spoof", "spoof", "n_spoof", 1.0),
)
BENCHMARK_FIELDS = ("test_set", *(field for field, *_ in _BENCHMARK_SPEC))

_CHALLENGE_README = """\
Score files in the ASVspoof challenge formats (score = log-odds of bona fide, higher = more
bona fide), one set of files per test set:

<set>.asvspoof2019_cm.txt  ASVspoof 2019 CM score file, read by the 2019 t-DCF / EER tools:
                           "utt_id source key score", space-separated, no header; source is the
                           attack id ("-" for bona fide), key "bonafide" or "spoof".
<set>.asvspoof2021.txt     ASVspoof 2021 LA / PA / DF submission: "utt_id score",
                           space-separated, no header.
<set>.asvspoof5.tsv        ASVspoof 5 track 1 submission: tab-separated, header
                           "filename<TAB>cm-score", then "utt_id<TAB>score".
"""


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def benchmark_rows(results: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """One dict per test set with :data:`BENCHMARK_FIELDS` (``None`` where undefined, values
    rounded to 6 decimals)."""
    rows = []
    for name, metrics in results.items():
        row: dict[str, Any] = {"test_set": name}
        for field, _, key, scale in _BENCHMARK_SPEC:
            value = _finite(metrics.get(key))
            if value is not None:  # rounded: metrics.json keeps the full precision
                value = int(value) if key.startswith("n_") else round(scale * value, 6)
            row[field] = value
        rows.append(row)
    return rows


def _cell(field: str, value: Any) -> str:
    if value is None:
        return "–"
    if field.startswith("n_"):
        return str(value)
    return f"{value:.2f}" if field.endswith("_pct") else f"{value:.4f}"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def benchmark_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: one row per test set (EER and accuracy in %, costs and Cllr raw, counts)."""
    header = ["test set", *(title for _, title, *_ in _BENCHMARK_SPEC)]
    body = [
        [row["test_set"], *(_cell(f, row[f]) for f in BENCHMARK_FIELDS[1:])]
        for row in benchmark_rows(results)
    ]
    return _md_table(header, body)


TEXT_FIELDS = ("eer_pct", "min_tdcf", "min_dcf", "cllr", "n_bonafide", "n_spoof")
"""The columns of the console table (:func:`text_table`); min t-DCF only when a set has it."""


def text_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Plain text for a terminal: one row per test set (EER %, min t-DCF, minDCF, Cllr, bona
    fide and spoof counts), right-aligned columns, no truncated names."""
    rows = benchmark_rows(results)
    titles = {field: title for field, title, *_ in _BENCHMARK_SPEC}
    columns = [f for f in TEXT_FIELDS if f != "min_tdcf" or any(r[f] is not None for r in rows)]
    table = [["test set", *(titles[f] for f in columns)]]
    table += [[row["test_set"], *(_cell(f, row[f]) for f in columns)] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(
            [
                line[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)),
            ]
        )
        for line in table
    ]
    return "\n".join(lines)


def write_benchmark(out_dir: str | Path, results: Mapping[str, Mapping[str, float]]) -> str:
    """``benchmark.md``, ``.csv`` (empty cell = undefined) and ``.json`` (a list of rows)."""
    out_dir = Path(out_dir)
    rows = benchmark_rows(results)
    table = benchmark_table(results)
    (out_dir / BENCHMARK_MD).write_text(table)
    with (out_dir / BENCHMARK_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BENCHMARK_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)  # None is written as an empty cell
    (out_dir / BENCHMARK_JSON).write_text(json.dumps(rows, indent=2))
    return table


def breakdown_section(name: str, entries: Sequence[Breakdown]) -> str:
    """Markdown for one test set: a table per attack list and per breakdown column."""
    lines = [f"## {name}\n"]
    if not entries:
        lines.append("No breakdown (no attack ids or conditions with both classes).\n")
    by_column: dict[str, list[Breakdown]] = {}
    for entry in entries:
        by_column.setdefault(entry.column, []).append(entry)
    for column, group in by_column.items():
        title = "EER per attack" if column == ATTACK else f"EER per {column}"
        against_all = group[0].against_all_bonafide
        note = (
            "each value's spoofs against all bona fide trials"
            if against_all
            else "each value's bona fide against its spoofs"
        )
        body = [[e.value, str(e.n_bonafide), str(e.n_spoof), f"{100 * e.eer:.2f}"] for e in group]
        lines.append(f"### {title}\n\n({note})\n")
        lines.append(_md_table([column, "bona fide", "spoof", "EER %"], body))
    return "\n".join(lines)


def write_challenge_scores(out_dir: str | Path, results: Sequence[TestSetResult]) -> Path:
    """Every test set's scores in the three ASVspoof formats under ``scores/asvspoof/``."""
    folder = Path(out_dir) / CHALLENGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.txt").write_text(_CHALLENGE_README)
    for result in results:
        name, rows, scores = result.name, result.rows, result.scores
        if not all(is_token(row.utt_id) for row in rows):
            log.warning("%s: utterance ids with whitespace: no challenge-format score files", name)
            continue
        write_asvspoof2019_cm(folder / f"{name}.asvspoof2019_cm.txt", rows, scores)
        write_asvspoof2021(folder / f"{name}.asvspoof2021.txt", rows, scores)
        write_asvspoof5(folder / f"{name}.asvspoof5.tsv", rows, scores)
    return folder


def write_score_files(out_dir: str | Path, results: Sequence[TestSetResult]) -> None:
    """``scores/<set>.tsv`` for every test set (the project's own format)."""
    for result in results:
        write_score_file(
            Path(out_dir) / "scores" / f"{result.name}.tsv", result.rows, result.scores
        )


def _notes_section(results: Sequence[TestSetResult]) -> list[str]:
    lines = [f"- **{r.name}**: {note}" for r in results for note in r.notes]
    return ["## Notes\n", "\n".join(lines) + "\n"] if lines else []


def data_section(data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per selection: rows used, protocol rows without audio (dropped), unusable files
    (skipped), audio files no protocol row lists."""
    if not data:
        return []
    body = [
        [
            name,
            str(r.get("rows", "")),
            str(r.get("missing_audio", 0)),
            str(r.get("unusable_audio", 0)),
            str(r.get("unlisted_audio", 0)),
        ]
        for name, r in data.items()
    ]
    header = ["selection", "rows used", "missing audio (dropped)", "unusable (skipped)", "unlisted"]
    return ["## Data\n", _md_table(header, body)]


def write_test_report(
    out_dir: str | Path,
    results: Sequence[TestSetResult],
    data: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """Write the run's test report files into ``out_dir`` (see the module docstring); return
    the markdown benchmark table. ``data``: the data module's per-selection counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = write_benchmark(out_dir, {r.name: r.metrics for r in results})
    write_score_files(out_dir, results)
    curves = {r.name: (*r.det, r.metrics["eer"]) for r in results if r.det is not None}
    scored = {r.name: r.by_class() for r in results}
    scored = {name: pair for name, pair in scored.items() if pair[0].size or pair[1].size}
    figures = []
    if curves:
        plot_det_curves(out_dir / DET_PNG, curves, {r.name: r.counted.size for r in results})
        figures.append(f"![DET curves]({DET_PNG})")
    if scored:
        plot_score_histograms(out_dir / HISTOGRAMS_PNG, scored)
        figures.append(f"![score histograms]({HISTOGRAMS_PNG})")
    write_challenge_scores(out_dir, results)
    sections = [breakdown_section(r.name, r.breakdowns) for r in results if r.det is not None]
    report = [
        "# Test report\n",
        table,
        *_notes_section(results),
        *data_section(data or {}),
        *(f"{figure}\n" for figure in figures),
        *sections,
    ]
    (out_dir / REPORT_MD).write_text("\n".join(report))
    return table


def write_metrics(
    path: str | Path,
    metrics: Mapping[str, Any],
    results: Sequence[TestSetResult],
    skipped: Mapping[str, int],
    **sections: Any,
) -> None:
    """``metrics.json``: the run's metrics (test metrics in float64, from the records), every
    test set's record, the skipped and dropped files, and any further ``sections``
    (provenance, data report)."""
    payload = {
        "metrics": dict(metrics),
        "test_sets": {r.name: r.to_json() for r in results},
        "skipped": dict(skipped),
        **sections,
    }
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def log_run_files(logger: Any, out_dir: str | Path) -> Any:
    """Log the run's report to W&B: the figures as images, the benchmark as a table, and the
    score files and reports as one artifact (returned). Works for offline runs as well."""
    import wandb

    run = logger.experiment
    out_dir = Path(out_dir)
    media: dict[str, Any] = {}
    for key, name in (("report/det_curves", DET_PNG), ("report/score_histograms", HISTOGRAMS_PNG)):
        if (out_dir / name).is_file():
            media[key] = wandb.Image(str(out_dir / name))
    if (out_dir / BENCHMARK_JSON).is_file():
        rows = json.loads((out_dir / BENCHMARK_JSON).read_text())
        data = [[row.get(field) for field in BENCHMARK_FIELDS] for row in rows]
        media["report/benchmark"] = wandb.Table(columns=list(BENCHMARK_FIELDS), data=data)
    if media:
        run.log(media)

    artifact = wandb.Artifact(f"scores-{run.id}", type="scores")
    if (out_dir / "scores").is_dir():
        artifact.add_dir(str(out_dir / "scores"), name="scores")
    for name in (
        "metrics.json",
        REPORT_MD,
        BENCHMARK_MD,
        BENCHMARK_CSV,
        BENCHMARK_JSON,
        DET_PNG,
        HISTOGRAMS_PNG,
    ):
        if (out_dir / name).is_file():
            artifact.add_file(str(out_dir / name))
    run.log_artifact(artifact)
    return artifact
