"""Hear and see what an augmentation chain does to the training data, before training with it::

    python -m deepfake_detect.augment.preview augment=<chain> [key=value ...] [preview.<option>=...]

The overrides are ``train.py``'s (the same ``conf/train.yaml``: ``data=...``, ``seed=...``,
``augment=[rawboost,codec]``, ``augment.codec.p=1`` mean what they mean there; the default data
is the generated demo corpus, made on first use as a training run makes it). Options, with or
without a leading ``+``:

- ``preview.count`` (4): utterances, drawn from the training selections (``data.train``),
  bona fide and spoofed in turn;
- ``preview.out`` (``<paths.log_dir>/previews/augment/<entries>``, e.g.
  ``logs/previews/augment/rawboost+codec+telephone``): where the files go (same names are
  overwritten);
- ``preview.force`` (false): apply every transform (p = 1) so that each one is heard; by default
  each runs with its configured probability, as in training;
- ``preview.max_seconds`` (10): longer utterances are previewed from their start.

For each utterance ``NN_<utt_id>``: ``.orig.wav`` and ``.aug.wav`` (32-bit float, so that no
clipping hides what a transform did), ``.png`` (both spectrograms on one colour scale), and one
``index.md`` saying which transforms ran on which utterance. The transforms draw from
``numpy.random.default_rng([seed, NN])``: the same overrides write the same audio. SpecAugment
masks the model's features inside the net; it is listed, not rendered.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException
from scipy import signal

from deepfake_detect.augment.base import Augmentation, AugmentContext, OneOf
from deepfake_detect.augment.chain import build_augmentation
from deepfake_detect.augment.spec import SpecAugment
from deepfake_detect.data.audio import load_mono
from deepfake_detect.data.manifest import Utterance
from deepfake_detect.errors import ConfigError, find_user_error

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
USAGE = (
    "usage: python -m deepfake_detect.augment.preview augment=<chain> [key=value ...] "
    "[preview.count=4] [preview.out=DIR] [preview.force=true] [preview.max_seconds=10]"
)


@dataclass
class PreviewOptions:
    count: int = 4
    out: str | None = None
    force: bool = False
    max_seconds: float = 10.0


def _parse_option(name: str, value: str) -> Any:
    key = f"preview.{name}"
    if name == "out":
        if not value:
            raise ConfigError(f"{key}: expected a directory")
        return value
    if name == "force":
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value.lower() == "true"
    try:
        number = int(value) if name == "count" else float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{key}: must be a positive number, got {value!r}")
    return number


def split_overrides(argv: Sequence[str]) -> tuple[list[str], PreviewOptions]:
    """The Hydra overrides of ``conf/train.yaml`` and the ``preview.*`` options."""
    overrides: list[str] = []
    options = PreviewOptions()
    known = [field.name for field in fields(PreviewOptions)]
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not key.startswith("preview."):
            overrides.append(arg)
            continue
        name = key.removeprefix("preview.")
        if name not in known:
            choices = ", ".join(f"preview.{k}" for k in known)
            raise ConfigError(f"unknown option {key}; the options are {choices}")
        if not sep:
            raise ConfigError(f"{key}: expected {key}=<value>")
        setattr(options, name, _parse_option(name, value))
    return overrides, options


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, outside a Hydra run: nothing of the run directory
    resolves, so the data module writes no manifest copies (its manifest cache still works)."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.data.manifest_dir = None
    return cfg


def _entry_names(augment: Mapping[str, Any] | None) -> tuple[list[str], str | None]:
    """The names of the waveform entries (in order) and of the SpecAugment one, if any."""
    waves: list[str] = []
    masking = None
    for name, entry in (augment or {}).items():
        if entry is None:
            continue
        if isinstance(entry, (Mapping, DictConfig)):
            target = get_class(str(entry["_target_"]))
            is_masking = isinstance(target, type) and issubclass(target, SpecAugment)
        else:
            is_masking = isinstance(entry, SpecAugment)
        if is_masking:
            masking = str(name)
        else:
            waves.append(str(name))
    return waves, masking


def _force(transform: Augmentation) -> None:
    transform.p = 1.0
    if isinstance(transform, OneOf):
        for inner in transform.transforms:
            _force(inner)


def pick_rows(rows: Sequence[Utterance], count: int, seed: int) -> list[Utterance]:
    """``count`` rows drawn with ``seed``, bona fide and spoofed in turn while both last."""
    rng = np.random.default_rng(seed)
    pools = []
    for target in (1, 0):  # bona fide first
        members = [row for row in rows if row.target == target]
        pools.append([members[i] for i in rng.permutation(len(members))])
    picked: list[Utterance] = []
    while len(picked) < count and any(pools):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(pool.pop(0))
    return picked


def _file_stem(index: int, utt_id: str) -> str:
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', utt_id)}"


def write_spectrograms(
    path: Path, original: np.ndarray, augmented: np.ndarray, rate: int, titles: Sequence[str]
) -> None:
    """One PNG: the two waveforms' spectrograms (dB, one colour scale, 80 dB range)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def spectrogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nperseg = max(2, min(512, len(x)))
        f, t, power = signal.spectrogram(x, fs=rate, nperseg=nperseg, noverlap=nperseg * 3 // 4)
        return f, t, 10 * np.log10(power + 1e-12)

    panels = [spectrogram(original), spectrogram(augmented)]
    top = max(float(db.max()) for _, _, db in panels)
    fig = Figure(figsize=(10, 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    mesh = None
    for ax, (f, t, db), title in zip(axes, panels, titles, strict=True):
        mesh = ax.pcolormesh(t, f / 1000, db, vmin=top - 80, vmax=top, shading="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    fig.colorbar(mesh, ax=list(axes), label="dB")
    fig.savefig(path, dpi=100)


def preview(argv: Sequence[str]) -> Path:
    """Write the preview of the chain that ``argv`` (overrides and options) configures; returns
    the folder written."""
    overrides, options = split_overrides(argv)
    cfg = compose_train_config(overrides)
    augment = cfg.get("augment")
    waves, masking = build_augmentation(augment)
    names, masking_name = _entry_names(augment)
    if len(names) != len(waves):  # build_augmentation keeps the config's order
        raise RuntimeError(f"entries {names} do not match the built chain {waves}")
    if options.force:
        for transform in waves:
            _force(transform)
    chain = "+".join([*names, *([masking_name] if masking_name else [])]) or "none"
    out = Path(options.out or Path(cfg.paths.log_dir) / "previews" / "augment" / chain)

    datamodule = instantiate(cfg.data)
    if not datamodule.train_specs:
        raise ConfigError("data.train selects no training data to preview")
    rows = [row for spec in datamodule.train_specs for row in datamodule.rows(spec)]
    rate = datamodule.preprocessing.sample_rate
    context = AugmentContext(rate, rows)
    for transform in waves:
        transform.prepare(context)
    seed = int(cfg.get("seed") or 0)
    picked = pick_rows(rows, options.count, seed)
    max_samples = int(options.max_seconds * rate)

    out.mkdir(parents=True, exist_ok=True)
    named = list(zip(names, waves, strict=True))
    lines = [
        "# Augmentation preview",
        "",
        f"- chain: {', '.join(f'{n} = {w!r}' for n, w in named) or 'none'}",
    ]
    if masking is not None:
        lines.append(f"- {masking_name} = {masking!r}: masks the model's features, not rendered")
    lines += [
        f"- data: {', '.join(map(str, datamodule.train_specs))} ({len(rows)} training "
        f"utterances), {rate} Hz",
        f"- seed {seed}; "
        + (
            "every transform forced (p = 1)"
            if options.force
            else "each transform with its configured probability"
        ),
        f"- command: python -m deepfake_detect.augment.preview {shlex.join(argv)}",
        "",
        "| # | utterance | label | attack | seconds | ran | files |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(picked):
        frames = int(options.max_seconds * row.sample_rate) if row.sample_rate else -1
        wave = load_mono(row.path, rate, 0, frames)[:max_samples]
        rng = np.random.default_rng([seed, index])
        augmented, ran = wave, []
        for name, transform in named:
            result = transform(augmented, rate, rng)
            if result is not augmented:  # a transform returns its input when it does not run
                ran.append(name)
            augmented = result
        stem = _file_stem(index, row.utt_id)
        original_np = wave.numpy().astype(np.float32)
        augmented_np = augmented.numpy().astype(np.float32)
        sf.write(out / f"{stem}.orig.wav", original_np, rate, subtype="FLOAT")
        sf.write(out / f"{stem}.aug.wav", augmented_np, rate, subtype="FLOAT")
        ran_text = ", ".join(ran) or "none"
        write_spectrograms(
            out / f"{stem}.png",
            original_np,
            augmented_np,
            rate,
            [
                f"{row.utt_id} ({row.label}, {row.attack}): original",
                f"augmented: {ran_text}",
            ],
        )
        lines.append(
            f"| {index} | {row.utt_id} | {row.label} | {row.attack} | {len(wave) / rate:.2f} | "
            f"{ran_text} | {stem}.orig.wav, {stem}.aug.wav, {stem}.png |"
        )
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prints where it wrote (exit 0), or ``error: <message>`` (exit 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    try:
        with torch.inference_mode():
            out = preview(args)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {exc}\n{USAGE}", file=sys.stderr)
        return 1
    except Exception as exc:
        found = find_user_error(exc)
        if found is None:
            raise
        print(f"error: {found[1]}", file=sys.stderr)
        return 1
    print(f"augmentation preview written to {out} (see {out / 'index.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
