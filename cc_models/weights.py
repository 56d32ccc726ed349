"""Load pretrained weights into a model, from the Hub or a local file; fetch release files.

``load_pretrained`` is what ``cc_models.from_index(..., pretrained=True)``
calls. Weights come from the entry's Hub location through ``huggingface_hub``
(verified, see :mod:`cc_models.hub`) or from ``checkpoint_path=``; either way
the file goes through safetensors or ``torch.load(weights_only=True)`` and its
keys and shapes are compared with the model's before ``load_state_dict``.

The original torch.hub-style release file (``name-<sha256[:8]>.pth``) is not
needed to build a model; the bench measures its size. ``fetch_release_file``
downloads it atomically and checks the SHA-256 prefix its name carries.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from .checkpoint import check_state_dict, read_state_dict, verify_sha256
from .errors import (
    ChecksumMismatchError,
    CorruptCheckpointError,
    OfflineError,
    WeightsError,
    WeightsNotFoundError,
)
from .hub import evict, fetch, hub_settings

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

__all__ = [
    "adapt_state_dict",
    "fetch_release_file",
    "find_release_file",
    "load_pretrained",
    "resolve_checkpoint",
]

logger = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 10.0
_LOCAL_CANDIDATES = ("model.safetensors", "pytorch_model.bin")


def _classifier_name(model: nn.Module) -> str:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("classifier"), str):
            return cfg["classifier"]
    return "classifier"


def _release_prefix(path: Path) -> str | None:
    from registry.entries import RELEASE_NAME_RE

    match = RELEASE_NAME_RE.match(path.name)
    return match["prefix"] if match else None


def _safetensors_alternative(filename: str) -> str | None:
    """timm's rule: ``pytorch_model.bin`` -> ``model.safetensors``, ``x.bin``/``x.pth`` -> ``x.safetensors``."""
    head, name = posixpath.split(filename)
    if name == "pytorch_model.bin":
        return posixpath.join(head, "model.safetensors")
    stem, ext = posixpath.splitext(name)
    if ext in (".bin", ".pth", ".pt"):
        return posixpath.join(head, stem + ".safetensors")
    return None


def _local_file(entry: "ModelEntry | None", checkpoint_path: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint_path).expanduser()
    if path.is_dir():
        names = [entry.hub.filename] if entry is not None and entry.hub is not None else []
        names += list(_LOCAL_CANDIDATES)
        if entry is not None and entry.release is not None:
            names.append(entry.release.filename)
        for name in dict.fromkeys(names):
            if (path / name).is_file():
                return path / name
        raise WeightsNotFoundError(f"no checkpoint in directory {path} (looked for {', '.join(dict.fromkeys(names))})",
                                   "pass checkpoint_path= to the checkpoint file itself", kind="file",
                                   filename=str(path))
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint_path {path} does not exist", "check the path", kind="file",
                                   filename=str(path))
    return path


def resolve_checkpoint(entry: "ModelEntry", *, checkpoint_path: str | os.PathLike[str] | None = None,
                       revision: str | None = None) -> tuple[Path, str | None]:
    """The verified local file to load for ``entry``, and the SHA-256 prefix still to check (if any).

    With ``checkpoint_path`` that is the local file (a directory is searched for
    the Hub filename, ``model.safetensors``, ``pytorch_model.bin`` and the
    release filename); a torch.hub-style name ``*-<8 hex>.pth`` is checked
    against its prefix. Otherwise the Hub file is fetched and verified,
    preferring a safetensors sibling when the index names a ``.bin``/``.pth``.
    """
    if checkpoint_path is not None:
        path = _local_file(entry, checkpoint_path)
        return path, _release_prefix(path)
    if entry.hub is None:
        raise WeightsNotFoundError(
            f"model {entry.id!r} names no Hub location in the index",
            "add a Hub block to its model-index entry, or pass checkpoint_path= to load a local file"
            + (f" (e.g. the release file, see fetch_release_file: {entry.release.filename})" if entry.release else ""),
            kind="entry")
    settings = hub_settings()
    alternative = _safetensors_alternative(entry.hub.filename)
    if alternative is not None:
        try:
            return fetch(entry.hub, filename=alternative, revision=revision, settings=settings).path, None
        except (WeightsNotFoundError, OfflineError) as exc:
            if isinstance(exc, WeightsNotFoundError) and exc.kind != "file":
                raise
            logger.info("no %s for %s (%s); falling back to %s", alternative, entry.id, exc.problem,
                        entry.hub.filename)
    return fetch(entry.hub, revision=revision, settings=settings).path, None


