"""Exported models (ONNX through onnxruntime, TorchScript, int8): parity with the checkpoint on
every model family, the metadata the file carries, ``detect`` / streaming on an exported file,
and the clear error for a truncated, corrupt, tampered or foreign file.

Fast tests use tiny configs of each family with 0.5 s windows; full sizes are ``slow``. Parity
clips: a few ``../shared/data/mini_la`` eval clips, or tone fixtures when the corpus is absent.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SHARED_DATA, compose_config, tone

from deepfake_detect.cli import main
from deepfake_detect.data.audio import load_mono
from deepfake_detect.data.preprocessing import Preprocessing, tile_short, windows
from deepfake_detect.inference.calibration import CALIBRATION_KEY, Calibration
from deepfake_detect.inference.detect import Detector, load_model, score_files
from deepfake_detect.inference.streaming import StreamingScorer
from deepfake_detect.models.checkpoint import CheckpointError
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.models.scorer import SpoofScorer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from deepfake_detect.export import ExportError, export_model, load_exported  # noqa: E402
from deepfake_detect.export import exporter as exporter_module  # noqa: E402
from deepfake_detect.export.metadata import METADATA_KEY  # noqa: E402

RATE = 16000
WINDOW = 8000  # 0.5 s training crop: detect's window
TINY_W2V2 = (
    "{hidden_size:32,num_hidden_layers:2,num_attention_heads:2,intermediate_size:64,"
    "conv_dim:[32,32,32],conv_kernel:[10,4,4],conv_stride:[5,4,4],num_conv_pos_embeddings:16,"
    "num_conv_pos_embedding_groups:2}"
)
FAMILIES: dict[str, tuple[str, ...]] = {
    "w2v2_linear": ("model=w2v2_tiny",),
    "w2v2_layersum": ("model=w2v2_tiny", "model.net.layer=weighted"),
    "w2v2_aasist": (
        "model=w2v2_aasist",
        "model.net.pretrained=false",
        f"+model.net.config={TINY_W2V2}",
        "model.net.projection_dim=16",
        "model.net.encoder_channels=[8,8,8,8,8,8]",
        "model.net.gat_dims=[8,8]",
    ),
    "rawnet2": (
        "model=rawnet2",
        "model.net.block_channels=[4,4,8,8,8,8]",
        "model.net.gru_hidden=16",
        "model.net.gru_layers=1",
        "model.net.embedding_dim=16",
        "model.net.sinc_kernel_size=129",
    ),
    "lcnn": ("model=lcnn", "model.net.width=0.25"),
    "aasist": (
        "model=aasist",
        "model.net.encoder_channels=[8,8,8,8,8,8]",
        "model.net.gat_dims=[8,8]",
    ),
    "aasist_l": ("model=aasist_l",),
}
FAST_ONNX = ("w2v2_linear", "lcnn")
"""ONNX exports in the fast suite, one dynamic and one fixed-length (torch.export takes 5-15 s
per tiny model on 2 idle cores; the graph pooling of the AASIST family exports with a dynamic
length, but takes minutes): the others are ``slow``."""
FAST_TORCHSCRIPT = ("w2v2_linear", "w2v2_layersum", "lcnn", "rawnet2", "aasist_l")
"""TorchScript exports in the fast suite (AASIST and SSL-AASIST trace twice: dynamic, refused
by the probe, then fixed): the others are ``slow``."""
CALIBRATION = Calibration(scale=1.5, offset=-0.2, threshold=0.1, reject_band=0.15)


# -- fixtures -------------------------------------------------------------------------------------
def save_checkpoint(path: Path, *overrides: str, calibration: Calibration | None = None) -> Path:
    """An untrained model saved as training saves it (0.5 s crops)."""
    cfg = compose_config(path.parent / f"run_{path.stem}", *overrides)
    torch.manual_seed(0)
    model = SpoofDetector(**{k: v for k, v in cfg.model.items() if k[0] != "_"})
    model.set_preprocessing(Preprocessing(max_len=WINDOW))
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    if calibration is not None:
        checkpoint[CALIBRATION_KEY] = calibration.to_dict()
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints built on first use (one per family)."""
    root = tmp_path_factory.mktemp("ckpts")

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            cal = CALIBRATION if name == "w2v2_linear" else None
            self[name] = save_checkpoint(root / f"{name}.ckpt", *FAMILIES[name], calibration=cal)
            return self[name]

    return Lazy()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Six mini_la eval clips (bona fide and spoof), else tone fixtures of 0.3-1.6 s."""
    folder = SHARED_DATA / "mini_la" / "LA" / "ASVspoof2019_LA_eval" / "flac"
    if folder.is_dir():
        files = sorted(folder.glob("*.flac"))
        return [str(p) for p in files[:: max(1, len(files) // 6)][:6]]
    root = tmp_path_factory.mktemp("tones")
    out = []
    for i, seconds in enumerate((0.3, 0.7, 1.0, 1.6)):
        path = root / f"tone{i}.wav"
        sf.write(path, tone(seconds, RATE, seed=i, bonafide=i % 2 == 0), RATE)
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def exports(ckpts: dict[str, Path], clips: list[str], tmp_path_factory: pytest.TempPathFactory):
    """Exports built on first use, keyed by (family, format, int8)."""
    root = tmp_path_factory.mktemp("exports")

    class Lazy(dict):
        def __missing__(self, key: tuple[str, str, str | None]):
            name, fmt, int8 = key
            out = root / f"{name}.{int8 or 'fp32'}.{'onnx' if fmt == 'onnx' else 'pt'}"
            calibration = str(Path(clips[0]).parent) if int8 == "static" else None
            self[key] = export_model(
                ckpts[name], out, fmt, int8=int8, calibration=calibration, parity_clips=clips
            )
            return self[key]

    return Lazy()


def windows_of(paths: list[str]) -> list[torch.Tensor]:
    """The windows detect cuts from the clips (half-overlapping 0.5 s)."""
    return [w for p in paths for w in windows(load_mono(p, RATE), WINDOW)]


def padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([r.numel() for r in rows])
    wave = torch.zeros(len(rows), int(lengths.max()))
    for i, r in enumerate(rows):
        wave[i, : r.numel()] = r
    return wave, lengths


def pytorch_window_scores(scorer: SpoofScorer, rows: list[torch.Tensor], fixed: int | None):
    """What the checkpoint's scorer gives each window; for a fixed-length export, as its runtime
    feeds it: a shorter window tiled up to ``fixed``, a longer one the mean of its
    half-overlapping ``fixed`` windows."""

    def score(batch: list[torch.Tensor]) -> torch.Tensor:
        wave, lengths = padded(batch)
        with torch.inference_mode():
            return scorer.score_outputs(*scorer.outputs(wave, lengths))

    if fixed is None:
        return score(rows)
    out = []
    for r in rows:
        t, n = tile_short(r[None], torch.tensor([r.numel()]), scorer.min_len)
        r = t[0, : int(n[0])]
        if r.numel() <= fixed:
            out.append(score([r.repeat((fixed + r.numel() - 1) // r.numel())[:fixed]])[0])
        else:
            out.append(score(list(windows(r, fixed))).mean())
    return torch.stack(out)


def check_parity(ckpt: Path, path: Path, paths: list[str], bound: float = 1e-4) -> float:
    scorer = SpoofScorer.from_checkpoint(ckpt)
    exported = load_exported(path)
    rows = windows_of(paths)
    wave, lengths = padded(rows)  # one padded batch of mixed lengths
    got = exported.score_windows(wave, lengths)
    want = pytorch_window_scores(scorer, rows, exported.fixed_length)
    diff = float((got - want).abs().max())
    assert got.shape == (len(rows),) and torch.isfinite(got).all()
    assert diff < bound, (path, diff)
    return diff


# -- parity, every family -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [n if n in FAST_TORCHSCRIPT else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES],
)
def test_torchscript_parity_every_family(name: str, exports, ckpts, clips) -> None:
    report = exports[name, "torchscript", None]
    assert report.parity_max_abs_diff < 1e-4
    assert report.metadata["parity"]["max_abs_diff"] == report.parity_max_abs_diff
    assert report.fixed_length in (None, WINDOW)
    check_parity(ckpts[name], report.path, clips)


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_ONNX else pytest.param(n, marks=pytest.mark.slow) for n in FAMILIES],
)
def test_onnx_parity_every_family(name: str, exports, ckpts, clips) -> None:
    report = exports[name, "onnx", None]
    assert report.parity_max_abs_diff < 1e-4 and report.size_bytes == report.path.stat().st_size
    check_parity(ckpts[name], report.path, clips)
    graph = onnx.load(report.path).graph
    time_axis = graph.input[0].type.tensor_type.shape.dim[1]
    if report.fixed_length is None:
        assert time_axis.dim_param  # a named (dynamic) length axis
    else:
        assert time_axis.dim_value == report.fixed_length == WINDOW
        assert report.metadata["axes_reason"]


def test_axes_wav2vec2_dynamic_rnn_fixed(exports) -> None:
    """The Wav2Vec2 graph takes any batch and length; the packed BLSTM of the LCNN cannot be
    traced by torch.export with a dynamic length, so its ONNX file has a fixed one."""
    w2v2 = exports["w2v2_linear", "onnx", None]
    assert w2v2.fixed_length is None and w2v2.metadata["fixed_length"] is None
    lcnn = exports["lcnn", "onnx", None]
    assert lcnn.fixed_length == WINDOW and "RNN" in lcnn.metadata["axes_reason"]
    # a fixed-length model scores any input: longer ones as the mean of its windows
    exported = load_exported(lcnn.path)
    long = 0.1 * torch.randn(1, 3 * WINDOW)
    parts = exported.score_windows(windows(long[0], WINDOW))
    assert float(exported.score_windows(long)) == pytest.approx(float(parts.mean()), abs=1e-6)


# -- metadata -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_metadata_round_trip(fmt: str, exports, ckpts) -> None:
    report = exports["w2v2_linear", fmt, None]
    meta = load_exported(report.path).metadata
    assert meta == report.metadata
    ckpt = torch.load(ckpts["w2v2_linear"], weights_only=True)
    assert meta["preprocessing"] == ckpt["hyper_parameters"]["preprocessing"]
    assert meta["calibration"] == CALIBRATION.to_dict()
    assert meta["threshold"] == CALIBRATION.threshold
    assert meta["reject_band"] == CALIBRATION.reject_band
    assert meta["source_sha256"] == hashlib.sha256(ckpts["w2v2_linear"].read_bytes()).hexdigest()
    assert meta["sample_rate"] == RATE and meta["window"] == WINDOW and meta["hop"] == WINDOW // 2
    assert meta["format"] == fmt and meta["int8"] is None and meta["format_version"] == 1
    assert meta["objective"] == "WeightedCrossEntropy" and "bona fide" in meta["score_semantics"]
    assert meta["min_len"] == SpoofScorer.from_checkpoint(ckpts["w2v2_linear"]).min_len
    detector = load_model(report.path)
    assert detector.calibration == CALIBRATION and detector.window() == WINDOW
    assert detector.preprocessing == Preprocessing.from_dict(meta["preprocessing"])


# -- detect, stream, the command ------------------------------------------------------------------
def test_detect_on_onnx_gives_the_checkpoints_decisions(exports, ckpts, clips) -> None:
    onnx_detector = load_model(exports["w2v2_linear", "onnx", None].path)
    ckpt_detector = load_model(ckpts["w2v2_linear"])
    a = list(score_files(onnx_detector, clips))
    b = list(score_files(ckpt_detector, clips))
    assert [r.decision for r in a] == [r.decision for r in b]
    assert all(r.scored for r in a)
    for x, y in zip(a, b, strict=True):
        assert x.score == pytest.approx(y.score, abs=1e-4)
        assert x.p_spoof == pytest.approx(y.p_spoof, abs=1e-4)
        assert [w.start for w in x.timeline] == [w.start for w in y.timeline]


def test_detect_command_on_onnx_and_torchscript(exports, ckpts, clips, capsys) -> None:
    rows = {}
    for key, model in (
        ("ckpt", ckpts["w2v2_linear"]),
        ("onnx", exports["w2v2_linear", "onnx", None].path),
        ("torchscript", exports["w2v2_linear", "torchscript", None].path),
    ):
        assert main(["detect", str(model), *clips[:3], "--no-progress"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        rows[key] = [line.split(",") for line in out[1:]]
    for key in ("onnx", "torchscript"):
        assert [r[4] for r in rows[key]] == [r[4] for r in rows["ckpt"]]  # decisions
        for r, c in zip(rows[key], rows["ckpt"], strict=True):
            assert float(r[2]) == pytest.approx(float(c[2]), abs=1e-4)


@pytest.mark.parametrize("name", ["w2v2_linear", "lcnn"])
def test_stream_on_onnx_equals_stream_on_checkpoint(name: str, exports, ckpts, clips) -> None:
    audio = np.concatenate([load_mono(p, RATE).numpy() for p in clips])
    chunks = [audio[i : i + 1234] for i in range(0, audio.size, 1234)]
    events = {}
    for key, model in (("ckpt", ckpts[name]), ("onnx", exports[name, "onnx", None].path)):
        scorer = StreamingScorer(load_model(model), RATE)
        events[key] = list(scorer.run(chunks))
    assert len(events["onnx"]) == len(events["ckpt"]) > 2
    for a, b in zip(events["onnx"], events["ckpt"], strict=True):
        assert (a.start, a.end) == (b.start, b.end)
        # full windows: the fixed-length LCNN scores them as the checkpoint does
        assert a.score == pytest.approx(b.score, abs=1e-4)
        assert a.window_decision == b.window_decision


def test_serve_runs_an_onnx_file(exports, ckpts, clips) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from deepfake_detect.serve.app import create_app

    answers = {}
    for key, model in (
        ("ckpt", ckpts["w2v2_linear"]),
        ("onnx", exports["w2v2_linear", "onnx", None].path),
    ):
        client = TestClient(create_app(model))
        health = client.get("/health").json()
        assert health["threshold"] == CALIBRATION.threshold
        assert health["reject_band"] == CALIBRATION.reject_band
        with open(clips[1], "rb") as f:
            reply = client.post("/detect", files={"file": ("clip.flac", f, "audio/flac")})
        assert reply.status_code == 200
        answers[key] = reply.json()
    assert answers["onnx"]["decision"] == answers["ckpt"]["decision"]
    assert answers["onnx"]["score"] == pytest.approx(answers["ckpt"]["score"], abs=1e-4)


# -- int8 -----------------------------------------------------------------------------------------
def fp32_spread(ckpt: Path, clips: list[str]) -> float:
    scorer = SpoofScorer.from_checkpoint(ckpt)
    return float(pytorch_window_scores(scorer, windows_of(clips), None).std())


def test_dynamic_int8_loads_scores_and_drifts_little(exports, ckpts, clips) -> None:
    report = exports["w2v2_linear", "onnx", "dynamic"]
    assert report.metadata["int8"] == "dynamic" and report.metadata["parity"]["bound"] is None
    ops = {node.op_type for node in onnx.load(report.path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops
    # drift: a fraction of the spread of the fp32 scores over the clips' windows
    drift = check_parity(ckpts["w2v2_linear"], report.path, clips, bound=1.0)
    assert drift == pytest.approx(report.parity_max_abs_diff, rel=0.5, abs=1e-3)
    assert 0 < drift < 0.5 * fp32_spread(ckpts["w2v2_linear"], clips)
    decisions = [r.decision for r in score_files(load_model(report.path), clips)]
    assert len(decisions) == len(clips) and None not in decisions


def test_static_int8_with_a_calibration_folder(exports, ckpts, clips) -> None:
    """Convolutions too (Conv in QDQ form). The untrained LCNN scores nearly every window
    alike (a spread of a few thousandths), so its drift is bounded against the scores' size."""
    report = exports["lcnn", "onnx", "static"]
    assert report.metadata["int8"] == "static"
    ops = [node.op_type for node in onnx.load(report.path).graph.node]
    assert ops.count("QuantizeLinear") > 3 and "DequantizeLinear" in ops
    drift = check_parity(ckpts["lcnn"], report.path, clips, bound=1.0)
    scorer = SpoofScorer.from_checkpoint(ckpts["lcnn"])
    fp32 = pytorch_window_scores(scorer, windows_of(clips), WINDOW)
    assert 0 < drift < 0.25 * float(fp32.abs().max())


