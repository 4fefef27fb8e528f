"""The service: ``create_app(model)`` builds a FastAPI app around one detector.

- ``GET /``: the web page (``static/index.html``).
- ``GET /health``: the model, its sample rate and window, the calibration, the version.
- ``POST /detect``: one uploaded file (multipart field ``file``, or the raw audio as the body)
  scored as ``detect`` scores it; the answer is ``detect``'s JSON line for it, timeline included
  (``path`` is the upload's name). Bad audio is a 4xx with a one-line ``detail``: 400 (nothing
  uploaded, truncated or corrupt), 413 (over the upload limit), 415 (unreadable or unsupported
  format), 422 (empty, silent, NaN samples or scores).
- ``WS /stream``: the client sends a JSON hello (``{"rate": 48000, "channels": 1, "format":
  "f32le"}``; optional ``min_audio``, ``stop_early``), then binary PCM chunks of any size, then
  ``{"type": "end"}``; the server answers ``{"type": "ready", ...}``, one ``{"type": "window",
  ...}`` per window (the :class:`~deepfake_detect.inference.streaming.StreamEvent` record, as
  ``deepfake-detect stream`` prints it) as soon as the window is complete, and at the end
  ``{"type": "summary", ...}`` (also right after the early decision when the hello asks
  ``stop_early``) and closes the socket; a bad hello or bad data gets ``{"type": "error",
  "detail": ...}`` and the socket is closed (1008 for the hello, 1007 for the data).

One model serves every request: scoring runs in a worker thread, one request at a time.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
import torch
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from deepfake_detect.data.audio import AudioError
from deepfake_detect.inference.blocks import resampled_blocks
from deepfake_detect.inference.detect import (
    DetectOptions,
    Detector,
    FileResult,
    load_model,
    score_files,
)
from deepfake_detect.inference.review import ReviewFolder
from deepfake_detect.inference.streaming import (
    PCM_FORMATS,
    StreamError,
    StreamingScorer,
    StreamOptions,
)
from deepfake_detect.serve import ServeError

DEFAULT_MAX_UPLOAD_MB = 50.0
MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart body may hold beyond the file (boundaries, headers)."""
HELLO_KEYS = {"rate", "channels", "format", "min_audio", "stop_early"}
T = TypeVar("T")


def package_version() -> str:
    try:
        return metadata.version("deepfake-detect")
    except metadata.PackageNotFoundError:
        return "unknown"


def page_html() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text("utf-8")


def status_for(reason: str) -> int:
    """The HTTP status of a file ``detect`` could not score, from its reason."""
    if reason.startswith("unreadable or unsupported"):
        return 415
    if reason.startswith(("truncated or corrupt", "not found", "not a file")):
        return 400
    return 422  # empty, silent, NaN samples, non-finite scores


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


class _Service:
    """What the endpoints share: the detector, the options, the review folder and the lock
    that keeps scoring to one request at a time."""

    def __init__(
        self,
        detector: Detector,
        max_upload_bytes: int,
        detect_options: DetectOptions,
        stream_options: StreamOptions,
        review: ReviewFolder | None,
    ) -> None:
        self.detector = detector
        self.max_upload_bytes = max_upload_bytes
        self.detect_options = detect_options
        self.stream_options = stream_options
        self.review = review
        self.lock = threading.Lock()

    async def locked(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            with self.lock:
                return fn(*args)

        return await run_in_threadpool(call)

    def health(self) -> dict[str, Any]:
        detector = self.detector
        rate = detector.preprocessing.sample_rate
        window = detector.window()
        hop = self.detect_options.hop_seconds
        calibration = detector.decisions
        return {
            "status": "ok",
            "model": Path(detector.path).name,
            "sample_rate": rate,
            "window_seconds": window / rate,
            "hop_seconds": window / 2 / rate if hop is None else hop,
            "aggregate": self.detect_options.aggregate,
            "calibrated": calibration.calibrated,
            "calibration": calibration.describe(),
            "calibration_source": calibration.source or None,
            "threshold": calibration.threshold,
            "reject_band": (
                calibration.reject_band
                if self.detect_options.reject_band is None
                else self.detect_options.reject_band
            ),
            "max_upload_mb": self.max_upload_bytes / 1e6,
            "pcm_formats": list(PCM_FORMATS),
            "review": str(self.review.root) if self.review is not None else None,
            "version": package_version(),
        }

    def score_file(self, path: str, name: str) -> FileResult:
        (result,) = score_files(self.detector, [path], self.detect_options)
        if self.review is not None and result.scored and self.review.wants(result.decision):
            # the upload is bounded: decode it whole (add_file would record the temporary path)
            with sf.SoundFile(path) as f:
                wave = torch.cat(list(resampled_blocks(f, self.detector.preprocessing.sample_rate)))
            self.review.add_wave(
                wave,
                source=f"upload:{name}",
                kind="file",
                start=0.0,
                end=result.duration or 0.0,
                score=result.score,
                p_spoof=result.p_spoof,
                decision=result.decision,
            )
        result.path = name
        return result


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, _too_large(limit))
    return bytes(body)


