"""Read the bench's results store (``<results>/results.csv``); the registry only ever reads it.

The store is append-only: one row per measured figure per run. What a page
shows for a figure is the latest row for its (model, check, metric, batch
size), by timestamp. Checks and statuses this module does not know are kept
and shown as they are, so that the bench can grow without breaking the docs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import pandas as pd

RESULTS_FILE = "results.csv"
COLUMNS = (
    "run_id", "timestamp", "git_commit", "model_id", "check", "metric", "claimed", "measured", "tolerance", "unit",
    "status", "reason", "device", "device_name", "dtype", "threads", "torch_version", "batch_size", "extra",
)
REQUIRED = ("run_id", "timestamp", "model_id", "check", "metric", "measured", "status")

# Bench status -> what a page says about the figure.
STATUS_LABELS = {
    "pass": ("verified", "verified"),
    "fail": ("mismatch", "mismatch"),
    "skip": ("not-verified", "not verified"),
    "error": ("not-verified", "not verified"),
    "info": ("measured", "measured"),
    "regression": ("regression", "regression"),
}
NO_RUN_REASON = "no bench run recorded"


class ResultsStoreError(ValueError):
    """The results store exists but cannot be read; says which file and why."""

    def __init__(self, path: Path | str, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


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
    dtype: str
    threads: str
    torch_version: str
    batch_size: int | None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    order: int = field(default=0, compare=False, repr=False)  # rank in time (then file) order

    @property
    def claimed_value(self) -> float | None:
        return to_float(self.claimed)

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


def _batch_size(value: str) -> int | None:
    number = to_float(value)
    return int(number) if number is not None and number == int(number) else None


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
    dtype: str
    threads: str
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
            runs.append(Run(run_id, first.timestamp, first.git_commit, first.device, first.device_name, first.dtype,
                            first.threads, first.torch_version, MappingProxyType(dict(sorted(counts.items()))),
                            first.order))
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

    def in_run(self, run_id: str) -> tuple[Measurement, ...]:
        return tuple(r for r in self.rows if r.run_id == run_id)

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(sorted({r.check for r in self.latest}))


def _sort_key(row: Measurement) -> tuple:
    return (row.model_id, row.check, row.metric, -1 if row.batch_size is None else row.batch_size)


def read_results(results_dir: Path | str | None) -> Results:
    """The store under ``results_dir``; an empty ``Results`` when there is none (no run recorded yet).

    Raises ``ResultsStoreError`` when the file exists but is not a results table.
    """
    if results_dir is None:
        return Results(source=None)
    path = Path(results_dir)
    if path.is_dir() or not path.suffix:
        path = path / RESULTS_FILE
    if not path.is_file():
        return Results(source=None)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ResultsStoreError(path, f"cannot read the results table: {exc}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ResultsStoreError(path, f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    bad = frame.index[stamps.isna()].tolist()
    if bad:
        raise ResultsStoreError(path, f"row {bad[0] + 2}: timestamp {frame.loc[bad[0], 'timestamp']!r} is not ISO 8601")
    frame["_stamp"] = stamps
    frame["_row"] = range(len(frame))
    frame["timestamp"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S UTC")  # one display form per instant
    rows = [
        Measurement(
            **{c: str(rec[c]).strip() for c in COLUMNS if c not in ("batch_size", "extra")},
            batch_size=_batch_size(rec["batch_size"]),
            extra=_extra(str(rec["extra"]).strip()),
            order=order,
        )
        for order, rec in enumerate(frame.sort_values(["_stamp", "_row"], kind="stable").to_dict("records"))
    ]
    latest: dict[tuple, Measurement] = {}
    for row in rows:  # in time order: the last one wins
        latest[(row.model_id, row.check, row.metric, row.batch_size)] = row
    return Results(source=path, rows=tuple(rows), latest=tuple(sorted(latest.values(), key=_sort_key)))


def distinct(values: Iterable[Any]) -> list[Any]:
    return sorted({v for v in values if v is not None})
