"""The bench's results format, defined once: ``bench.store`` writes it, ``registry.docs`` reads it.

It lives in ``registry`` because both sides need it and the layering allows
only ``bench -> registry`` (``model_index`` holds data, not code).

A store is a folder::

    runs/<run_id>.json   one file per run (format ``cc-bench-run/1``), never edited by another run
    results.csv          every row of every readable run, COLUMNS in this order, rebuilt after each run

``run_id`` is the UTC start time and 4 random hex digits (``20261127T190102Z-3f9a``).
Columns (one row per measured figure per run):

    run_id, timestamp (ISO 8601 UTC), git_commit, model_id, check, metric,
    claimed, measured (numbers or empty), tolerance (text), unit, status (STATUSES), reason,
    device (cpu | cuda), device_name, fingerprint (short id of the machine, see bench.env),
    dtype, threads, allocator, torch_version, batch_size (throughput and compare only),
    extra (a JSON object as a string)

"Latest" means: in (timestamp, run_id) order, then the order the rows were
written, the last row per KEY wins. Tables written before ``fingerprint`` and
``allocator`` existed read with those columns empty.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from .safe_files import NotRegularFileError, read_bytes

FORMAT = "cc-bench-run/1"
RUNS_DIR = "runs"
TABLE_FILE = "results.csv"

# Check names: the ones `cc-bench run` performs, in its order, then `cc-bench compare`'s.
PARAMS, FLOPS, FILESIZE, ACCURACY, THROUGHPUT, COMPARE = "params", "flops", "filesize", "accuracy", "throughput", \
    "compare"
DATA_CONFIG = "data-config"
RUN_CHECKS = (PARAMS, FLOPS, FILESIZE, DATA_CONFIG, ACCURACY, THROUGHPUT)
TEXT_VALUE_CHECKS = frozenset({DATA_CONFIG})  # checks whose claims and measurements may be text

PASS, FAIL, SKIP, ERROR, INFO, REGRESSION = "pass", "fail", "skip", "error", "info", "regression"
STATUSES = (PASS, FAIL, ERROR, SKIP, INFO, REGRESSION)  # the order a report counts them in
FAILING = frozenset({FAIL, ERROR})

RUN_COLUMNS = ("run_id", "timestamp", "git_commit")
ROW_COLUMNS = ("model_id", "check", "metric", "claimed", "measured", "tolerance", "unit", "status", "reason",
               "device", "device_name", "fingerprint", "dtype", "threads", "allocator", "torch_version",
               "batch_size", "extra")
COLUMNS = RUN_COLUMNS + ROW_COLUMNS
REQUIRED = ("run_id", "timestamp", "model_id", "check", "metric", "measured", "status")
KEY = ("model_id", "check", "metric", "batch_size")
# Filled from the run's environment when a row leaves them empty.
ENVIRONMENT_COLUMNS = ("device", "device_name", "fingerprint", "threads", "allocator", "torch_version")

MAX_TABLE_BYTES = 256 << 20
_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")  # check and metric names: "params", "data-config", "top1"

Row = TypeVar("Row")


class ResultsStoreError(Exception):
    """The results store cannot be read or written; the message says which file (and line, column) and why."""

    def __init__(self, path: Path | str, message: str, line: int | None = None, column: str | None = None):
        self.path, self.line, self.column = str(path), line, column
        where = self.path + (f":{line}" if line is not None else "") + (f": {column}" if column else "")
        super().__init__(f"{where}: {message}")


def parse_timestamp(value: str) -> _dt.datetime:
    """An ISO 8601 time (``Z`` allowed) as an aware UTC datetime; ValueError otherwise."""
    text = value.strip()
    stamp = _dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if stamp.tzinfo is None:
        raise ValueError("no time zone")
    return stamp.astimezone(_dt.timezone.utc)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _positive_int(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) > 0


def _finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def row_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(column, what is wrong)`` for the first bad value of a row (CSV text or a run file's values), or None."""
    for column in REQUIRED:
        if column != "measured" and not _text(row.get(column)):
            return column, "is empty"
    try:
        parse_timestamp(_text(row.get("timestamp")))
    except ValueError:
        return "timestamp", f"{_text(row.get('timestamp'))!r} is not an ISO 8601 time with a time zone"
    for column in ("check", "metric"):
        if not _NAME.match(_text(row.get(column))):
            return column, f"{_text(row.get(column))!r} is not a lower-case name"
    if _text(row.get("status")) not in STATUSES:
        return "status", f"{_text(row.get('status'))!r} is not one of {', '.join(STATUSES)}"
    for column in ("claimed", "measured"):
        value = row.get(column)
        if row.get("check") in TEXT_VALUE_CHECKS and len(_text(value)) <= 200:
            continue  # "bicubic", "0.5, 0.5, 0.5": shown as text on the pages, never computed with
        if _text(value) and not _finite_number(value):
            return column, f"{_text(value)!r} is not a finite number"
    for column in ("batch_size", "threads"):
        value = row.get(column)
        if _text(value) and (isinstance(value, bool) or not _positive_int(_text(value))):
            return column, f"{_text(value)!r} is not a positive integer"
    extra = row.get("extra")
    if isinstance(extra, str) and extra.strip():
        try:
            extra = json.loads(extra)
        except ValueError:
            return "extra", "is not JSON"
    if extra not in (None, "") and not isinstance(extra, dict):
        return "extra", "is not a JSON object"
    return None


def read_table(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` (every column, as text), each one validated.

    Raises :class:`ResultsStoreError` located as ``file:line: column: message`` for the first bad row,
    and for a file that is not a regular file (a folder, a FIFO: never opened), not UTF-8 or not CSV.
    """
    try:
        text = read_bytes(path, MAX_TABLE_BYTES).decode("utf-8")
    except NotRegularFileError as exc:
        raise ResultsStoreError(path, f"{exc}; expected the results table") from None
    except UnicodeDecodeError as exc:
        raise ResultsStoreError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ResultsStoreError(path, f"cannot read the results table: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise ResultsStoreError(path, f"missing column(s) {', '.join(missing)}; expected the columns "
                                          f"{', '.join(COLUMNS)}", line=1, column="header")
        rows = []
        for record in reader:
            if None in record or None in record.values():
                raise ResultsStoreError(path, "wrong number of fields", line=reader.line_num)
            row = {c: _text(record.get(c)) for c in COLUMNS}
            problem = row_problem(row)
            if problem:
                raise ResultsStoreError(path, problem[1], line=reader.line_num, column=problem[0])
            rows.append(row)
    except csv.Error as exc:
        raise ResultsStoreError(path, f"not a CSV table ({exc})", line=reader.line_num) from None
    return rows


def write_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """``results.csv``'s text for ``rows`` (COLUMNS; None as empty)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in COLUMNS})
    return out.getvalue()


def _item(row: Any, column: str) -> Any:
    return row[column]


def chronological(rows: Iterable[Row], get: Callable[[Row, str], Any] = _item) -> list[Row]:
    """``rows`` in (timestamp, run_id) order, keeping the given order among equals."""
    return sorted(rows, key=lambda r: (parse_timestamp(str(get(r, "timestamp"))), str(get(r, "run_id"))))


def latest_per_key(rows: Iterable[Row], get: Callable[[Row, str], Any] = _item) -> list[Row]:
    """The latest row per KEY (see the module's docstring), in chronological order."""
    latest: dict[tuple, Row] = {}
    for row in chronological(rows, get):
        key = tuple(get(row, c) for c in KEY)
        latest.pop(key, None)
        latest[key] = row
    return list(latest.values())
