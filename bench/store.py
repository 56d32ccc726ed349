"""The results store: every ``cc-bench`` run kept, plus one combined table the docs read.

Layout (default ``results/`` relative to the working directory; ``--results DIR``)::

    results/
      runs/<run_id>.json   one file per run, never edited by another run
      results.csv          combined table, rebuilt from all readable run files after each run
      .lock                fcntl.flock lock taken around every rebuild of results.csv

``run_id`` is the UTC start time plus a short random suffix, e.g.
``20261127T190102Z-3f9a``; it sorts in time order.

A run file is a JSON object::

    {"format": "cc-bench-run/1", "run_id": "...", "timestamp": "2026-11-27T19:01:02Z",
     "finished": "2026-11-27T19:01:40Z" | null,       # null while running / if killed midway
     "git_commit": "<sha>" | "unknown",
     "environment": {"torch_version", "cuda_version", "python_version", "platform",
                     "device", "device_name", "threads", ...},
     "command": [...argv...], "index": "<path>", "settings": {...},
     "checks": [ {<one object per row, the CSV columns below except the run-level ones;
                  "extra" is an object here>}, ... ]}

``results.csv`` columns, in this order (one row per check result)::

    run_id, timestamp (ISO 8601 UTC), git_commit, model_id,
    check   (params | flops | filesize | accuracy | throughput),
    metric  (params: parameters; flops: macs, flop_counter_flops; filesize: bytes;
             accuracy: top1, top5; throughput: images_per_s),
    claimed, measured, tolerance (text, e.g. "±1%"), unit,
    status  (pass | fail | skip | error | info | regression),
    reason, device, device_name, dtype, threads, torch_version,
    batch_size (throughput only; empty otherwise),
    extra   (a JSON object as a string: fvcore's skipped ops, the erratum, ratio, ...)

Rows are in run order (``run_id``), then in the order the run measured them.
Readers take the latest row per ``(model_id, check, metric, batch_size)``
(:func:`latest`).

Guarantees:

* Every write is atomic: a temporary file in the same folder, fsync, ``os.replace``.
  A run rewrites its own file after each model, so a run killed midway leaves
  what it finished (``finished`` is null) and never a half-written file.
* Two runs at once do not clobber each other: each owns its run file (created
  exclusively), and ``results.csv`` is rebuilt from *all* run files under an
  exclusive lock, so whichever rebuild comes last includes both runs.
* A corrupt, truncated or foreign file in ``runs/`` is skipped with a warning
  when the table is rebuilt; it never stops a run or a reader.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

try:  # POSIX; elsewhere rebuilds are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "cc-bench-run/1"
DEFAULT_DIR = Path("results")
RUNS = "runs"
TABLE = "results.csv"
LOCK = ".lock"

RUN_COLUMNS = ("run_id", "timestamp", "git_commit")
ROW_COLUMNS = ("model_id", "check", "metric", "claimed", "measured", "tolerance", "unit", "status", "reason",
               "device", "device_name", "dtype", "threads", "torch_version", "batch_size", "extra")
COLUMNS = RUN_COLUMNS + ROW_COLUMNS
KEY = ("model_id", "check", "metric", "batch_size")
CHECKS = ("params", "flops", "filesize", "accuracy", "throughput")
STATUSES = ("pass", "fail", "skip", "error", "info", "regression")


class StoreWarning(UserWarning):
    """A file in the results store could not be read and was skipped."""


class StoreError(Exception):
    """The results store cannot be written (permissions, disk full, not a folder)."""


# ---------------------------------------------------------------------------------------------------------------
# ids, times, atomic writes


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def iso(ts: _dt.datetime) -> str:
    return ts.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(now: _dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxx``: the UTC time and 4 random hex digits."""
    now = now or utc_now()
    return f"{now.astimezone(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _temp_file(path: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    tmp = _temp_file(path, text)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _create_exclusive(path: Path, text: str) -> bool:
    """Atomically create ``path`` with ``text``; False (nothing written) when it already exists."""
    tmp = _temp_file(path, text)
    try:
        os.link(tmp, path)  # fails if path exists: exclusive and atomic
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def locked(results_dir: Path) -> Iterator[None]:
    """Hold the store's exclusive lock (``results/.lock``) while the block runs."""
    results_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(results_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# run files


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def jsonable(value: Any) -> Any:
    """NaN and infinities become null: strict JSON everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


class RunFile:
    """One run's file: created exclusively at the start, atomically rewritten as the run proceeds."""

    def __init__(self, results_dir: Path, record: dict[str, Any]):
        self.results_dir = Path(results_dir)
        self.record = record
        runs = self.results_dir / RUNS
        try:
            runs.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                self.path = runs / f"{record['run_id']}.json"
                if _create_exclusive(self.path, dumps(record)):
                    break
                record["run_id"] = new_run_id()  # same second, same suffix: draw again
            else:  # pragma: no cover
                raise StoreError(f"could not create a new run file in {runs}")
        except OSError as exc:
            raise StoreError(f"cannot write to the results store {self.results_dir}: {exc}") from exc

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def save(self) -> None:
        try:
            atomic_write_text(self.path, dumps(self.record))
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc


def _valid_run(obj: Any) -> str | None:
    """Why ``obj`` is not a run record, or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("format") != FORMAT:
        return f"format is {obj.get('format')!r}, expected {FORMAT!r}"
    for key in ("run_id", "timestamp"):
        if not isinstance(obj.get(key), str):
            return f"missing {key!r}"
    checks = obj.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        return "'checks' is not a list of objects"
    for i, c in enumerate(checks):
        for key in ("model_id", "check", "metric", "status"):
            if not isinstance(c.get(key), str):
                return f"checks[{i}] has no {key!r}"
    return None


def read_run(path: Path) -> dict[str, Any]:
    """One run file; raises ``ValueError`` saying why it is unusable."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    why = _valid_run(obj)
    if why:
        raise ValueError(why)
    return obj


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


def iter_runs(results_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every readable run in the store, oldest first; unreadable files are reported through ``warn`` and skipped."""
    warn = warn or _warn
    folder = Path(results_dir) / RUNS
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            runs.append(read_run(path))
        except ValueError as exc:
            warn(f"{path}: {exc}; skipped")
    runs.sort(key=lambda r: (r["run_id"], r["timestamp"]))
    return runs


# ---------------------------------------------------------------------------------------------------------------
# the combined table


def run_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's checks as table rows (all COLUMNS; ``extra`` as a JSON string)."""
    env = run.get("environment") or {}
    rows = []
    for check in run["checks"]:
        row = {"run_id": run["run_id"], "timestamp": run["timestamp"], "git_commit": run.get("git_commit", "unknown")}
        for col in ROW_COLUMNS:
            row[col] = check.get(col)
        for col in ("device", "device_name", "threads", "torch_version"):
            if row[col] in (None, ""):
                row[col] = env.get(col)
        row["extra"] = json.dumps(jsonable(check.get("extra") or {}), sort_keys=True, default=_json_default)
        rows.append(row)
    return rows


def frame(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [row for run in runs for row in run_rows(run)]
    df = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)  # object: integer claims stay integers
    for col in ("threads", "batch_size"):
        df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Int64")
    return df


def rebuild_table(results_dir: Path, warn: Callable[[str], None] | None = None) -> Path:
    """Rebuild ``results.csv`` from every readable run file, under the store's lock, atomically."""
    results_dir = Path(results_dir)
    path = results_dir / TABLE
    try:
        with locked(results_dir):
            df = frame(iter_runs(results_dir, warn))
            atomic_write_text(path, df.to_csv(index=False))
    except OSError as exc:
        raise StoreError(f"cannot rebuild {path}: {exc}") from exc
    return path


def read_table(results_dir: Path, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The combined table: ``results.csv`` when readable, else rebuilt in memory from the run files."""
    path = Path(results_dir) / TABLE
    if path.is_file():
        try:
            df = pd.read_csv(path, dtype={"run_id": str, "extra": str, "reason": str, "tolerance": str},
                             keep_default_na=True)
            if list(df.columns) == list(COLUMNS):
                for col in ("threads", "batch_size"):
                    df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Int64")
                return df
            (warn or _warn)(f"{path}: unexpected columns; rebuilt from the run files")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            (warn or _warn)(f"{path}: unreadable ({exc}); rebuilt from the run files")
    return frame(iter_runs(results_dir, warn))


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The latest row per (model_id, check, metric, batch_size)."""
    if df.empty:
        return df
    ordered = df.sort_values(["run_id"], kind="stable")
    return ordered.drop_duplicates(subset=list(KEY), keep="last", ignore_index=True)
