"""Train each model of the zoo on mini_la (CPU, a fixed time budget each) and test it on mini_la
eval (unseen attacks A05-A08 included), mini_wild and mini_wavefake; print one table.

    python benchmarks/model_zoo_mini.py --minutes 8 --data-dir ../shared/data
    python benchmarks/model_zoo_mini.py --models lcnn_small rawnet2 --minutes 2

Every row is one `python train.py` run (data=mini); its run directory holds the full report.
AASIST and AASIST-L are not in the default list: on 2 CPU cores 6 minutes cover less than one
epoch of mini_la, and scoring the 2,772 test utterances alone took over 25 minutes (run them
with --models on a bigger machine).
The Wav2Vec2 rows use tiny randomly initialised encoders (no pretrained weights here): the
"scratch" row trains it from scratch, the "frozen random" row is the w2v2_frozen recipe on a
random encoder; neither says anything about pretrained wav2vec2-base.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS: dict[str, list[str]] = {
    "lcnn_small": ["model=lcnn", "model.net.width=0.55", "model.net.lstm=false"],
    "lcnn": ["model=lcnn"],
    "rawnet2": ["model=rawnet2", "data.batch_size=16"],
    "aasist_l": ["model=aasist_l", "data.batch_size=16"],
    "aasist": ["model=aasist", "data.batch_size=16"],
    "w2v2_tiny_scratch": ["model=w2v2_tiny"],
    "w2v2_frozen_random": ["model=w2v2_linear", "model.freeze=all", "model.net.source={encoder}"],
}


def run_one(name: str, minutes: float, data_dir: Path, log_dir: Path, encoder: Path) -> dict:
    settings = {
        "paths.data_dir": str(data_dir),
        "paths.log_dir": str(log_dir / name),
        "trainer.max_time": f"00:00:{int(minutes):02d}:{round(minutes % 1 * 60):02d}",
        "trainer.max_epochs": "100",
        "trainer.limit_val_batches": "0.3",
        "trainer.enable_progress_bar": "false",
        "data.max_len": "32000",
        "data.batch_size": "32",
        "data.num_workers": "1",
        "callbacks.early_stopping.patience": "100",
    }
    choices = []
    for override in MODELS[name]:
        key, value = override.format(encoder=encoder).split("=", 1)
        if key == "model":
            choices.append(f"model={value}")
        else:
            settings[key] = value
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "~experiment",
        "data=mini",
        "trainer=cpu",
        *choices,
        *(f"{k}={v}" for k, v in settings.items()),
    ]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return {"model": name, "error": result.returncode}
    (run,) = (log_dir / name / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    m, sets = metrics["metrics"], metrics["test_sets"]
    from deepfake_detect.pipeline import load_detector

    params = sum(p.numel() for p in load_detector(m["best_checkpoint"]).net.parameters())
    return {
        "model": name,
        "params": params,
        "samples_per_s": m.get("train/samples_per_s"),
        "wall_s": wall,
        "run": str(run),
        "sets": {name: record["metrics"] for name, record in sets.items()},
    }


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(rows: list[dict]) -> str:
    attacks = [f"A0{i}" for i in range(1, 9)]
    head = [
        "model",
        "params",
        "train samples/s",
        "mini_la eval EER %",
        *attacks,
        "mini_wild EER %",
        "mini_wavefake EER %",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | failed ({row['error']}) |")
            continue
        la = row["sets"].get("asvspoof2019_la", {})
        cells = [
            row["model"],
            f"{row['params']:,}",
            f"{row['samples_per_s'] or 0:.1f}",
            pct(la.get("eer")),
            *(pct(la.get(f"eer_{a}")) for a in attacks),
            pct(row["sets"].get("in_the_wild", {}).get("eer")),
            pct(row["sets"].get("wavefake", {}).get("eer")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    default = [name for name in MODELS if not name.startswith("aasist")]
    parser.add_argument("--models", nargs="+", default=default, choices=list(MODELS))
    parser.add_argument("--minutes", type=float, default=8.0, help="training time per model")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="zoo_mini_"))
    encoder = log_dir / "tiny-wav2vec2"
    from deepfake_detect.models.save_encoder import save_encoder

    save_encoder(encoder)
    rows = []
    for name in args.models:
        rows.append(run_one(name, args.minutes, args.data_dir.resolve(), log_dir, encoder))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(
        f"\nmini_la train, {args.minutes:g} CPU-minutes each (2 s crops, batch 32 unless noted), "
        f"runs in {log_dir}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
