"""``deepfake-detect serve MODEL``: a local HTTP service and web page around a checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deepfake_detect.cli.common import add_review_options, add_scoring_options, review_folder
from deepfake_detect.inference.semantics import SCORE_SEMANTICS

DESCRIPTION = """\
Serve a checkpoint over HTTP (FastAPI + uvicorn; `pip install 'deepfake-detect[serve]'`):

  GET  /         a web page: drop or choose a file, or record from the microphone; it shows the
                 decision, p_spoof and the per-window score timeline (live while recording)
  GET  /health   the model, its sample rate and window, the calibration, the version
  POST /detect   one audio file (multipart field `file`, or the raw bytes as the body); the
                 answer is the JSON line `detect --format jsonl` writes for it, with the timeline.
                 400 nothing uploaded or corrupt, 413 over --max-upload-mb, 415 unsupported
                 format, 422 empty, silent or NaN audio; each with a one-line `detail`
  WS   /stream   a JSON hello {"rate": 48000, "channels": 1, "format": "f32le" | "s16le"}, then
                 binary PCM chunks, then {"type": "end"}; one JSON message per window as
                 `deepfake-detect stream` prints it (type "window"), then type "summary"

  deepfake-detect serve model.ckpt --port 8000     # then open http://127.0.0.1:8000/
  curl -F file=@call.wav http://127.0.0.1:8000/detect

The service listens on 127.0.0.1 by default; --host 0.0.0.0 exposes it to the network (it has
no authentication)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a checkpoint over HTTP: JSON and WebSocket endpoints, and a web page",
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
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=50.0,
        metavar="MB",
        help="largest upload /detect takes, in 10^6 bytes (default: 50)",
    )
    parser.add_argument(
        "--reject-band",
        type=float,
        metavar="P",
        help="uncertain when |p_spoof - 0.5| < P (default: the calibration's, 0.1)",
    )
    parser.add_argument(
        "--min-audio",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="audio a stream's windows must cover before its early decision (default: 2.0)",
    )
    add_scoring_options(parser)
    add_review_options(parser, "uploads and stream windows")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detect.cli.common import scoring_options
    from deepfake_detect.serve import SERVE_EXTRA_HINT, ServeError

    try:
        import uvicorn

        from deepfake_detect.serve.app import create_app
    except ImportError as exc:
        raise ServeError(f"serve needs {exc.name or 'its extra'}: {SERVE_EXTRA_HINT}") from None
    from deepfake_detect.inference.detect import load_model
    from deepfake_detect.inference.streaming import StreamOptions

    options = scoring_options(args, reject_band=args.reject_band)
    stream_options = StreamOptions(
        aggregate=args.aggregate,
        hop_seconds=args.hop,
        reject_band=args.reject_band,
        min_audio=args.min_audio,
        device=args.device,
    )
    stream_options.check()
    detector = load_model(args.model)
    review = review_folder(args, detector)
    app = create_app(
        detector,
        max_upload_mb=args.max_upload_mb,
        detect_options=options,
        stream_options=stream_options,
        review=review,
    )
    sys.stderr.write(
        f"serving {args.model} on http://{args.host}:{args.port}/ "
        f"({detector.decisions.describe()})\n"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    if review is not None:
        sys.stderr.write("\n".join(review.lines()) + "\n")
    return 0
