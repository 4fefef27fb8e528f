"""The Wav2Vec2 classifier: loading (offline, local), freeze modes, padding, rebuilding."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_W2V2, assert_padding_invariant
from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.models.module import SpoofDetector
from deepfake_detect.models.wav2vec2 import (
    ARCHITECTURES,
    EncoderLoadError,
    Wav2Vec2Classifier,
    _hub_reachable,
    load_encoder,
    masked_pool,
)

OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2}


def tiny_net(**kwargs) -> dict:
    return {
        "_target_": "deepfake_detect.models.wav2vec2.Wav2Vec2Classifier",
        "pretrained": False,
        "config": dict(TINY_W2V2),
        **kwargs,
    }


def one_step(model: SpoofDetector) -> dict[str, torch.Tensor]:
    """Snapshot every parameter, take one optimiser step on random audio, return the snapshot."""
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    wave = torch.randn(4, 8000)
    loss = torch.nn.functional.cross_entropy(
        model.scorer.outputs(wave)[1], torch.tensor([0, 1, 0, 1])
    )
    loss.backward()
    optimizer.step()
    return before


def changed(model: SpoofDetector, before: dict[str, torch.Tensor], prefix: str) -> list[bool]:
    return [
        not torch.equal(before[name], p.detach())
        for name, p in model.named_parameters()
        if name.startswith(prefix)
    ]


def test_frozen_encoder_gets_no_gradient_and_stays_unchanged() -> None:
    model = SpoofDetector(net=tiny_net(), optimizer=OPTIMIZER, freeze="all")
    before = one_step(model)
    encoder = [p for n, p in model.named_parameters() if n.startswith("scorer.net.encoder.")]
    assert encoder and all(p.grad is None and not p.requires_grad for p in encoder)
    assert not any(changed(model, before, "scorer.net.encoder."))
    assert all(changed(model, before, "scorer.net.head."))
    # the encoder stays in eval mode (no dropout) while the module trains
    assert model.training and not model.net.encoder.training


def test_frozen_encoder_builds_no_autograd_graph() -> None:
    net = Wav2Vec2Classifier(pretrained=False, config=TINY_W2V2)
    net.set_freeze("all")
    states, _ = net.hidden_states(torch.randn(2, 4000))
    assert not any(s.requires_grad for s in states)
    assert net(torch.randn(2, 4000)).requires_grad  # the head still trains


def test_feature_encoder_freeze_trains_only_the_transformer() -> None:
    model = SpoofDetector(net=tiny_net(), optimizer=OPTIMIZER, freeze="feature_encoder")
    before = one_step(model)
    assert not any(changed(model, before, "scorer.net.encoder.feature_extractor."))
    assert all(changed(model, before, "scorer.net.encoder.encoder.layers.0.attention."))
    assert all(changed(model, before, "scorer.net.head."))


def test_finetune_changes_the_whole_encoder() -> None:
    model = SpoofDetector(net=tiny_net(), optimizer=OPTIMIZER, freeze="none")
    before = one_step(model)
    assert all(changed(model, before, "scorer.net.encoder.feature_extractor."))
    assert all(changed(model, before, "scorer.net.encoder.encoder.layers."))


def test_unknown_freeze_mode() -> None:
    with pytest.raises(ValueError, match="freeze must be one of"):
        SpoofDetector(net=tiny_net(), optimizer=OPTIMIZER, freeze="half")


def test_padding_does_not_change_scores() -> None:
    torch.manual_seed(0)
    net = Wav2Vec2Classifier(pretrained=False, config=TINY_W2V2).eval()
    assert_padding_invariant(net)


def test_pooling_ignores_padded_frames() -> None:
    frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_pool(frames, mask, "mean").item() == 2.0
    assert masked_pool(frames, mask, "max").item() == 3.0
    assert masked_pool(frames, mask, "stats").tolist() == [[2.0, 1.0]]


def test_hidden_states_of_every_layer_are_reachable() -> None:
    net = Wav2Vec2Classifier(pretrained=False, config=TINY_W2V2, layer=1)
    states, mask = net.hidden_states(torch.randn(3, 8000), torch.tensor([8000, 4000, 2000]))
    assert len(states) == TINY_W2V2["num_hidden_layers"] + 1
    assert states[0].shape == (3, mask.shape[1], 32)
    assert mask.sum(dim=1).tolist() == [99, 49, 24]  # 80x down-sampling, valid frames only
    assert net.embed(torch.randn(3, 8000)).shape == (3, 32)


def test_offline_hub_id_fails_fast_with_instructions() -> None:
    start = time.perf_counter()
    with pytest.raises(EncoderLoadError, match=r"model\.net\.source=") as err:
        Wav2Vec2Classifier(source="facebook/wav2vec2-base", pretrained=True)
    assert time.perf_counter() - start < 10
    assert "deepfake_detect.models.save_encoder facebook/wav2vec2-base" in str(err.value)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The network blocked (every connection and name lookup refused and recorded), and
    HF_HUB_OFFLINE unset: the code must find out by itself that the hub is out of reach."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:1]))
        raise OSError("network blocked by the test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_untrained_wav2vec2_base_is_built_without_the_network(no_network: list[str]) -> None:
    net = Wav2Vec2Classifier(source="facebook/wav2vec2-base", pretrained=False)
    assert sum(p.numel() for p in net.encoder.parameters()) == 94_371_712  # wav2vec2-base
    assert no_network == []
    # the rebuild config stored in checkpoints is the same architecture
    assert (
        net.encoder.config.to_dict()
        == Wav2Vec2Config(**ARCHITECTURES["facebook/wav2vec2-base"]).to_dict()
    )


def test_shipped_xls_r_architecture_has_its_published_size() -> None:
    with torch.device("meta"):
        encoder = load_encoder("facebook/wav2vec2-xls-r-300m", pretrained=False)
    assert sum(p.numel() for p in encoder.parameters()) == 315_438_720
    assert encoder.config.do_stable_layer_norm and encoder.config.feat_extract_norm == "layer"


def test_pretrained_hub_id_fails_within_seconds_without_network(no_network: list[str]) -> None:
    start = time.perf_counter()
    with pytest.raises(EncoderLoadError, match="network blocked by the test") as err:
        Wav2Vec2Classifier(source="facebook/wav2vec2-base", pretrained=True)
    assert time.perf_counter() - start < 5
    assert no_network, "the hub was probed"
    message = str(err.value)
    assert "python -m deepfake_detect.models.save_encoder facebook/wav2vec2-base" in message
    assert "model.net.pretrained=false" in message


def test_a_stalled_hub_probe_gives_up_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    why = _hub_reachable(timeout=0.5)
    assert time.perf_counter() - start < 2
    assert why is not None and "within" in why


def test_unknown_hub_id_from_scratch_names_the_settings(no_network: list[str]) -> None:
    with pytest.raises(EncoderLoadError, match=r"model\.net\.config") as err:
        Wav2Vec2Classifier(source="someone/unknown-wav2vec2", pretrained=False)
    assert "facebook/wav2vec2-base" in str(err.value)  # the known ids are listed


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError, match="encoder directory not found"):
        Wav2Vec2Classifier(source=str(tmp_path / "missing"), pretrained=True)


def test_local_directory_loads_the_saved_weights(tmp_path: Path) -> None:
    saved = Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V2))
    saved.save_pretrained(tmp_path / "tiny")
    net = Wav2Vec2Classifier(source=str(tmp_path / "tiny"), pretrained=True)
    loaded = net.encoder.state_dict()
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, loaded[name]), name


def test_checkpoint_rebuilds_without_the_source(tmp_path: Path) -> None:
    Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V2)).save_pretrained(tmp_path / "enc")
    net = {
        "_target_": "deepfake_detect.models.wav2vec2.Wav2Vec2Classifier",
        "source": str(tmp_path / "enc"),
        "pretrained": True,
    }
    model = SpoofDetector(net=net, optimizer=OPTIMIZER, freeze="all")
    path = tmp_path / "m.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": "2.6.0",
        },
        path,
    )
    (tmp_path / "enc" / "model.safetensors").unlink()  # the source is gone
    restored = SpoofDetector.load_from_checkpoint(path)
    wave = torch.randn(1, 4000)
    with torch.inference_mode():
        assert torch.equal(model.eval()(wave), restored.eval()(wave))
    assert restored.net.freeze_mode == "all"


def test_save_encoder_cli_writes_a_loadable_tiny_encoder(tmp_path: Path, capsys) -> None:
    from deepfake_detect.models.save_encoder import main

    main(["--tiny", str(tmp_path / "tiny")])
    assert "saved to" in capsys.readouterr().out
    net = Wav2Vec2Classifier(source=str(tmp_path / "tiny"), pretrained=True)
    assert net.encoder.config.hidden_size == TINY_W2V2["hidden_size"]
    with pytest.raises(SystemExit):
        main(["facebook/wav2vec2-base", "--tiny", str(tmp_path / "x")])
