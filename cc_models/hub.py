"""Download weights from the Hugging Face Hub through ``huggingface_hub``, verified.

Everything network-related goes through ``huggingface_hub`` so that
``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens,
revisions and the shared cache behave as every Hub user expects. The only
difference: this module reads those variables *when called* (``huggingface_hub``
reads them once, at import), so a process can change them between calls.

Integrity, on top of what ``huggingface_hub`` does:

* the file's SHA-256 is checked against the index's ``Hub.SHA256`` when the
  index records one, else against the SHA-256 the Hub reports for LFS files
  (``X-Linked-Etag``, which is also the name of the cached blob);
* safetensors files must parse (header, offsets, total size) before use;
* a file that fails either check is removed from the cache, blob *and*
  snapshot link, so no later (offline) call trusts it. A bad copy that came
  from the cache is re-downloaded once when online.

>>> f = fetch(entry.hub)                 # doctest: +SKIP
>>> f.path, f.verified_against           # doctest: +SKIP
(PosixPath('.../snapshots/<commit>/model.safetensors'), 'Hub LFS SHA-256 (X-Linked-Etag)')
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import detect_format, is_sha256, sha256_file, validate_safetensors
from .errors import ChecksumMismatchError, CorruptCheckpointError, OfflineError, WeightsError, WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from registry import HubLocation

__all__ = ["HubFile", "HubSettings", "download", "evict", "fetch", "hub_settings", "verify"]

logger = logging.getLogger(__name__)

LIBRARY_NAME = "cc-hub"
_TRUE = {"1", "ON", "YES", "TRUE"}


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in _TRUE


@dataclass(frozen=True)
class HubSettings:
    """The Hub-related environment, resolved at call time."""

    endpoint: str
    cache_dir: str
    offline: bool
    etag_timeout: float

    @property
    def offline_reason(self) -> str:
        return "offline mode is on (HF_HUB_OFFLINE=1)"


def hub_settings() -> HubSettings:
    """Read ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_HUB_ETAG_TIMEOUT`` now.

    Precedence matches ``huggingface_hub.constants``; when a variable is unset
    the value ``huggingface_hub`` computed at import is used.
    """
    from huggingface_hub import constants

    env = os.environ
    endpoint = (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    if env.get("HF_HUB_CACHE"):
        cache = env["HF_HUB_CACHE"]
    elif env.get("HUGGINGFACE_HUB_CACHE"):
        cache = env["HUGGINGFACE_HUB_CACHE"]
    elif env.get("HF_HOME"):
        cache = os.path.join(env["HF_HOME"], "hub")
    else:
        cache = constants.HF_HUB_CACHE
    cache = os.path.expandvars(os.path.expanduser(cache))
    if "HF_HUB_OFFLINE" in env or "TRANSFORMERS_OFFLINE" in env:
        offline = _is_true(env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE"))
    else:
        offline = False
    # huggingface_hub blocks every request once it was imported in offline mode.
    offline = offline or bool(constants.HF_HUB_OFFLINE)
    try:
        etag_timeout = float(env.get("HF_HUB_ETAG_TIMEOUT") or constants.DEFAULT_ETAG_TIMEOUT)
    except ValueError:
        etag_timeout = float(constants.DEFAULT_ETAG_TIMEOUT)
    return HubSettings(endpoint=endpoint, cache_dir=cache, offline=offline, etag_timeout=etag_timeout)


@dataclass(frozen=True)
class HubFile:
    """A file resolved to the local Hub cache.

    ``server_sha256`` is the LFS SHA-256 the server reported for this call
    (``None`` offline or for non-LFS files); ``from_cache`` says the file was
    already cached before this call; ``verified_sha256``/``verified_against``
    are set by :func:`verify`.
    """

    path: Path
    repo_id: str
    filename: str
    revision: str
    commit_hash: str | None
    server_sha256: str | None
    from_cache: bool
    settings: HubSettings
    verified_sha256: str | None = None
    verified_against: str | None = None

    @property
    def blob_sha256(self) -> str | None:
        """The cached blob's name when it is a SHA-256 (huggingface_hub names LFS blobs by their digest)."""
        if self.path.is_symlink():
            name = Path(os.path.realpath(self.path)).name
            return name if is_sha256(name) else None
        return None

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}@{self.revision}"


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level exception classes of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        errors.extend(getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type))
    return tuple(errors)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _offline_error(label: str, settings: HubSettings, reason: str) -> OfflineError:
    if settings.offline:
        hint = ("unset HF_HUB_OFFLINE and run once with network access to fill the cache, "
                "or point HF_HOME / HF_HUB_CACHE at a cache that holds the file, "
                "or pass checkpoint_path= to load a local file")
    else:
        hint = (f"check your network and HF_ENDPOINT (now {settings.endpoint}); "
                "or point HF_HOME / HF_HUB_CACHE at a cache that holds the file, "
                "or pass checkpoint_path= to load a local file")
    return OfflineError(f"{reason}, and {label} is not in the cache at {settings.cache_dir}", hint,
                        url=settings.endpoint)


