"""Exporting a trained detector (ONNX, TorchScript, int8 through onnxruntime) and running the
exported file wherever a checkpoint runs (``detect``, ``stream``, ``serve``)::

    from deepfake_detect.export import export_model, load_exported
    report = export_model("best.ckpt", "best.onnx", format="onnx", int8="dynamic")
    scorer = load_exported("best.onnx")       # scorer-like: scorer(wave, lengths) -> [B]

See :mod:`.exporter` (what is exported and checked), :mod:`.runtime` (the host side),
:mod:`.metadata` (what the file carries) and :mod:`.quantize` (int8).
"""

from deepfake_detect.export.metadata import ExportError
from deepfake_detect.export.runtime import ExportedScorer, exported_format, load_exported


def __getattr__(name: str):  # the exporter imports torch.onnx machinery: only when asked
    if name in ("export_model", "ExportReport", "PARITY_BOUND"):
        from deepfake_detect.export import exporter

        return getattr(exporter, name)
    raise AttributeError(name)


__all__ = [
    "ExportError",
    "ExportReport",
    "ExportedScorer",
    "PARITY_BOUND",
    "export_model",
    "exported_format",
    "load_exported",
]
