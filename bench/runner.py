"""Run checks over models, one model at a time, saving the run record after each model."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Sequence

from .checks import CHECKS
from .checks.base import ERROR, SKIP, CheckError, CheckResult, Context, SkipCheck
from .env import cpu_name

if TYPE_CHECKING:  # pragma: no cover
    from registry import ModelEntry


def run_check(name: str, entry: "ModelEntry", ctx: Context) -> list[CheckResult]:
    """One check on one model; never raises for a failure of the check itself (only for interrupts)."""
    module = CHECKS[name]
    rows = module.template(entry, ctx)
    started = time.perf_counter()
    try:
        with ctx.progress.task(f"{name} {entry.id}"):
            rows = module.measure(entry, ctx, rows)
    except SkipCheck as exc:
        for row in rows:
            row.status, row.reason, row.measured = SKIP, exc.reason, None
    except CheckError as exc:
        for row in rows:
            row.status, row.reason = ERROR, str(exc)
    except Exception as exc:  # a check that breaks is reported as an error row, and the run goes on
        message = str(exc).splitlines()[0] if str(exc) else ""
        for row in rows:
            row.status, row.reason = ERROR, f"{type(exc).__name__}: {message}".rstrip(": ")
    seconds = round(time.perf_counter() - started, 3)
    for row in rows:
        row.extra = {**row.extra, "check_seconds": seconds}
        if not row.status:
            row.status, row.reason = ERROR, row.reason or "the check produced no verdict"
        _fill_environment(row, ctx)
    return rows


def _fill_environment(row: CheckResult, ctx: Context) -> None:
    env = ctx.env
    row.device = row.device or "cpu"
    if not row.device_name:
        row.device_name = env.get("device_name", "") if row.device == env.get("device") else cpu_name()
    row.threads = row.threads if row.threads is not None else env.get("threads")
    row.torch_version = row.torch_version or env.get("torch_version", "")
    row.fingerprint = row.fingerprint or env.get("fingerprint_id", "")
    row.allocator = row.allocator or env.get("allocator", "")


def run(entries: Sequence["ModelEntry"], names: Sequence[str], ctx: Context,
        after_model: Callable[[list[CheckResult]], None] | None = None) -> list[CheckResult]:
    """Every check in ``names`` on every entry, model-major; ``after_model`` sees the results so far."""
    results: list[CheckResult] = []
    for entry in entries:
        for name in names:
            results += run_check(name, entry, ctx)
        ctx.release_models()
        if after_model is not None:
            after_model(results)
    return results
