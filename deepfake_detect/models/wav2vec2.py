"""Wav2Vec2 nets: the encoder controls every head shares (``Wav2Vec2Net``: freezing, layer choice
or a learned weighted sum of layers, layer-wise learning-rate decay, gradient checkpointing) and
the seed's classifier (``Wav2Vec2Classifier``: pooling over frames -> dropout -> linear)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.models.interface import (
    FeatureAugment,
    FeatureCacheSpec,
    SpoofNet,
    module_digest,
)

FREEZE_MODES = ("none", "feature_encoder", "all")
POOLINGS = ("mean", "max", "stats")
WEIGHTED = "weighted"
"""``layer`` value for a learned softmax-weighted sum of every hidden state."""


class EncoderLoadError(RuntimeError):
    """The pretrained encoder could not be loaded (offline, wrong id, missing directory)."""


# The architectures of published encoders, keyed by hub id, so that ``pretrained=False`` builds
# them without the hub. Architecture fields only: dropout and masking keep Wav2Vec2Config's
# defaults (training from scratch sets its own). Wav2Vec2Config() itself is wav2vec2-base.
_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "layer_norm_eps": 1e-5,
}
# XLS-R 300M and XLSR-53: the large pre-norm ("stable layer norm") architecture
_LARGE_PRENORM = {
    **_BASE,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "facebook/wav2vec2-base": _BASE,
    "facebook/wav2vec2-base-960h": _BASE,
    "facebook/wav2vec2-xls-r-300m": _LARGE_PRENORM,
    "facebook/wav2vec2-large-xlsr-53": _LARGE_PRENORM,
}
"""``Wav2Vec2Config`` fields of known hub ids (94.4 M and 315.4 M encoder parameters)."""

HUB_PROBE_SECONDS = 3.0


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_address() -> tuple[str, int]:
    """The host and port a hub request connects to first: the HTTPS proxy when one is set."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or host, proxied.port or 3128
    return host, endpoint.port or (443 if endpoint.scheme != "http" else 80)


