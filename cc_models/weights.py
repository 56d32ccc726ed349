"""Load pretrained weights into a model, from the Hub or a local file; fetch torch.hub-style release files.

``load_pretrained`` is what ``cc_models.from_index(..., pretrained=True)`` calls: the file comes from
the entry's Hub location (verified, :mod:`cc_models.hub`) or from ``checkpoint_path=``, is read by
:mod:`cc_models.checkpoint` (keys, shapes and dtypes checked before tensors are read where the format
allows) and only then loaded. A release file ``name-<sha256[:8]>.pth`` is fetched with
``torch.hub.download_url_to_file(..., hash_prefix=...)``.
"""
from __future__ import annotations

import http.client
import logging
import os
import posixpath
import socket
import sys
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from .checkpoint import check_state_dict, read_state_dict
from .errors import (ChecksumMismatchError, CorruptCheckpointError, OfflineError, StateDictMismatchError,
                     WeightsNotFoundError)
from .hub import evict, fetch, offline, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

__all__ = ["fetch_release_file", "find_release_file", "load_pretrained", "resolve_checkpoint"]

logger = logging.getLogger(__name__)
_LOCAL_CANDIDATES = ("model.safetensors", "pytorch_model.bin")


def _check_prefix(path: Path, prefix: str, hint: str) -> None:
    actual = sha256_file(path)
    if not actual.startswith(prefix):
        raise ChecksumMismatchError(f"{path}: SHA-256 {actual} does not start with {prefix} (from its name)", hint,
                                    path=str(path), expected=prefix, actual=actual, source="torch.hub filename prefix")


def _local_file(entry: "ModelEntry", checkpoint_path: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint_path).expanduser()
    if path.is_dir():
        names = [entry.hub.filename] if entry.hub is not None else []
        names += [*_LOCAL_CANDIDATES] + ([entry.release.filename] if entry.release is not None else [])
        for name in dict.fromkeys(names):
            inside = not posixpath.isabs(name) and ".." not in name.split("/")  # an index name never leaves DIR
            if inside and (path / name).is_file():
                return path / name
        raise WeightsNotFoundError(f"no checkpoint in directory {path} (looked for {', '.join(dict.fromkeys(names))})",
                                   "pass checkpoint_path= to the checkpoint file itself", kind="file")
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint_path {path} is not a file", "check the path", kind="file")
    return path


def resolve_checkpoint(entry: "ModelEntry", *, checkpoint_path: str | os.PathLike[str] | None = None,
                       revision: str | None = None, max_bytes: int | None = None) -> Path:
    """The verified local file to load for ``entry``: ``checkpoint_path`` (a file, or a directory searched for
    the Hub filename, ``model.safetensors``, ``pytorch_model.bin``, the release filename), else the Hub file,
    preferring a safetensors sibling of a ``.bin``/``.pth`` as timm does."""
    from registry.entries import RELEASE_NAME_RE

    if checkpoint_path is not None:
        path = _local_file(entry, checkpoint_path)
        if match := RELEASE_NAME_RE.match(path.name):
            _check_prefix(path, match["prefix"], "the file is corrupt or not the one its name says; fetch it again")
        return path
    if entry.hub is None:
        raise WeightsNotFoundError(f"model {entry.id!r} names no Hub location in the index", "add a Hub block to its "
                                   "model-index entry, or pass checkpoint_path= to load a local file", kind="entry")
    head, name = posixpath.split(entry.hub.filename)
    stem, ext = posixpath.splitext(name)
    if ext in (".bin", ".pth", ".pt"):
        sibling = posixpath.join(head, "model.safetensors" if name == "pytorch_model.bin" else stem + ".safetensors")
        try:
            return fetch(entry.hub, filename=sibling, revision=revision, max_bytes=max_bytes).path
        except (WeightsNotFoundError, OfflineError) as exc:
            if getattr(exc, "kind", "file") != "file":
                raise
            logger.info("no %s for %s (%s); falling back to %s", sibling, entry.id, exc.problem, entry.hub.filename)
    return fetch(entry.hub, revision=revision, max_bytes=max_bytes).path


def _classifier_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    return cfg["classifier"] if isinstance(cfg, Mapping) and isinstance(cfg.get("classifier"), str) else "classifier"


