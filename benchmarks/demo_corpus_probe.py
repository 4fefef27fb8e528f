"""Is the demo corpus learnable, and only through attack artefacts?

Generates the default demo corpus (into a temporary directory, or the given root) and prints:
generation time and size; counts; the EER of single trivial cues (duration, level, edge energy,
high-band energy) used as scores, which should be near chance (0.5); a logistic regression on
MFCC statistics; and a tiny Wav2Vec2 trained from scratch for a couple of minutes on the CPU.

    python benchmarks/demo_corpus_probe.py [ROOT] [--seed 0] [--train-seconds 120] [--lr 2e-3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.data.corpora.asvspoof2019 import ASVspoof2019
from deepfake_detect.data.demo import SAMPLE_RATE, ensure_demo_corpus
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.metrics import compute_eer

CROP = SAMPLE_RATE
EDGE = SAMPLE_RATE // 20


def either_sign_eer(bona: np.ndarray, spoof: np.ndarray) -> float:
    eer, _ = compute_eer(bona, spoof)
    return min(eer, 1 - eer)


def trivial_cues(wave: np.ndarray) -> dict[str, float]:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    return {
        "duration": len(wave) / SAMPLE_RATE,
        "rms_db": 10 * np.log10(np.mean(wave**2) + 1e-12),
        "first50ms_db": 10 * np.log10(np.mean(wave[:EDGE] ** 2) + 1e-12),
        "last50ms_db": 10 * np.log10(np.mean(wave[-EDGE:] ** 2) + 1e-12),
        "above4k": power[freqs > 4000].sum() / power.sum(),
    }


def eer_table(scores: np.ndarray, rows: list[Utterance], signed: bool = False) -> dict[str, float]:
    """EER overall and per attack (each attack against all bona fide)."""
    labels = np.array([r.label for r in rows])
    attacks = np.array([r.attack for r in rows])
    bona = scores[labels == "bonafide"]
    metric = compute_eer if signed else either_sign_eer

    def value(bona_scores: np.ndarray, spoof_scores: np.ndarray) -> float:
        result = metric(bona_scores, spoof_scores)
        return result[0] if signed else result

    table = {"all": value(bona, scores[labels == "spoof"])}
    for attack in sorted(set(attacks) - {"-"}):
        table[attack] = value(bona, scores[attacks == attack])
    return table


def format_table(table: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.3f}" for k, v in table.items())


def mfcc_stats(waves: list[np.ndarray]) -> torch.Tensor:
    mfcc = torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=20,
        melkwargs={"n_fft": 512, "hop_length": 160, "n_mels": 40},
    )
    feats = []
    with torch.inference_mode():
        for wave in waves:
            m = mfcc(torch.from_numpy(wave).float())
            feats.append(torch.cat([m.mean(dim=1), m.std(dim=1)]))
    return torch.stack(feats)


def logistic_regression(x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> torch.nn.Linear:
    model = torch.nn.Linear(x.shape[1], 1)
    weight = torch.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (1 - y).sum()))
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = model(x).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weight)
        loss = loss + 1e-3 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


class TinyW2V2Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32, 32, 32),
            conv_kernel=(10, 4, 4),
            conv_stride=(5, 4, 4),
            feat_extract_norm="layer",
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            do_stable_layer_norm=False,
            mask_time_prob=0.0,
        )
        self.encoder = Wav2Vec2Model(config)
        self.head = torch.nn.Linear(config.hidden_size, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(wave).last_hidden_state
        return self.head(hidden.mean(dim=1))


def normalise(wave: torch.Tensor) -> torch.Tensor:
    return (wave - wave.mean(dim=-1, keepdim=True)) / (wave.std(dim=-1, keepdim=True) + 1e-5)


def train_tiny_w2v2(
    waves: list[np.ndarray],
    targets: np.ndarray,
    seconds: float,
    lr: float,
    seed: int,
    max_steps: int | None = None,
) -> tuple[TinyW2V2Classifier, int]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TinyW2V2Classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    counts = np.bincount(targets, minlength=2)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(len(targets) / (2 * counts), dtype=torch.float32)
    )
    model.train()
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < seconds and steps != max_steps:
        idx = rng.choice(len(waves), size=16, replace=False)
        batch = []
        for i in idx:
            offset = rng.integers(0, len(waves[i]) - CROP + 1)
            batch.append(waves[i][offset : offset + CROP])
        x = normalise(torch.from_numpy(np.stack(batch)).float())
        loss = loss_fn(model(x), torch.from_numpy(targets[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    return model, steps


def bona_fide_scores(model: TinyW2V2Classifier, waves: list[np.ndarray]) -> np.ndarray:
    model.eval()
    scores = []
    with torch.inference_mode():
        for wave in waves:
            logits = model(normalise(torch.from_numpy(wave).float()[None]))[0]
            scores.append(float(logits[1] - logits[0]))
    return np.array(scores)


def read(rows: list[Utterance]) -> list[np.ndarray]:
    return [sf.read(r.path, dtype="float32")[0] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="where to generate (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seconds", type=float, default=120.0, help="0: skip")
    parser.add_argument("--steps", type=int, help="stop after this many steps (time permitting)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        start = time.perf_counter()
        ensure_demo_corpus(root, seed=args.seed)
        print(f"generation (or cache check): {time.perf_counter() - start:.1f} s")
        size = subprocess.run(["du", "-sh", str(root)], capture_output=True, text=True)
        data_bytes = sum(p.stat().st_size for p in root.rglob("*.flac"))
        print(f"size: {data_bytes / 1e6:.1f} MB of FLAC, {size.stdout.split()[0]} on disk")

        corpus = ASVspoof2019(root)
        rows = {split: corpus.load(split) for split in corpus.splits}
        waves = {split: read(split_rows) for split, split_rows in rows.items()}

    for split, split_rows in rows.items():
        counts = Counter(r.attack for r in split_rows)
        speakers = len({r.speaker for r in split_rows})
        hours = sum(len(w) for w in waves[split]) / SAMPLE_RATE / 3600
        print(
            f"{split}: {len(split_rows)} files, {speakers} speakers, {hours * 60:.1f} min; "
            + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        )

    all_rows = [r for split in rows for r in rows[split]]
    all_waves = [w for split in rows for w in waves[split]]
    cues = [trivial_cues(w) for w in all_waves]
    print("\ntrivial cues, all splits, min(EER, 1-EER) (chance = 0.5):")
    for name in cues[0]:
        values = np.array([c[name] for c in cues])
        print(f"  {name:13s} {format_table(eer_table(values, all_rows))}")

    targets = {s: np.array([r.target for r in rows[s]]) for s in rows}
    feats = {s: mfcc_stats(waves[s]) for s in rows}
    mean, std = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    lr_model = logistic_regression(
        (feats["train"] - mean) / std, torch.from_numpy(targets["train"]).float()
    )
    print("\nMFCC mean+std logistic regression, EER:")
    for split in ("dev", "eval"):
        with torch.inference_mode():
            scores = lr_model((feats[split] - mean) / std).squeeze(1).numpy()
        print(f"  {split:5s} {format_table(eer_table(scores, rows[split], signed=True))}")

    if args.train_seconds <= 0:
        return
    start = time.perf_counter()
    model, steps = train_tiny_w2v2(
        waves["train"], targets["train"], args.train_seconds, args.lr, args.seed, args.steps
    )
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(
        f"\ntiny Wav2Vec2 ({params / 1e3:.1f} k params) from scratch, lr {args.lr:g}, "
        f"{steps} steps x 16 x 1 s in {elapsed:.0f} s on {args.threads} threads, EER:"
    )
    for split in ("dev", "eval"):
        scores = bona_fide_scores(model, waves[split])
        print(f"  {split:5s} {format_table(eer_table(scores, rows[split], signed=True))}")


if __name__ == "__main__":
    main()
