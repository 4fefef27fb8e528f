"""The seed's classifier: Wav2Vec2 -> pooling over frames -> dropout -> linear -> 2 logits."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

FREEZE_MODES = ("none", "feature_encoder", "all")
POOLINGS = ("mean", "max", "stats")


class EncoderLoadError(RuntimeError):
    """The pretrained encoder could not be loaded (offline, wrong id, missing directory)."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(source: str, timeout: float = 5.0) -> str | None:
    """None when the hub answers for ``source``, else why not (one short request, no retries)."""
    from huggingface_hub import model_info

    try:
        model_info(source, timeout=timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _offline_help(source: str, why: str) -> str:
    name = source.rstrip("/").split("/")[-1]
    return (
        f"cannot load the pretrained encoder {source!r} from the Hugging Face hub ({why}). "
        "On a machine with internet, save a local copy:\n"
        f"  python -m deepfake_detect.models.save_encoder {source} /models/{name}\n"
        f"then point the model at it: model.net.source=/models/{name} "
        "(or set model.net.pretrained=false to train from scratch)."
    )


def load_encoder(
    source: str, pretrained: bool = True, config: dict[str, Any] | None = None
) -> Wav2Vec2Model:
    """A Wav2Vec2 encoder from a hub id or a local directory.

    ``pretrained=False`` builds a randomly initialised encoder from ``config`` (a dict of
    ``Wav2Vec2Config`` fields), or from ``source``'s architecture when no config is given.
    ``config`` also overrides fields of a pretrained model's config (e.g. ``layerdrop``).
    Fails fast offline, with instructions to point ``source`` at a local copy.
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
            return Wav2Vec2Model(
                Wav2Vec2Config.from_pretrained(str(local) if looks_local else source)
            )
        if looks_local:
            return Wav2Vec2Model.from_pretrained(str(local), local_files_only=True, **overrides)
        with contextlib.suppress(OSError):  # already in the local Hugging Face cache
            return Wav2Vec2Model.from_pretrained(source, local_files_only=True, **overrides)
        if _offline():
            raise EncoderLoadError(_offline_help(source, "HF_HUB_OFFLINE is set"))
        why = _hub_reachable(source)
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


class Wav2Vec2Classifier(nn.Module):
    """Wav2Vec2 -> pooled hidden states of one layer -> dropout -> linear (spoof, bona fide).

    ``set_freeze("all")`` turns the encoder into a fixed feature extractor: no gradients, no
    autograd graph (it runs under ``torch.no_grad``) and eval mode (dropout and time masking
    off), so its features are deterministic and can be cached.
    """

    def __init__(
        self,
        source: str = "facebook/wav2vec2-base",
        pretrained: bool = True,
        config: dict[str, Any] | None = None,
        layer: int = -1,
        pooling: str = "mean",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.source = source
        self.pretrained = pretrained
        self.encoder = load_encoder(source, pretrained, config)
        self.layer = layer
        self.pooling = pooling
        self.freeze_mode = "none"
        hidden = self.encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if pooling == "stats" else 1), 2)

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
        self.train(self.training)

    def train(self, mode: bool = True) -> Wav2Vec2Classifier:
        super().train(mode)
        if self.freeze_mode == "all":
            self.encoder.eval()
        return self

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

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        states, mask = self.hidden_states(waveform, lengths, all_layers=self.layer != -1)
        return masked_pool(states[self.layer], mask, self.pooling)

    def classify(self, embedding: Tensor) -> Tensor:
        return self.head(self.dropout(embedding))

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))

    def rebuild_config(self, net_config: dict[str, Any]) -> dict[str, Any]:
        """The net config that rebuilds this architecture without downloading anything
        (stored in checkpoints; the weights come from the checkpoint's state dict)."""
        return {**net_config, "pretrained": False, "config": self.encoder.config.to_dict()}