def _translate(exc: BaseException, repo_id: str, filename: str, revision: str,
               settings: HubSettings) -> WeightsError | None:
    """Map a huggingface_hub / transport exception onto a :class:`WeightsError` (``None``: not ours)."""
    from huggingface_hub import errors as hf

    label = f"{repo_id}/{filename}@{revision}"
    where = f"at {settings.endpoint}"
    status = _status(exc)
    code = f" (HTTP {status})" if status else ""
    if isinstance(exc, hf.GatedRepoError):
        return WeightsNotFoundError(
            f"Hub repo {repo_id!r} is gated {where}{code}",
            "request access on the repo's page and log in (`hf auth login` or HF_TOKEN), "
            "or pass checkpoint_path= to load a local file",
            kind="repo", repo_id=repo_id, filename=filename, revision=revision)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return WeightsNotFoundError(
            f"Hub repo {repo_id!r} not found {where}{code}",
            "check the Hub repo id in the model index; if the repo is private, log in (`hf auth login` or "
            "HF_TOKEN); if HF_ENDPOINT is set, check it points at the right Hub or mirror; "
            "or pass checkpoint_path= to load a local file",
            kind="repo", repo_id=repo_id, filename=filename, revision=revision)
    if isinstance(exc, hf.RevisionNotFoundError):
        return WeightsNotFoundError(
            f"revision {revision!r} of Hub repo {repo_id!r} not found {where}{code}",
            "pass revision= (or fix the index's Hub revision) as a branch, tag or full 40-hex commit "
            "that exists in the repo",
            kind="revision", repo_id=repo_id, filename=filename, revision=revision)
    if isinstance(exc, hf.LocalEntryNotFoundError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, hf.LocalEntryNotFoundError):
            refined = _translate(cause, repo_id, filename, revision, settings)
            if isinstance(refined, OfflineError):
                return refined
        reason = settings.offline_reason if settings.offline else f"cannot reach the Hub at {settings.endpoint}"
        return _offline_error(label, settings, reason)
    if isinstance(exc, hf.EntryNotFoundError):
        return WeightsNotFoundError(
            f"file {filename!r} not found in Hub repo {repo_id!r} at revision {revision!r} {where}{code}",
            "check the Hub filename in the model index (and revision=), or pass checkpoint_path= to load a "
            "local file",
            kind="file", repo_id=repo_id, filename=filename, revision=revision)
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return _offline_error(label, settings, settings.offline_reason)
    if isinstance(exc, _network_errors()):
        return _offline_error(label, settings, f"cannot reach the Hub at {settings.endpoint} ({exc.__class__.__name__})")
    if isinstance(exc, hf.HfHubHTTPError):
        if status is not None and (status >= 500 or status in (408, 429)):
            return _offline_error(label, settings, f"the Hub at {settings.endpoint} answered HTTP {status}")
        return WeightsError(f"the Hub at {settings.endpoint} refused {label}{code}: {str(exc).splitlines()[0]}",
                            "check HF_ENDPOINT and your token (`hf auth login` or HF_TOKEN)")
    metadata_error = getattr(hf, "FileMetadataError", None)
    if metadata_error is not None and isinstance(exc, metadata_error):
        return _offline_error(label, settings, f"{settings.endpoint} did not answer like a Hugging Face Hub "
                                               f"({str(exc).splitlines()[0]})")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return CorruptCheckpointError(
            f"download of {label} from {settings.endpoint} was incomplete: {str(exc).splitlines()[0]}",
            "nothing was cached; run again, and check your network, proxy and HF_ENDPOINT if it keeps failing")
    return None