def load_pretrained(model: nn.Module, entry: "ModelEntry", *,
                    checkpoint_path: str | os.PathLike[str] | None = None, revision: str | None = None) -> None:
    """Load ``entry``'s weights into ``model`` in place (from the Hub, or ``checkpoint_path``: file or directory).

    Keys, shapes and dtypes must match the model's exactly, except a classifier with another number of
    classes (it keeps its fresh initialisation) and ``num_batches_tracked`` buffers a checkpoint lacks.
    Nothing is loaded unless everything fits. Raises a :class:`~cc_models.errors.WeightsError` subclass.
    """
    model_sd = model.state_dict()
    # A checkpoint for this model is at most 8x its float32 size (EMA, optimizer state) plus 16 MiB.
    max_bytes = 32 * sum(v.numel() for v in model_sd.values()) + (16 << 20)
    path = resolve_checkpoint(entry, checkpoint_path=checkpoint_path, revision=revision, max_bytes=max_bytes)
    head = _classifier_name(model)
    own: dict[str, torch.Tensor] = {}  # tensors the model keeps

    def fit(skeleton: Mapping[str, torch.Tensor]) -> list[str]:
        sd = dict(skeleton)
        ck_head = {k for k in sd if k == head or k.startswith(head + ".")}
        md_head = {k for k in model_sd if k == head or k.startswith(head + ".")}
        differs = ck_head != md_head or any(sd[k].shape != model_sd[k].shape for k in ck_head & md_head)
        only_classes_differ = ck_head == md_head and all(
            sd[k].dim() == model_sd[k].dim() and sd[k].shape[1:] == model_sd[k].shape[1:] for k in ck_head)
        if ck_head and differs and (not md_head or only_classes_differ):
            for k in ck_head:
                del sd[k]
            own.update({k: model_sd[k] for k in md_head})
        own.update({k: v for k, v in model_sd.items() if k.endswith("num_batches_tracked") and k not in sd})
        check_state_dict(model_sd, {**sd, **own}, source=f"checkpoint {path}")
        return list(sd)

    try:
        state_dict = read_state_dict(path, max_bytes=max_bytes, fit=fit)
    except CorruptCheckpointError:
        if checkpoint_path is None:
            evict(path)  # a cached Hub file that does not parse must not be trusted next time
        raise
    try:
        model.load_state_dict({**state_dict, **own}, strict=True)
    except RuntimeError as exc:  # keys, shapes and dtypes were checked: a model-specific refusal
        raise StateDictMismatchError(f"checkpoint {path} could not be loaded into {entry.id}: {exc}",
                                     "check that the checkpoint belongs to this model") from exc
    logger.info("%s: loaded %s", entry.id, path)


def _release(entry: "ModelEntry"):
    if entry.release is None:
        raise WeightsNotFoundError(f"model {entry.id!r} names no release file (torch.hub-style `name-<sha8>.pth`)",
                                   "add a Weights URL to its model-index entry", kind="entry")
    return entry.release


def find_release_file(entry: "ModelEntry", search_dir: str | os.PathLike[str] | None = None, *,
                      verify: bool = True) -> Path | None:
    """The entry's release file in ``search_dir`` (default torch.hub's dir) or its ``checkpoints/``, else None.

    With ``verify`` its SHA-256 must start with the prefix in its name, else ChecksumMismatchError.
    """
    release = _release(entry)
    root = Path(search_dir) if search_dir is not None else Path(torch.hub.get_dir())
    for candidate in (root / release.filename, root / "checkpoints" / release.filename):
        if candidate.is_file():
            if verify:
                _check_prefix(candidate, release.sha256_prefix, f"delete {candidate} and fetch it again "
                              "(cc_models.weights.fetch_release_file)")
            return candidate
    return None


def fetch_release_file(entry: "ModelEntry", dest_dir: str | os.PathLike[str], *, url: str | None = None,
                       timeout: float | None = None) -> Path:
    """Download the entry's release file into ``dest_dir`` (reusing a valid copy) and return its path.

    torch.hub writes a temporary file and renames it only once complete and matching the SHA-256
    prefix. ``timeout``: seconds per read (default ``HF_HUB_DOWNLOAD_TIMEOUT``); ``HF_HUB_OFFLINE=1``
    forbids the download. Raises OfflineError, WeightsNotFoundError, CorruptCheckpointError,
    ChecksumMismatchError.
    """
    from huggingface_hub import constants

    release = _release(entry)
    dest = Path(dest_dir)
    target = dest / release.filename
    if target.is_file():
        if sha256_file(target).startswith(release.sha256_prefix):
            return target
        logger.warning("%s does not match its SHA-256 prefix; downloading it again", target)
    url = url or release.url
    if offline():
        raise OfflineError(f"offline mode is on (HF_HUB_OFFLINE=1) and {release.filename} is not in {dest}",
                           f"unset HF_HUB_OFFLINE, or download {url} yourself into {dest}", url=url)
    dest.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout or constants.HF_HUB_DOWNLOAD_TIMEOUT)  # urlopen in torch.hub takes no timeout
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=release.sha256_prefix,
                                       progress=sys.stderr.isatty())
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise WeightsNotFoundError(f"release file not found at {url} (HTTP {exc.code})",
                                       "check the Weights URL in the model index", kind="file", url=url) from None
        raise OfflineError(f"{url} answered HTTP {exc.code}", f"retry later, or download it yourself into {dest}",
                           url=url) from None
    except http.client.IncompleteRead as exc:
        raise CorruptCheckpointError(f"download of {url} was cut short ({exc})", "nothing was kept; run again",
                                     path=str(target)) from None
    except RuntimeError as exc:  # torch.hub's "invalid hash value"
        raise ChecksumMismatchError(f"{url}: {exc}", "nothing was kept; the server sent another file than the index "
                                    "names: check the Weights URL", path=str(target), expected=release.sha256_prefix,
                                    source="torch.hub filename prefix") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise OfflineError(f"cannot reach {url} or write {dest} ({reason})", "check your network (a read waits "
                           f"HF_HUB_DOWNLOAD_TIMEOUT s), the disk, or download {url} yourself into {dest}",
                           url=url) from None
    finally:
        socket.setdefaulttimeout(previous)
    return target
