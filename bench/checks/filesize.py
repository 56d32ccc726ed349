"""filesize: bytes of the release file the entry points to vs the index's ``File Size`` (exact).

The file is looked up in ``--checkpoint-dir`` and torch.hub's folder, else
downloaded through ``cc_models.weights.fetch_release_file`` (its SHA-256 prefix
checked). Offline, or when the host cannot be reached, the check is skipped
with the reason; a file the URL does not serve fails the claim.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from registry import results_schema as schema

from .. import models
from .base import ERROR, FAIL, PASS, CheckResult, Context, SkipCheck, fmt_int

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry

NAME = schema.FILESIZE


def template(entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    return [CheckResult(entry.id, NAME, "bytes", claimed=entry.file_size, tolerance="exact", unit="bytes")]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def measure(entry: "ModelEntry", ctx: Context, rows: list[CheckResult]) -> list[CheckResult]:
    (row,) = rows
    if entry.file_size is None:
        raise SkipCheck("the index gives no File Size for this model")
    if entry.release is None:
        raise SkipCheck("the index names no release file (Weights: .../<name>-<sha256[:8]>.pth)")
    from cc_models.errors import OfflineError, WeightsError, WeightsNotFoundError

    try:
        path = models.release_file(entry, ctx.settings.checkpoint_dir)
    except OfflineError as exc:
        raise SkipCheck(f"{entry.release.filename} cannot be had: {_first_line(exc)}") from None
    except WeightsNotFoundError as exc:
        row.status = FAIL
        row.reason = _first_line(exc)
        return rows
    except WeightsError as exc:
        row.status = ERROR
        row.reason = f"{type(exc).__name__}: {_first_line(exc)}"
        return rows
    size = os.path.getsize(path)
    row.measured = size
    row.extra = {"path": str(path), "filename": entry.release.filename, "sha256_prefix": entry.release.sha256_prefix}
    row.status = PASS if size == entry.file_size else FAIL
    row.reason = (f"{path.name}: {fmt_int(size)} bytes" if row.status == PASS else
                  f"claimed {fmt_int(entry.file_size)} bytes, {path} has {fmt_int(size)} "
                  f"({size - entry.file_size:+,})")
    return rows
