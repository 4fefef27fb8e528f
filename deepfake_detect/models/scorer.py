"""SpoofScorer: the plain ``nn.Module`` at the core of every trained system.

It holds the three things a score depends on: the preprocessing contract
(:class:`~deepfake_detect.data.preprocessing.Preprocessing`), the net
(:class:`~deepfake_detect.models.interface.SpoofNet`) and the objective that defines the score
(``deepfake_detect.losses``: the logits' difference for cross-entropy, the cosine to the
learned direction for OC-softmax). The LightningModule composes one for training; evaluation,
fusion, distillation, ``detect``, streaming and export load or wrap it, without Lightning:

    scorer = SpoofScorer.from_checkpoint("epoch_004.ckpt")
    scores = scorer(waves, lengths)        # [B]: higher = more bona fide, 0 = the boundary

``forward`` applies the model side of the contract: inputs shorter than the minimum are tiled
up to it, inputs longer than ``max_eval_len`` are scored as the mean of half-overlapping
windows, and each scored input is normalised alone (padding masked).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from deepfake_detect.data.preprocessing import (
    Preprocessing,
    as_preprocessing,
    batch_lengths,
    normalize_batch,
    tile_short,
    windows,
)
from deepfake_detect.losses import SpoofLoss, WeightedCrossEntropy
from deepfake_detect.models.checkpoint import CheckpointError, checkpoint_hparams, read_checkpoint
from deepfake_detect.models.interface import SpoofNet

SCORER_PREFIX = "scorer."
"""Where the scorer's weights sit in a training checkpoint's state dict."""


def plain(config: Any) -> Any:
    """OmegaConf containers as plain dicts and lists (checkpoints load with weights_only)."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config


def build_net(config: Mapping[str, Any]) -> tuple[SpoofNet, dict[str, Any]]:
    """The net of a ``_target_`` config, and the config that rebuilds it offline."""
    net = instantiate(dict(config), _convert_="all")
    if not isinstance(net, SpoofNet):
        raise TypeError(
            f"{config.get('_target_')} is not a SpoofNet: every model must subclass "
            "deepfake_detect.models.interface.SpoofNet"
        )
    return net, net.rebuild_config(dict(config))


def _fill_embedding_dim(config: Any, dim: int) -> Any:
    """Objective configs may leave ``embedding_dim: null``: it is the net's."""
    if isinstance(config, dict):
        filled = {key: _fill_embedding_dim(value, dim) for key, value in config.items()}
        if "_target_" in filled and "embedding_dim" in filled and filled["embedding_dim"] is None:
            filled["embedding_dim"] = dim
        return filled
    return config


def build_objective(
    config: Mapping[str, Any] | None, net: SpoofNet
) -> tuple[SpoofLoss, dict[str, Any] | None]:
    """The objective of a ``_target_`` config (None: class-weighted cross-entropy) and its
    config with the net's embedding size filled in."""
    if not config:
        return WeightedCrossEntropy(), None
    filled = _fill_embedding_dim(dict(config), net.embedding_dim)
    objective = instantiate(filled, _convert_="all")
    if not isinstance(objective, SpoofLoss):
        raise TypeError(f"{filled.get('_target_')} is not a deepfake_detect.losses.SpoofLoss")
    return objective, filled


class SpoofScorer(nn.Module):
    """Preprocessing + net + the objective's score function (see the module docstring)."""

    def __init__(
        self,
        net: SpoofNet,
        objective: SpoofLoss | None = None,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.objective = objective if objective is not None else WeightedCrossEntropy()
        self.preprocessing = as_preprocessing(preprocessing)

    @property
    def uses_logits(self) -> bool:
        return bool(self.objective.uses_logits)

    @property
    def min_len(self) -> int:
        """Inputs shorter than this are tiled up to it: the contract's ``min_len`` or the
        net's own minimum, whichever is larger."""
        return max(self.preprocessing.min_len, self.net.min_input_len)

    # -- the model side of the preprocessing contract ---------------------------------------------
    def prepare(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Tile short inputs, then normalise each row over its own samples."""
        lengths = batch_lengths(wave, lengths)
        wave, lengths = tile_short(wave, lengths, self.min_len)
        return normalize_batch(wave, lengths, self.preprocessing.normalize), lengths

    def outputs(self, wave: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Embeddings ``[B, D]`` and logits ``[B, 2]`` (None when the objective uses none) of
        prepared inputs, in one pass (no windowing: training and short inputs)."""
        wave, lengths = self.prepare(wave, lengths)
        embedding = self.net.embed(wave, lengths)
        return embedding, self.net.classify(embedding) if self.uses_logits else None

    def score_outputs(self, embedding: Tensor, logits: Tensor | None) -> Tensor:
        return self.objective.score(embedding, logits).float()

    def is_long(self, lengths: Tensor) -> Tensor:
        cap = self.preprocessing.max_eval_len
        return torch.zeros_like(lengths, dtype=torch.bool) if cap is None else lengths > cap

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Bona fide scores ``[B]`` (higher = more bona fide, 0 = the decision boundary)."""
        lengths = batch_lengths(wave, lengths)
        long = self.is_long(lengths)
        if not bool(long.any()):
            return self.score_outputs(*self.outputs(wave, lengths))
        scores = torch.empty(wave.shape[0], device=wave.device)
        keep = ~long
        if bool(keep.any()):
            width = int(lengths[keep].max())
            scores[keep] = self.score_outputs(*self.outputs(wave[keep, :width], lengths[keep]))
        for i in torch.nonzero(long).flatten().tolist():
            scores[i] = self.window_scores(wave[i, : int(lengths[i])]).mean()
        return scores

    def window_scores(
        self, wave: Tensor, window: int | None = None, hop: int | None = None, batch: int = 16
    ) -> Tensor:
        """Scores of the windows of one waveform ``[T]`` (default: ``max_eval_len`` windows,
        half-overlapping), each normalised alone; ``[W]``."""
        window = window or self.preprocessing.max_eval_len or wave.shape[-1]
        cut = windows(wave, window, hop)
        out = [self.score_outputs(*self.outputs(chunk, None)) for chunk in cut.split(batch, dim=0)]
        return torch.cat(out)

    # -- checkpoints ------------------------------------------------------------------------------
    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> SpoofScorer:
        """Rebuild the architecture from a checkpoint's hyper-parameters (weights not loaded)."""
        net, _ = build_net(hparams["net"])
        net.set_freeze(hparams.get("freeze", "none"))
        objective, _ = build_objective(hparams.get("loss"), net)
        return cls(net, objective, hparams.get("preprocessing"))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> SpoofScorer:
        """A trained scorer from a checkpoint alone: no Lightning, no download, no pickled code.
        Returned in eval mode."""
        return cls.from_checkpoint_dict(read_checkpoint(path), path)

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: Mapping[str, Any], path: str | Path) -> SpoofScorer:
        """The scorer of a checkpoint already read (:func:`read_checkpoint`; ``path`` names it
        in errors), in eval mode: weights that do not fit the architecture it names are one
        :class:`CheckpointError`."""
        scorer = cls.from_hparams(checkpoint_hparams(checkpoint, path))
        state = {
            key[len(SCORER_PREFIX) :]: value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith(SCORER_PREFIX)
        }
        try:
            scorer.load_state_dict(state)
        except RuntimeError as exc:
            first = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()[:200]
            raise CheckpointError(
                f"{path}: its weights do not fit the architecture it names ({first})"
            ) from None
        return scorer.eval()
