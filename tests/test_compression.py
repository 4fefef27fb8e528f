"""Compression: quantization-aware training (fake int8 that matches onnxruntime's dynamic
quantization), magnitude pruning, and their checkpoints (plain weights that load and score)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_SIZES, compose_config, tiny_la_overrides, write_la_corpus
from torch import nn

from deepfake_detect.callbacks.pruning import LayerPruning, step_amount, weight_sparsity
from deepfake_detect.callbacks.qat import (
    attach_fake_quant,
    detach_fake_quant,
    fake_quant_activation,
    fake_quant_weight,
)
from deepfake_detect.models.checkpoint import CheckpointError, read_checkpoint
from deepfake_detect.models.scorer import SpoofScorer
from deepfake_detect.pipeline import train

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import quantize_dynamic  # noqa: E402

# the tiny LCNN (no LSTM) on the tiny corpus: a few seconds an epoch
LCNN = ["model=lcnn", "model.net.lstm=false", "model.optimizer.lr=3e-3"]


# -- fake quantization against onnxruntime's real int8 ---------------------------------------------
def _quantized_session(
    tmp_path: Path, layer: nn.Module, per_channel: bool, reduce_range: bool
) -> ort.InferenceSession:
    """``layer`` as a one-node ONNX graph (MatMul + Add, or Conv), through quantize_dynamic."""
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    if isinstance(layer, nn.Linear):
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["y"]),
        ]
        inits = [numpy_helper.from_array(weight.T.copy(), "w"), numpy_helper.from_array(bias, "b")]
        x_shape = ["n", weight.shape[1]]
    else:
        pads = list(layer.padding) * 2
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=pads)]
        inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
        x_shape = ["n", weight.shape[1], "h", "w_"]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    fp32, int8 = tmp_path / "layer.onnx", tmp_path / "layer_int8.onnx"
    onnx.save(model, fp32)
    quantize_dynamic(fp32, int8, per_channel=per_channel, reduce_range=reduce_range)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("kind", "per_channel"),
    [("linear", False), ("linear", True), ("conv", False)],
)
def test_fake_quant_reproduces_onnxruntime_dynamic_int8(
    tmp_path: Path, kind: str, per_channel: bool
) -> None:
    """The fake-quantized layer computes what the int8 graph computes, to float rounding,
    while the fp32 layer is off by the quantization error. reduce_range (7-bit weights) is
    what this machine's AVX2 u8s8 kernels compute exactly; 8-bit weights saturate there."""
    torch.manual_seed(0)
    if kind == "linear":
        layer: nn.Module = nn.Linear(64, 16)
        x = torch.randn(32, 64) + 0.5
        apply = lambda inp, w: nn.functional.linear(inp, w, layer.bias)  # noqa: E731
    else:
        layer = nn.Conv2d(3, 8, 3, padding=1)
        x = torch.randn(4, 3, 10, 10) + 0.5
        apply = lambda inp, w: nn.functional.conv2d(inp, w, layer.bias, padding=1)  # noqa: E731
    session = _quantized_session(tmp_path, layer, per_channel, reduce_range=True)
    real = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    with torch.no_grad():
        fp32 = layer(x)
        fake = apply(fake_quant_activation(x), fake_quant_weight(layer.weight, per_channel, True))
    fp32_error = (fp32 - real).abs().max().item()
    fake_error = (fake - real).abs().max().item()
    assert fp32_error > 1e-3  # int8 really changes the output...
    assert fake_error < 1e-5  # ...and the fake quantization changes it the same way
    # through the hooks, as in training
    handles = attach_fake_quant(layer, per_channel=per_channel, reduce_range=True)
    with torch.no_grad():
        hooked = layer(x)
    detach_fake_quant(handles)
    assert (hooked - real).abs().max().item() < 1e-5
    with torch.no_grad():
        assert torch.equal(layer(x), fp32)  # detached: the float layer again


