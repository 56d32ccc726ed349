"""Read a checkpoint file as untrusted input: bounded, never unpickling objects, checked against the model.

* Size: at most ``max_bytes`` on disk (the caller derives it from the model), and for a zip-based
  ``.pth`` the uncompressed total too, at most ``CC_CHECKPOINT_MAX_RATIO`` (default 10) times the
  archive: both from ``stat`` and the zip's central directory, before anything is decompressed.
* Safetensors through ``safe_open`` (which validates the header and offsets); ``.pth``/``.bin`` only
  through ``torch.load(weights_only=True)``, memory-mapped when the archive stores its entries.
* ``fit(skeleton)`` sees every tensor's key, shape and dtype before data is read where the format
  allows (safetensors: meta tensors from the header; mapped ``.pth``: pages not yet touched).
* Every tensor must be dense, hold data, and every floating-point value must be finite.
"""
from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .errors import CorruptCheckpointError, StateDictMismatchError, UnsafeCheckpointError

__all__ = ["RATIO_ENV", "check_state_dict", "read_state_dict"]

RATIO_ENV, DEFAULT_RATIO = "CC_CHECKPOINT_MAX_RATIO", 10.0
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64}
AGAIN = "the file is truncated or corrupt; delete it and download it again"


def _ratio() -> float:
    raw = os.environ.get(RATIO_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_RATIO
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise CorruptCheckpointError(f"{RATIO_ENV}={raw!r} is not a number >= 1", f"set {RATIO_ENV} or unset it")
    return value


def _bounded(path: Path, max_bytes: int) -> str:
    """Check sizes before reading; the format: "zip" (memory-mappable), "zipped" (compressed), "pickle" or "other"."""
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: not a regular file", "pass a checkpoint file", path=str(path))
    size = path.stat().st_size
    if size == 0 or size > max_bytes:
        raise CorruptCheckpointError(f"{path}: {size:,} bytes, outside (0, {max_bytes:,}] for this model",
                                     "pass this model's checkpoint", path=str(path))
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return "pickle" if magic[:1] == b"\x80" else "other"
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptCheckpointError(f"{path}: truncated or damaged torch checkpoint ({exc})", AGAIN,
                                     path=str(path)) from None
    unpacked = sum(i.file_size for i in infos)
    ratio = _ratio()
    if unpacked > max_bytes or unpacked > ratio * size:
        raise CorruptCheckpointError(f"{path}: unpacks to {unpacked:,} bytes from {size:,} (limits: {max_bytes:,} "
                                     f"bytes for this model, {RATIO_ENV}={ratio:g} times the file)",
                                     "torch.save never compresses; this archive is not a plain checkpoint",
                                     path=str(path))
    return "zip" if all(i.compress_type == zipfile.ZIP_STORED for i in infos) else "zipped"


def _torch_load(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path}: torch.load(weights_only=True) refused it: it holds objects other than tensors and plain "
            f"containers ({str(exc).splitlines()[0]})", "cc_models never unpickles arbitrary objects; convert the "
            "checkpoint to safetensors in a trusted environment", path=str(path)) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: unreadable torch checkpoint ({str(exc).splitlines()[0]})", AGAIN,
                                     path=str(path)) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            if isinstance(obj.get(key), Mapping) and obj[key]:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in obj.items()):
        raise CorruptCheckpointError(f"{path}: holds no state dict of named tensors (a {type(obj).__name__})",
                                     "pass a checkpoint saved with torch.save(model.state_dict()) or safetensors",
                                     path=str(path))
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    for key, value in obj.items():
        if value.layout != torch.strided or value.is_meta or value.is_quantized:
            raise CorruptCheckpointError(f"{path}: tensor {key!r} is {value.layout}, device {value.device}: "
                                         "not plain dense weights", "pass a checkpoint of dense tensors",
                                         path=str(path))
    return dict(obj)


def read_state_dict(path: str | os.PathLike[str], *, max_bytes: int,
                    fit: Callable[[Mapping[str, torch.Tensor]], Iterable[str]] = lambda sd: sd,
                    ) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (CPU) that ``fit`` selects, after it accepted their keys, shapes and dtypes.

    Raises CorruptCheckpointError / UnsafeCheckpointError, or whatever ``fit`` raises.
    """
    path = Path(path)
    kind = _bounded(path, max_bytes)
    if path.suffix == ".safetensors" or kind == "other":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                names = list(f.keys())
                strip = 7 if names and all(k.startswith("module.") for k in names) else 0  # saved from DDP
                skeleton = {}
                for key in names:
                    piece = f.get_slice(key)
                    if piece.get_dtype() not in _SAFETENSORS_DTYPES:
                        raise StateDictMismatchError(f"{path}: tensor {key!r} has dtype {piece.get_dtype()}",
                                                     "pass a floating-point checkpoint of this model")
                    skeleton[key[strip:]] = torch.empty(piece.get_shape(), device="meta",
                                                        dtype=_SAFETENSORS_DTYPES[piece.get_dtype()])
                state_dict = {key: f.get_tensor(names[0][:strip] + key) for key in fit(skeleton)}
        except (SafetensorError, OSError) as exc:
            what = "safetensors file" if path.suffix == ".safetensors" else "torch checkpoint nor safetensors file"
            raise CorruptCheckpointError(f"{path}: not a readable {what} ({exc})", AGAIN, path=str(path)) from exc
    else:
        loaded = _torch_load(path, mmap=kind == "zip")
        state_dict = {key: loaded[key] for key in fit(loaded)}
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CorruptCheckpointError(f"{path}: NaN or Inf in {len(bad)} tensor(s): {', '.join(bad[:5])}",
                                     "these are not trained weights; " + AGAIN, path=str(path))
    return state_dict


def check_state_dict(model_sd: Mapping[str, torch.Tensor], checkpoint_sd: Mapping[str, torch.Tensor], *,
                     source: str = "checkpoint", limit: int = 5) -> None:
    """Raise StateDictMismatchError unless keys, shapes and kinds of dtype (float / integer) match the model's."""
    missing = [k for k in model_sd if k not in checkpoint_sd]
    unexpected = [k for k in checkpoint_sd if k not in model_sd]
    shapes = [(k, tuple(checkpoint_sd[k].shape), tuple(v.shape)) for k, v in model_sd.items()
              if k in checkpoint_sd and tuple(checkpoint_sd[k].shape) != tuple(v.shape)]
    dtypes = [f"{k} {checkpoint_sd[k].dtype} for {v.dtype}" for k, v in model_sd.items() if k in checkpoint_sd
              and (checkpoint_sd[k].is_floating_point(), checkpoint_sd[k].is_complex()) != (v.is_floating_point(),
                                                                                          v.is_complex())]

    def head(items: list) -> str:
        return ", ".join(map(str, items[:limit])) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

    parts = [f"{len(shapes)} shape mismatch(es): " + head([f"{k} checkpoint {c} vs model {m}" for k, c, m in shapes])
             ] if shapes else []
    parts += [f"{len(dtypes)} dtype mismatch(es): {head(dtypes)}"] if dtypes else []
    parts += [f"{len(missing)} key(s) missing from the checkpoint: {head(missing)}"] if missing else []
    parts += [f"{len(unexpected)} unexpected key(s) in the checkpoint: {head(unexpected)}"] if unexpected else []
    if parts:
        raise StateDictMismatchError(
            f"{source} does not fit the model: {'; '.join(parts)}", "check that the model id, its architecture and "
            "the checkpoint belong together (num_classes= re-initialises only the classifier)",
            missing=missing, unexpected=unexpected, shape_mismatches=shapes)