def _hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when a TCP connection to the hub (or its proxy) opens within ``timeout`` seconds,
    else why not. The probe runs in a daemon thread with a hard deadline: without a network the
    name lookup alone can stall for tens of seconds, beyond any socket or HTTP timeout, and the
    Hugging Face client retries on top of that."""
    host, port = _hub_address()
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no connection to {host}:{port} within {timeout:.0f} s"
    return outcome[0]


def _offline_help(source: str, why: str) -> str:
    name = source.rstrip("/").split("/")[-1]
    scratch = (
        "(or set model.net.pretrained=false to train this architecture from scratch)"
        if source in ARCHITECTURES
        else "(or set model.net.pretrained=false and model.net.config to its Wav2Vec2Config "
        "fields to train from scratch)"
    )
    return (
        f"cannot load the pretrained encoder {source!r} from the Hugging Face hub ({why}). "
        "On a machine with internet, save a local copy:\n"
        f"  python -m deepfake_detect.models.save_encoder {source} /models/{name}\n"
        f"then point the model at it: model.net.source=/models/{name} {scratch}."
    )


def _scratch_config(source: str, local: Path | None) -> Wav2Vec2Config:
    """The architecture of ``source`` for a randomly initialised encoder: a local directory's
    config, the shipped one of a known hub id, the local Hugging Face cache, then the hub."""
    if local is not None:
        return Wav2Vec2Config.from_pretrained(str(local))
    if source in ARCHITECTURES:
        return Wav2Vec2Config(**ARCHITECTURES[source])
    with contextlib.suppress(OSError):
        return Wav2Vec2Config.from_pretrained(source, local_files_only=True)
    why = "HF_HUB_OFFLINE is set" if _offline() else _hub_reachable()
    if why is not None:
        raise EncoderLoadError(
            f"no architecture is shipped for {source!r} (known: {', '.join(ARCHITECTURES)}) "
            f"and the Hugging Face hub is unreachable ({why}): set model.net.config to its "
            "Wav2Vec2Config fields, or model.net.source to a local copy"
        )
    return Wav2Vec2Config.from_pretrained(source)


def load_encoder(
    source: str, pretrained: bool = True, config: dict[str, Any] | None = None
) -> Wav2Vec2Model:
    """A Wav2Vec2 encoder from a hub id or a local directory.

    ``pretrained=False`` builds a randomly initialised encoder from ``config`` (a dict of
    ``Wav2Vec2Config`` fields), or from ``source``'s architecture when no config is given (known
    hub ids: :data:`ARCHITECTURES`, without contacting the hub). ``config`` also overrides
    fields of a pretrained model's config (e.g. ``layerdrop``). Without hub access a hub id
    fails within seconds, with instructions to point ``source`` at a local copy.
    """
    overrides = dict(config or {})
    if not pretrained and overrides:
        return Wav2Vec2Model(Wav2Vec2Config(**overrides))
    local = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise EncoderLoadError(f"encoder directory not found: {local} (check model.net.source)")
    try:
        if not pretrained:
            return Wav2Vec2Model(_scratch_config(source, local if looks_local else None))
        if looks_local:
            return Wav2Vec2Model.from_pretrained(str(local), local_files_only=True, **overrides)
        with contextlib.suppress(OSError):  # already in the local Hugging Face cache
            return Wav2Vec2Model.from_pretrained(source, local_files_only=True, **overrides)
        why = "HF_HUB_OFFLINE is set" if _offline() else _hub_reachable()
        if why is not None:
            raise EncoderLoadError(_offline_help(source, why))
        return Wav2Vec2Model.from_pretrained(source, **overrides)
    except OSError as exc:
        raise EncoderLoadError(_offline_help(source, str(exc).splitlines()[0])) from exc


def frame_mask(encoder: Wav2Vec2Model, lengths: Tensor, num_frames: int) -> Tensor:
    """[B, F] True on encoder frames computed from real samples (not padding)."""
    frame_lengths = encoder._get_feat_extract_output_lengths(lengths).clamp(max=num_frames)
    return torch.arange(num_frames, device=lengths.device)[None, :] < frame_lengths[:, None]


def masked_pool(frames: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """Pool [B, F, H] frames over the valid ones -> [B, H] (``stats``: [B, 2H] mean and std)."""
    weights = mask.unsqueeze(-1).to(frames.dtype)
    count = weights.sum(dim=1).clamp(min=1.0)
    mean = (frames * weights).sum(dim=1) / count
    if pooling == "mean":
        return mean
    if pooling == "max":
        return frames.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
    var = (((frames - mean.unsqueeze(1)) ** 2) * weights).sum(dim=1) / count
    return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=-1)


class _ExactPaddingFeatureEncoder(nn.Module):
    """A group-norm feature encoder (wav2vec2-base) made padding-exact for a batch: the first
    convolution and its group norm (statistics over time) run on each utterance's own samples,
    the rest of the stack on the zero-padded batch (its valid frames only see valid frames)."""

    def __init__(self, extractor: nn.Module, lengths: Tensor) -> None:
        super().__init__()
        self.extractor = extractor
        self.lengths = lengths.tolist()

    def forward(self, input_values: Tensor) -> Tensor:
        first, *rest = self.extractor.conv_layers
        rows = [first(input_values[i : i + 1, None, :n])[0] for i, n in enumerate(self.lengths)]
        hidden = input_values.new_zeros(len(rows), rows[0].shape[0], max(r.shape[1] for r in rows))
        for i, row in enumerate(rows):
            hidden[i, :, : row.shape[1]] = row
        for conv_layer in rest:
            hidden = conv_layer(hidden)
        return hidden


class Wav2Vec2Net(SpoofNet):
    """A Wav2Vec2 encoder with the controls its heads share; subclasses add the head.

    ``layer``: which hidden state the head reads (-1: the last; 0: the transformer's input) or
    ``"weighted"``: a learned sum of all of them, the weights a softmax of one logit per state
    (initialised equal, so the sum starts as their mean). ``llrd``: layer-wise learning-rate
    decay for ``param_groups`` (1.0: one rate for all). ``gradient_checkpointing``: recompute the
    encoder's activations in the backward pass (less memory for long inputs, slower steps); it
    only acts while the encoder trains.

    ``set_freeze("all")`` turns the encoder into a fixed feature extractor: no gradients, no
    autograd graph (it runs under ``torch.no_grad``) and eval mode (dropout and time masking
    off), so its features are deterministic and can be cached.
    """

    def __init__(
        self,
        source: str = "facebook/wav2vec2-base",
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        layer: int | str = -1,
        gradient_checkpointing: bool = False,
        llrd: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 < llrd <= 1.0:
            raise ValueError(f"llrd must be in (0, 1], got {llrd}")
        self.source = source
        self.pretrained = pretrained
        self.encoder = load_encoder(source, pretrained, config)
        states = self.encoder.config.num_hidden_layers + 1
        if layer != WEIGHTED and not (isinstance(layer, int) and -states <= layer < states):
            raise ValueError(
                f"layer must be {WEIGHTED!r} or a hidden-state index in [{-states}, {states - 1}]"
                f", got {layer!r}"
            )
        self.layer = layer
        self.layer_weights = nn.Parameter(torch.zeros(states)) if layer == WEIGHTED else None
        self.llrd = llrd
        self.gradient_checkpointing = gradient_checkpointing
        self.freeze_mode = "none"
        if gradient_checkpointing:
            self._set_checkpointing(True)

    # -- freezing ---------------------------------------------------------------------------------
    def set_freeze(self, mode: str) -> None:
        if mode not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {mode!r}")
        self.freeze_mode = mode
        self.encoder.requires_grad_(mode != "all")
        if mode == "feature_encoder":
            self.encoder.freeze_feature_encoder()
        elif mode == "none":
            self.encoder.feature_extractor._requires_grad = True
        if self.gradient_checkpointing:
            self._set_checkpointing(mode != "all")
        self.train(self.training)

    def train(self, mode: bool = True) -> Wav2Vec2Net:
        super().train(mode)
        if self.freeze_mode == "all":
            self.encoder.eval()
        return self

    def _set_checkpointing(self, enable: bool) -> None:
        # transformers 5 renamed gradient_checkpointing_enable (now a deprecated alias)
        if hasattr(self.encoder, "activation_checkpointing_enable"):
            if enable:
                self.encoder.activation_checkpointing_enable({"use_reentrant": False})
            else:
                self.encoder.activation_checkpointing_disable()
        elif enable:
            self.encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            self.encoder.gradient_checkpointing_disable()

    # -- optimisation -----------------------------------------------------------------------------
    def _depth(self, name: str) -> int:
        """0 for the head, 1 for the top transformer layer (and a final layer norm), k for the
        k-th layer from the top, ``layers + 1`` for everything below the first layer."""
        if not name.startswith("encoder."):
            return 0
        layers = self.encoder.config.num_hidden_layers
        parts = name.split(".")
        if parts[1:3] == ["encoder", "layers"]:
            return layers - int(parts[3])
        if parts[1:3] == ["encoder", "layer_norm"] and self.encoder.config.do_stable_layer_norm:
            return 1  # pre-norm models (e.g. XLS-R) apply it after the top layer
        return layers + 1

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """The trainable parameters as optimizer groups with layer-wise decayed rates: the head
        at ``base_lr``, the top transformer layer at ``base_lr * llrd``, the next one down at
        ``base_lr * llrd**2``, ..., the feature encoder (CNN, feature projection, positional
        convolution) lowest, at ``base_lr * llrd**(layers + 1)``. Frozen parameters are left
        out; each group carries a ``name``."""
        layers = self.encoder.config.num_hidden_layers
        by_depth: dict[int, list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if param.requires_grad:
                by_depth.setdefault(self._depth(name), []).append(param)

        def group_name(depth: int) -> str:
            if depth == 0:
                return "head"
            return "encoder.embedding" if depth > layers else f"encoder.layers.{layers - depth}"

        return [
            {"name": group_name(depth), "params": params, "lr": base_lr * self.llrd**depth}
            for depth, params in sorted(by_depth.items())
        ]

    # -- forward ----------------------------------------------------------------------------------
    def hidden_states(
        self, waveform: Tensor, lengths: Tensor | None = None, all_layers: bool = True
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """Every layer's hidden states (feature projection first; only the last one when
        ``all_layers`` is False) and the [B, F] frame mask."""
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[-1], device=waveform.device)
        attention_mask = None
        if self.encoder.config.feat_extract_norm == "layer":
            # Models with layer-norm feature encoders take a mask; group-norm ones (wav2vec2-base)
            # were trained on zero-padded input without one.
            samples = torch.arange(waveform.shape[-1], device=waveform.device)
            attention_mask = (samples[None, :] < lengths[:, None]).long()
        grad = contextlib.nullcontext() if self.freeze_mode != "all" else torch.no_grad()
        with grad:
            out = self.encoder(
                waveform, attention_mask=attention_mask, output_hidden_states=all_layers
            )
        states = out.hidden_states if all_layers else (out.last_hidden_state,)
        return states, frame_mask(self.encoder, lengths, states[-1].shape[1])

    def set_feature_augment(self, augment: FeatureAugment | None) -> None:
        """SpecAugment. While the encoder trains, its own masking does the job (masked frames
        replaced by the learned ``masked_spec_embed``, as in pre-training), with the augment's
        ``mask_time_prob`` / ``mask_time_length`` / ``mask_feature_prob``; while it is frozen
        (eval mode, no masking), ``augment`` masks the frames the head reads."""
        self.feature_augment = augment
        if augment is not None and self._encoder_masks():
            config = self.encoder.config
            config.apply_spec_augment = True
            config.mask_time_prob = float(getattr(augment, "mask_time_prob", 0.05))
            config.mask_time_length = int(getattr(augment, "mask_time_length", 10))
            config.mask_feature_prob = float(getattr(augment, "mask_feature_prob", 0.0))
            config.mask_feature_length = int(getattr(augment, "mask_feature_length", 10))

    def _encoder_masks(self) -> bool:
        """Whether the encoder can mask its own frames (it has the learned mask embedding)."""
        return getattr(self.encoder, "masked_spec_embed", None) is not None

    def _head_frames(self, frames: Tensor, mask: Tensor) -> Tensor:
        augment = getattr(self, "feature_augment", None)
        if augment is None or not self.training:
            return frames
        if self.encoder.training and self._encoder_masks():
            return frames  # masked inside the encoder
        return augment(frames, mask.sum(dim=1))

    def features(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The frames the head reads, [B, F, H] (the chosen layer, or the weighted sum of all),
        and the [B, F] frame mask."""
        if self.layer_weights is None:
            states, mask = self.hidden_states(waveform, lengths, all_layers=self.layer != -1)
            return self._head_frames(states[self.layer], mask), mask
        states, mask = self.hidden_states(waveform, lengths, all_layers=True)
        weights = torch.softmax(self.layer_weights, dim=0).to(states[0].dtype)
        summed = torch.tensordot(weights, torch.stack(states), dims=1)
        return self._head_frames(summed, mask), mask

    # -- the frozen-encoder feature cache --------------------------------------------------------
    def _cached_states(self) -> str | int:
        """Which hidden states the cache stores: ``all`` (weighted sum), ``last`` (the final
        output, ``layer=-1``) or one index from the bottom."""
        if self.layer_weights is not None:
            return "all"
        if self.layer == -1:
            return "last"
        assert isinstance(self.layer, int)
        return self.layer % (self.encoder.config.num_hidden_layers + 1)

    def feature_cache_spec(self) -> FeatureCacheSpec | None:
        """With ``freeze=all`` the encoder is a fixed function (eval mode, no gradients): its
        hidden states can be cached. Keyed by the encoder's weights and architecture and the
        states stored; the head (and SpecAugment on its frames) runs on them."""
        if self.freeze_mode != "all":
            return None
        config = self.encoder.config
        full = config.to_dict()
        states = self._cached_states()
        key = {
            "encoder": module_digest(self.encoder),
            "architecture": {name: full.get(name) for name in sorted(_BASE)},
            "states": states,
        }
        return FeatureCacheSpec(
            key=key,
            num_states=config.num_hidden_layers + 1 if states == "all" else 1,
            hidden_size=config.hidden_size,
            conv=tuple(zip(config.conv_kernel, config.conv_stride, strict=True)),
            # group-norm feature encoders are made padding-exact by cache_states
            padding_invariant=True,
        )

    def cache_states(
        self, waveform: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The hidden states :meth:`features` would read, ``[B, S, F, H]`` (S: all of them for
        the weighted sum, else 1), and the frame mask; each utterance's valid frames as if it
        were encoded alone (to float rounding), so a batch fills the cache."""
        encode = self.hidden_states
        if self.encoder.config.feat_extract_norm == "group" and waveform.shape[0] > 1:
            encode = self._padding_exact_states
        with torch.no_grad():
            if self.layer_weights is not None:
                states, mask = encode(waveform, lengths, all_layers=True)
                return torch.stack(states, dim=1), mask
            states, mask = encode(waveform, lengths, all_layers=self.layer != -1)
            return states[self.layer].unsqueeze(1), mask

    def _padding_exact_states(
        self, waveform: Tensor, lengths: Tensor | None, all_layers: bool
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """:meth:`hidden_states` of a padded batch for a group-norm encoder (wav2vec2-base, which
        takes no mask, so padding changes its output): the first group norm per utterance and
        an attention mask over the padded frames (for valid frames, the same as no padding: the
        positional convolution sees zeros there either way and attention gives them no weight)."""
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), waveform.shape[-1], device=waveform.device)
        samples = torch.arange(waveform.shape[-1], device=waveform.device)
        attention_mask = (samples[None, :] < lengths[:, None]).long()
        original = self.encoder.feature_extractor
        self.encoder.feature_extractor = _ExactPaddingFeatureEncoder(original, lengths)
        try:
            out = self.encoder(
                waveform, attention_mask=attention_mask, output_hidden_states=all_layers
            )
        finally:
            self.encoder.feature_extractor = original
        states = out.hidden_states if all_layers else (out.last_hidden_state,)
        return states, frame_mask(self.encoder, lengths, states[-1].shape[1])

    def cached_frames(self, states: Tensor, mask: Tensor) -> Tensor:
        """:meth:`features`' frames from cached states ``[B, S, F, H]``."""
        if self.layer_weights is None:
            return self._head_frames(states[:, 0], mask)
        weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
        summed = torch.tensordot(weights, states.transpose(0, 1), dims=1)
        return self._head_frames(summed, mask)

    def rebuild_config(self, net_config: dict[str, Any]) -> dict[str, Any]:
        """The net config that rebuilds this architecture without downloading anything
        (stored in checkpoints; the weights come from the checkpoint's state dict)."""
        return {**net_config, "pretrained": False, "config": self.encoder.config.to_dict()}


class Wav2Vec2Classifier(Wav2Vec2Net):
    """Wav2Vec2 -> pooled frames of one layer (or the weighted sum of all) -> dropout -> linear
    (spoof, bona fide)."""

    def __init__(
        self,
        source: str = "facebook/wav2vec2-base",
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        layer: int | str = -1,
        pooling: str = "mean",
        dropout: float = 0.1,
        gradient_checkpointing: bool = False,
        llrd: float = 1.0,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        super().__init__(source, pretrained, config, layer, gradient_checkpointing, llrd)
        self.pooling = pooling
        hidden = self.encoder.config.hidden_size
        self.embedding_dim = hidden * (2 if pooling == "stats" else 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_dim, 2)

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        frames, mask = self.features(waveform, lengths)
        return masked_pool(frames, mask, self.pooling)

    def embed_cached(self, states: Tensor, mask: Tensor) -> Tensor:
        return masked_pool(self.cached_frames(states, mask), mask, self.pooling)

    def classify(self, embedding: Tensor) -> Tensor:
        return self.head(self.dropout(embedding))

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))
