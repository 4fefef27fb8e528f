"""AASIST and AASIST-L (Jung et al., ICASSP 2022): spectro-temporal graph attention on raw audio.

Raw waveform -> fixed sinc filterbank -> |.|, 3x3 max-pool -> six 2-D residual blocks (time
max-pooled by 3 each) -> a spectral graph (one node per sub-band, max over time) and a temporal
graph (one node per frame, max over frequency) -> graph attention + graph pooling on each ->
two parallel branches of heterogeneous stacking graph attention (HS-GAL) with a master node ->
element-wise max over the branches -> readout (max |.| and mean of both node types + master).

One class, two named configs (``conf/model/aasist.yaml``, ``conf/model/aasist_l.yaml``); the
defaults here are AASIST. The graph half (``GraphBackEnd``) is shared with the SSL-AASIST back
end (``ssl_aasist.py``). With the reference configs the parameter counts are exactly the
published 297,866 (AASIST) and 85,306 (AASIST-L).

Differences from the reference implementation:
- Its residual block computes the batch norm + SELU pre-activation and then discards it (the first
  conv reads the block input). Here the pre-activation is used; the parameter count is unchanged.
- Padding: with ``lengths``, the padded tail is zeroed before every time convolution, padded
  temporal nodes are excluded from attention, graph pooling (each item keeps ``int(ratio * its own
  node count)`` nodes) and the readout, so in eval mode a padded item scores as it does alone.
- The reference's random band masking of the sinc filters (``Freq_aug``, off in its configs) is
  not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepfake_detect.data.preprocessing import DEFAULT_SAMPLE_RATE
from deepfake_detect.models.interface import SpoofNet
from deepfake_detect.models.layers import (
    SincFilterbank,
    apply_mask,
    masked_mean,
    pooled_lengths,
    sequence_mask,
)


def _attention_weights(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the first node axis of symmetric [B, N, N] scores, as the reference does.

    ``out_i = sum_j w_ij x_j`` with ``w_ij = exp(s_ij) / sum_k exp(s_kj)``: the weights are
    normalised over the receiving node ``i``. Pairs involving a padded node get zero weight."""
    if mask is None:
        return torch.softmax(scores, dim=1)
    pair = mask.unsqueeze(2) & mask.unsqueeze(1)
    # a finite fill keeps fully padded columns NaN-free (also in half precision)
    weights = torch.softmax(scores.masked_fill(~pair, torch.finfo(scores.dtype).min), dim=1)
    return weights.masked_fill(~pair, 0.0)


def _node_batch_norm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    return bn(x.reshape(-1, x.shape[-1])).view_as(x)


def _xavier_column(dim: int) -> nn.Parameter:
    weight = nn.Parameter(torch.empty(dim, 1))
    nn.init.xavier_normal_(weight)
    return weight


class GraphAttention(nn.Module):
    """Graph attention over one node type (GAT-S / GAT-T): attention from the projected
    element-wise product of node pairs, a temperature, and a residual projection."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier_column(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.act = nn.SELU()
        self.temperature = temperature

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x [B, N, D_in], mask [B, N] (True = real node) -> [B, N, D_out]."""
        x = self.input_drop(x)
        pairs = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))
        scores = (pairs @ self.att_weight).squeeze(-1) / self.temperature
        weights = _attention_weights(scores, mask)
        out = self.proj_with_att(weights @ x) + self.proj_without_att(x)
        out = self.act(_node_batch_norm(self.bn, out))
        return out if mask is None else out * mask.unsqueeze(-1)


