"""Typed errors of the weights half of ``cc_models``.

Every failure to obtain or load pretrained weights raises one subclass of
:class:`WeightsError`. Each message says what went wrong *and* what to do next
(the ``hint``), so a CLI can print ``str(error)`` and nothing else.

=========================  ===================================================
error                      raised when
=========================  ===================================================
``ChecksumMismatchError``  a file's SHA-256 differs from the index's, from the
                           Hub's LFS digest, or from a torch.hub name prefix
``CorruptCheckpointError`` a file is truncated, unparsable, or holds objects
                           that ``torch.load(weights_only=True)`` refuses
``StateDictMismatchError`` missing / unexpected keys or shape mismatches
                           between a checkpoint and the model
``WeightsNotFoundError``   the repo, revision or file does not exist (404),
                           or an entry names no weights at all
``OfflineError``           offline (``HF_HUB_OFFLINE``) or the server is
                           unreachable, and the file is not in the cache
=========================  ===================================================
"""
from __future__ import annotations

from typing import Sequence

__all__ = [
    "ChecksumMismatchError",
    "CorruptCheckpointError",
    "OfflineError",
    "StateDictMismatchError",
    "UnsafeCheckpointError",
    "WeightsError",
    "WeightsNotFoundError",
]


class WeightsError(Exception):
    """Base class: pretrained weights could not be obtained, verified or loaded.

    ``problem`` says what went wrong, ``hint`` what to do next; ``str(error)``
    is the problem, then the hint on its own line after "->".
    """

    def __init__(self, problem: str, hint: str | None = None):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}\n  -> {hint}" if hint else problem)


class ChecksumMismatchError(WeightsError):
    """The bytes on disk are not the bytes the index (or the server) promised."""

    def __init__(self, problem: str, hint: str | None = None, *, path: str | None = None,
                 expected: str | None = None, actual: str | None = None, source: str | None = None):
        self.path = path
        self.expected = expected
        self.actual = actual
        self.source = source  # where `expected` came from: "index", "hub-etag", "filename prefix"
        super().__init__(problem, hint)


class CorruptCheckpointError(WeightsError):
    """The file is truncated or cannot be parsed as a checkpoint."""

    def __init__(self, problem: str, hint: str | None = None, *, path: str | None = None):
        self.path = path
        super().__init__(problem, hint)


class UnsafeCheckpointError(CorruptCheckpointError):
    """A pickle checkpoint holds objects that ``torch.load(weights_only=True)`` refuses to build."""


class StateDictMismatchError(WeightsError):
    """The checkpoint's keys or shapes do not fit the model.

    ``missing``: keys the model has and the checkpoint lacks; ``unexpected``:
    the reverse; ``shape_mismatches``: ``(key, checkpoint_shape, model_shape)``.
    """

    def __init__(self, problem: str, hint: str | None = None, *, missing: Sequence[str] = (),
                 unexpected: Sequence[str] = (),
                 shape_mismatches: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = ()):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatches = list(shape_mismatches)
        super().__init__(problem, hint)


class WeightsNotFoundError(WeightsError):
    """The repo, revision or file does not exist where the index says it is.

    ``kind`` is ``"repo"``, ``"revision"``, ``"file"`` or ``"entry"`` (the
    model entry names no weights).
    """

    def __init__(self, problem: str, hint: str | None = None, *, kind: str = "file", repo_id: str | None = None,
                 filename: str | None = None, revision: str | None = None, url: str | None = None):
        self.kind = kind
        self.repo_id = repo_id
        self.filename = filename
        self.revision = revision
        self.url = url
        super().__init__(problem, hint)


class OfflineError(WeightsError):
    """No network (offline mode, or the server is unreachable) and no cached copy."""

    def __init__(self, problem: str, hint: str | None = None, *, url: str | None = None):
        self.url = url
        super().__init__(problem, hint)
