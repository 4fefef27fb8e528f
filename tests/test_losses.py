"""The training objectives: each learns a separable toy batch, OC-softmax's center is saved and
scores the test set, SupCon on hand-made cases, old checkpoints still load."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import la_data_overrides, tiny_la_overrides
from omegaconf import open_dict
from torch import Tensor, nn

from deepfake_detect.evaluation.scorefile import read_score_file
from deepfake_detect.losses import (
    OCSoftmax,
    WeightedCrossEntropy,
    WithSupCon,
    bonafide_score,
    supervised_contrastive_loss,
)
from deepfake_detect.models.interface import SpoofNet
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.pipeline import evaluate, load_detector, train

LOSSES = {"ce": WeightedCrossEntropy, "ocsoftmax": OCSoftmax, "ce_supcon": WithSupCon}


class ToyNet(SpoofNet):
    """A net on 16-dim "waveforms": tanh projection (the embedding), linear head."""

    min_input_len = 16

    def __init__(self, in_dim: int = 16, embedding_dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, embedding_dim)
        self.head = nn.Linear(embedding_dim, 2)
        self.embedding_dim = embedding_dim

    def embed(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return torch.tanh(self.proj(waveform))

    def classify(self, embedding: Tensor) -> Tensor:
        return self.head(embedding)

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.classify(self.embed(waveform, lengths))


def toy_batch(n_per_class: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Bona fide around one point, spoofs around two others (two "attacks"): separable."""
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(3, 16, generator=g)
    x = torch.cat([c + 0.5 * torch.randn(n_per_class, 16, generator=g) for c in centers])
    labels = torch.tensor([1] * n_per_class + [0] * (2 * n_per_class))
    return x, labels


def toy_detector(loss_config: dict | None) -> SpoofDetector:
    torch.manual_seed(0)
    return SpoofDetector(
        net={"_target_": f"{__name__}.ToyNet"},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.03},
        loss=loss_config,
        # 16-dim toy "waveforms" taken as they are
        preprocessing={"normalize": "none", "min_len": 1},
    )


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_learns_a_separable_batch(compose_cfg, name: str) -> None:
    loss_config = compose_cfg(f"model/loss={name}").model.loss
    model = toy_detector(loss_config)
    assert isinstance(model.loss, LOSSES[name])
    x, labels = toy_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.03)
    losses = []
    for _ in range(40):
        loss, _ = model.loss_and_score(x, None, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    with torch.no_grad():
        scores = model.score(x)
    assert scores[labels == 1].min() > scores[labels == 0].max()
    # 0 is each score's decision boundary, so every trial is classified right
    assert ((scores >= 0).long() == labels).all()


def test_ocsoftmax_takes_the_nets_embedding_size(compose_cfg) -> None:
    from hydra.utils import instantiate

    # the tiny Wav2Vec2 has no embedding_dim attribute: the size is found by one forward pass
    model = instantiate(compose_cfg("model=w2v2_tiny", "model/loss=ocsoftmax").model)
    assert model.loss.center.shape == (32,) and model.hparams.loss["embedding_dim"] == 32
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"scorer.net.head.weight", "scorer.net.head.bias"}


def test_ocsoftmax_is_the_papers_loss_and_its_score_is_the_cosine() -> None:
    loss = OCSoftmax(embedding_dim=2)
    assert (loss.margin_real, loss.margin_fake, loss.alpha) == (0.9, 0.2, 20.0)
    with torch.no_grad():
        loss.center.copy_(torch.tensor([3.0, 0.0]))  # only its direction matters
    embedding = torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])  # cosines 1, 0, 0.7071
    labels = torch.tensor([1, 0, 0])
    c = 1 / math.sqrt(2)
    expected = [math.log1p(math.exp(20 * (0.9 - 1))), math.log1p(math.exp(20 * (0 - 0.2)))]
    expected.append(math.log1p(math.exp(20 * (c - 0.2))))
    assert loss(embedding, None, labels).item() == pytest.approx(np.mean(expected), rel=1e-5)
    weighted = loss(embedding, None, labels, torch.tensor([1.0, 2.0]))  # bona fide counts twice
    assert weighted.item() == pytest.approx((2 * expected[0] + expected[1] + expected[2]) / 4)
    scores = loss.score(embedding, None)
    assert scores.tolist() == pytest.approx([20 * (1 - 0.55), 20 * (0 - 0.55), 20 * (c - 0.55)])