class HeteroGraphAttention(nn.Module):
    """HS-GAL: attention over the union of two node types (temporal, spectral), with a separate
    attention vector per type pair, plus a master node that attends to every node."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_proj_master = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _xavier_column(out_dim)
        self.att_weight22 = _xavier_column(out_dim)
        self.att_weight12 = _xavier_column(out_dim)
        self.att_weight_master = _xavier_column(out_dim)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_att_master = nn.Linear(in_dim, out_dim)
        self.proj_without_att_master = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.act = nn.SELU()
        self.temperature = temperature

    def forward(
        self, x1: Tensor, x2: Tensor, master: Tensor, mask1: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x1 [B, N1, D] (may be padded, ``mask1`` [B, N1]), x2 [B, N2, D], master [B, 1, D]."""
        n1, n2 = x1.shape[1], x2.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = self.input_drop(x)
        mask = None
        if mask1 is not None:
            mask = torch.cat([mask1, mask1.new_ones(mask1.shape[0], n2)], dim=1)

        # One attention vector per block of the node-pair map: (1,1), (2,2), and (1,2) = (2,1).
        pairs = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))
        vectors = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)
        per_type = pairs @ vectors
        is_type2 = torch.arange(n1 + n2, device=x.device) >= n1
        block = torch.where(
            is_type2[:, None] == is_type2[None, :], is_type2[:, None].long(), 2
        ).expand(x.shape[0], -1, -1)
        scores = per_type.gather(-1, block.unsqueeze(-1)).squeeze(-1) / self.temperature
        weights = _attention_weights(scores, mask)

        master_scores = torch.tanh(self.att_proj_master(x * master)) @ self.att_weight_master
        master_scores = master_scores / self.temperature
        if mask is not None:
            master_scores = master_scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        master_weights = torch.softmax(master_scores, dim=1)
        master = self.proj_with_att_master(
            master_weights.transpose(1, 2) @ x
        ) + self.proj_without_att_master(master)

        out = self.proj_with_att(weights @ x) + self.proj_without_att(x)
        out = self.act(_node_batch_norm(self.bn, out))
        if mask is not None:
            out = out * mask.unsqueeze(-1)
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Keep the ``int(ratio * N)`` highest-scoring nodes (at least one), scaled by their score.

    Nodes come out in descending score order, which the max across the two HS-GAL branches
    relies on (it pairs nodes by rank)."""

    def __init__(self, ratio: float, in_dim: int, dropout: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        scores = torch.sigmoid(self.proj(self.drop(h)))
        if mask is None:
            keep = max(int(h.shape[1] * self.ratio), 1)
            index = torch.topk(scores, keep, dim=1).indices
            return torch.gather(h * scores, 1, index.expand(-1, -1, h.shape[-1])), None
        # float64 so that the per-item counts round exactly as Python's int(n * ratio) does
        counts = mask.sum(dim=1).double()
        keep_each = torch.floor(counts * self.ratio).long().clamp(min=1)
        keep = int(keep_each.max())
        ranking = scores.squeeze(-1).masked_fill(~mask, float("-inf"))
        index = torch.topk(ranking, keep, dim=1).indices.unsqueeze(-1)
        pooled = torch.gather(h * scores, 1, index.expand(-1, -1, h.shape[-1]))
        new_mask = sequence_mask(keep_each, keep)
        return pooled * new_mask.unsqueeze(-1), new_mask


class ResidualBlock2d(nn.Module):
    """Pre-activation 2-D residual block (kernels 2x3) followed by a (1, ``time_pool``) max-pool
    in time (AASIST pools by 3; SSL-AASIST's blocks do not pool: ``time_pool=1``)."""

    def __init__(
        self, in_channels: int, out_channels: int, first: bool, time_pool: int = 3
    ) -> None:
        super().__init__()
        self.bn1 = None if first else nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = (
            nn.Conv2d(in_channels, out_channels, kernel_size=(1, 3), padding=(0, 1))
            if in_channels != out_channels
            else None
        )
        self.act = nn.SELU()
        self.pool = nn.MaxPool2d((1, time_pool)) if time_pool > 1 else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x [B, C, F, T] with zeros past each item's length; mask [B, 1, 1, T] or None."""
        out = x if self.bn1 is None else apply_mask(self.act(self.bn1(x)), mask)
        out = self.conv1(out)
        out = apply_mask(self.act(self.bn2(out)), mask)
        out = self.conv2(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.pool(out + identity)


def time_mask_4d(lengths: Tensor | None, frames: int) -> Tensor | None:
    """[B, 1, 1, frames] mask for [B, C, F, frames] feature maps (None when unpadded)."""
    return None if lengths is None else sequence_mask(lengths, frames)[:, None, None, :]


class GraphBackEnd(nn.Module):
    """The graph half of AASIST, shared by AASIST and the SSL-AASIST back end.

    Spectral nodes (one per sub-band) and temporal nodes (one per frame, maybe padded) -> graph
    attention + graph pooling on each -> two parallel branches of heterogeneous stacking graph
    attention (HS-GAL) with a master node -> element-wise max over the branches -> readout
    (max |.| and mean of both node types + master) -> dropout -> linear (spoof, bona fide).
    Subclasses build their own encoder, call ``_build_graph`` and end ``embed`` with
    ``_graph_embed``.
    """

    def _build_graph(
        self,
        node_dim: int,
        spectral_nodes: int,
        gat_dims: Sequence[int],
        pool_ratios: Sequence[float],
        temperatures: Sequence[float],
    ) -> None:
        gat_dim, hs_dim = gat_dims
        ratio_s, ratio_t, ratio_hs = pool_ratios
        temp_s, temp_t, temp_hs = temperatures
        self.pos_spectral = nn.Parameter(torch.randn(1, spectral_nodes, node_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dim))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dim))

        self.gat_spectral = GraphAttention(node_dim, gat_dim, temp_s)
        self.gat_temporal = GraphAttention(node_dim, gat_dim, temp_t)
        self.hs_gal11 = HeteroGraphAttention(gat_dim, hs_dim, temp_hs)
        self.hs_gal12 = HeteroGraphAttention(hs_dim, hs_dim, temp_hs)
        self.hs_gal21 = HeteroGraphAttention(gat_dim, hs_dim, temp_hs)
        self.hs_gal22 = HeteroGraphAttention(hs_dim, hs_dim, temp_hs)

        self.pool_spectral = GraphPool(ratio_s, gat_dim, 0.3)
        self.pool_temporal = GraphPool(ratio_t, gat_dim, 0.3)
        self.pool_hs_spectral1 = GraphPool(ratio_hs, hs_dim, 0.3)
        self.pool_hs_temporal1 = GraphPool(ratio_hs, hs_dim, 0.3)
        self.pool_hs_spectral2 = GraphPool(ratio_hs, hs_dim, 0.3)
        self.pool_hs_temporal2 = GraphPool(ratio_hs, hs_dim, 0.3)

        self.branch_drop = nn.Dropout(0.2)
        self.readout_drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * hs_dim, 2)
        self.embedding_dim = 5 * hs_dim

    def _branch(
        self,
        first: HeteroGraphAttention,
        second: HeteroGraphAttention,
        pool_spectral: GraphPool,
        pool_temporal: GraphPool,
        temporal: Tensor,
        spectral: Tensor,
        master: Tensor,
        mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        temporal, spectral, master = first(temporal, spectral, master, mask)
        spectral, _ = pool_spectral(spectral)
        temporal, mask = pool_temporal(temporal, mask)
        temporal_aug, spectral_aug, master_aug = second(temporal, spectral, master, mask)
        return temporal + temporal_aug, spectral + spectral_aug, master + master_aug, mask

    def _graph_embed(self, spectral: Tensor, temporal: Tensor, mask: Tensor | None) -> Tensor:
        """spectral [B, S, D] (before the positional term), temporal [B, T, D] with ``mask``
        [B, T] (True = real frame) -> embedding [B, 5 * hs_dim]."""
        spectral, _ = self.pool_spectral(self.gat_spectral(spectral + self.pos_spectral))
        temporal, mask = self.pool_temporal(self.gat_temporal(temporal, mask), mask)

        batch = temporal.shape[0]
        t1, s1, m1, mask1 = self._branch(
            self.hs_gal11,
            self.hs_gal12,
            self.pool_hs_spectral1,
            self.pool_hs_temporal1,
            temporal,
            spectral,
            self.master1.expand(batch, -1, -1),
            mask,
        )
        t2, s2, m2, _ = self._branch(
            self.hs_gal21,
            self.hs_gal22,
            self.pool_hs_spectral2,
            self.pool_hs_temporal2,
            temporal,
            spectral,
            self.master2.expand(batch, -1, -1),
            mask,
        )
        drop = self.branch_drop
        temporal = torch.maximum(drop(t1), drop(t2))
        spectral = torch.maximum(drop(s1), drop(s2))
        master = torch.maximum(drop(m1), drop(m2))
        if mask1 is not None:
            temporal = temporal * mask1.unsqueeze(-1)
            mask1 = mask1.unsqueeze(-1)

        return torch.cat(
            [
                temporal.abs().amax(dim=1),
                masked_mean(temporal, mask1, dim=1),
                spectral.abs().amax(dim=1),
                spectral.mean(dim=1),
                master.squeeze(1),
            ],
            dim=1,
        )

    def classify(self, embedding: Tensor) -> Tensor:
        return self.out_layer(self.readout_drop(embedding))


class AASIST(GraphBackEnd, SpoofNet):
    """AASIST anti-spoofing network; the defaults are the paper's AASIST config.

    ``encoder_channels`` are the output channels of the six residual blocks. ``pool_ratios`` are
    (spectral graph, temporal graph, HS-GAL outputs) and ``temperatures`` (spectral GAT, temporal
    GAT, HS-GAL): the reference configs list a fourth value for each that its code never reads.
    """

    def __init__(
        self,
        sinc_filters: int = 70,
        sinc_kernel_size: int = 128,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        encoder_channels: Sequence[int] = (32, 32, 64, 64, 64, 64),
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.7, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0),
    ) -> None:
        super().__init__()
        if sinc_filters < 3:
            raise ValueError("sinc_filters must be >= 3 (the front end max-pools frequency by 3)")
        channels = [1, *encoder_channels]

        self.sinc = SincFilterbank(sinc_filters, sinc_kernel_size, sample_rate)
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.encoder = nn.ModuleList(
            ResidualBlock2d(c_in, c_out, first=i == 0)
            for i, (c_in, c_out) in enumerate(pairwise(channels))
        )
        self._build_graph(channels[-1], sinc_filters // 3, gat_dims, pool_ratios, temperatures)

    def _encode(self, waveform: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """[B, T] -> feature map [B, C, sub-bands, frames] (zero past each item's frames)."""
        if lengths is not None:
            waveform = apply_mask(waveform, sequence_mask(lengths, waveform.shape[-1]))
        x = torch.abs(self.sinc(waveform)).unsqueeze(1)
        lengths = pooled_lengths(self.sinc.output_lengths(lengths), 3)
        x = F.max_pool2d(x, (3, 3))
        x = apply_mask(self.selu(self.first_bn(x)), time_mask_4d(lengths, x.shape[-1]))
        for block in self.encoder:
            x = block(x, time_mask_4d(lengths, x.shape[-1]))
            lengths = pooled_lengths(lengths, 3)
            x = apply_mask(x, time_mask_4d(lengths, x.shape[-1]))
        return x, lengths

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        features, frames = self._encode(waveform, lengths)
        magnitude = torch.abs(features)
        spectral = magnitude.amax(dim=3).transpose(1, 2)
        temporal = magnitude.amax(dim=2).transpose(1, 2)
        mask = None if frames is None else sequence_mask(frames, temporal.shape[1])
        return self._graph_embed(spectral, temporal, mask)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))
