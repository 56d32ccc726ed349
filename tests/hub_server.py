"""A Hugging Face Hub on 127.0.0.1 that speaks the download protocol of huggingface_hub.

Two real HTTP servers in background threads:

* the *Hub* answers ``HEAD``/``GET {endpoint}/{repo_id}/resolve/{revision}/{filename}``
  - unknown repo: ``404`` + ``X-Error-Code: RepoNotFound``
  - unknown revision: ``404`` + ``X-Error-Code: RevisionNotFound``
  - unknown file: ``404`` + ``X-Error-Code: EntryNotFound`` + ``X-Repo-Commit``
  - LFS file: ``302`` to the CDN with ``X-Repo-Commit`` (40 hex), ``X-Linked-Etag: "<sha256>"``,
    ``X-Linked-Size``, ``ETag`` (git oid of the LFS pointer), ``Location``; huggingface_hub does not
    follow a redirect to another origin for the HEAD, and downloads from ``Location`` with ``GET``
  - regular (non-LFS) file: ``200`` with ``ETag: "<git blob sha1>"``, ``X-Repo-Commit``, the body on ``GET``
* the *CDN* (another origin, like the real Hub's) serves the bytes at ``/cdn/<sha256>``, honouring
  ``Range: bytes=N-`` with ``206``/``Content-Range``.

Both also serve plain static files (``add_static``) for torch.hub-style release downloads.
Responses are HTTP/1.0 (one connection per request), so a stopped server refuses at once.

Faults are injected per request (``hub.inject(Fault(...))``): another status with its headers (a 429
with ``Retry-After``, a 5xx, a redirect loop, a 404 from the CDN), a body cut after N bytes, a body
trickled at N bytes/s, or ``Range`` ignored; each for the next ``times`` matching requests (-1: all).

Fixtures (import them into a test module: ``from hub_server import fake_hub, hub_env``):

* ``hub_env``: HF_HOME / HF_HUB_CACHE in ``tmp_path``, online, and any socket connection to a
  non-loopback address raises, so no test can reach the internet;
* ``fake_hub``: a started :class:`FakeHub` with the endpoint pointing at it.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, at import: in a
test process they are set on ``huggingface_hub.constants`` (``go_offline(monkeypatch)``).
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(data)}\nsize {len(data)}\n").encode()


@dataclass
class ServedFile:
    """A file in a repo: ``data`` is what the repo holds; ``body`` what the CDN actually sends.

    ``sha256``/``size`` are what the Hub *reports* (default: of ``data``); set ``body`` to
    corrupt or truncate the transfer while the metadata stays truthful.
    """

    data: bytes
    lfs: bool = True
    sha256: str | None = None
    size: int | None = None
    body: bytes | None = None

    @property
    def reported_sha256(self) -> str:
        return self.sha256 or sha256(self.data)

    @property
    def reported_size(self) -> int:
        return len(self.data) if self.size is None else self.size

    @property
    def served(self) -> bytes:
        return self.data if self.body is None else self.body


@dataclass
class Fault:
    """What goes wrong on the next ``times`` requests to ``role`` ("hub" or "cdn") whose path holds ``path``."""

    role: str
    status: int | None = None  # answer this instead, with ``headers``
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # send this many body bytes of the answer, then close
    rate: float | None = None  # body bytes per second
    ignore_range: bool = False
    stall: float = 0.0  # seconds of silence after the headers
    times: int = 1
    path: str = ""


@dataclass
class Static:
    data: bytes
    content_length: int | None = None  # to announce more than is sent (a cut transfer)


class FakeHub:
    """Repos, revisions and files served over HTTP on 127.0.0.1.

    >>> hub = FakeHub().start()
    >>> commit = hub.add_file("org/repo", "model.safetensors", b"...")
    >>> hub.endpoint                       # for HF_ENDPOINT
    'http://127.0.0.1:PORT'
    """

    def __init__(self) -> None:
        self.refs: dict[str, dict[str, str]] = {}  # repo -> {branch or tag: commit}
        self.files: dict[tuple[str, str, str], ServedFile] = {}  # (repo, commit, filename)
        self.static: dict[str, Static] = {}
        self.requests: list[tuple[str, str, str]] = []  # (server, method, path)
        self.faults: list[Fault] = []
        self.strip_headers: tuple[str, ...] = ()  # headers the Hub leaves out (e.g. "X-Linked-Etag")
        self._lock = threading.Lock()
        self._generation = 0
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # ---------------------------------------------------------------------------------------- content
    @staticmethod
    def commit_id(repo_id: str, revision: str, generation: int = 0) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}#{generation}".encode()).hexdigest()

    def add_repo(self, repo_id: str, revision: str = "main") -> str:
        refs = self.refs.setdefault(repo_id, {})
        if revision not in refs:
            refs[revision] = self.commit_id(repo_id, revision)
        return refs[revision]

    def add_file(self, repo_id: str, filename: str, data: bytes, *, revision: str = "main", lfs: bool = True,
                 sha256: str | None = None, size: int | None = None, body: bytes | None = None) -> str:
        """Put ``data`` at ``repo_id/filename@revision``; returns the commit it lives in."""
        commit = self.add_repo(repo_id, revision)
        self.files[(repo_id, commit, filename)] = ServedFile(data, lfs=lfs, sha256=sha256, size=size, body=body)
        return commit

    def push(self, repo_id: str, revision: str = "main") -> str:
        """Move ``revision`` to a new commit holding the same files (like a git push)."""
        old = self.refs[repo_id][revision]
        self._generation += 1
        new = self.commit_id(repo_id, revision, self._generation)
        for (repo, commit, name), spec in list(self.files.items()):
            if repo == repo_id and commit == old:
                self.files[(repo, new, name)] = spec
        self.refs[repo_id][revision] = new
        return new

    def add_static(self, path: str, data: bytes, *, content_length: int | None = None) -> str:
        """Serve ``data`` at ``path`` on the Hub origin; returns its URL."""
        self.static[path] = Static(data, content_length)
        return self.endpoint + path

    def resolve(self, repo_id: str, revision: str) -> str | None:
        refs = self.refs.get(repo_id, {})
        if revision in refs:
            return refs[revision]
        if any(r == repo_id and c == revision for (r, c, _f) in self.files) or revision in refs.values():
            return revision
        return None

    def by_sha(self, digest: str) -> ServedFile | None:
        for spec in self.files.values():
            if spec.lfs and spec.reported_sha256 == digest:
                return spec
        return None

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def take_fault(self, role: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.role == role and fault.path in path and fault.times != 0:
                    fault.times -= 1
                    return fault
        return None

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for (_s, m, p) in self.requests if (method is None or m == method) and contains in p)

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            server.role = role  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                      name=f"fake-hub-{role}")
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.endpoint = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_endpoint = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        """Stop both servers: later connections are refused."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:  # silence
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    # ---------------------------------------------------------------------------------------- helpers
    fault: Fault | None = None

    def _send(self, status: int, headers: dict[str, str], body: bytes, head: bool,
              content_length: int | None = None) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k not in self.fake.strip_headers:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        self.end_headers()
        fault = self.fault
        if fault is not None and fault.cut_after is not None:
            body = body[:fault.cut_after]
        if head or not body:
            return
        if fault is not None and fault.stall:
            self.wfile.flush()
            time.sleep(fault.stall)
        try:
            if fault is not None and fault.rate:
                step = max(1, int(fault.rate // 10))
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    time.sleep(step / fault.rate)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, code: str | None, message: str, head: bool,
               extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), head)

    def _dispatch(self, head: bool) -> None:
        fake = self.fake
        role = getattr(self.server, "role", "hub")
        with fake._lock:
            fake.requests.append((role, self.command, self.path))
        path = urlsplit(self.path).path
        self.fault = fake.take_fault(role, self.path)
        if self.fault is not None and self.fault.status is not None:
            return self._send(self.fault.status, {**self.fault.headers}, b"injected fault", head)
        if role == "cdn":
            return self._cdn(path, head)
        if path in fake.static:
            static = fake.static[path]
            return self._send(200, {"Content-Type": "application/octet-stream"}, static.data, head,
                              content_length=static.content_length)
        if "/resolve/" not in path:
            return self._error(404, None, "Not Found", head)
        repo_part, rest = path.split("/resolve/", 1)
        repo_id = unquote(repo_part.lstrip("/"))
        revision_q, _, filename_q = rest.partition("/")
        revision, filename = unquote(revision_q), unquote(filename_q)
        if repo_id not in fake.refs:
            return self._error(404, "RepoNotFound", "Repository not found", head)
        commit = fake.resolve(repo_id, revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        spec = fake.files.get((repo_id, commit, filename))
        if spec is None:
            return self._error(404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if spec.lfs:
            location = f"{fake.cdn_endpoint}/cdn/{spec.reported_sha256}?repo={repo_part.lstrip('/')}"
            headers.update({
                "Location": location,
                "ETag": f'"{git_blob_oid(lfs_pointer(spec.data))}"',
                "X-Linked-Etag": f'"{spec.reported_sha256}"',
                "X-Linked-Size": str(spec.reported_size),
                "Content-Type": "text/plain; charset=utf-8",
            })
            return self._send(302, headers, f"Found. Redirecting to {location}".encode(), head)
        headers.update({"ETag": f'"{git_blob_oid(spec.data)}"', "Content-Type": "application/octet-stream"})
        return self._send(200, headers, spec.served, head)

    def _cdn(self, path: str, head: bool) -> None:
        digest = path.rsplit("/", 1)[-1]
        spec = self.fake.by_sha(digest) if path.startswith("/cdn/") else None
        if spec is None:
            return self._error(404, None, "NoSuchKey", head)
        body = spec.served
        headers = {"ETag": f'"{digest}"', "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        rng = "" if self.fault is not None and self.fault.ignore_range else self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = int(rng[6:].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            return self._send(206, headers, body[start:], head)
        return self._send(200, headers, body, head)


# -------------------------------------------------------------------------------------------- fixtures


def _guard(address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in LOOPBACK and not host.startswith("127."):
        raise ConnectionRefusedError(f"tests may not reach the network (tried {address!r})")


def go_offline(monkeypatch) -> None:
    """``HF_HUB_OFFLINE=1`` for this process (huggingface_hub read the variable at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def set_endpoint(monkeypatch, endpoint: str) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An isolated Hub environment: cache in ``tmp_path``, online, no route off the machine."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    set_endpoint(monkeypatch, "http://127.0.0.1:9")  # discard port until a server is attached
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ETAG_TIMEOUT",
                "CC_HUB_DOWNLOAD_DEADLINE", "CC_HUB_DOWNLOAD_BYTE_FACTOR", "CC_CHECKPOINT_MAX_RATIO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub's user-agent telemetry fetches {import-time ENDPOINT}/api/agent-harnesses once a process
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    try:
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    except (ImportError, AttributeError):  # older huggingface_hub
        pass

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return hf_home


@pytest.fixture
def fake_hub(hub_env, monkeypatch) -> Iterator[FakeHub]:
    """A running :class:`FakeHub`, with ``HF_ENDPOINT`` pointing at it."""
    hub = FakeHub().start()
    set_endpoint(monkeypatch, hub.endpoint)
    try:
        yield hub
    finally:
        hub.stop()
