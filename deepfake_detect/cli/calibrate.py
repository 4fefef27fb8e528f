"""``deepfake-detect calibrate CKPT --data DEV``: score a labelled dev set with the checkpoint
(as ``detect`` scores files), fit the score -> LLR map and the decision threshold, print the
summary and store the calibration in the checkpoint (or a copy, ``--output``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deepfake_detect.cli.common import add_scoring_options, scoring_options

DESCRIPTION = """\
Fit the calibration that `detect` uses, on a labelled development set, and store it in the
checkpoint. --data is a data config of conf/data (its dev set, data.val, is scored; config
overrides with --set, e.g. --data mini --set paths.data_dir=../shared/data) or a CSV / TSV
manifest with `path` and `label` columns (bonafide / spoof; --split picks the rows of one value
of its `split` column). The threshold is the dev EER point unless --threshold SCORE,
--target-far or --bayes-prior says otherwise. Training stores a calibration fitted on each
checkpoint's own dev scores already: this command is for older checkpoints, another dev set or
another threshold rule."""

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit and store the score calibration and decision threshold",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="the checkpoint to calibrate")
    parser.add_argument(
        "--data", required=True, metavar="CONFIG|MANIFEST", help="the labelled dev set"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for a data config (repeatable)",
    )
    parser.add_argument(
        "--config-dir", default=str(CONF_DIR), help=f"the config folder (default: {CONF_DIR})"
    )
    parser.add_argument("--split", default="all", help="the manifest's split (default: all)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument(
        "--threshold",
        default="eer",
        metavar="eer|SCORE",
        help="the dev EER point (default) or a fixed score",
    )
    rule.add_argument(
        "--target-far",
        type=float,
        metavar="RATE",
        help="the lowest threshold whose dev rate of spoofs accepted as bona fide is <= RATE",
    )
    rule.add_argument(
        "--bayes-prior",
        type=float,
        metavar="P",
        help="the Bayes threshold for a bona fide prior P (equal costs)",
    )
    parser.add_argument(
        "--reject-band",
        type=float,
        default=0.1,
        metavar="P",
        help="stored default of detect's reject band: uncertain when |p_spoof - 0.5| < P",
    )
    parser.add_argument(
        "--output", "-o", metavar="CKPT", help="write a calibrated copy here (default: in place)"
    )
    add_scoring_options(parser)
    parser.set_defaults(run=run)


def threshold_rule(args: argparse.Namespace) -> tuple[str, float | None]:
    from deepfake_detect.inference.calibration import CalibrationError

    if args.target_far is not None:
        return "target_far", args.target_far
    if args.bayes_prior is not None:
        return "bayes", args.bayes_prior
    if args.threshold == "eer":
        return "eer", None
    try:
        return "fixed", float(args.threshold)
    except ValueError:
        raise CalibrationError(
            f"--threshold takes `eer` or a score, got {args.threshold!r}"
        ) from None


def manifest_trials(path: Path, split: str) -> list[tuple[str, int]]:
    from deepfake_detect.data.corpora.manifest_csv import ManifestCSV

    rows = ManifestCSV(path, name=path.name, count_unlisted=False).load(split)
    return [(row.path, row.target) for row in rows]


def config_trials(name: str, overrides: list[str], config_dir: str) -> list[tuple[str, int]]:
    """The rows of a data config's dev set (``data.val``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    from deepfake_detect.inference.detect import DetectError

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            overrides = ["~experiment", f"data={name}", *overrides, "data.manifest_dir=null"]
            cfg = compose("train", overrides)
    except HydraException as exc:
        known = sorted(p.stem for p in (Path(config_dir) / "data").glob("*.yaml"))
        raise DetectError(
            f"--data {name}: {str(exc).splitlines()[0]} (data configs: {', '.join(known)}; or "
            "give a .csv / .tsv manifest)"
        ) from None
    finally:
        GlobalHydra.instance().clear()
    datamodule = instantiate(cfg.data)
    if not datamodule.val_specs:
        raise DetectError(f"data config {name!r} has no dev set (data.val)")
    rows = [row for spec in datamodule.val_specs for row in datamodule.rows(spec)]
    return [(row.path, row.target) for row in rows]


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from deepfake_detect.export import ExportError, exported_format
    from deepfake_detect.inference.calibration import (
        check_reject_band,
        fit_calibration,
        write_calibration,
    )
    from deepfake_detect.inference.detect import load_model, score_files

    if exported_format(args.checkpoint):
        raise ExportError(
            f"{args.checkpoint} is an exported model: calibrate the checkpoint it came from, "
            "then export it again (the calibration travels in the exported file)"
        )
    method, value = threshold_rule(args)
    check_reject_band(args.reject_band)
    options = scoring_options(args)
    detector = load_model(args.checkpoint)
    data = Path(args.data)
    if data.suffix.lower() in (".csv", ".tsv") or data.is_file():
        trials = manifest_trials(data, args.split)
        source = f"{data} ({args.split})"
    else:
        trials = config_trials(args.data, args.set, args.config_dir)
        source = f"data={args.data} dev"
    labels = dict(trials)
    scores, targets, skipped = [], [], []
    for result in score_files(detector, [path for path, _ in trials], options):
        if result.scored:
            scores.append(result.score)
            targets.append(labels[result.path])
        else:
            skipped.append(f"{result.path}: {result.reason}")
    calibration = fit_calibration(
        np.asarray(scores), np.asarray(targets), method, value, args.reject_band, source=source
    )
    written = write_calibration(args.checkpoint, calibration, args.output)
    dev = calibration.dev
    llr = calibration.threshold_llr
    even = 1.0 / (1.0 + np.exp(llr))
    lines = [
        f"dev set: {source}: {dev['n_bonafide']} bona fide, {dev['n_spoof']} spoof"
        + (f" ({len(skipped)} files skipped)" if skipped else ""),
        f"dev EER: {100 * dev['eer']:.2f}% (at score {dev['eer_threshold']:.4g}); "
        f"Cllr of the calibrated LLRs: {dev['cllr']:.3f} bits",
        f"map: llr = {calibration.scale:.4g} * score {'-' if calibration.offset < 0 else '+'} "
        f"{abs(calibration.offset):.4g}",
        f"threshold: score {calibration.threshold:.4g} ({method}"
        + ("" if value is None else f" {value}")
        + f"), LLR {llr:.3g}; p_spoof 0.5 there (operating bona fide prior "
        f"{calibration.operating_prior:.3g}; at an even prior it would be {even:.3f})",
        f"at the threshold on the dev set: FAR {100 * dev['far']:.2f}% (spoofs accepted), "
        f"FRR {100 * dev['frr']:.2f}% (bona fide rejected)",
        f"reject band: uncertain when |p_spoof - 0.5| < {calibration.reject_band}",
        f"calibration written to {written}",
    ]
    lines.extend(f"  skipped {s}" for s in skipped[:10])
    print("\n".join(lines))
    return 0