def test_supcon_on_hand_made_cases() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # two classes of two, orthogonal: each anchor's positive has similarity 1, negatives 0
    features = torch.stack([a, 3 * a, b, 0.5 * b])  # normalised inside: scale does not matter
    labels = torch.tensor([0, 0, 1, 1])
    value = supervised_contrastive_loss(features, labels, temperature=1.0)
    assert value.item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)
    # temperature sharpens: -log(e^{1/t} / (e^{1/t} + 2))
    value = supervised_contrastive_loss(features, labels, temperature=0.5)
    assert value.item() == pytest.approx(math.log(math.exp(2) + 2) - 2, rel=1e-6)
    # a sample without a positive is no anchor, but still a negative of the others
    features, labels = torch.stack([a, a, b]), torch.tensor([0, 0, 1])
    value = supervised_contrastive_loss(features, labels, temperature=1.0)
    assert value.item() == pytest.approx(math.log(math.e + 1) - 1, rel=1e-6)
    # no positives at all: 0, with a gradient
    features = torch.randn(3, 4, requires_grad=True)
    value = supervised_contrastive_loss(features, torch.tensor([0, 1, 2]))
    value.backward()
    assert value.item() == 0.0 and features.grad is not None


def test_ce_supcon_adds_the_weighted_contrastive_term() -> None:
    torch.manual_seed(0)
    embedding, logits = torch.randn(6, 4), torch.randn(6, 2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    loss = WithSupCon(WeightedCrossEntropy(), weight=0.3, temperature=0.1)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    supcon = supervised_contrastive_loss(embedding, labels, 0.1)
    assert loss(embedding, logits, labels).item() == pytest.approx((ce + 0.3 * supcon).item())
    assert torch.equal(loss.score(embedding, logits), bonafide_score(logits))


def test_ocsoftmax_center_is_saved_and_scores_the_test_set(
    compose_cfg, tiny_la: Path, tmp_path: Path
) -> None:
    cfg = compose_cfg(
        *tiny_la_overrides(tiny_la), "model=lcnn", "model/loss=ocsoftmax", "trainer.max_epochs=3"
    )
    metrics = train(cfg)
    assert metrics["test/eer"] <= 0.25  # 24 trials, chance 0.5
    best = metrics["best_checkpoint"]
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    model = load_detector(best).eval()
    assert isinstance(model.loss, OCSoftmax) and model.loss.center.shape == (96,)
    assert torch.equal(model.loss.center, state["scorer.objective.center"])
    assert not torch.equal(model.loss.center, OCSoftmax(96).center)  # trained, not re-drawn
    assert not model.net.out_layer.weight.requires_grad  # the unused head is frozen

    # the test scores are the loaded center's: 20 * (cos(embedding, center) - 0.55)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        embedding = model.scorer.outputs(wave)[0]  # the net's embedding of the normalised input
        cos = torch.cosine_similarity(embedding, model.loss.center[None], dim=1)
        assert torch.allclose(model.score(wave), 20 * (cos - 0.55), atol=1e-4)

    eval_cfg = compose_cfg(
        *la_data_overrides(tiny_la),
        f"ckpt_path={best}",
        config_name="eval",
    )
    with open_dict(eval_cfg):
        eval_cfg.paths.output_dir = str(tmp_path / "eval_run")
    assert evaluate(eval_cfg)["test/eer"] == pytest.approx(metrics["test/eer"])
    trained = read_score_file(Path(cfg.paths.output_dir) / "scores" / "asvspoof2019_la.tsv")
    evaluated = read_score_file(tmp_path / "eval_run" / "scores" / "asvspoof2019_la.tsv")
    trained_scores = np.array([float(r["score"]) for r in trained])
    assert np.allclose([float(r["score"]) for r in evaluated], trained_scores, atol=1e-3)
    assert np.abs(trained_scores).max() <= 20 * 1.55 + 1e-3  # OC scores, not logit differences


def test_checkpoint_from_before_losses_loads_as_cross_entropy(compose_cfg, tmp_path) -> None:
    model = SpoofDetector(
        **{k: v for k, v in compose_cfg("model=lcnn").model.items() if k[0] != "_"}
    )
    hparams = {k: v for k, v in model.hparams.items() if k not in ("loss", "distill")}
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    loaded = load_detector(path).eval()
    assert isinstance(loaded.loss, WeightedCrossEntropy) and loaded.distill_loss is None
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.allclose(loaded.score(wave), model.eval().score(wave), atol=1e-6)