def _too_large(limit: int) -> str:
    return f"upload over the limit of {limit / 1e6:g} MB (serve --max-upload-mb)"


async def _upload(request: Request, service: _Service) -> tuple[bytes, str]:
    """The uploaded file's bytes and name: a multipart ``file`` field, or the raw body."""
    limit = service.max_upload_bytes
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    body = await _bounded_body(request, limit + (MULTIPART_SLACK if multipart else 0))
    if not multipart:
        return body, request.query_params.get("name") or "upload"

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # python-multipart's parse errors
        raise HTTPException(400, f"unreadable multipart body ({exc})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(400, "no `file` field in the multipart upload")
    data = await upload.read()
    if len(data) > limit:
        raise HTTPException(413, _too_large(limit))
    return data, upload.filename or "upload"


def _parse_hello(text: str | None) -> dict[str, Any]:
    if text is None:
        raise StreamError("the first message must be the JSON hello, not binary audio")
    try:
        hello = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StreamError(f"the hello is not JSON ({exc})") from None
    if not isinstance(hello, dict):
        raise StreamError("the hello must be a JSON object")
    unknown = sorted(set(hello) - HELLO_KEYS - {"type"})
    if unknown:
        raise StreamError(f"unknown hello keys {unknown} (known: {sorted(HELLO_KEYS)})")
    rate, channels = hello.get("rate"), hello.get("channels", 1)
    fmt = hello.get("format", "s16le")
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)  # a browser's AudioContext.sampleRate arrives as 48000.0 from some
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise StreamError(f"hello: rate must be a positive integer (Hz), got {rate!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise StreamError(f"hello: channels must be a positive integer, got {channels!r}")
    if fmt not in PCM_FORMATS:
        raise StreamError(f"hello: format must be one of {list(PCM_FORMATS)}, got {fmt!r}")
    min_audio, stop_early = hello.get("min_audio", 0.0), hello.get("stop_early", False)
    if not isinstance(min_audio, int | float) or isinstance(min_audio, bool) or min_audio < 0:
        raise StreamError(f"hello: min_audio must be seconds >= 0, got {min_audio!r}")
    if not isinstance(stop_early, bool):
        raise StreamError(f"hello: stop_early must be true or false, got {stop_early!r}")
    return {**hello, "rate": rate, "channels": channels, "format": fmt}


def create_app(
    model: Detector | str | Path,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    detect_options: DetectOptions | None = None,
    stream_options: StreamOptions | None = None,
    review: ReviewFolder | None = None,
) -> FastAPI:
    """The app around ``model`` (a loaded :class:`Detector`, or a checkpoint path).
    ``detect_options`` / ``stream_options``: how uploads / streams are scored (the defaults of
    ``detect`` / ``stream``; a stream's hello may set ``min_audio`` and ``stop_early``)."""
    if max_upload_mb <= 0:
        raise ServeError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    detector = model if isinstance(model, Detector) else load_model(model)
    detect_options = detect_options or DetectOptions()
    detect_options.check()
    stream_options = stream_options or StreamOptions(
        aggregate=detect_options.aggregate,
        hop_seconds=detect_options.hop_seconds,
        reject_band=detect_options.reject_band,
        device=detect_options.device,
    )
    stream_options.check()
    service = _Service(detector, round(max_upload_mb * 1e6), detect_options, stream_options, review)
    app = FastAPI(title="deepfake-detect", version=package_version())
    app.state.service = service

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @app.post("/detect")
    async def detect(request: Request) -> JSONResponse:
        data, name = await _upload(request, service)
        if not data:
            raise HTTPException(400, f"{name}: empty upload (0 bytes)")
        with tempfile.TemporaryDirectory(prefix="deepfake-detect-") as folder:
            path = Path(folder) / f"upload{_safe_suffix(name)}"
            path.write_bytes(data)
            result = await service.locked(service.score_file, str(path), name)
        if not result.scored:
            raise HTTPException(status_for(result.reason or ""), f"{name}: {result.reason}")
        return JSONResponse(result.record())

    @app.websocket("/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await _stream(ws, service)
        except WebSocketDisconnect:
            pass

    return app


async def _send_error(ws: WebSocket, detail: str, code: int) -> None:
    await ws.send_json({"type": "error", "detail": detail})
    await ws.close(code)


async def _stream(ws: WebSocket, service: _Service) -> None:
    first = await ws.receive()
    if first["type"] == "websocket.disconnect":
        return
    try:
        hello = _parse_hello(first.get("text"))
        options = replace(
            service.stream_options,
            min_audio=float(hello.get("min_audio", service.stream_options.min_audio)),
            stop_early=bool(hello.get("stop_early", service.stream_options.stop_early)),
        )
        client = ws.client
        source = f"stream:{client.host}:{client.port}" if client else "stream"
        scorer = StreamingScorer(service.detector, hello["rate"], options, service.review, source)
    except (StreamError, TypeError, ValueError) as exc:
        await _send_error(ws, str(exc), 1008)
        return
    channels, fmt = hello["channels"], hello["format"]
    dtype, scale = PCM_FORMATS[fmt]
    frame_bytes = np.dtype(dtype).itemsize * channels
    await ws.send_json(
        {
            "type": "ready",
            "rate": hello["rate"],
            "channels": channels,
            "format": fmt,
            "sample_rate": scorer.sample_rate,
            "window_seconds": scorer.window / scorer.sample_rate,
            "hop_seconds": scorer.hop / scorer.sample_rate,
            "min_audio": options.min_audio,
        }
    )
    pending = bytearray()

    async def send(events: list[Any]) -> None:
        for event in events:
            await ws.send_json({"type": "window", **event.record()})

    while True:
        message = await ws.receive()
        arrived = time.perf_counter()
        if message["type"] == "websocket.disconnect":
            return
        data, text = message.get("bytes"), message.get("text")
        try:
            if data is not None:
                pending += data
                take = len(pending) - len(pending) % frame_bytes
                if not take:
                    continue
                samples = np.frombuffer(bytes(pending[:take]), dtype=dtype)
                del pending[:take]
                chunk = (samples.astype(np.float32) / scale).reshape(-1, channels)
                await send(await service.locked(scorer.push, chunk, arrived))
                if not scorer.stopped:
                    continue
            elif not _is_end(text):
                raise StreamError(f'expected binary PCM or {{"type": "end"}}, got {text!r:.80}')
            # the end, or the early decision with stop_early
            await send(await service.locked(scorer.finish, arrived))
            await ws.send_json({"type": "summary", **scorer.summary.record()})
            await ws.close(1000)
            return
        except (AudioError, StreamError) as exc:
            await _send_error(ws, str(exc), 1007)
            return


def _is_end(text: str | None) -> bool:
    if text is None:
        return False
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"
