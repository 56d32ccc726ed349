"""Read the bench's results store (``<results>/results.csv``); the registry only ever reads it.

The format, and which row is the latest of a figure, are :mod:`registry.results_schema`'s.
A missing store is "no bench run recorded"; a store that exists but cannot be read
(a folder or FIFO where the table should be, a bad row) is a :class:`ResultsStoreError`,
so a page never silently loses its figures.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .. import results_schema as schema
from ..results_schema import ResultsStoreError

# Bench status -> what a page says about the figure.
STATUS_LABELS = {
    schema.PASS: ("verified", "verified"),
    schema.FAIL: ("mismatch", "mismatch"),
    schema.SKIP: ("not-verified", "not verified"),
    schema.ERROR: ("not-verified", "not verified"),
    schema.INFO: ("measured", "measured"),
    schema.REGRESSION: ("regression", "regression"),
}
NO_RUN_REASON = "no bench run recorded"

def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Measurement:
    """One row of the store, typed. ``claimed``/``measured`` keep their text; ``*_value`` are numbers or None."""

    run_id: str
    timestamp: str
    git_commit: str
    model_id: str
    check: str
    metric: str
    claimed: str
    measured: str
    tolerance: str
    unit: str
    status: str
    reason: str
    device: str
    device_name: str
    fingerprint: str
    dtype: str
    threads: str
    allocator: str
    torch_version: str
    batch_size: int | None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    order: int = field(default=0, compare=False, repr=False)  # rank in time (then file) order

    @property
    def measured_value(self) -> float | None:
        return to_float(self.measured)

    @property
    def state(self) -> str:
        """CSS-friendly status: verified, mismatch, not-verified, measured, regression."""
        return STATUS_LABELS.get(self.status, ("not-verified", ""))[0]

    @property
    def label(self) -> str:
        """What a page says: 'verified', 'mismatch', 'not verified: <reason>'..."""
        state, label = STATUS_LABELS.get(self.status, ("not-verified", "not verified"))
        if state == "not-verified":
            reason = self.reason or (f"bench status {self.status!r}" if self.status not in STATUS_LABELS
                                     else f"check {self.status}ped" if self.status == "skip" else "check failed to run")
            return f"{label}: {reason}"
        return label

    @property
    def conditions(self) -> str:
        """What a timing ran under: dtype, threads, allocator, device and its fingerprint in short."""
        device = self.device_name or self.device or "unknown device"
        machine = f"{device}, fingerprint {self.fingerprint[:8] if self.fingerprint else 'not recorded'}"
        threads = f"{self.threads} thread{'' if self.threads == '1' else 's'}" if self.threads else "threads unknown"
        return f"{self.dtype or 'dtype unknown'}, {threads}, allocator {self.allocator or 'not recorded'}, {machine}"


def _extra(value: str) -> Mapping[str, Any]:
    if not value:
        return MappingProxyType({})
    try:
        parsed = json.loads(value)
    except ValueError:
        return MappingProxyType({"raw": value})
    return MappingProxyType(parsed if isinstance(parsed, dict) else {"value": parsed})


@dataclass(frozen=True)
class Run:
    run_id: str
    timestamp: str
    git_commit: str
    device: str
    device_name: str
    fingerprint: str
    dtype: str
    threads: str
    allocator: str
    torch_version: str
    counts: Mapping[str, int]  # status -> number of rows
    order: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Results:
    """Every row of the store plus the latest row per figure; empty when no run was recorded."""

    source: Path | None
    rows: tuple[Measurement, ...] = ()
    latest: tuple[Measurement, ...] = ()

    @property
    def has_runs(self) -> bool:
        return bool(self.rows)

    def runs(self) -> tuple[Run, ...]:
        """Runs, newest first."""
        by_run: dict[str, list[Measurement]] = {}
        for row in self.rows:
            by_run.setdefault(row.run_id, []).append(row)
        runs = []
        for run_id, rows in by_run.items():
            first = max(rows, key=lambda r: r.order)
            counts: dict[str, int] = {}
            for r in rows:
                counts[r.status] = counts.get(r.status, 0) + 1
            when = schema.parse_timestamp(first.timestamp).strftime("%Y-%m-%d %H:%M:%S UTC")
            runs.append(Run(run_id, when, first.git_commit, first.device, first.device_name, first.fingerprint,
                            first.dtype, first.threads, first.allocator, first.torch_version,
                            MappingProxyType(dict(sorted(counts.items()))), first.order))
        return tuple(sorted(runs, key=lambda r: r.order, reverse=True))

    @property
    def latest_run(self) -> Run | None:
        runs = self.runs()
        return runs[0] if runs else None

    def get(self, model_id: str, check: str, metric: str, batch_size: int | None = None) -> Measurement | None:
        for row in self.latest:
            if (row.model_id, row.check, row.metric, row.batch_size) == (model_id, check, metric, batch_size):
                return row
        return None

    def for_check(self, check: str, *, run_id: str | None = None, latest_only: bool = True) -> tuple[Measurement, ...]:
        rows = self.latest if latest_only else self.rows
        return tuple(r for r in rows if r.check == check and (run_id is None or r.run_id == run_id))

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(sorted({r.check for r in self.latest}))


def _sort_key(row: Measurement) -> tuple:
    return (row.model_id, row.check, row.metric, -1 if row.batch_size is None else row.batch_size)


def read_results(results_dir: Path | str | None) -> Results:
    """The store under ``results_dir`` (its folder, or its ``results.csv``); empty when there is none yet.

    Raises ``ResultsStoreError`` (located ``file:line: column: message``) when the store exists but cannot be read.
    """
    if results_dir is None:
        return Results(source=None)
    path = Path(results_dir)
    if path.is_dir():
        path = path / schema.TABLE_FILE
    elif os.path.lexists(path) and path.suffix != ".csv":
        raise ResultsStoreError(path, "not a folder; give the results store's folder (or its results.csv)")
    if not os.path.lexists(path):
        return Results(source=None)
    rows = [
        Measurement(
            **{c: rec[c] for c in schema.COLUMNS if c not in ("batch_size", "extra")},
            batch_size=int(rec["batch_size"]) if rec["batch_size"] else None,
            extra=_extra(rec["extra"]),
            order=order,
        )
        for order, rec in enumerate(schema.chronological(schema.read_table(path)))
    ]
    latest = schema.latest_per_key(rows, getattr)
    return Results(source=path, rows=tuple(rows), latest=tuple(sorted(latest, key=_sort_key)))
