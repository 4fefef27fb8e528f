"""What an exported model file carries besides its graph, and how a file is recognised and
checked before anything of it runs.

The metadata is one JSON object: inside an ONNX file as the ``metadata_props`` entry
:data:`METADATA_KEY`, inside a TorchScript archive as the extra file ``extra/<METADATA_KEY>``.
It holds everything ``detect``, the streaming scorer and ``serve`` need without the checkpoint
(the preprocessing contract, the window, the calibration with its threshold and reject band, the
score's meaning) and two hashes: ``content_sha256`` of the model content without the metadata
(the serialized ONNX graph and weights with ``metadata_props`` emptied; the TorchScript
archive's records other than its extra files) and ``metadata_sha256`` of the metadata itself, so
that a file whose weights or whose settings were changed after export is refused at load.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

METADATA_KEY = "deepfake_detect.json"
FORMAT_VERSION = 1
"""Bumped when the metadata's meaning changes; a file of a newer version is refused."""
FORMATS = ("onnx", "torchscript")
INT8_MODES = ("dynamic", "static")
HASH_KEYS = ("content_sha256", "metadata_sha256")


class ExportError(ValueError):
    """An export that cannot be made, or an exported file that cannot be used (missing,
    truncated, corrupt, tampered, or not written by ``deepfake-detect export``)."""


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepfake-detect")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical(metadata: dict[str, Any]) -> bytes:
    """The metadata as hashed and stored: sorted keys, no hashes."""
    body = {k: v for k, v in metadata.items() if k not in HASH_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def seal(metadata: dict[str, Any], content_sha256: str) -> dict[str, Any]:
    """``metadata`` with both hashes set."""
    sealed = {k: v for k, v in metadata.items() if k not in HASH_KEYS}
    sealed["content_sha256"] = content_sha256
    sealed["metadata_sha256"] = hashlib.sha256(canonical(sealed)).hexdigest()
    return sealed


def dumps(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True)


def check(metadata_text: str | bytes | None, content_sha256: str, path: str | Path) -> dict:
    """The metadata of the file at ``path`` after checking it (one :class:`ExportError`
    naming the file otherwise)."""
    if metadata_text is None:
        raise ExportError(
            f"{path} was not exported by deepfake-detect (no {METADATA_KEY} metadata): export "
            "a checkpoint with `deepfake-detect export CKPT --format onnx|torchscript`"
        )
    try:
        metadata = json.loads(metadata_text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(
            f"{path}: its deepfake-detect metadata is not valid JSON ({exc})"
        ) from None
    if not isinstance(metadata, dict) or not all(k in metadata for k in HASH_KEYS):
        raise ExportError(f"{path}: its deepfake-detect metadata is incomplete (no content hash)")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ExportError(
            f"{path} was exported with metadata format {version!r}; this version of "
            f"deepfake-detect reads format {FORMAT_VERSION} or older: upgrade deepfake-detect"
        )
    if hashlib.sha256(canonical(metadata)).hexdigest() != metadata["metadata_sha256"]:
        raise ExportError(
            f"{path} was modified after export: its metadata does not match its hash (tampered)"
        )
    if content_sha256 != metadata["content_sha256"]:
        raise ExportError(
            f"{path} was modified after export: the model content does not match the hash "
            "recorded at export (tampered or damaged)"
        )
    return metadata


# -- ONNX -----------------------------------------------------------------------------------------
def onnx_content_sha256(model: Any) -> str:
    """sha256 of an ``onnx.ModelProto`` serialized with its ``metadata_props`` emptied."""
    saved = list(model.metadata_props)
    del model.metadata_props[:]
    try:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    finally:
        model.metadata_props.extend(saved)


def onnx_set_metadata(model: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """Seal ``metadata`` against ``model``'s content and store it there; returns it sealed."""
    sealed = seal(metadata, onnx_content_sha256(model))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, dumps(sealed)
    return sealed


def onnx_metadata_text(model: Any) -> str | None:
    return next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)


# -- TorchScript ----------------------------------------------------------------------------------
def _records(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return sorted(
        (i for i in archive.infolist() if "/extra/" not in f"/{i.filename}"),
        key=lambda i: i.filename.partition("/")[2],
    )


def torchscript_content_sha256(path_or_bytes: str | Path | bytes) -> str:
    """sha256 over the archive's records (name within the archive, then bytes) other than its
    extra files; the archive's top folder name is left out (it follows the file name)."""
    import io

    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    digest = hashlib.sha256()
    with zipfile.ZipFile(source) as archive:
        for info in _records(archive):
            name = info.filename.partition("/")[2]
            if name in (".data/version", "version", ".data/serialization_id"):
                continue  # differ between two saves of one module
            digest.update(name.encode() + b"\0" + archive.read(info) + b"\0")
    return digest.hexdigest()


def is_torchscript(path: str | Path) -> bool:
    """A zip archive with TorchScript code records (a training checkpoint has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{n}" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def sniff(path: str | Path) -> str | None:
    """``"onnx"``, ``"torchscript"``, ``"checkpoint"`` (a zip or pickle torch.save) or None,
    from the file's content: an ONNX ModelProto starts with field 1 (``ir_version``, tag
    0x08), a zip with ``PK``, a legacy torch.save with a pickle protocol byte 0x80."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "torchscript" if is_torchscript(path) else "checkpoint"
    if head[:1] == b"\x80":
        return "checkpoint"
    if head[:1] == b"\x08":
        return "onnx"
    return None
