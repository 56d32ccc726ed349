"""Weights from the Hugging Face Hub: ``hf_hub_download``, then verified; failures as typed errors.

huggingface_hub does the protocol, the cache, the retries (``Retry-After`` honoured) and reads
``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` as for any Hub user. On top of it:

* the file is checked against the index's SHA-256 when the index pins one (``cc-registry pin``), else
  against the digest the cache names its blob by (the LFS SHA-256, or a regular file's git blob id),
  with an :class:`UnpinnedWeightsWarning`. A blob whose bytes do not match its own name is evicted; an
  intact file that is not the pinned one is kept (offline or online, a good file is never evicted);
* each download has a deadline and a byte budget (:mod:`cc_models.download_budget`);
* leftover ``*.incomplete`` partial downloads that no process is writing are removed.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import download_budget
from .errors import (ChecksumMismatchError, CorruptCheckpointError, OfflineError, UnpinnedWeightsWarning,
                     WeightsError, WeightsNotFoundError)

if TYPE_CHECKING:  # pragma: no cover
    from registry import HubLocation

__all__ = ["HubFile", "evict", "fetch", "git_blob_id", "offline", "sha256_file"]

logger = logging.getLogger(__name__)
LOCAL = "or pass checkpoint_path= to load a local file"


@dataclass(frozen=True)
class HubFile:
    """A verified file in the Hub cache; ``verified_against`` names the digest it matched."""

    path: Path
    commit_hash: str | None
    sha256: str
    verified_against: str


def _digest(path: str | os.PathLike[str], algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    return _digest(path, "sha256")


def git_blob_id(path: str | os.PathLike[str]) -> str:
    """The git object id of a file (the Hub's ``ETag`` for files not in LFS)."""
    return _digest(path, "sha1", b"blob %d\0" % os.path.getsize(path))


def evict(path: str | os.PathLike[str]) -> None:
    """Remove a cached Hub file (snapshot link and blob); paths outside a Hub cache are left alone."""
    p = Path(path)
    if "snapshots" not in p.parts or not any(part.startswith("models--") for part in p.parts):
        return
    blob = Path(os.path.realpath(p))
    p.unlink(missing_ok=True)
    if blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)


def _clean_partials(repo_folder: Path, locks: Path) -> None:
    """Remove ``blobs/*.incomplete`` left by killed downloads, unless a live download holds its lock."""
    from filelock import FileLock, Timeout

    for part in repo_folder.glob("blobs/*.incomplete"):
        try:
            with FileLock(locks / f"{part.name.split('.')[0]}.lock").acquire(timeout=0):  # huggingface_hub's lock
                part.unlink(missing_ok=True)
                logger.info("removed the partial download %s", part)
        except (Timeout, OSError):
            continue  # a live download holds it, or the cache is read-only


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set since (a process may go offline later)."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES",
                                                                                                  "TRUE"}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _failed_request(chain: list[BaseException]):
    for e in chain:
        for get in (lambda: e.response.request, lambda: e.request):  # noqa: B023
            try:
                if (request := get()) is not None:
                    return request
            except (AttributeError, RuntimeError):
                pass
    return None