def test_int8_refusals(ckpts, tmp_path) -> None:
    with pytest.raises(ExportError, match="--format onnx"):
        export_model(ckpts["lcnn"], tmp_path / "x.pt", "torchscript", int8="dynamic")
    with pytest.raises(ExportError, match="--calibration"):
        export_model(ckpts["lcnn"], tmp_path / "x.onnx", "onnx", int8="static")
    assert not list(tmp_path.iterdir())


def test_a_parity_failure_writes_nothing(ckpts, clips, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(exporter_module, "PARITY_BOUND", 0.0)
    out = tmp_path / "lcnn.pt"
    with pytest.raises(ExportError, match=r"parity check failed: .* bound 0\b.*nothing written"):
        export_model(ckpts["lcnn"], out, "torchscript", parity_clips=clips)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_command_report(ckpts, clips, tmp_path, capsys) -> None:
    out = tmp_path / "model.pt"
    args = ["export", str(ckpts["lcnn"]), "--format", "torchscript", "--output", str(out)]
    assert main([*args, "--parity-clips", *clips]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "parity vs PyTorch: max abs diff" in text
    assert "axes: dynamic batch" in text and out.is_file()
    assert load_exported(out).metadata["parity"]["clips"] == len(clips)


def test_window_seconds_forces_a_fixed_length(ckpts, clips, tmp_path, capsys) -> None:
    out = tmp_path / "short.pt"
    args = ["export", str(ckpts["lcnn"]), "--format", "torchscript", "-o", str(out)]
    assert main([*args, "--window-seconds", "0.25", "--parity-clips", *clips]) == 0
    assert "fixed length 4000 samples (0.25 s): asked (--window-seconds)" in capsys.readouterr().out
    exported = load_exported(out)
    assert exported.fixed_length == 4000 and exported.metadata["window"] == WINDOW
    # detect's 0.5 s windows are scored as the mean of the 0.25 s windows inside them
    check_parity(ckpts["lcnn"], out, clips)
    with pytest.raises(ExportError, match="shorter than the model's minimum input"):
        export_model(ckpts["lcnn"], tmp_path / "tiny.pt", "torchscript", window_seconds=0.01)


# -- safety ---------------------------------------------------------------------------------------
def one_error_line(capsys, path: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(path) in err, err
    return err


def test_tampered_truncated_foreign_onnx(exports, tmp_path, clips, capsys) -> None:
    source = exports["w2v2_linear", "onnx", None].path
    model = onnx.load(source)
    # a weight changed, metadata kept
    init = next(i for i in model.graph.initializer if onnx.numpy_helper.to_array(i).size > 8)
    array = onnx.numpy_helper.to_array(init).copy()
    array.flat[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
    weights = tmp_path / "weights.onnx"
    onnx.save(model, weights)
    # the threshold changed in the metadata
    meta_model = onnx.load(source)
    entry = next(p for p in meta_model.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(entry.value)
    meta["calibration"]["threshold"] = -5.0
    entry.value = json.dumps(meta)
    settings = tmp_path / "settings.onnx"
    onnx.save(meta_model, settings)
    # truncated, foreign (no metadata), garbage with an .onnx suffix
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    foreign_model = onnx.load(source)
    del foreign_model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(foreign_model, foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 100)
    cases = {
        weights: "model content does not match",
        settings: "metadata does not match",
        truncated: "truncated or corrupt",
        foreign: "not exported by deepfake-detect",
        garbage: "truncated or corrupt",
    }
    for path, message in cases.items():
        with pytest.raises(ExportError, match=message) as info:
            load_exported(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert main(["detect", str(path), clips[0]]) == 2
        assert message in one_error_line(capsys, path)


def test_tampered_truncated_foreign_torchscript(exports, tmp_path, clips, capsys) -> None:
    source = exports["lcnn", "torchscript", None].path
    data = source.read_bytes()
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/data/0"):
                body = bytes([body[0] ^ 0x40]) + body[1:]
            dst.writestr(info, body)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(3, 1), torch.zeros(1, 3)), foreign)
    cases = {
        tampered: "model content does not match",
        truncated: "truncated or corrupt",
        foreign: "not exported by deepfake-detect",
    }
    for path, message in cases.items():
        with pytest.raises(ExportError, match=message):
            load_exported(path)
        assert main(["detect", str(path), clips[0]]) == 2
        assert message in one_error_line(capsys, path)


def test_bad_checkpoints_give_one_line(ckpts, tmp_path, clips, capsys) -> None:
    data = ckpts["lcnn"].read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.ckpt"  # a block of the zip's records zeroed
    middle = len(data) // 2
    corrupt.write_bytes(data[:middle] + bytes(4096) + data[middle + 4096 :])
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "x": Calibration}, pickled)  # a class: not weights-only
    for path, message in (
        (truncated, "truncated or corrupt"),
        (corrupt, "truncated or corrupt"),
        (pickled, "never loaded"),
    ):
        with pytest.raises(CheckpointError, match=message):
            load_model(path)
        for command in (["detect", str(path), clips[0]], ["export", str(path)]):
            assert main(command) == 2
            assert message in one_error_line(capsys, path)


def test_missing_onnxruntime_is_one_line(exports, monkeypatch) -> None:
    path = exports["w2v2_linear", "onnx", None].path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r'pip install -e "\.\[export\]"'):
        load_exported(path)


def test_export_without_onnxruntime_is_one_line(ckpts, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "x.onnx"
    assert main(["export", str(ckpts["lcnn"]), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    hint = 'install the export extra: pip install -e ".[export]"'
    assert err == f"error: running ONNX models needs onnxruntime: {hint}"
    assert not out.exists()


def test_missing_exported_file(tmp_path) -> None:
    with pytest.raises(ExportError, match="not found"):
        load_exported(tmp_path / "nope.onnx")


# -- full sizes -----------------------------------------------------------------------------------
FULL = {
    "w2v2_base": ("model=w2v2_linear", "model.net.pretrained=false"),
    "aasist": ("model=aasist",),
    "rawnet2": ("model=rawnet2",),
}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", list(FULL))
def test_full_size_parity(name: str, fmt: str, clips, tmp_path) -> None:
    ckpt = save_checkpoint(tmp_path / f"{name}.ckpt", *FULL[name])
    report = export_model(ckpt, tmp_path / f"{name}.{fmt}", fmt, parity_clips=clips[:3])
    assert report.parity_max_abs_diff < 1e-4
    check_parity(ckpt, report.path, clips[:3])
    assert Detector  # the Detector runs it too
    (result,) = score_files(load_model(report.path), clips[:1])
    assert result.scored


def test_calibrate_refuses_an_exported_file(exports, clips, capsys) -> None:
    """Calibration is written into a checkpoint; an exported file carries a copy of it, so
    calibrate names the file as exported before scoring anything."""
    source = exports["w2v2_linear", "onnx", None].path
    assert main(["calibrate", str(source), "--data", str(Path(clips[0]).parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an exported model" in err and str(source) in err


def test_int8_keeps_a_spectral_front_end_in_float() -> None:
    """The MatMul / Gemm nodes no Conv feeds (a filter bank on the power spectrum) stay float:
    per-tensor int8 of their input rounds the quiet bins to zero; every node after a Conv is
    quantized. A graph without Conv keeps nothing float."""
    from onnx import TensorProto, helper

    from deepfake_detect.export.quantize import front_end_nodes

    def graph(nodes: list) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))

    spectral = graph(
        [
            helper.make_node("MatMul", ["x", "fb"], ["mel"], name="filterbank"),
            helper.make_node("Log", ["mel"], ["logmel"], name="log"),
            helper.make_node("MatMul", ["logmel", "dct"], ["cep"], name="dct"),
            helper.make_node("Conv", ["cep", "k"], ["c1"], name="conv"),
            helper.make_node("MatMul", ["c1", "w"], ["h"], name="after_conv"),
            helper.make_node("Gemm", ["h", "w2"], ["y"], name="classifier"),
        ]
    )
    assert front_end_nodes(spectral) == ["filterbank", "dct"]
    no_conv = graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")])
    assert front_end_nodes(no_conv) == []
