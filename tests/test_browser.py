"""The web page in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright
with that executable; ``.ci/run`` installs both) against ``deepfake-detect serve``'s app on a
free port. One test uploads a file through the page and reads the decision and the timeline off
it; the other streams a WAV through Chromium's fake microphone and sees live decisions before
stopping. Without a browser or Playwright the tests skip and say why."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_detect import RATE, tiny_ckpt, write  # noqa: F401
from test_streaming import speech

from deepfake_detect.inference.detect import DetectOptions, load_model, score_files

pytestmark = pytest.mark.slow

LIVE_WINDOWS = 4
"""Window events the page must show while still recording (0.5 s windows, hop 0.25 s: after
1.25 s of audio)."""
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def chromium_executable() -> str | None:
    """``$CHROMIUM`` if set, else Debian's chromium (the binary behind its wrapper script)."""
    candidates = [
        os.environ.get("CHROMIUM"),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_ckpt: Path) -> Iterator[str]:  # noqa: F811
    uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from deepfake_detect.serve.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(tiny_ckpt), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def launch(playwright: Any, *extra: str) -> Any:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium executable (apt-get install chromium, or set $CHROMIUM)")
    try:
        return playwright.chromium.launch(
            executable_path=executable, headless=True, args=[*CHROMIUM_ARGS, *extra]
        )
    except Exception as exc:  # a browser that cannot start here is not the page's failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"chromium ({executable}) does not start: {first}")


@pytest.fixture
def playwright() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        yield p


def test_upload_shows_the_decision_and_timeline(
    server: str,
    playwright: Any,
    tiny_ckpt: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "call.wav", speech(3.3, 22050), 22050, "PCM_16")
    (expected,) = score_files(load_model(tiny_ckpt), [str(path)], DetectOptions())
    browser = launch(playwright)
    try:
        page = browser.new_page()
        page.goto(server)
        page.set_input_files("#file-input", str(path))
        page.wait_for_function("document.querySelector('#status').dataset.state === 'done'")
        assert page.text_content("#decision") == expected.decision
        assert page.get_attribute("#decision", "data-source") == "file"
        assert page.text_content("#p-spoof") == f"{expected.p_spoof:.3f}"
        assert page.get_attribute("#timeline", "data-windows") == str(len(expected.timeline))
        dots = page.eval_on_selector_all(
            "#timeline circle.window",
            "ds => ds.map(d => [+d.dataset.start, +d.dataset.end, +d.dataset.pSpoof])",
        )
        want = [[w.start, w.end, w.p_spoof] for w in expected.timeline]
        np.testing.assert_allclose(dots, want, atol=1e-3)
        assert page.text_content("#error") == ""
        # bad audio: the service's detail on the page
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"not audio" * 20)
        page.set_input_files("#file-input", str(bad))
        page.wait_for_function("document.querySelector('#status').dataset.state === 'error'")
        assert "415" in page.text_content("#error") and "bad.wav" in page.text_content("#error")
    finally:
        browser.close()


def test_recording_streams_live_decisions(
    server: str,
    playwright: Any,
    tmp_path: Path,
) -> None:
    wav = write(tmp_path / "mic.wav", speech(4.0, RATE), RATE, "PCM_16")
    browser = launch(playwright, f"--use-file-for-fake-audio-capture={wav}")
    try:
        context = browser.new_context(permissions=["microphone"])
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda m: messages.append(m.text))
        page.goto(server)
        page.click("#record")
        try:
            page.wait_for_function(
                "n => document.querySelector('#status').dataset.state === 'recording' && "
                "+document.querySelector('#timeline').dataset.windows >= n",
                arg=LIVE_WINDOWS,
                timeout=30_000,
            )
        except Exception:
            status = page.text_content("#status")
            error = page.text_content("#error")
            pytest.fail(f"no live windows: status {status!r}, error {error!r}, console {messages}")
        assert page.get_attribute("#decision", "data-source") == "stream"
        assert page.text_content("#decision") in ("bonafide", "spoof", "uncertain")
        live = int(page.get_attribute("#timeline", "data-windows"))
        page.click("#stop")
        page.wait_for_function("document.querySelector('#status').dataset.state === 'done'")
        assert int(page.get_attribute("#timeline", "data-windows")) >= live >= LIVE_WINDOWS
        assert "stream:" in page.text_content("#status")
        assert page.text_content("#error") == ""
        dots = page.eval_on_selector_all(
            "#timeline circle.window", "ds => ds.map(d => +d.dataset.end)"
        )
        assert dots == sorted(dots) and dots[0] == pytest.approx(0.5, abs=1e-3)
    finally:
        browser.close()