def test_fake_quant_weight_is_int8_on_a_grid() -> None:
    torch.manual_seed(1)
    weight = torch.randn(6, 5)
    weight[2] = 0.0  # an all-zero (pruned) channel stays zero, no NaN
    for per_channel, top in ((True, 127), (False, 127)):
        q = fake_quant_weight(weight, per_channel)
        absmax = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().amax()
        scale = torch.where(absmax > 0, absmax / top, torch.ones_like(absmax))
        steps = q / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert steps.abs().max().item() <= top + 1e-4
        assert torch.all(q[2] == 0) and torch.isfinite(q).all()
        assert (q - weight).abs().max().item() <= scale.max().item() / 2 + 1e-7
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0])
    xq = fake_quant_activation(x)
    assert xq[1].item() == 0.0  # zero is exact (DynamicQuantizeLinear includes it)
    assert len(torch.unique(fake_quant_activation(torch.linspace(-1, 2, 10_000)))) <= 256


def test_gradients_pass_straight_through() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(24, 3))
    handles = attach_fake_quant(net)
    x = torch.randn(5, 2, 8, requires_grad=True)
    net(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # the straight-through estimator: d fake_quant(w) / dw = 1 (inside the range)
    w = torch.randn(4, 3, requires_grad=True)
    fake_quant_weight(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    # the state dict holds plain names while quantizing, and loads back into the hooked net
    state = net.state_dict()
    assert sorted(state) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    net.load_state_dict(state)
    detach_fake_quant(handles)
    assert not any("parametrizations" in k for k in net.state_dict())


# -- end to end through the configs ----------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_la_corpus(tmp_path_factory.mktemp("compress_la"), TINY_SIZES)


@pytest.fixture(scope="module")
def trained(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny LCNN trained for 3 epochs: its last checkpoint (the start of the fine-tunings)."""
    out = tmp_path_factory.mktemp("base")
    cfg = compose_config(
        out / "run", *tiny_la_overrides(corpus), *LCNN, "trainer.max_epochs=3", "test=false"
    )
    train(cfg)
    yield out / "run" / "checkpoints" / "last.ckpt"


def _eval_scores(scorer: SpoofScorer, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    waves = torch.from_numpy(rng.normal(0, 0.1, (4, 8000)).astype(np.float32))
    with torch.inference_mode():
        return scorer(waves)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def qat_run(
    corpus: Path, trained: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    """One epoch of QAT from ``trained`` (Linear and Conv simulated): metrics, last checkpoint."""
    out = tmp_path_factory.mktemp("qat")
    cfg = compose_config(
        out / "run",
        *tiny_la_overrides(corpus),
        *LCNN,
        "callbacks=qat",
        f"callbacks.qat.init_from={trained}",
        "callbacks.qat.layers=[Linear,Conv2d]",
        "callbacks.qat.reduce_range=true",
        "trainer.max_epochs=1",
    )
    return train(cfg), out / "run" / "checkpoints" / "last.ckpt"


def test_qat_fine_tunes_a_checkpoint_and_saves_plain_weights(
    trained: Path, qat_run: tuple[dict, Path]
) -> None:
    metrics, out = qat_run
    assert np.isfinite(metrics["test/eer"])
    before, after = _weights(trained), _weights(out)
    assert sorted(before) == sorted(after)  # plain names: no parametrizations, no extra state
    assert not any("parametrizations" in k or "original" in k for k in after)
    # started from the trained weights (a small fine-tuning step away), and trained on
    conv = "scorer.net.cnn.0.weight"
    moved = (after[conv] - before[conv]).abs().max().item()
    assert 0 < moved < 0.5 * before[conv].abs().max().item()
    scorer = SpoofScorer.from_checkpoint(out)
    scores = _eval_scores(scorer)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert not any(
        isinstance(m, nn.Module) and m.__class__.__name__.startswith("Parametrized")
        for m in scorer.modules()
    )


def test_qat_experiment_needs_a_checkpoint_and_refuses_another_architecture(
    corpus: Path, trained: Path, tmp_path: Path
) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config(tmp_path / "e", "experiment=qat")
    assert OmegaConf.is_missing(cfg.callbacks.qat, "init_from")
    assert cfg.model.net._target_.endswith("LCNN") and cfg.trainer.max_epochs == 3
    wrong = compose_config(
        tmp_path / "w",
        *tiny_la_overrides(corpus),
        *LCNN,
        "model.net.width=0.55",
        "callbacks=qat",
        f"callbacks.qat.init_from={trained}",
        "trainer.max_epochs=1",
    )
    with pytest.raises(CheckpointError, match=str(trained)):
        train(wrong)


def test_pruning_reaches_its_sparsity_and_saves_plain_weights(
    corpus: Path, trained: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        tmp_path / "prune",
        *tiny_la_overrides(corpus),
        *LCNN,
        "callbacks=pruning",
        "callbacks.pruning.sparsity=0.5",
        f"callbacks.pruning.init_from={trained}",
        "trainer.max_epochs=2",
    )
    metrics = train(cfg)
    assert np.isfinite(metrics["test/eer"])
    for name in ("last.ckpt",):
        path = tmp_path / "prune" / "checkpoints" / name
        state = _weights(path)
        assert sorted(state) == sorted(_weights(trained))
        assert not any(k.endswith(("_orig", "_mask")) for k in state)
        scorer = SpoofScorer.from_checkpoint(path)
        assert weight_sparsity(scorer.net) == pytest.approx(0.5, abs=0.01)
        scores = _eval_scores(scorer)
        assert scores.shape == (4,) and torch.isfinite(scores).all()
    # the kept weights were fine-tuned after pruning (epoch 2): not the trained ones masked
    kept = state["scorer.net.cnn.0.weight"] != 0
    start = _weights(trained)["scorer.net.cnn.0.weight"]
    assert not torch.equal(state["scorer.net.cnn.0.weight"][kept], start[kept])


def test_structured_pruning_zeroes_whole_output_channels() -> None:
    """The callback's own set-up, pruning step and permanence, on a stand-in module."""
    torch.manual_seed(3)
    callback = LayerPruning(sparsity=0.5, pruning_fn="ln_structured", pruning_dim=0, pruning_norm=1)
    module = nn.Module()
    module.scorer = nn.Module()
    module.scorer.net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4)
    )
    callback.setup(SimpleNamespace(ckpt_path=None), module, "fit")
    assert [m for m, _ in callback._parameters_to_prune] == [
        module.scorer.net[0],
        module.scorer.net[3],
    ]  # Linear and Conv only: the batch norm is left alone
    callback.apply_pruning(callback.amount(0))
    callback.make_pruning_permanent(module)
    conv = module.scorer.net[0].weight
    assert int((conv.flatten(1) == 0).all(dim=1).sum()) == 4  # 4 of 8 output channels
    assert int((module.scorer.net[3].weight == 0).all(dim=1).sum()) == 2
    assert weight_sparsity(module.scorer.net) == pytest.approx(0.5)
    assert callback.amount(1) == 0.0  # one pruning step, then fine-tuning


def test_pruning_schedule_reaches_the_target() -> None:
    for target, steps in ((0.5, 1), (0.5, 3), (0.8, 4)):
        step = step_amount(target, steps)
        assert 1 - (1 - step) ** steps == pytest.approx(target)
    with pytest.raises(ValueError, match="callbacks.pruning.sparsity"):
        step_amount(1.0, 1)
    with pytest.raises(ValueError, match="callbacks.pruning.layers"):
        LayerPruning(layers=["LSTM"])


def test_gpu_benchmark_skips_cleanly_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the benchmark")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_inference.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--batch" in done.stdout
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_inference.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert "no CUDA device" in done.stdout + done.stderr


@pytest.mark.slow
def test_qat_checkpoint_exports_to_int8_close_to_its_fp32(
    corpus: Path, qat_run: tuple[dict, Path], tmp_path: Path
) -> None:
    """The QAT checkpoint through ``export --int8 dynamic`` scores the tiny eval clips close
    to its fp32 checkpoint: correlation > 0.99, the same decision on >= 90 % of the clips."""
    export = pytest.importorskip("deepfake_detect.export")
    import soundfile as sf

    _, ckpt = qat_run
    clips = sorted((corpus / "LA" / "ASVspoof2019_LA_eval" / "flac").glob("*.flac"))
    out = tmp_path / "qat_int8.onnx"
    export.export_model(ckpt, out, format="onnx", int8="dynamic", parity_clips=clips[:4])
    fp32, int8 = SpoofScorer.from_checkpoint(ckpt), export.load_exported(out)
    a, b = [], []
    for clip in clips:
        wave = torch.from_numpy(sf.read(clip, dtype="float32")[0])[None]
        lengths = torch.tensor([wave.shape[1]])
        with torch.inference_mode():
            a.append(float(fp32(wave, lengths)[0]))
            b.append(float(np.asarray(int8(wave, lengths)).reshape(-1)[0]))
    a, b = np.array(a), np.array(b)
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.mean(np.sign(a) == np.sign(b)) >= 0.9
