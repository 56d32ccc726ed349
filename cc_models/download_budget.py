"""A deadline and a byte budget for each Hub download, enforced on huggingface_hub's HTTP client.

huggingface_hub bounds each read (``HF_HUB_DOWNLOAD_TIMEOUT``) and retries, but nothing bounds a whole
download: a body trickling at 1 KB/s, or a server that ignores ``Range`` and cuts every transfer, goes on
for ever. Event hooks on its shared client (added to whatever client factory is set) check, inside
:func:`limits` only:

* before each request and on each chunk received, the deadline: ``CC_HUB_DOWNLOAD_DEADLINE`` seconds
  (default 900) for the whole download, retries and ``Retry-After`` waits included; a ``Retry-After``
  longer than the time left ends it at once instead of sleeping past it;
* on each chunk, the bytes received: at most ``CC_HUB_DOWNLOAD_BYTE_FACTOR`` (default 2, one full restart)
  times the size the Hub announced, and no announced size above the caller's bound (the model's).

With ``hf_xet`` installed, Xet-stored files download outside this client: only the deadline between
requests and the size bound apply to them.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from .errors import OfflineError

__all__ = ["BYTE_FACTOR_ENV", "DEADLINE_ENV", "BudgetExceeded", "limits"]

DEADLINE_ENV, DEFAULT_DEADLINE_S = "CC_HUB_DOWNLOAD_DEADLINE", 900.0
BYTE_FACTOR_ENV, DEFAULT_BYTE_FACTOR = "CC_HUB_DOWNLOAD_BYTE_FACTOR", 2.0


class BudgetExceeded(Exception):
    """A download ran out of time or bytes; ``setting`` is the variable that sets the bound (None: the model)."""

    def __init__(self, message: str, setting: str | None, request: object = None):
        super().__init__(message)
        self.setting, self.request = setting, request


@dataclass
class _Budget:
    seconds: float
    factor: float
    deadline: float
    max_bytes: int | None = None
    size: int | None = None
    received: int = 0
    request: object = None  # the request in flight, named in the error

    def check(self, wait: float = 0.0) -> None:
        if time.monotonic() + wait > self.deadline:
            asked = f" (the server asked to wait {wait:g} s)" if wait else ""
            raise BudgetExceeded(f"not done within {DEADLINE_ENV}={self.seconds:g} s{asked}", DEADLINE_ENV,
                                 self.request)
        size = self.size if self.size is not None else self.max_bytes  # no announced size: the caller's bound
        if size is not None and self.received > self.factor * size:
            raise BudgetExceeded(f"{self.received:,} bytes received for a file of {size:,}, more than "
                                 f"{BYTE_FACTOR_ENV}={self.factor:g} times its size", BYTE_FACTOR_ENV, self.request)


_CURRENT: ContextVar[_Budget | None] = ContextVar("cc_hub_download_budget", default=None)


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise OfflineError(f"{name}={raw!r} is not a positive number", f"set {name} to a positive number or unset it")
    return value


def _on_request(request) -> None:
    if (budget := _CURRENT.get()) is not None:
        budget.request = request
        budget.check()


def _on_response(response) -> None:
    import httpx2

    budget = _CURRENT.get()
    if budget is None:
        return
    if budget.size is None and response.request.method == "HEAD" and response.status_code < 400:
        size = response.headers.get("X-Linked-Size") or (None if response.is_redirect else
                                                          response.headers.get("Content-Length"))
        budget.size = int(size) if size and size.isdigit() else None
        if budget.size is not None and budget.max_bytes is not None and budget.size > budget.max_bytes:
            raise BudgetExceeded(f"the Hub announces {budget.size:,} bytes, more than the {budget.max_bytes:,} a "
                                 "checkpoint of this model may have", None, response.request)
    retry_after = response.headers.get("Retry-After", "")
    if response.status_code in (429, 503) and retry_after.isdigit():
        budget.check(wait=int(retry_after) + 1)  # huggingface_hub sleeps Retry-After + 1 s

    class Counted(httpx2.SyncByteStream):
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                budget.received += len(chunk)
                budget.check()
                yield chunk

        def close(self) -> None:
            self.inner.close()

    response.stream = Counted(response.stream)


def _install() -> None:
    """Add the hooks to huggingface_hub's client factory (once; again if someone set another factory)."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    if getattr(current, "cc_hub_budget", False):
        return

    def factory():
        client = current()
        hooks = client.event_hooks
        hooks["request"].append(_on_request)
        hooks["response"].append(_on_response)
        client.event_hooks = hooks
        return client

    factory.cc_hub_budget = True  # type: ignore[attr-defined]
    set_client_factory(factory)


@contextmanager
def limits(max_bytes: int | None = None) -> Iterator[None]:
    """Bound the huggingface_hub downloads made in this block (this thread or task) by one budget.

    ``max_bytes``: the largest file the caller accepts; a larger announced size ends the download at once.
    """
    seconds, factor = _setting(DEADLINE_ENV, DEFAULT_DEADLINE_S), _setting(BYTE_FACTOR_ENV, DEFAULT_BYTE_FACTOR)
    _install()
    token = _CURRENT.set(_Budget(seconds, factor, time.monotonic() + seconds, max_bytes=max_bytes))
    try:
        yield
    finally:
        _CURRENT.reset(token)