def _typed(exc: BaseException, label: str, endpoint: str, offline: bool) -> WeightsError | None:
    """``exc`` (huggingface_hub, httpx2, OSError) as a WeightsError naming the host that failed; None: not ours."""
    import httpx2
    from huggingface_hub import errors as hf

    chain = _chain(exc)
    request = _failed_request(chain)
    where = f"the Hub API at {endpoint}"
    if request is not None and urlsplit(str(request.url)).netloc != urlsplit(endpoint).netloc:
        where = f"the download host {request.url.scheme}://{request.url.netloc.decode()}"
    status = next((e.response.status_code for e in chain if getattr(e, "response", None) is not None), None)
    code = f" (HTTP {status})" if status else ""
    unreachable = f"check your network, proxy and HF_ENDPOINT; {LOCAL}"
    for e in chain:
        if isinstance(e, download_budget.BudgetExceeded) and e.setting is None:
            return CorruptCheckpointError(f"{label}: {e} ({where}); nothing was downloaded",
                                          "check the Hub Repo and Filename in the model index")
        if isinstance(e, download_budget.BudgetExceeded):
            timed_out = any(isinstance(c, httpx2.TimeoutException) for c in chain)
            reads = " after reads timed out (HF_HUB_DOWNLOAD_TIMEOUT s each)" if timed_out else ""
            return OfflineError(f"{label}: {e} ({where}{reads})", f"raise {e.setting} if the network is just slow; "
                                f"{LOCAL}", url=endpoint)
        if isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)) and offline:
            return OfflineError(f"offline mode is on (HF_HUB_OFFLINE=1) and {label} is not in the cache",
                                f"run once online to fill the cache, point HF_HOME at a cache that holds it, {LOCAL}",
                                url=endpoint)
        if isinstance(e, hf.GatedRepoError):
            return WeightsNotFoundError(f"Hub repo of {label} is gated at {endpoint}{code}", "request access on "
                                        f"its page and log in (`hf auth login` or HF_TOKEN), {LOCAL}", kind="repo")
        if isinstance(e, hf.RepositoryNotFoundError):
            return WeightsNotFoundError(f"Hub repo of {label} not found at {endpoint}{code}", "check the Hub Repo in "
                                        f"the model index, your token if it is private, and HF_ENDPOINT; {LOCAL}",
                                        kind="repo")
        if isinstance(e, hf.RevisionNotFoundError):
            revision = label.rsplit("@", 1)[-1]
            return WeightsNotFoundError(f"revision {revision!r} of {label} not found at {endpoint}{code}",
                                        "pass revision= (or fix the index's Hub Revision): a branch, tag or 40-hex "
                                        "commit", kind="revision")
        if isinstance(e, hf.RemoteEntryNotFoundError) or (status in (403, 404, 410) and "download host" in where):
            hint = (f"check the Hub Filename in the model index (and revision=); {LOCAL}" if "Hub API" in where
                    else f"the Hub points at a file its download host does not serve: retry later, {LOCAL}")
            return WeightsNotFoundError(f"{label}: not found at {where}{code}", hint, kind="file",
                                        url=str(request.url) if request is not None else endpoint)
        if isinstance(e, httpx2.TooManyRedirects):
            return OfflineError(f"{label}: redirect loop at {where}", unreachable, url=endpoint)
        if isinstance(e, httpx2.TimeoutException):
            setting = "HF_HUB_ETAG_TIMEOUT" if request is not None and request.method == "HEAD" else \
                "HF_HUB_DOWNLOAD_TIMEOUT"
            return OfflineError(f"{label}: {where} did not answer in time ({type(e).__name__})",
                                f"raise {setting} (seconds per read) if the network is slow; {unreachable}",
                                url=endpoint)
        if isinstance(e, (httpx2.TransportError, ConnectionError, hf.FileMetadataError)):
            return OfflineError(f"{label}: cannot reach {where} ({str(e).splitlines()[0][:200]})", unreachable,
                                url=endpoint)
        if isinstance(e, hf.HfHubHTTPError) and status is not None:
            if status in (401, 403):
                return WeightsNotFoundError(f"{label}: {where} refused access{code}", "log in (`hf auth login` or "
                                            f"HF_TOKEN) with access to the repo; {LOCAL}", kind="repo")
            return OfflineError(f"{label}: {where} answered{code}", f"retry later; {unreachable}", url=endpoint)
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return CorruptCheckpointError(f"{label}: the transfer from {where} was incomplete",
                                          "nothing was cached; run again, and check your network if it keeps failing")
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
            return OfflineError(f"{label}: cannot write to the Hub cache ({e})", "free space or point HF_HOME / "
                                f"HF_HUB_CACHE at a writable disk with room; {LOCAL}", path=e.filename)
    return None