def _commit_from_path(path: Path) -> str | None:
    parts = path.parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def _cached_copy(repo_id: str, filename: str, revision: str, settings: HubSettings) -> str | None | object:
    from huggingface_hub import try_to_load_from_cache

    try:
        return try_to_load_from_cache(repo_id, filename, cache_dir=settings.cache_dir, revision=revision)
    except Exception:  # a malformed cache is not a reason to fail here
        return None


def download(repo_id: str, filename: str, *, revision: str | None = None, settings: HubSettings | None = None,
             token: bool | str | None = None) -> HubFile:
    """Resolve ``repo_id/filename@revision`` to a path in the Hub cache, downloading it if needed.

    No verification here (see :func:`verify` / :func:`fetch`). Online, one HEAD
    request first learns the server's LFS SHA-256 and fails fast when the Hub
    is unreachable (falling back to the cache, as huggingface_hub does, but
    without its retry back-off). Raises :class:`WeightsNotFoundError`,
    :class:`OfflineError` or :class:`CorruptCheckpointError`.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    settings = settings or hub_settings()
    revision = revision or "main"
    label = f"{repo_id}/{filename}@{revision}"
    before = _cached_copy(repo_id, filename, revision, settings)
    no_exist = not isinstance(before, str) and before is not None
    before_real = os.path.realpath(before) if isinstance(before, str) else None

    def resolve(local_only: bool) -> str:
        try:
            return hf_hub_download(repo_id, filename, revision=revision, cache_dir=settings.cache_dir,
                                   endpoint=settings.endpoint, etag_timeout=settings.etag_timeout, token=token,
                                   local_files_only=local_only, library_name=LIBRARY_NAME)
        except Exception as exc:
            err = _translate(exc, repo_id, filename, revision, settings)
            if err is None:
                raise
            raise err from exc

    server_sha: str | None = None
    meta = None
    if settings.offline:
        if no_exist:
            raise WeightsNotFoundError(
                f"file {filename!r} not found in Hub repo {repo_id!r} at revision {revision!r} "
                f"(the cache at {settings.cache_dir} remembers the Hub reporting it missing)",
                "check the Hub filename in the model index, or unset HF_HUB_OFFLINE to ask the Hub again",
                kind="file", repo_id=repo_id, filename=filename, revision=revision)
        path = resolve(local_only=True)
    else:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=settings.endpoint)
        unreachable: BaseException | None = None
        try:
            meta = get_hf_file_metadata(url, token=token, timeout=settings.etag_timeout, endpoint=settings.endpoint,
                                        library_name=LIBRARY_NAME)
            etag = (meta.etag or "").lower()
            server_sha = etag if is_sha256(etag) else None
            if meta.commit_hash is None and hasattr(hf_errors, "FileMetadataError"):
                # huggingface_hub refuses such an answer too: the endpoint is not a Hub
                raise hf_errors.FileMetadataError(f"{url} answered without an X-Repo-Commit header")
        except Exception as exc:
            err = _translate(exc, repo_id, filename, revision, settings)
            if err is None:
                raise
            if isinstance(err, WeightsNotFoundError) and err.kind == "file":
                resolve(local_only=False)  # lets huggingface_hub record the miss in the cache's .no_exist
            if not isinstance(err, OfflineError):
                raise err from exc
            unreachable = exc
        if unreachable is not None:
            logger.info("Hub unreachable (%s); looking for %s in the cache", unreachable, label)
            try:
                path = resolve(local_only=True)
            except OfflineError as err:
                raise _translate(unreachable, repo_id, filename, revision, settings) or err from unreachable
        else:
            path = resolve(local_only=False)
    p = Path(path)
    commit = _commit_from_path(p)
    if server_sha is not None and meta is not None and meta.commit_hash and commit and meta.commit_hash != commit:
        server_sha = None  # the branch moved between the probe and the download: that digest is another file's
    return HubFile(path=p, repo_id=repo_id, filename=filename, revision=revision,
                   commit_hash=commit, server_sha256=server_sha,
                   from_cache=before_real is not None and before_real == os.path.realpath(p), settings=settings)


def evict(path: str | os.PathLike[str]) -> list[Path]:
    """Remove a cached Hub file: its snapshot entry and the blob it links to.

    Acts only on paths inside a huggingface_hub cache (``.../snapshots/<commit>/...``
    of a ``models--*`` folder, blobs in that folder's ``blobs/``); anything else
    is left alone. Returns the paths removed.
    """
    p = Path(path)
    parts = p.parts
    if "snapshots" not in parts:
        return []
    i = len(parts) - 1 - parts[::-1].index("snapshots")
    repo_dir = Path(*parts[:i])
    if not repo_dir.name.startswith(("models--", "datasets--", "spaces--")):
        return []
    removed: list[Path] = []
    blob = Path(os.path.realpath(p)) if p.is_symlink() else None
    if p.is_symlink() or p.exists():
        p.unlink()
        removed.append(p)
    if blob is not None and blob.parent == Path(os.path.realpath(repo_dir / "blobs")) and blob.exists():
        blob.unlink()
        removed.append(blob)
    return removed


def verify(file: HubFile, expected_sha256: str | None = None) -> HubFile:
    """Check a downloaded file before anyone trusts it; evict it from the cache if it fails.

    The SHA-256 is checked against ``expected_sha256`` (the index's) when
    given, else against the server's LFS SHA-256, else against the blob's
    digest name. Safetensors files must also parse. Raises
    :class:`ChecksumMismatchError` / :class:`CorruptCheckpointError`.
    """
    if expected_sha256:
        expected, source = expected_sha256.strip().lower(), "model index"
    elif file.server_sha256:
        expected, source = file.server_sha256, "Hub LFS SHA-256 (X-Linked-Etag)"
    elif file.blob_sha256:
        expected, source = file.blob_sha256, "cached blob name (the Hub's LFS SHA-256)"
    else:
        expected, source = None, None
    removed_hint = (f"the bad copy was removed from the cache ({file.settings.cache_dir}); run again to download "
                    "it afresh.")
    actual: str | None = None
    if expected:
        actual = sha256_file(file.path)
        if actual != expected:
            evict(file.path)
            fix = ("update the index's Hub SHA256 only if the upstream file really changed"
                   if source == "model index" else "the server sent bytes that do not match its own digest")
            raise ChecksumMismatchError(
                f"{file.label}: SHA-256 {actual} does not match {expected} (from the {source})",
                f"{removed_hint} If it keeps failing, the file at {file.settings.endpoint} is not the one "
                f"expected: check HF_ENDPOINT / your mirror; {fix}",
                path=str(file.path), expected=expected, actual=actual, source=source)
    try:
        if detect_format(file.path) == "safetensors":
            validate_safetensors(file.path)
    except CorruptCheckpointError as exc:
        evict(file.path)
        raise CorruptCheckpointError(f"{file.label}: {exc.problem}", f"{removed_hint} If it keeps failing, the "
                                     f"file at {file.settings.endpoint} itself is broken",
                                     path=str(file.path)) from exc
    return replace(file, verified_sha256=actual, verified_against=source)


def fetch(location: "HubLocation", *, revision: str | None = None, filename: str | None = None,
          expected_sha256: str | None = None, settings: HubSettings | None = None,
          token: bool | str | None = None) -> HubFile:
    """Download (or find in the cache) the file a :class:`registry.HubLocation` names, and verify it.

    ``revision``/``filename`` override the location's. The location's own
    ``sha256`` applies only to its own filename; ``expected_sha256`` overrides
    it. A copy from the cache that fails verification is evicted and, when
    online, downloaded once more.
    """
    settings = settings or hub_settings()
    name = filename or location.filename
    rev = revision or location.revision or "main"
    if expected_sha256 is None and name == location.filename:
        expected_sha256 = location.sha256
    file = download(location.repo_id, name, revision=rev, settings=settings, token=token)
    try:
        return verify(file, expected_sha256)
    except (ChecksumMismatchError, CorruptCheckpointError) as exc:
        if not file.from_cache or settings.offline:
            raise
        logger.warning("cached %s failed verification (%s); downloading it again", file.label, exc.problem)
    return verify(download(location.repo_id, name, revision=rev, settings=settings, token=token), expected_sha256)
