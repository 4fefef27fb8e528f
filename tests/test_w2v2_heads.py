"""Wav2Vec2 heads (linear, weighted layer sum, SSL-AASIST) and fine-tuning controls (staged
unfreezing, layer-wise learning-rate decay, gradient checkpointing), on tiny random encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import TINY_W2V2, assert_padding_invariant
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from deepfake_detect.callbacks.finetuning import StagedUnfreeze
from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.models.ssl_aasist import SSLGraphBackEnd, Wav2Vec2AASIST
from deepfake_detect.models.wav2vec2 import Wav2Vec2Classifier, Wav2Vec2Net

NETS = {
    "linear": "deepfake_detect.models.wav2vec2.Wav2Vec2Classifier",
    "aasist": "deepfake_detect.models.ssl_aasist.Wav2Vec2AASIST",
}
HEADS = [("linear", -1), ("linear", "weighted"), ("aasist", -1), ("aasist", "weighted")]
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}


def net_config(head: str = "linear", **kwargs: Any) -> dict[str, Any]:
    config = {**TINY_W2V2, **kwargs.pop("encoder", {})}
    return {"_target_": NETS[head], "pretrained": False, "config": config, **kwargs}


def make_net(head: str = "linear", seed: int = 0, **kwargs: Any) -> Wav2Vec2Net:
    torch.manual_seed(seed)
    return instantiate(net_config(head, **kwargs), _convert_="all")


def detector(net: dict[str, Any], freeze: str = "none", **kwargs: Any) -> SpoofDetector:
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
    return SpoofDetector(net=net, optimizer=optimizer, freeze=freeze, class_weights=None, **kwargs)


def encoder_state(net: Wav2Vec2Net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.encoder.named_parameters()}


def encoder_changed(net: Wav2Vec2Net, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], v) for k, v in net.encoder.named_parameters())


# -- heads --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("head", "layer"), HEADS)
def test_shapes_on_variable_length_batches(head: str, layer: int | str) -> None:
    net = make_net(head, layer=layer)
    lengths = torch.tensor([9000, 5000, 240])  # 240 samples: 2 frames, under the 3x3 pool
    wave = torch.randn(3, 9000) * (torch.arange(9000)[None, :] < lengths[:, None])
    for mode in (net.train(), net.eval()):
        logits = mode(wave, lengths)
        assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    assert net.eval()(torch.randn(1, 240)).shape == (1, 2)
    assert net.embed(wave, lengths).shape == (3, net.embedding_dim)


@pytest.mark.parametrize(("head", "layer"), HEADS)
def test_padded_item_scores_as_it_does_alone(head: str, layer: int | str) -> None:
    net = make_net(head, layer=layer).eval()
    if net.layer_weights is not None:
        net.layer_weights.data = torch.randn(net.layer_weights.shape)  # not the uniform start
    assert_padding_invariant(net)


def test_ssl_aasist_back_end_has_the_reference_layout() -> None:
    # Tak et al. 2022 on XLS-R's 1024-dim frames: linear 1024 -> 128, 42 spectral nodes of 64
    # channels, graph dims (64, 32), readout 5 x 32; counted by hand from the reference layers.
    backend = SSLGraphBackEnd(1024)
    assert backend.projection.out_features == 128
    assert backend.pos_spectral.shape == (1, 42, 64)
    assert backend.embedding_dim == 160 and backend.out_layer.in_features == 160
    assert sum(p.numel() for p in backend.parameters()) == 447_242
    frames = torch.randn(2, 50, 1024)
    mask = torch.arange(50)[None, :] < torch.tensor([[50], [20]])
    assert backend.eval().embed(frames, mask).shape == (2, 160)


def test_layer_sum_starts_uniform_and_follows_its_weights() -> None:
    net = make_net(layer="weighted").eval()
    layers = TINY_W2V2["num_hidden_layers"] + 1
    assert net.layer_weights.shape == (layers,)
    assert torch.allclose(torch.softmax(net.layer_weights, 0), torch.full((layers,), 1 / layers))
    wave = torch.randn(2, 6000)
    with torch.no_grad():
        states, _ = net.hidden_states(wave)
        assert torch.allclose(net.features(wave)[0], torch.stack(states).mean(0), atol=1e-6)
        net.layer_weights.copy_(torch.tensor([0.0, 30.0, 0.0]))
        assert torch.allclose(net.features(wave)[0], states[1], atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_layer_weights_train_while_the_frozen_encoder_stays_fixed(head: str) -> None:
    model = detector(net_config(head, layer="weighted"), freeze="all")
    net = model.net
    before, weights = encoder_state(net), net.layer_weights.detach().clone()
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    loss = torch.nn.functional.cross_entropy(
        model.scorer.outputs(torch.randn(4, 6000))[1], torch.tensor([0, 1] * 2)
    )
    loss.backward()
    optimizer.step()
    assert net.layer_weights.grad is not None and net.layer_weights.grad.abs().sum() > 0
    assert not torch.equal(net.layer_weights.detach(), weights)
    assert all(p.grad is None for p in net.encoder.parameters())
    assert not encoder_changed(net, before)


def test_bad_layer_is_rejected() -> None:
    for layer in ("mean", 3):  # tiny: hidden states 0..2
        with pytest.raises(ValueError, match="layer must be"):
            Wav2Vec2Classifier(pretrained=False, config=TINY_W2V2, layer=layer)


# -- layer-wise learning-rate decay -------------------------------------------------------------
def group_of(groups: list[dict[str, Any]], net: torch.nn.Module, name: str) -> str:
    param = dict(net.named_parameters())[name]
    return next(g["name"] for g in groups if any(p is param for p in g["params"]))


def test_llrd_groups_have_the_decayed_rates() -> None:
    model = detector(net_config(layer="weighted", llrd=0.5))
    optimizer = model.configure_optimizers()["optimizer"]
    groups = optimizer.param_groups
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == {
        "head": 1e-3,
        "encoder.layers.1": 5e-4,
        "encoder.layers.0": 2.5e-4,
        "encoder.embedding": 1.25e-4,
    }
    net = model.net
    assert group_of(groups, net, "layer_weights") == "head"
    assert group_of(groups, net, "head.weight") == "head"
    assert group_of(groups, net, "encoder.encoder.layers.1.attention.k_proj.weight") == (
        "encoder.layers.1"
    )
    assert group_of(groups, net, "encoder.encoder.layers.0.final_layer_norm.bias") == (
        "encoder.layers.0"
    )
    for below in (
        "encoder.feature_extractor.conv_layers.0.conv.weight",
        "encoder.feature_projection.projection.weight",
        "encoder.encoder.pos_conv_embed.conv.bias",
    ):
        assert group_of(groups, net, below) == "encoder.embedding"
    # every trainable parameter exactly once
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters() if p.requires_grad)


def test_llrd_leaves_frozen_parameters_out_and_places_a_final_layer_norm_on_top() -> None:
    net = make_net("aasist", llrd=0.5, encoder={"do_stable_layer_norm": True})
    net.set_freeze("feature_encoder")
    groups = net.param_groups(1.0)
    assert [g["name"] for g in groups] == [
        "head",
        "encoder.layers.1",
        "encoder.layers.0",
        "encoder.embedding",
    ]
    conv = dict(net.named_parameters())["encoder.feature_extractor.conv_layers.0.conv.weight"]
    assert not any(p is conv for g in groups for p in g["params"])
    assert group_of(groups, net, "encoder.encoder.layer_norm.weight") == "encoder.layers.1"
    assert group_of(groups, net, "backend.projection.weight") == "head"
    net.set_freeze("all")
    assert [g["name"] for g in net.param_groups(1.0)] == ["head"]


def test_llrd_default_keeps_one_rate() -> None:
    groups = make_net().param_groups(1e-3)
    assert {g["lr"] for g in groups} == {1e-3}


# -- gradient checkpointing ---------------------------------------------------------------------
def loss_and_grads(net: Wav2Vec2Net, wave: torch.Tensor) -> tuple[torch.Tensor, dict, int]:
    calls = []
    block = net.encoder.encoder.layers[0].feed_forward
    hook = block.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(1)
    loss = torch.nn.functional.cross_entropy(
        net(wave, torch.tensor([6000, 4000])), torch.tensor([0, 1])
    )
    loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, len(calls)


@pytest.mark.parametrize("head", ["linear", "aasist"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(head: str) -> None:
    plain = make_net(head, layer="weighted", encoder=NO_DROPOUT).train()
    checkpointed = make_net(
        head, layer="weighted", encoder=NO_DROPOUT, gradient_checkpointing=True
    ).train()
    checkpointed.load_state_dict(plain.state_dict())
    wave = torch.randn(2, 6000)
    loss, grads, calls = loss_and_grads(plain, wave)
    loss_ckpt, grads_ckpt, calls_ckpt = loss_and_grads(checkpointed, wave)
    assert (calls, calls_ckpt) == (1, 2)  # recomputed in the backward pass
    assert torch.allclose(loss, loss_ckpt, atol=1e-6)
    assert grads.keys() == grads_ckpt.keys()
    assert any(n.startswith("encoder.feature_extractor.") for n in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_ckpt[name], atol=1e-6, rtol=1e-4), name


def test_gradient_checkpointing_only_while_the_encoder_trains() -> None:
    net = make_net(gradient_checkpointing=True)
    layer = net.encoder.encoder.layers[0]
    assert layer.gradient_checkpointing
    net.set_freeze("all")
    assert not layer.gradient_checkpointing
    net.set_freeze("feature_encoder")
    assert layer.gradient_checkpointing
    assert not make_net().encoder.encoder.layers[0].gradient_checkpointing


# -- staged unfreezing --------------------------------------------------------------------------
def random_batches(batches: int = 2, size: int = 4, samples: int = 4000) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = [
        {
            "wave": 0.1 * torch.randn(size, samples, generator=generator),
            "lengths": torch.tensor([samples, samples - 1000] * (size // 2)),
            "label": torch.tensor([0, 1] * (size // 2)),
            "index": torch.arange(size),
            "skipped": [],
        }
        for _ in range(batches)
    ]
    return DataLoader(data, batch_size=None)


class Recorder(Callback):
    """Per epoch: the freeze mode and encoder mode during training, the optimizer's groups, and
    whether the encoder's weights changed."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.freeze_at_start = ""

    def on_train_start(self, trainer, pl_module) -> None:
        self.freeze_at_start = pl_module.net.freeze_mode

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            net = pl_module.net
            self.before = encoder_state(net)
            groups = trainer.optimizers[0].param_groups
            self.epochs.append(
                {
                    "freeze": net.freeze_mode,
                    "encoder_training": net.encoder.training,
                    "groups": {g.get("name"): g.get("initial_lr", g["lr"]) for g in groups},
                }
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs[-1]["changed"] = encoder_changed(pl_module.net, self.before)


def trainer(max_epochs: int, *callbacks: Callback, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=list(callbacks),
        **kwargs,
    )


SCHEDULER = {
    "_target_": "deepfake_detect.models.schedulers.warmup_linear_decay",
    "_partial_": True,
    "warmup_ratio": 0.5,
}


def test_staged_unfreezing_trains_the_encoder_from_epoch_n() -> None:
    model = detector(net_config(llrd=0.5), freeze="none", scheduler=SCHEDULER)
    recorder = Recorder()
    run = trainer(
        2,
        StagedUnfreeze(unfreeze_at_epoch=1, lr_ratio=0.25),
        recorder,
        enable_checkpointing=False,
    )
    run.fit(model, train_dataloaders=random_batches())
    frozen, unfrozen = recorder.epochs
    assert frozen == {
        "freeze": "all",
        "encoder_training": False,
        "groups": {"head": 1e-3},
        "changed": False,
    }
    assert unfrozen["freeze"] == "none" and unfrozen["encoder_training"]
    assert unfrozen["changed"]
    # the encoder joins at lr_ratio x the head's rate, layer-wise decayed (llrd 0.5)
    assert unfrozen["groups"] == {
        "head": 1e-3,
        "encoder.layers.1": 1.25e-4,
        "encoder.layers.0": 6.25e-5,
        "encoder.embedding": 3.125e-5,
    }
    # ... and follows the schedule as the head does
    groups = run.optimizers[0].param_groups
    factors = [g["lr"] / g["initial_lr"] for g in groups]
    assert factors == pytest.approx([factors[0]] * len(groups)) and factors[0] < 1


def test_staged_unfreezing_survives_a_resume(tmp_path: Path) -> None:
    def run(epochs: int, recorder: Recorder, ckpt: Path | None = None) -> L.Trainer:
        model = detector(net_config(), scheduler=SCHEDULER)
        save = ModelCheckpoint(dirpath=tmp_path, save_last=True)
        fit = trainer(epochs, StagedUnfreeze(unfreeze_at_epoch=1, lr_ratio=0.1), recorder, save)
        fit.fit(model, train_dataloaders=random_batches(), ckpt_path=ckpt)
        return fit

    first = run(2, Recorder())
    resumed_recorder = Recorder()
    resumed = run(3, resumed_recorder, tmp_path / "last.ckpt")
    (epoch,) = resumed_recorder.epochs
    assert resumed_recorder.freeze_at_start == "none"  # unfrozen by the restored state
    assert epoch["freeze"] == "none" and epoch["encoder_training"] and epoch["changed"]
    before, after = first.optimizers[0].param_groups, resumed.optimizers[0].param_groups
    names = ["head", "encoder.layers.1", "encoder.layers.0", "encoder.embedding"]
    assert [g["name"] for g in after] == [g["name"] for g in before] == names
    scheduler = resumed.lr_scheduler_configs[0].scheduler
    assert len(scheduler.lr_lambdas) == len(scheduler.base_lrs) == len(after)


def test_staged_unfreezing_needs_a_freezable_net() -> None:
    aasist = {"_target_": "deepfake_detect.models.aasist.AASIST"}
    model = SpoofDetector(net=aasist, optimizer={"_target_": "torch.optim.Adam", "_partial_": True})
    with pytest.raises(ValueError, match="encoder to freeze"):
        StagedUnfreeze().freeze_before_training(model)
    with pytest.raises(ValueError, match="mode must be"):
        StagedUnfreeze(mode="all")


# -- configs ------------------------------------------------------------------------------------
def test_new_configs_compose(compose_cfg, tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V2)).save_pretrained(tmp_path / "enc")
    local = f"model.net.source={tmp_path / 'enc'}"

    linear = compose_cfg("model=w2v2_linear", local).model
    assert linear.net.llrd == 1.0 and linear.net.gradient_checkpointing is False

    layersum = instantiate(compose_cfg("model=w2v2_layersum", local).model)
    assert isinstance(layersum.net, Wav2Vec2Classifier) and layersum.net.layer == "weighted"
    assert layersum.net.freeze_mode == "all"

    cfg = compose_cfg("model=w2v2_aasist", local, "model.net.llrd=0.9")
    aasist = instantiate(cfg.model)
    assert isinstance(aasist.net, Wav2Vec2AASIST) and aasist.net.freeze_mode == "none"
    assert aasist.net.backend.pos_spectral.shape == (1, 42, 64)
    assert aasist.net.rebuild_config({})["config"]["hidden_size"] == TINY_W2V2["hidden_size"]

    callbacks = compose_cfg("callbacks=staged_unfreeze").callbacks
    assert set(callbacks) == {
        "model_checkpoint",
        "last_checkpoint",
        "early_stopping",
        "rng_state",
        "epoch_log",
        "calibration",
        "staged_unfreeze",
    }
    assert isinstance(instantiate(callbacks.staged_unfreeze), StagedUnfreeze)