def _download(repo_id: str, filename: str, revision: str, label: str, max_bytes: int | None) -> str:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    _clean_partials(Path(constants.HF_HUB_CACHE) / folder, Path(constants.HF_HUB_CACHE) / ".locks" / folder)
    local_only = offline()
    try:
        with download_budget.limits(max_bytes):
            return hf_hub_download(repo_id, filename, revision=revision, library_name="cc-hub",
                                   local_files_only=local_only)
    except Exception as exc:
        err = _typed(exc, label, constants.ENDPOINT, local_only)
        if err is None:
            raise
        if isinstance(err, OfflineError) and not local_only:  # e.g. past the deadline: a cached copy still serves
            try:
                return hf_hub_download(repo_id, filename, revision=revision, local_files_only=True)
            except Exception:
                pass
        raise err from exc


def _verify(path: Path, expected_sha256: str | None, label: str) -> HubFile:
    """Check ``path`` against the pin, else against its blob's name; evict it only when its bytes are corrupt."""
    blob = Path(os.path.realpath(path))
    actual = sha256_file(blob)
    named = blob.name.lower() if blob.parent.name == "blobs" else ""
    if len(named) == 64:
        intact, source = actual == named, "the Hub's LFS SHA-256 (X-Linked-Etag)"
    elif len(named) == 40:
        intact, source = git_blob_id(blob) == named, "the Hub's git blob id (ETag)"
    else:
        intact, source = True, None
    commit = path.parent.name if path.parent.parent.name == "snapshots" else None
    if expected_sha256 and actual == expected_sha256.lower():
        return HubFile(path, commit, actual, "model index")
    if not intact:
        evict(path)
        again = "unset HF_HUB_OFFLINE and run again" if offline() else "run again"
        raise ChecksumMismatchError(
            f"{label}: SHA-256 {actual} is not the file the Hub described ({source}: {named})",
            f"the bad copy was removed from the cache; {again} to download it afresh, and check HF_ENDPOINT / "
            "your mirror if it keeps failing", path=str(path), expected=named, actual=actual, source=source)
    if expected_sha256:
        raise ChecksumMismatchError(
            f"{label}: SHA-256 {actual} does not match {expected_sha256} (from the model index)",
            "the file is intact but not the pinned one (kept in the cache): pin the Hub Revision to the pinned "
            "commit, or re-pin with `cc-registry pin` if the upstream file really changed",
            path=str(path), expected=expected_sha256, actual=actual, source="model index")
    warnings.warn(f"{label}: the model index pins no SHA-256 for this file; checked only against "
                  f"{source or 'nothing'} (pin it with `cc-registry pin`)", UnpinnedWeightsWarning, stacklevel=4)
    return HubFile(path, commit, actual, source or "unverified")


def fetch(location: "HubLocation", *, revision: str | None = None, filename: str | None = None,
          max_bytes: int | None = None) -> HubFile:
    """Download (or find in the cache) the file ``location`` names, and verify it.

    ``revision``/``filename`` override the location's; its SHA-256 applies to its own filename only.
    ``max_bytes``: a larger file is refused before its download starts.
    A cached copy that fails verification is evicted and, online, downloaded once more.
    """
    from huggingface_hub import try_to_load_from_cache

    name = filename or location.filename
    rev = revision or location.revision or "main"
    expected = location.sha256 if name == location.filename else None
    label = f"{location.repo_id}/{name}@{rev}"
    cached = try_to_load_from_cache(location.repo_id, name, revision=rev)
    path = Path(_download(location.repo_id, name, rev, label, max_bytes))
    try:
        return _verify(path, expected, label)
    except ChecksumMismatchError:
        if not isinstance(cached, str) or path.exists() or offline():
            raise
        logger.warning("the cached %s was corrupt and is evicted; downloading it again", label)
    return _verify(Path(_download(location.repo_id, name, rev, label, max_bytes)), expected, label)
