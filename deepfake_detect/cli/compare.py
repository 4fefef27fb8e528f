"""`deepfake-detect compare`: one table (Markdown + CSV) and one figure from many runs.

Rows are experiments (by default model x freeze mode x training data x augmentation), seeds
aggregated as mean ± spread; columns are the test sets' EER (and min t-DCF where computed),
training time, GPU-hours and parameter counts. Runs that failed, are running, or lack a test
set are listed, never dropped. The work is done by
:mod:`deepfake_detect.evaluation.compare`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_OUTPUT = "comparison"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare finished runs: one table (Markdown + CSV) and one figure",
        description="Compare runs: rows = experiments (seeds aggregated as mean ± spread), "
        "columns = test sets (EER %, min t-DCF), training time, GPU-hours, parameters. "
        "Failed, running and incomplete runs are listed as such.",
    )
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN_DIRS",
        help="run folders, globs, or folders holding runs at any depth",
    )
    parser.add_argument(
        "--sweep",
        metavar="DIR",
        help="a Hydra multirun folder (its <job num>/ runs; an Optuna sweep's best trial)",
    )
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="read the runs of a W&B project (summary metrics and config) through wandb.Api()",
    )
    parser.add_argument(
        "--output",
        "-o",
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"where comparison.md / .csv / .png go (default: ./{DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--metric",
        choices=("eer", "min_tdcf"),
        default="eer",
        help="metric of the figure and of the row order (default: eer)",
    )
    parser.add_argument(
        "--group-by",
        nargs="+",
        metavar="FIELD",
        help="what makes an experiment: fields (task experiment model freeze train_data "
        "augment seed) or dotted config keys such as model.optimizer.lr; comma-separated "
        "or several words (default: model freeze train_data augment)",
    )
    parser.add_argument(
        "--spread",
        choices=("half-range", "std"),
        default="half-range",
        help="spread over seeds: (max - min) / 2, or the sample standard deviation "
        "(default: half-range)",
    )
    parser.add_argument(
        "--count-trainable",
        action="store_true",
        help="rebuild each model's net offline (random weights) to count its trainable "
        "parameters when the run did not record them (slow for large encoders)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, wandb_api: Callable[[], Any] | None = None) -> int:
    from deepfake_detect.evaluation.compare import (
        DEFAULT_GROUP_BY,
        CompareError,
        collect,
        compare_runs,
        markdown_table,
        write_comparison,
    )

    if not args.runs and not args.sweep and not args.wandb:
        raise CompareError("nothing to compare: give RUN_DIRS, --sweep DIR or --wandb E/P")
    group_by = (
        [g for word in args.group_by for g in word.split(",") if g]
        if args.group_by
        else list(DEFAULT_GROUP_BY)
    )
    records, sweep = collect(
        args.runs,
        sweep_dir=args.sweep,
        wandb_project=args.wandb,
        api_factory=wandb_api,
        count_trainable=args.count_trainable,
    )
    comparison = compare_runs(
        records, group_by=group_by, spread=args.spread, metric=args.metric, sweep=sweep
    )
    written = write_comparison(comparison, args.output)
    out = sys.stdout
    if comparison.experiments:
        out.write(markdown_table(comparison) + "\n")
    else:
        out.write("no finished run has test results to compare\n")
    for note in comparison.notes:
        out.write(f"note: {note}\n")
    for problem in comparison.problems:
        out.write(f"not compared or incomplete: {problem.run.source}: {problem.reason}\n")
    if sweep is not None and sweep.best_params is not None:
        jobs = ", ".join(sweep.best_jobs) or "no job folder matches"
        out.write(f"best trial: {sweep.best_params} = {sweep.best_value} ({jobs})\n")
    if "png" not in written:
        out.write(f"no figure: no {args.metric} values to plot\n")
    for path in written.values():
        out.write(f"wrote {path}\n")
    return 0
