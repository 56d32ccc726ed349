"""Read and verify checkpoint files: hashes, safetensors headers, state dicts.

Checkpoints are untrusted input. Safetensors files are parsed (header and
sizes) before any tensor is read; ``.pth``/``.bin`` files go only through
``torch.load(weights_only=True)``, never plain pickle.

>>> sd = read_state_dict("model.safetensors", expected_sha256=None)   # doctest: +SKIP
>>> diff = compare_state_dicts(model.state_dict(), sd)                 # doctest: +SKIP
>>> diff.ok                                                            # doctest: +SKIP
True
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ChecksumMismatchError, CorruptCheckpointError, StateDictMismatchError, UnsafeCheckpointError

__all__ = [
    "StateDictDiff",
    "check_state_dict",
    "compare_state_dicts",
    "detect_format",
    "is_sha256",
    "read_state_dict",
    "sha256_file",
    "validate_safetensors",
    "verify_sha256",
]

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors spec's own limit
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
_CHUNK = 1024 * 1024


def is_sha256(value: str | None) -> bool:
    """True when ``value`` is a lowercase 64-hex digest (how the Hub spells LFS ETags)."""
    return bool(value) and SHA256_RE.fullmatch(value) is not None  # type: ignore[arg-type]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str, *, source: str = "index",
                  hint: str | None = None) -> str:
    """Check that ``path`` hashes to ``expected`` (a full digest or a prefix, e.g. torch.hub's 8 digits).

    Returns the full digest; raises :class:`ChecksumMismatchError` otherwise.
    """
    expected = expected.strip().lower()
    actual = sha256_file(path)
    if not actual.startswith(expected) or not expected:
        what = "SHA-256 prefix" if len(expected) < 64 else "SHA-256"
        raise ChecksumMismatchError(
            f"{what} mismatch for {path}: expected {expected} (from the {source}), got {actual}",
            hint or "the file is corrupt or not the one the index names; delete it and download it again, "
                    "or fix the checksum in the model index if the upstream file really changed",
            path=str(path), expected=expected, actual=actual, source=source,
        )
    return actual


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"safetensors"`` or ``"torch"``, from the suffix, else from the first bytes."""
    name = str(path).lower()
    if name.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"  # zip archive (torch >= 1.6) or a legacy pickle stream
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise CorruptCheckpointError(
        f"{path}: not a safetensors file nor a torch checkpoint (unknown suffix and content)",
        "pass a .safetensors, .pth or .bin file", path=str(path),
    )


def validate_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a safetensors header and check every tensor fits the file, without reading tensor data.

    Returns the header (tensor name -> ``{"dtype", "shape", "data_offsets"}``,
    plus ``__metadata__`` when present). Raises :class:`CorruptCheckpointError`
    for a truncated file, a malformed header, or sizes that do not add up.
    """
    hint = "the file is truncated or corrupt; delete it and download it again"
    size = os.path.getsize(path)

    def bad(msg: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: invalid safetensors file: {msg}", hint, path=str(path))

    if size < 8:
        raise bad(f"only {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > _MAX_HEADER or 8 + n > size:
            raise bad(f"header claims {n} bytes but the file has {size - 8} after the length field")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_len = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            begin, end = int(begin), int(end)
            numel = math.prod(int(d) for d in shape)
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry {info!r}") from None
        if not 0 <= begin <= end:
            raise bad(f"tensor {name!r} has offsets [{begin}, {end}]")
        if dtype in _DTYPE_BYTES and end - begin != numel * _DTYPE_BYTES[dtype]:
            raise bad(f"tensor {name!r} {dtype}{tuple(shape)} needs {numel * _DTYPE_BYTES[dtype]} bytes, "
                      f"its offsets give {end - begin}")
        spans.append((begin, end, name))
    spans.sort()
    expected_end = 0
    for begin, end, name in spans:
        if begin != expected_end:
            raise bad(f"tensor {name!r} starts at {begin}, expected {expected_end} (gap or overlap)")
        expected_end = end
    if expected_end != data_len:
        verb = "truncated" if expected_end > data_len else "has trailing bytes"
        raise bad(f"{verb}: tensors need {expected_end} data bytes, the file holds {data_len}")
    return header


def _unwrap(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CorruptCheckpointError(
            f"{path}: holds no state dict (a {type(obj).__name__})",
            "pass a checkpoint saved with torch.save(model.state_dict()) or safetensors", path=str(path),
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CorruptCheckpointError(
            f"{path}: state dict entries that are not tensors: {', '.join(map(repr, bad[:5]))}",
            "pass a plain state dict of tensors", path=str(path),
        )
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str], *, expected_sha256: str | None = None,
                    sha256_source: str = "index") -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a ``{name: tensor}`` dict on the CPU, verified first.

    ``expected_sha256`` (full digest or prefix) is checked before the file is
    parsed. Safetensors headers are validated before tensors are read;
    ``.pth``/``.bin`` load with ``weights_only=True`` (a ``state_dict`` or
    ``model`` wrapper and a ``module.`` prefix are unwrapped).
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: no such file", "check the path", path=str(path))
    if expected_sha256:
        verify_sha256(path, expected_sha256, source=sha256_source)
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"{path}: empty file", "delete it and download it again", path=str(path))
    fmt = detect_format(path)
    if fmt == "safetensors":
        validate_safetensors(path)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CorruptCheckpointError(f"{path}: unreadable safetensors file ({exc})",
                                         "delete it and download it again", path=str(path)) from exc
    with open(path, "rb") as f:
        is_zip_magic = f.read(4) == b"PK\x03\x04"
    if is_zip_magic and not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"{path}: truncated or damaged torch checkpoint (the zip archive has no "
                                     "readable central directory)",
                                     "delete it and download it again", path=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it: it holds objects other than tensors "
            f"and plain containers ({str(exc).splitlines()[0]})",
            "cc_models never unpickles arbitrary objects; convert the checkpoint to safetensors "
            "(or a plain state dict) in a trusted environment",
            path=str(path),
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: unreadable torch checkpoint ({str(exc).splitlines()[0]})",
                                     "the file is truncated or corrupt; delete it and download it again",
                                     path=str(path)) from exc
    return _unwrap(obj, path)


@dataclass
class StateDictDiff:
    """How a checkpoint's keys and shapes differ from a model's."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def describe(self, limit: int = 5) -> str:
        """One line per kind of difference, naming the first ``limit`` keys of each."""

        def head(items: list[str]) -> str:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        parts = []
        if self.shape_mismatches:
            items = [f"{k} checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in self.shape_mismatches]
            parts.append(f"{len(items)} shape mismatch(es): {head(items)}")
        if self.missing:
            parts.append(f"{len(self.missing)} key(s) missing from the checkpoint: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) in the checkpoint: {head(self.unexpected)}")
        return "; ".join(parts) if parts else "state dicts match"


def compare_state_dicts(model_sd: Mapping[str, torch.Tensor],
                        checkpoint_sd: Mapping[str, torch.Tensor]) -> StateDictDiff:
    """Keys and shapes of ``checkpoint_sd`` against ``model_sd`` (order of the model's keys)."""
    diff = StateDictDiff()
    for key, ref in model_sd.items():
        if key not in checkpoint_sd:
            diff.missing.append(key)
        elif tuple(checkpoint_sd[key].shape) != tuple(ref.shape):
            diff.shape_mismatches.append((key, tuple(checkpoint_sd[key].shape), tuple(ref.shape)))
    diff.unexpected = [k for k in checkpoint_sd if k not in model_sd]
    return diff


def check_state_dict(model_sd: Mapping[str, torch.Tensor], checkpoint_sd: Mapping[str, torch.Tensor], *,
                     source: str = "checkpoint", limit: int = 5) -> StateDictDiff:
    """Raise :class:`StateDictMismatchError` unless keys and shapes match exactly."""
    diff = compare_state_dicts(model_sd, checkpoint_sd)
    if not diff.ok:
        raise StateDictMismatchError(
            f"{source} does not fit the model: {diff.describe(limit)}",
            "check that the model id, its architecture config and the checkpoint belong together "
            "(pass num_classes= to re-initialise only the classifier)",
            missing=diff.missing, unexpected=diff.unexpected, shape_mismatches=diff.shape_mismatches,
        )
    return diff
