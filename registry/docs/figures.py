"""Each figure a page shows: the index's claim, the bench's measurement, and whether they agree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..entries import Erratum, ModelEntry
from .results import NO_RUN_REASON, Measurement, Results, to_float


def fmt_number(value: Any, decimals: int = 3) -> str:
    """``13,314,116``; ``77.324``; text that is not a number is returned as it is."""
    number = to_float(value)
    if number is None:
        return "" if value is None else str(value)
    if number == int(number) and abs(number) >= 1:
        return f"{int(number):,}"
    text = f"{number:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text  # 909.9 at 0 decimals is "910", not "91"


def fmt_giga(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{number / 1e9:.2f} G"


def fmt_bytes(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{fmt_number(number)} B ({number / 2**20:.1f} MiB)"


def fmt_percent(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{fmt_number(number)} %"


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    check: str
    metric: str
    claim: Callable[[ModelEntry], Any]
    fmt: Callable[[Any], str] = fmt_number
    erratum_field: str | None = None


def _top(entry: ModelEntry, name: str) -> float | None:
    result = entry.result()
    return result.metric(name) if result else None


# The summary table's figures, in order, with the results-store check/metric that verifies each.
# Preprocessing figures are verified by the "data-config" check (against the Hub repo's config.json).
COLUMNS: tuple[Column, ...] = (
    Column("parameters", "Parameters", "params", "parameters", lambda e: e.parameters),
    Column("macs", "MACs", "flops", "macs", lambda e: e.flops, erratum_field="Metadata.FLOPs"),
    Column("input_size", "Input size", "data-config", "input_size", lambda e: e.image_size, lambda v: f"{fmt_number(v)} px"),
    Column("crop_pct", "Crop pct", "data-config", "crop_pct", lambda e: e.crop_pct),
    Column("interpolation", "Interpolation", "data-config", "interpolation", lambda e: e.interpolation, str),
    Column("top1", "Top-1", "accuracy", "top1", lambda e: _top(e, "Top 1 Accuracy"), fmt_percent),
    Column("top5", "Top-5", "accuracy", "top5", lambda e: _top(e, "Top 5 Accuracy"), fmt_percent),
    Column("file_size", "File size", "filesize", "bytes", lambda e: e.file_size, fmt_bytes),
)


@dataclass(frozen=True)
class Figure:
    """One cell of the summary: claim, measurement, status."""

    column: Column
    claim: str
    measured: str | None
    state: str  # verified | mismatch | not-verified | measured | regression
    label: str  # "verified", "mismatch", "not verified: <why>"
    tolerance: str | None
    erratum: Erratum | None
    measurement: Measurement | None

    @property
    def verified(self) -> bool:
        return self.state == "verified"


def _not_verified(results: Results) -> str:
    if not results.has_runs:
        return f"not verified: {NO_RUN_REASON}"
    return "not verified: not measured by the recorded bench runs"


def figure(entry: ModelEntry, column: Column, results: Results) -> Figure:
    claim_value = column.claim(entry)
    claim = column.fmt(claim_value) if claim_value is not None else "no claim"
    row = results.get(entry.id, column.check, column.metric)
    erratum = entry.erratum(column.erratum_field) if column.erratum_field else None
    if row is None:
        return Figure(column, claim, None, "not-verified", _not_verified(results), None, erratum, None)
    measured = column.fmt(row.measured) if row.measured_value is not None or column.fmt is str else row.measured
    tolerance = row.tolerance or None
    return Figure(column, claim, measured or None, row.state, row.label, tolerance, erratum, row)


@dataclass(frozen=True)
class ModelSummary:
    entry: ModelEntry
    figures: tuple[Figure, ...]

    @property
    def id(self) -> str:
        return self.entry.id

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.column.key == key)

    @property
    def verified_count(self) -> int:
        return sum(f.verified for f in self.figures)

    @property
    def mismatch_count(self) -> int:
        return sum(f.state in ("mismatch", "regression") for f in self.figures)


def summarize(entry: ModelEntry, results: Results) -> ModelSummary:
    return ModelSummary(entry, tuple(figure(entry, column, results) for column in COLUMNS))
