"""Typed errors of weight loading: one class per failure family, each saying what to do next.

``str(error)`` is the problem, then the hint on its own line after "->", so a CLI prints it as is.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["ChecksumMismatchError", "CorruptCheckpointError", "OfflineError", "StateDictMismatchError",
           "UnpinnedWeightsWarning", "UnsafeCheckpointError", "WeightsError", "WeightsNotFoundError"]


class WeightsError(Exception):
    """Base class: pretrained weights could not be obtained, verified or loaded."""

    def __init__(self, problem: str, hint: str | None = None, **details: object):
        self.problem, self.hint = problem, hint
        for name, value in details.items():  # e.g. path, url, expected, actual, kind: for callers and tests
            setattr(self, name, value)
        super().__init__(f"{problem}\n  -> {hint}" if hint else problem)


class ChecksumMismatchError(WeightsError):
    """The bytes are not the ones promised: ``expected`` (from ``source``) vs ``actual``."""

    path = expected = actual = source = None


class CorruptCheckpointError(WeightsError):
    """The file is truncated, too large, unparsable, or holds values that are not weights (NaN, no data)."""

    path = None


class UnsafeCheckpointError(CorruptCheckpointError):
    """A pickle holds objects that ``torch.load(weights_only=True)`` refuses to build."""


class StateDictMismatchError(WeightsError):
    """Keys, shapes, dtypes or layouts of the checkpoint do not fit the model."""

    def __init__(self, problem: str, hint: str | None = None, *, missing: Sequence[str] = (),
                 unexpected: Sequence[str] = (), shape_mismatches: Sequence[tuple] = ()):
        super().__init__(problem, hint, missing=list(missing), unexpected=list(unexpected),
                         shape_mismatches=list(shape_mismatches))


class WeightsNotFoundError(WeightsError):
    """The repo, revision or file does not exist; ``kind``: "repo", "revision", "file" or "entry" (no weights named)."""

    kind, url = "file", None


class OfflineError(WeightsError):
    """Offline, unreachable, too slow (past the download deadline), and no usable copy in the cache."""

    url = None


class UnpinnedWeightsWarning(UserWarning):
    """Weights loaded without a SHA-256 in the index to check them against (pin them: ``cc-registry pin``)."""
