"""The service (``deepfake-detect serve``): health, /detect equal to ``detect`` for the same
file, the upload limit and the 4xx answers for bad audio, the WebSocket stream equal to the
streaming scorer offline, the page, and the command's own errors."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from test_detect import RATE, energy_detector, tiny_ckpt, write  # noqa: F401
from test_streaming import speech

from deepfake_detect.cli import main
from deepfake_detect.inference.detect import DetectOptions, load_model, score_files
from deepfake_detect.inference.review import ReviewFolder
from deepfake_detect.inference.streaming import StreamingScorer, StreamOptions

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("multipart", reason="python-multipart (the serve extra) is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from deepfake_detect.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_ckpt: Path) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(tiny_ckpt)) as c:
        yield c


def wav_bytes(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def one_line(detail: Any) -> str:
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


# -- health and page ----------------------------------------------------------------------------
def test_health_names_the_model_and_its_contract(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "lcnn.ckpt"
    assert health["sample_rate"] == RATE and health["window_seconds"] == 0.5
    assert health["hop_seconds"] == 0.25 and health["aggregate"] == "mean"
    assert health["calibrated"] is False and health["calibration"].startswith("uncalibrated")
    assert health["reject_band"] == 0.1 and health["max_upload_mb"] == 50
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", health["version"])


def test_the_page_is_served_and_self_contained(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for element in ("file-input", "record", "stop", "decision", "p-spoof", "timeline", "status"):
        assert f'id="{element}"' in page
    # no CDN, no external script, style or font: the machines that serve it may be offline
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "/detect" in page and "/stream" in page


# -- /detect ------------------------------------------------------------------------------------
def test_detect_answers_what_detect_writes(
    client: TestClient,
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "call.wav", speech(3.3, 22050, stereo=True), 22050, "PCM_16")
    (expected,) = score_files(load_model(tiny_ckpt), [str(path)], DetectOptions())
    record = {**expected.record(), "path": "call.wav"}
    assert record["windows"] == 13 and record["reason"] is None

    with open(path, "rb") as f:
        response = client.post("/detect", files={"file": ("call.wav", f, "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json() == record
    # the raw bytes as the body give the same
    raw = client.post("/detect?name=call.wav", content=path.read_bytes())
    assert raw.status_code == 200 and raw.json() == record


def test_upload_over_the_limit_is_413(tiny_ckpt: Path) -> None:  # noqa: F811
    with TestClient(create_app(tiny_ckpt, max_upload_mb=0.02)) as small:
        big = wav_bytes(speech(1.0, RATE))  # 32 kB of 16-bit samples
        for response in (
            small.post("/detect", files={"file": ("big.wav", big, "audio/wav")}),
            small.post("/detect", content=big),
        ):
            assert response.status_code == 413
            assert "0.02 MB" in one_line(response.json()["detail"])
        fits = wav_bytes(speech(0.5, RATE))  # 16 kB
        assert small.post("/detect", files={"file": ("ok.wav", fits)}).status_code == 200


@pytest.mark.parametrize(
    ("name", "content", "status", "says"),
    [
        ("noise.wav", b"this is not audio at all" * 10, 415, "unreadable or unsupported audio"),
        ("empty.wav", b"", 400, "empty upload"),
        ("zero.wav", wav_bytes(np.zeros(0, dtype=np.float32)), 422, "empty (0 frames)"),
        ("quiet.wav", wav_bytes(np.zeros(RATE, dtype=np.float32)), 422, "silent"),
        ("nan.wav", wav_bytes(np.full(RATE, np.nan, np.float32), subtype="FLOAT"), 422, "NaN"),
    ],
)
def test_bad_audio_gets_a_4xx_with_a_one_line_detail(
    client: TestClient, name: str, content: bytes, status: int, says: str
) -> None:
    response = client.post("/detect", files={"file": (name, content, "audio/wav")})
    assert response.status_code == status
    detail = one_line(response.json()["detail"])
    assert detail.startswith(f"{name}: ") and says in detail


def test_a_form_without_a_file_is_400(client: TestClient) -> None:
    response = client.post("/detect", data={"other": "x"}, files={"f": ("a.wav", b"RIFF")})
    assert response.status_code == 400
    assert "no `file` field" in one_line(response.json()["detail"])


def test_uploads_decided_spoof_go_to_the_review_folder(tmp_path: Path) -> None:
    detector = energy_detector()  # quiet audio scores spoof
    review = ReviewFolder(tmp_path / "review", RATE, model="energy-stub")
    quiet = wav_bytes(np.random.default_rng(0).normal(0, 0.01, RATE).astype(np.float32))
    with TestClient(create_app(detector, review=review)) as c:
        response = c.post("/detect", files={"file": ("quiet.wav", quiet)})
    assert response.json()["decision"] == "spoof"
    (line,) = (tmp_path / "review" / "index.jsonl").read_text().splitlines()
    assert json.loads(line)["source"] == "upload:quiet.wav"


# -- WS /stream ---------------------------------------------------------------------------------
def stream_messages(c: TestClient, hello: dict[str, Any], payloads: list[bytes]) -> list[dict]:
    messages = []
    with c.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps(hello))
        for payload in payloads:
            ws.send_bytes(payload)
        ws.send_text(json.dumps({"type": "end"}))
        try:
            while True:
                messages.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            assert closed.code == 1000
    return messages


@pytest.mark.parametrize("model", ["tiny_ckpt", "energy"])
def test_stream_gives_the_offline_streaming_scores(
    tiny_ckpt: Path,  # noqa: F811
    model: str,
) -> None:
    detector = load_model(tiny_ckpt) if model == "tiny_ckpt" else energy_detector()
    rate, samples = 22050, speech(3.3, 22050, stereo=True)
    offline = list(StreamingScorer(detector, rate, StreamOptions()).run([samples]))
    assert len(offline) == 13
    data = samples.astype("<f4").tobytes()
    cuts = list(range(0, len(data), 12_345)) + [len(data)]  # splits frames and samples
    payloads = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    with TestClient(create_app(detector)) as c:
        messages = stream_messages(c, {"rate": rate, "channels": 2, "format": "f32le"}, payloads)
    ready, *windows, summary = messages
    assert ready["type"] == "ready" and ready["sample_rate"] == RATE
    assert ready["window_seconds"] == 0.5 and ready["hop_seconds"] == 0.25
    assert [m["type"] for m in windows] == ["window"] * 13
    assert [m["window"] for m in windows] == list(range(13))
    for got, want in zip(windows, offline, strict=True):
        want = want.record()
        assert (got["start"], got["end"]) == (want["start"], want["end"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["decision"] == want["decision"]
    assert summary["type"] == "summary" and summary["windows"] == 13
    assert summary["audio"] == pytest.approx(3.3, abs=1e-3)


def test_stream_takes_int16_at_the_model_rate(client: TestClient, tiny_ckpt: Path) -> None:  # noqa: F811
    samples = speech(1.2, RATE)
    pcm = np.round(samples * 32767).astype("<i2")
    offline = list(StreamingScorer(load_model(tiny_ckpt), RATE).run([pcm / 32768.0]))
    messages = stream_messages(client, {"rate": RATE}, [pcm.tobytes()])
    scores = [m["score"] for m in messages if m["type"] == "window"]
    np.testing.assert_allclose(scores, [e.score for e in offline], atol=1e-5)


@pytest.mark.parametrize(
    ("first", "says"),
    [
        ('{"rate": 0}', "rate must be a positive integer"),
        ('{"rate": 16000, "format": "mp3"}', "format must be one of"),
        ('{"rate": 16000, "colour": "red"}', "unknown hello keys"),
        ("hello", "not JSON"),
        (b"\x00\x01", "must be the JSON hello"),
    ],
)
def test_a_bad_hello_is_an_error_message_then_close(
    client: TestClient, first: str | bytes, says: str
) -> None:
    with client.websocket_connect("/stream") as ws:
        ws.send_bytes(first) if isinstance(first, bytes) else ws.send_text(first)
        error = ws.receive_json()
        assert error["type"] == "error" and says in one_line(error["detail"])
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_nan_audio_in_a_stream_is_an_error(client: TestClient) -> None:
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"rate": RATE, "format": "f32le"}))
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(np.full(100, np.nan, "<f4").tobytes())
        error = ws.receive_json()
        assert error["type"] == "error" and "NaN" in error["detail"]


# -- the command --------------------------------------------------------------------------------
def test_serve_help_and_a_missing_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for text in ("/health", "/detect", "/stream", "--max-upload-mb", "--review-dir", "p_spoof"):
        assert text in out
    assert main(["serve", str(tmp_path / "missing.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.ckpt" in err and "\n" not in err


def test_stop_early_ends_the_stream_at_the_early_decision(tmp_path: Path) -> None:
    loud = np.random.default_rng(2).normal(0, 0.5, 3 * RATE).astype("<f4")  # bona fide
    hello = {"rate": RATE, "format": "f32le", "min_audio": 1.0, "stop_early": True}
    with TestClient(create_app(energy_detector())) as c, c.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps(hello))
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(loud.tobytes())  # one chunk: the decision comes before the end
        *windows, summary = [ws.receive_json() for _ in range(4)]
        assert [w["end"] for w in windows] == [0.5, 0.75, 1.0] and windows[-1]["early"]
        assert summary["type"] == "summary" and summary["stopped_early"]
        assert summary["early_decision"] == "bonafide" and summary["early_at"] == 1.0
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


def test_a_chunked_upload_over_the_limit_is_413(tiny_ckpt: Path) -> None:  # noqa: F811
    def body() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they come
        for _ in range(10):
            yield b"\0" * 10_000

    with TestClient(create_app(tiny_ckpt, max_upload_mb=0.05)) as small:
        response = small.post("/detect", content=body())
    assert response.status_code == 413 and "0.05 MB" in one_line(response.json()["detail"])


def test_serve_without_its_extra_says_how_to_install_it(
    tiny_ckpt: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", str(tiny_ckpt), "--max-upload-mb", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-upload-mb must be positive, got 0.0\n"
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    assert main(["serve", str(tiny_ckpt)]) == 2
    err = capsys.readouterr().err
    assert err == "error: serve needs uvicorn: pip install 'deepfake-detect[serve]'\n"
