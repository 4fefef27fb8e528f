"""Save a Wav2Vec2 encoder to a local directory, for machines without hub access.

    # on a machine with internet: a local copy of the pretrained encoder
    python -m deepfake_detect.models.save_encoder facebook/wav2vec2-base /models/wav2vec2-base
    # anywhere: a tiny randomly initialised encoder (tests, smoke runs; not a pretrained model)
    python -m deepfake_detect.models.save_encoder --tiny /tmp/tiny-wav2vec2

Then point a model at it: ``model.net.source=/models/wav2vec2-base``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import Wav2Vec2Config, Wav2Vec2Model

from deepfake_detect.models.wav2vec2 import load_encoder

TINY_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32, 32],
    "conv_kernel": [10, 4, 4],
    "conv_stride": [5, 4, 4],
    "feat_extract_norm": "layer",
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "mask_time_prob": 0.0,
    "layerdrop": 0.0,
}
"""The tiny architecture of ``conf/model/w2v2_tiny.yaml`` (about 40 k parameters)."""


def save_encoder(out_dir: str | Path, source: str | None = None, seed: int = 0) -> Path:
    """Save ``source`` (hub id or directory), or a seeded random tiny encoder when None."""
    out_dir = Path(out_dir)
    if source is None:
        import torch

        torch.manual_seed(seed)
        encoder = Wav2Vec2Model(Wav2Vec2Config(**TINY_CONFIG))
    else:
        encoder = load_encoder(source, pretrained=True)
    encoder.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", help="hub id or directory of a Wav2Vec2 model")
    parser.add_argument("out_dir")
    parser.add_argument("--tiny", action="store_true", help="save a random tiny encoder instead")
    args = parser.parse_args(argv)
    if args.tiny == (args.source is not None):
        parser.error("give either a source or --tiny")
    print(f"saved to {save_encoder(args.out_dir, None if args.tiny else args.source)}")


if __name__ == "__main__":
    main()
