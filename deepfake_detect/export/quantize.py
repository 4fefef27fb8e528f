"""int8 through onnxruntime's quantization tools (a maintained path that runs on CPU here;
``torch.ao.quantization`` is deprecated and its successor, torchao, targets GPUs first).

- **dynamic**: weights int8 (7-bit range) ahead of time, activations quantized per batch at run
  time (``quantize_dynamic``); no calibration data. :data:`DYNAMIC_OPS` are the ops quantized.
- both keep a spectral front end in float (:func:`front_end_nodes`).
- **static**: weights and activations int8 with ranges measured on real clips
  (``quantize_static``, QDQ format, per-channel weights, MinMax ranges) through a
  :class:`WindowReader` that feeds the graph the windows ``detect`` would score.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfake_detect.export.metadata import ExportError
from deepfake_detect.export.runtime import INSTALL_HINT

DYNAMIC_OPS = ("MatMul", "Gemm")
"""Ops dynamic int8 quantizes. Conv is left in float: onnxruntime's dynamic ConvInteger has no
fast kernel on x86 CPUs and measured slower than float (docs_export.md)."""
STATIC_OPS = ("MatMul", "Gemm", "Conv")
CALIBRATION_WINDOWS = 32
"""Windows read for static calibration (at most)."""


def _quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise ExportError(f"int8 export needs onnxruntime: {INSTALL_HINT}") from None
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    return quantization


class WindowReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over prepared windows: one window per
    call, as ``{"wave": [1, T] float32, "lengths": [1] int64}``."""

    def __init__(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self.batches = list(batches)
        self._it: Iterator[tuple[np.ndarray, np.ndarray]] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._it, None)
        return None if item is None else {"wave": item[0], "lengths": item[1]}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def _prepare(quantization: Any, src: Path, dst: Path) -> Path:
    """Shape inference and graph clean-up before quantizing (onnxruntime's recommendation);
    the original graph when the pre-processing fails."""
    try:
        quantization.shape_inference.quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:  # best effort: quantization works on the plain graph too
        return src


def front_end_nodes(model: Any) -> list[str]:
    """The MatMul / Gemm nodes that no Conv feeds, in a graph that has a Conv: a spectral front
    end's filter bank and DCT applied to the power spectrum (LCNN's LFCC). Quantized per tensor,
    their input's range is set by the loudest bin and the quiet bins round to zero, which wipes
    out the features (measured: the trained LCNN's int8 scores at chance), so they stay float."""
    nodes = list(model.graph.node)
    if not any(node.op_type == "Conv" for node in nodes):
        return []
    downstream: set[str] = set()  # tensors computed from some Conv's output
    changed = True
    while changed:  # graphs are small; a fixed point over the node list is simple and safe
        changed = False
        for node in nodes:
            if node.op_type == "Conv" or any(name in downstream for name in node.input):
                new = set(node.output) - downstream
                if new:
                    downstream |= new
                    changed = True
    return [
        node.name
        for node in nodes
        if node.op_type in ("MatMul", "Gemm") and not set(node.output) & downstream
    ]


def quantize(
    model: Any,
    mode: str,
    windows: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Any:
    """``model`` (an ``onnx.ModelProto``) quantized to int8 (``dynamic`` or ``static``, the
    latter calibrated on ``windows``); returns the new ``ModelProto``."""
    import onnx

    quantization = _quantization()
    with tempfile.TemporaryDirectory(prefix="dfd-int8-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        prepared = _prepare(quantization, src, pre)
        keep_float = front_end_nodes(onnx.load(prepared))
        if mode == "dynamic":
            quantization.quantize_dynamic(
                prepared,
                dst,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=list(DYNAMIC_OPS),
                per_channel=False,
                # 7-bit weights: onnxruntime's u8s8 MatMul saturates its 16-bit intermediate
                # sums with 8-bit weights on x86 CPUs without VNNI (measured on this machine's
                # AVX2: error 0.47 on a layer whose outputs have std 0.6, against 0.02)
                reduce_range=True,
                nodes_to_exclude=keep_float,
            )
        elif mode == "static":
            if not windows:
                raise ExportError("static int8 needs calibration clips (--calibration PATH)")
            quantization.quantize_static(
                prepared,
                dst,
                WindowReader(windows),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=list(STATIC_OPS),
                per_channel=True,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True},
                nodes_to_exclude=keep_float,
            )
        else:
            raise ExportError(f"--int8 must be dynamic or static, got {mode!r}")
        return onnx.load(dst)


def as_numpy_windows(
    waves: Sequence[torch.Tensor], lengths: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (w[None].numpy().astype(np.float32), np.asarray([n], dtype=np.int64))
        for w, n in zip(waves, lengths, strict=True)
    ]
