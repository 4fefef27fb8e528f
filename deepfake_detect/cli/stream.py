"""``deepfake-detect stream MODEL [FILE | -]``: score a live stream window by window; one JSON
line per window on stdout, a summary on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from deepfake_detect.cli.common import add_review_options, review_folder
from deepfake_detect.inference.semantics import AGGREGATES, SCORE_SEMANTICS

DESCRIPTION = """\
Score a stream as it arrives: a file read progressively, or raw PCM on stdin (`-`, the default;
--rate, --channels, --format say what it is). Audio is resampled to the model's rate and cut
into the windows `detect` cuts (the training crop, half-overlapping by default); each window
gives one JSON line as soon as it is complete: window (index), start and end (s), score,
p_spoof and window_decision of the window; running_score, running_p_spoof and decision of all
windows so far (--aggregate); audio (s received); latency_ms (from the arrival of the chunk
that completed the window to the line); early_decision and early; silent (peak below
-80 dBFS: scored, never saved for review). The early decision is the
first running decision outside the reject band once the windows cover --min-audio seconds;
with --stop-early the stream stops there. Ctrl-C ends the stream as the end of the input does.
A summary goes to stderr at the end. Exit status 0 when a window was scored, 1 when the stream
held too little audio, 2 for a usage error.

  arecord -f S16_LE -r 16000 -c 1 -t raw | deepfake-detect stream model.ckpt -
  ffmpeg -i call.mp4 -f s16le -ac 1 -ar 16000 - | deepfake-detect stream model.ckpt - --stop-early
  deepfake-detect stream model.ckpt call.wav --chunk 0.5 --review-dir review/"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="score a live stream (raw PCM on stdin, or a file) window by window",
        description=DESCRIPTION,
        epilog=SCORE_SEMANTICS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a checkpoint (.ckpt) written by training, or a file from `deepfake-detect export` "
        "(.onnx, TorchScript)",
    )
    parser.add_argument(
        "input",
        metavar="FILE | -",
        nargs="?",
        default="-",
        help="an audio file, or - for raw PCM on stdin (default)",
    )
    pcm = parser.add_argument_group("raw PCM on stdin")
    pcm.add_argument("--rate", type=int, default=16000, help="sample rate in Hz (default: 16000)")
    pcm.add_argument("--channels", type=int, default=1, help="interleaved channels (default: 1)")
    pcm.add_argument(
        "--format",
        choices=("s16le", "f32le"),
        default="s16le",
        help="sample format: 16-bit integer or 32-bit float, little-endian (default: s16le)",
    )
    parser.add_argument(
        "--chunk",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="audio read at a time (default: 1.0)",
    )
    parser.add_argument(
        "--min-audio",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="audio the windows must cover before an early decision (default: 2.0)",
    )
    parser.add_argument("--stop-early", action="store_true", help="stop at the early decision")
    parser.add_argument(
        "--reject-band",
        type=float,
        metavar="P",
        help="uncertain when |p_spoof - 0.5| < P (default: the calibration's, 0.1)",
    )
    parser.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default="mean",
        help="how the window scores so far make the running score (default: mean)",
    )
    parser.add_argument(
        "--hop",
        type=float,
        metavar="SECONDS",
        help="hop between windows (default: half the window, the model's training crop)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_review_options(parser, "windows")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detect.inference.detect import load_model
    from deepfake_detect.inference.streaming import (
        StreamError,
        StreamingScorer,
        StreamOptions,
        check_pcm_options,
        file_chunks,
        pcm_chunks,
    )

    options = StreamOptions(
        aggregate=args.aggregate,
        hop_seconds=args.hop,
        reject_band=args.reject_band,
        min_audio=args.min_audio,
        stop_early=args.stop_early,
        device=args.device,
    )
    options.check()
    if args.chunk <= 0:
        raise StreamError(f"--chunk must be positive, got {args.chunk}")
    if args.input == "-":
        check_pcm_options(args.rate, args.channels, args.format)
        rate, source = args.rate, "stdin"
        chunks = pcm_chunks(
            sys.stdin.buffer, args.channels, args.format, max(1, round(args.chunk * args.rate))
        )
    else:
        rate, chunks = file_chunks(args.input, args.chunk)
        source = args.input
    detector = load_model(args.model)
    review = review_folder(args, detector)
    scorer = StreamingScorer(detector, rate, options, review, source)
    started = time.monotonic()

    def emit(events: Any) -> None:
        for event in events:
            sys.stdout.write(json.dumps(event.record()) + "\n")
            sys.stdout.flush()

    interrupted = False
    try:
        emit(scorer.run(chunks))
    except KeyboardInterrupt:  # Ctrl-C ends a live stream: its last window, then the summary
        interrupted = True
        emit(scorer.finish())
    summary = scorer.summary
    lines = summary.lines(detector, time.monotonic() - started)
    if interrupted:
        lines.insert(0, "interrupted: the stream ends here")
    if review is not None:
        lines += review.lines()
    sys.stderr.write("\n".join(lines) + "\n")
    return 0 if summary.windows else 1
