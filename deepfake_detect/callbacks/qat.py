"""Quantization-aware training: fine-tune with the int8 rounding of deployment simulated, so the
weights learn to survive ``deepfake-detect export --int8 dynamic``.

The simulation follows onnxruntime's dynamic quantization (``quantize_dynamic``), which the
export path uses:

- weights: int8, symmetric (range [-127, 127], zero point 0, scale = max|w| / 127; with
  ``reduce_range`` [-64, 64], scale = max|w| / 64), per output channel or per tensor
  (``per_channel``; ``quantize_dynamic`` defaults to per tensor, and its ``ConvInteger`` is
  per tensor whatever ``per_channel`` says);
- activations entering each quantized layer: uint8, per tensor, asymmetric, the range computed
  from the tensor itself at run time (``DynamicQuantizeLinear``: [min(0, x.min()),
  max(0, x.max())] over 255 steps).

Rounding uses ``torch.fake_quantize_per_channel_affine`` / ``..._per_tensor_affine``, whose
gradient is the straight-through estimator (1 inside the range, 0 where clipped); the
deprecated ``torch.ao.quantization`` workflow is not used. The fake quantization lives in
parametrizations and forward pre-hooks that never reach a state dict: every checkpoint the
run writes holds plain fp32 weights under their usual names (it loads with
``SpoofScorer.from_checkpoint``), and the hooks are removed when fitting ends.

``init_from`` starts the fine-tuning from a trained checkpoint's weights (weights only: no
optimizer state, epoch or callbacks), e.g. ``python train.py experiment=qat
callbacks.qat.init_from=<run>/checkpoints/epoch_005.ckpt``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deepfake_detect.models.checkpoint import CheckpointError, read_checkpoint
from deepfake_detect.models.scorer import SCORER_PREFIX

log = logging.getLogger(__name__)

__all__ = [
    "QuantizationAware",
    "attach_fake_quant",
    "detach_fake_quant",
    "fake_quant_activation",
    "fake_quant_weight",
    "load_init_weights",
]

LAYER_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
}
"""The layers onnxruntime's dynamic quantization turns into integer ops (MatMul, Conv)."""

_WEIGHT_MAX = 127  # symmetric int8: [-127, 127]
_WEIGHT_MAX_REDUCED = 64  # reduce_range: [-64, 64] (7 bits; u8s8 kernels without VNNI need it)
_ACT_STEPS = 255  # uint8


