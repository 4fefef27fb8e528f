"""Metrics JSON and markdown tables of a test run."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HEADLINE = ("eer", "acc", "min_tdcf")


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def markdown_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """One row per test set: EER, accuracy, min t-DCF, then EER per attack (all in %, t-DCF raw)."""
    attacks = sorted(
        {k[4:] for metrics in results.values() for k in metrics if k.startswith("eer_")}
    )
    header = ["test set", "EER %", "acc %", "min t-DCF", *(f"{a} EER %" for a in attacks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in results.items():
        tdcf = m.get("min_tdcf")
        cells = [
            name,
            _pct(m.get("eer")),
            _pct(m.get("acc")),
            "–" if tdcf is None else f"{tdcf:.4f}",
            *(_pct(m.get(f"eer_{a}")) for a in attacks),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, results: Mapping[str, Mapping[str, float]]) -> str:
    table = markdown_table(results)
    Path(path).write_text(table)
    return table


def write_metrics(
    path: str | Path,
    metrics: Mapping[str, Any],
    test_results: Mapping[str, Mapping[str, float]],
    skipped: Mapping[str, int],
) -> None:
    payload = {"metrics": dict(metrics), "test_sets": dict(test_results), "skipped": dict(skipped)}
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def write_test_report(
    out_dir: str | Path,
    results: Mapping[str, Mapping[str, float]],
    outputs: Mapping[str, Mapping[str, Any]],
) -> str:
    """Write the run's test report files into ``out_dir``; return the markdown table."""
    return write_report(Path(out_dir) / "report.md", results)


def log_run_files(logger: Any, out_dir: str | Path) -> None:
    """Log the run's score files and reports to W&B as one artifact."""
    import wandb

    out_dir = Path(out_dir)
    artifact = wandb.Artifact(f"scores-{logger.experiment.id}", type="scores")
    if (out_dir / "scores").is_dir():
        artifact.add_dir(str(out_dir / "scores"), name="scores")
    for name in ("metrics.json", "report.md"):
        if (out_dir / name).is_file():
            artifact.add_file(str(out_dir / name))
    logger.experiment.log_artifact(artifact)