def adapt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Fit a checkpoint's classifier and buffers to ``model``; returns ``(state_dict, classifier_reset)``.

    * When the model's classifier has a different number of classes (including
      none, ``num_classes=0``), the checkpoint's classifier is dropped and the
      model's freshly initialised one kept. Only the output dimension may differ:
      a different input width is a real mismatch and is left for the check.
    * ``*.num_batches_tracked`` buffers a checkpoint lacks are kept from the model.
    """
    model_sd = model.state_dict()
    sd = dict(state_dict)
    head = _classifier_name(model)

    def is_head(key: str) -> bool:
        return key == head or key.startswith(head + ".")

    ck_head = {k for k in sd if is_head(k)}
    md_head = {k for k in model_sd if is_head(k)}
    differs = ck_head != md_head or any(tuple(sd[k].shape) != tuple(model_sd[k].shape) for k in ck_head & md_head)
    reset = False
    if ck_head and differs:
        only_classes_differ = ck_head == md_head and all(
            sd[k].dim() == model_sd[k].dim() and tuple(sd[k].shape[1:]) == tuple(model_sd[k].shape[1:])
            for k in ck_head
        )
        if not md_head or only_classes_differ:
            for k in ck_head:
                del sd[k]
            for k in md_head:
                sd[k] = model_sd[k]
            reset = True
    for key, value in model_sd.items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    return sd, reset


def load_pretrained(model: nn.Module, entry: "ModelEntry", *,
                    checkpoint_path: str | os.PathLike[str] | None = None, revision: str | None = None) -> None:
    """Load ``entry``'s pretrained weights into ``model`` in place.

    From the Hub (``entry.hub``, ``revision`` overriding its revision), or from
    ``checkpoint_path`` (a file or a directory). The file is verified (SHA-256,
    safetensors header), read without unpickling arbitrary objects, and its keys
    and shapes must match the model's exactly, except for a classifier with a
    different number of classes, which keeps its fresh initialisation.
    Raises a :class:`~cc_models.errors.WeightsError` subclass.
    """
    path, prefix = resolve_checkpoint(entry, checkpoint_path=checkpoint_path, revision=revision)
    try:
        state_dict = read_state_dict(path, expected_sha256=prefix, sha256_source="torch.hub filename prefix")
    except CorruptCheckpointError:
        if checkpoint_path is None:
            evict(path)  # a cached Hub file that does not parse must not be trusted next time
        raise
    state_dict, reset = adapt_state_dict(model, state_dict)
    check_state_dict(model.state_dict(), state_dict, source=f"checkpoint {path}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied; keys and shapes were checked above
        raise WeightsError(f"checkpoint {path} could not be loaded into {entry.id}: {exc}",
                           "check that the checkpoint belongs to this model") from exc
    if reset:
        logger.info("%s: loaded %s; classifier re-initialised for a different number of classes", entry.id, path)
    else:
        logger.info("%s: loaded %s", entry.id, path)


# --------------------------------------------------------------------------------------------------------------------
# release files (torch.hub style)


def _release(entry: "ModelEntry"):
    if entry.release is None:
        raise WeightsNotFoundError(f"model {entry.id!r} names no release file (torch.hub-style `name-<sha8>.pth`)",
                                   "add a Weights URL to its model-index entry", kind="entry")
    return entry.release


def find_release_file(entry: "ModelEntry", search_dir: str | os.PathLike[str] | None = None, *,
                      verify: bool = True) -> Path | None:
    """The entry's release file if it already lies in ``search_dir`` (or its ``checkpoints/``), else ``None``.

    ``search_dir`` defaults to torch.hub's directory. With ``verify`` the file's
    SHA-256 must start with the prefix in its name, else
    :class:`ChecksumMismatchError` (delete it and fetch it again).
    """
    release = _release(entry)
    root = Path(search_dir) if search_dir is not None else Path(torch.hub.get_dir())
    for candidate in (root / release.filename, root / "checkpoints" / release.filename):
        if candidate.is_file():
            if verify:
                verify_sha256(candidate, release.sha256_prefix, source="torch.hub filename prefix",
                              hint=f"delete {candidate} and fetch it again (cc_models.weights.fetch_release_file)")
            return candidate
    return None


def _progress(total: int | None, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not sys.stderr.isatty(), leave=False)


def fetch_release_file(entry: "ModelEntry", dest_dir: str | os.PathLike[str], *, url: str | None = None,
                       timeout: float = RELEASE_TIMEOUT_S) -> Path:
    """Download the entry's release file into ``dest_dir`` (torch.hub style) and return its path.

    A copy already in ``dest_dir`` whose SHA-256 matches the name's prefix is
    reused. Otherwise ``url`` (default ``entry.release.url``) is streamed to a
    temporary file in ``dest_dir``, its size and SHA-256 prefix are checked,
    and only then is it renamed into place: nothing half-written survives.
    ``HF_HUB_OFFLINE=1`` forbids the download. Raises :class:`OfflineError`
    (offline, unreachable, timeout after ``timeout`` s), :class:`WeightsNotFoundError`
    (404), :class:`CorruptCheckpointError` (truncated), :class:`ChecksumMismatchError`.
    """
    release = _release(entry)
    dest = Path(dest_dir)
    target = dest / release.filename
    if target.is_file():
        try:
            verify_sha256(target, release.sha256_prefix, source="torch.hub filename prefix")
            return target
        except ChecksumMismatchError:
            logger.warning("%s does not match its SHA-256 prefix; downloading it again", target)
    url = url or release.url
    if hub_settings().offline:
        raise OfflineError(f"offline mode is on (HF_HUB_OFFLINE=1) and {release.filename} is not in {dest}",
                           f"unset HF_HUB_OFFLINE, or download {url} yourself into {dest}", url=url)
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{release.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "cc-hub"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
                fd = -1
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                bar = _progress(total, release.filename)
                try:
                    while chunk := response.read(1024 * 1024):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
                out.flush()
                os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise WeightsNotFoundError(f"release file not found at {url} (HTTP {exc.code})",
                                           "check the Weights URL in the model index", kind="file", url=url,
                                           filename=release.filename) from exc
            if exc.code >= 500 or exc.code in (408, 429):
                raise OfflineError(f"{url} answered HTTP {exc.code}; the release file is not in {dest}",
                                   "retry later, or download it yourself into that folder", url=url) from exc
            raise WeightsError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}",
                               "check the Weights URL in the model index") from exc
        except http.client.IncompleteRead as exc:
            raise CorruptCheckpointError(
                f"download of {url} was cut short ({len(exc.partial)} more bytes read, "
                f"{exc.expected} still missing)", "nothing was kept; run again, and check your network",
                path=str(target)) from exc
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OfflineError(f"cannot reach {url} ({reason}); the release file is not in {dest}",
                               f"check your network and proxy settings, or download {url} yourself into {dest}",
                               url=url) from exc
        if total is not None and received != total:
            raise CorruptCheckpointError(f"download of {url} is truncated: {received} of {total} bytes",
                                         "nothing was kept; run again, and check your network", path=str(target))
        actual = digest.hexdigest()
        if not actual.startswith(release.sha256_prefix):
            raise ChecksumMismatchError(
                f"{url}: SHA-256 {actual} does not start with {release.sha256_prefix} (from the file name)",
                "nothing was kept; the server sent another file than the index names: check the Weights URL",
                path=str(target), expected=release.sha256_prefix, actual=actual, source="torch.hub filename prefix")
        os.replace(tmp, target)
        return target
    finally:
        if fd != -1:
            os.close(fd)
        tmp.unlink(missing_ok=True)