def _safe_scale(scale: Tensor) -> Tensor:
    """All-zero channels (e.g. pruned ones) get scale 1, as onnxruntime does."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def fake_quant_weight(
    weight: Tensor, per_channel: bool = True, reduce_range: bool = False
) -> Tensor:
    """``weight`` rounded to symmetric int8 and back (per output channel: axis 0), with
    straight-through gradients."""
    top = _WEIGHT_MAX_REDUCED if reduce_range else _WEIGHT_MAX
    if per_channel:
        absmax = weight.detach().abs().flatten(1).amax(dim=1)
        scale = _safe_scale(absmax / top).float()
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -top, top)
    scale = _safe_scale(weight.detach().abs().amax() / top).float().reshape(1)
    zero = torch.zeros(1, dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_tensor_affine(weight, scale, zero, -top, top)


def fake_quant_activation(x: Tensor) -> Tensor:
    """``x`` rounded as ``DynamicQuantizeLinear`` does (uint8, per tensor, range from ``x``
    itself, zero included), with straight-through gradients."""
    detached = x.detach()
    low = detached.amin().clamp(max=0).float()
    high = detached.amax().clamp(min=0).float()
    scale = _safe_scale((high - low) / _ACT_STEPS)
    zero = torch.round(-low / scale).clamp(0, _ACT_STEPS).to(torch.int32)
    out = torch.fake_quantize_per_tensor_affine(
        x.float(), scale.reshape(1), zero.reshape(1), 0, _ACT_STEPS
    )
    return out.to(x.dtype)


class _FakeQuantWeight(nn.Module):
    """A parametrization: the layer sees its weight as int8 would store it."""

    def __init__(self, per_channel: bool, reduce_range: bool) -> None:
        super().__init__()
        self.per_channel, self.reduce_range = per_channel, reduce_range

    def forward(self, weight: Tensor) -> Tensor:
        return fake_quant_weight(weight, self.per_channel, self.reduce_range)


_ORIGINAL = "parametrizations.weight.original"


def _plain_keys(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """State-dict post-hook: the parametrized weight is saved as the plain ``weight``."""
    key = prefix + _ORIGINAL
    if key in state:
        state[prefix + "weight"] = state.pop(key)


def _parametrized_keys(module: nn.Module, state: dict[str, Any], prefix: str, *_args: Any) -> None:
    """Load-state-dict pre-hook: a plain ``weight`` loads into the parametrization."""
    if prefix + "weight" in state and parametrize.is_parametrized(module, "weight"):
        state[prefix + _ORIGINAL] = state.pop(prefix + "weight")


def _activation_hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (fake_quant_activation(args[0]), *args[1:])


def _selected(net: nn.Module, layers: Sequence[str], exclude: Sequence[str]) -> list[str]:
    unknown = sorted(set(layers) - set(LAYER_TYPES))
    if unknown:
        raise ValueError(
            f"callbacks.qat.layers: unknown layer type(s) {unknown}; known: {sorted(LAYER_TYPES)}"
        )
    types = tuple(LAYER_TYPES[name] for name in layers)
    return [
        name
        for name, module in net.named_modules()
        if isinstance(module, types) and not any(name.startswith(e) for e in exclude)
    ]


def attach_fake_quant(
    net: nn.Module,
    layers: Sequence[str] = ("Linear", "Conv1d", "Conv2d"),
    per_channel: bool = True,
    activations: bool = True,
    exclude: Sequence[str] = (),
    reduce_range: bool = False,
) -> list[Any]:
    """Simulate int8 in ``net``'s layers of the given types (names starting with an entry of
    ``exclude`` are left alone). Returns the handles :func:`detach_fake_quant` removes."""
    handles: list[Any] = []
    for name in _selected(net, layers, exclude):
        module = net.get_submodule(name)
        parametrize.register_parametrization(
            module, "weight", _FakeQuantWeight(per_channel, reduce_range)
        )
        handles.append((module, "weight"))
        handles.append(module.register_state_dict_post_hook(_plain_keys))
        handles.append(module.register_load_state_dict_pre_hook(_parametrized_keys))
        if activations:
            handles.append(module.register_forward_pre_hook(_activation_hook))
    return handles


def detach_fake_quant(handles: list[Any]) -> None:
    """Undo :func:`attach_fake_quant`: the layers hold their plain fp32 weights again."""
    for handle in reversed(handles):
        if isinstance(handle, tuple):
            module, name = handle
            if parametrize.is_parametrized(module, name):
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)
        else:
            handle.remove()
    handles.clear()


def load_init_weights(pl_module: L.LightningModule, path: str | Path) -> None:
    """Load a trained checkpoint's scorer weights into ``pl_module`` (nothing else of the
    run): the start of a fine-tuning. A checkpoint of another architecture is one
    :class:`CheckpointError` naming it."""
    checkpoint = read_checkpoint(path, "init_from checkpoint")
    state = {
        key[len(SCORER_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(SCORER_PREFIX)
    }
    try:
        pl_module.scorer.load_state_dict(state)
    except RuntimeError as exc:
        first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()[:200]
        raise CheckpointError(
            f"{path}: its weights do not fit the configured model (model.*, e.g. the experiment "
            f"it was trained with must be the one fine-tuned) ({first})"
        ) from None
    log.info("weights initialised from %s", path)


class QuantizationAware(Callback):
    """Fine-tune with fake int8 quantization (see the module docstring).

    ``init_from``: a trained checkpoint whose weights the run starts from (None: the
    configured initialisation). ``layers``: the layer types to quantize (those
    ``quantize_dynamic`` quantizes); ``per_channel``: weights per output channel, as the export
    quantizes them; ``activations``: also simulate the run-time uint8 inputs; ``exclude``: net
    sub-module names (prefixes) kept in float; ``reduce_range``: 7-bit weights, as
    ``quantize_dynamic(reduce_range=True)``. The LSTM (quantized weight-only by onnxruntime)
    is not simulated.
    """

    def __init__(
        self,
        init_from: str | None = None,
        layers: Sequence[str] = ("Linear", "Conv1d", "Conv2d"),
        per_channel: bool = True,
        activations: bool = True,
        exclude: Sequence[str] = (),
        reduce_range: bool = False,
    ) -> None:
        self.init_from = init_from
        self.reduce_range = reduce_range
        self.layers, self.exclude = tuple(layers), tuple(exclude)
        self.per_channel, self.activations = per_channel, activations
        self._handles: list[Any] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.init_from and trainer.ckpt_path is None:
            load_init_weights(pl_module, self.init_from)
        net = pl_module.scorer.net
        self._handles = attach_fake_quant(
            net, self.layers, self.per_channel, self.activations, self.exclude, self.reduce_range
        )
        quantized = sum(1 for h in self._handles if isinstance(h, tuple))
        log.info(
            "quantization-aware training: %d layers with fake int8 (%s weights%s)",
            quantized,
            "per-channel" if self.per_channel else "per-tensor",
            ", dynamic uint8 inputs" if self.activations else "",
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            detach_fake_quant(self._handles)
