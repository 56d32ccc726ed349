"""The results store: every ``cc-bench`` run kept, plus one combined table the docs read.

The format (folders, run files, columns, "latest") is :mod:`registry.results_schema`.
Where a store lives:

* ``cc-bench run`` and ``cc-bench compare`` write to the local store, ``.cc-bench/``
  under the working directory (``--results DIR`` overrides). It ignores itself in
  git (a ``.gitignore`` of ``*`` inside, as ``.pytest_cache`` does), so a run leaves
  a checkout clean.
* the repository's published store is ``results/``; only ``cc-bench publish`` writes it.

Guarantees:

* Every write is atomic (:mod:`registry.safe_files`). A run rewrites its own file
  after each model, so a run killed midway leaves what it finished (``finished``
  is null) and never a half-written file.
* Two runs at once do not clobber each other: each owns its run file (created
  exclusively), and ``results.csv`` is rebuilt from *all* run files under the
  store's lock (``.lock``, fcntl.flock), so whichever rebuild comes last has both.
* A corrupt, truncated, foreign or non-regular file in ``runs/`` is skipped with a
  warning (a FIFO is never opened). A store whose folders or table are of the
  wrong kind is an error (:class:`ResultsStoreError`), never an empty store.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from registry import results_schema as schema
from registry.results_schema import ResultsStoreError
from registry.safe_files import atomic_write, create_exclusive, read_bytes

try:  # POSIX; elsewhere rebuilds are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCAL_STORE = Path(".cc-bench")
PUBLISHED_STORE = Path("results")
LOCK = ".lock"
MAX_RUN_BYTES = 64 << 20

__all__ = ["LOCAL_STORE", "PUBLISHED_STORE", "ResultsStoreError", "RunFile", "StoreWarning", "check_store",
           "history", "iter_runs", "locked", "new_run_id", "read_run", "rebuild_table", "run_rows", "write_table"]


class StoreWarning(UserWarning):
    """A file in the results store could not be read and was skipped."""


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def iso(ts: _dt.datetime) -> str:
    return ts.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(now: _dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-xxxx``: the UTC time and 4 random hex digits."""
    now = now or utc_now()
    return f"{now.astimezone(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def check_store(results_dir: Path) -> None:
    """Refuse a store whose parts are of the wrong kind, before anything is measured or written."""
    results_dir = Path(results_dir)
    for path, folder in ((results_dir, True), (results_dir / schema.RUNS_DIR, True),
                         (results_dir / schema.TABLE_FILE, False)):
        if not os.path.lexists(path):
            continue
        if not path.exists():
            raise ResultsStoreError(path, "a dangling symbolic link")
        if folder and not path.is_dir():
            raise ResultsStoreError(path, "not a folder; a results store is a folder (runs/ and results.csv)")
        if not folder and not path.is_file():
            raise ResultsStoreError(path, "not a regular file; the results table is a CSV file")


def _prepare(results_dir: Path) -> None:
    check_store(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if results_dir.name == LOCAL_STORE.name:  # the local store stays out of git, wherever it is
        ignore = results_dir / ".gitignore"
        if not os.path.lexists(ignore):
            atomic_write(ignore, "# created by cc-bench: the local results store is not committed\n*\n")


@contextlib.contextmanager
def locked(results_dir: Path) -> Iterator[None]:
    """Hold the store's exclusive lock while the block runs (not re-entrant: one holder per process at a time)."""
    results_dir = Path(results_dir)
    try:
        _prepare(results_dir)
        fd = os.open(results_dir / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        raise ResultsStoreError(results_dir, f"cannot use the results store: {exc.strerror or exc}") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            if fcntl is not None:
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
        runs = self.results_dir / schema.RUNS_DIR
        try:
            _prepare(self.results_dir)
            runs.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                self.path = runs / f"{record['run_id']}.json"
                if create_exclusive(self.path, dumps(record)):
                    break
                record["run_id"] = new_run_id()  # same second, same suffix: draw again
            else:  # pragma: no cover
                raise ResultsStoreError(runs, "could not create a new run file")
        except OSError as exc:
            raise ResultsStoreError(self.results_dir, f"cannot write to the results store: {exc}") from exc

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def save(self) -> None:
        try:
            atomic_write(self.path, dumps(self.record))
        except OSError as exc:
            raise ResultsStoreError(self.path, f"cannot write: {exc}") from exc


def _run_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a run record, or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if obj.get("format") != schema.FORMAT:
        return f"format is {obj.get('format')!r}, expected {schema.FORMAT!r}"
    for key in ("run_id", "timestamp"):
        if not isinstance(obj.get(key), str):
            return f"missing {key!r}"
    try:
        schema.parse_timestamp(obj["timestamp"])
    except ValueError:
        return f"timestamp {obj['timestamp']!r} is not ISO 8601"
    checks = obj.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        return "'checks' is not a list of objects"
    for i, row in enumerate(run_rows(obj)):
        problem = schema.row_problem(row)
        if problem:
            return f"checks[{i}].{problem[0]}: {problem[1]}"
    return None


def read_run(path: Path) -> dict[str, Any]:
    """One run file; raises ``ValueError`` saying why it is unusable (a FIFO or folder is never opened)."""
    try:
        obj = json.loads(read_bytes(path, MAX_RUN_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    why = _run_problem(obj)
    if not why and obj["run_id"] != Path(path).stem:  # a run is named by its file: nothing read from elsewhere
        why = f"run_id {obj['run_id']!r} differs from the file's name"
    if why:
        raise ValueError(why)
    return obj


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


def iter_runs(results_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every readable run in the store, oldest first; unreadable files are reported through ``warn`` and skipped."""
    warn = warn or _warn
    folder = Path(results_dir) / schema.RUNS_DIR
    runs = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            runs.append(read_run(path))
        except ValueError as exc:
            warn(f"{path}: {exc}; skipped")
    return schema.chronological(runs)


# ---------------------------------------------------------------------------------------------------------------
# the combined table


def run_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's checks as table rows (all COLUMNS; ``extra`` as a JSON string)."""
    env = run.get("environment")
    env = {**env, "fingerprint": env.get("fingerprint_id")} if isinstance(env, dict) else {}
    rows = []
    for check in run["checks"]:
        row = {"run_id": run["run_id"], "timestamp": run["timestamp"], "git_commit": run.get("git_commit", "unknown")}
        for col in schema.ROW_COLUMNS:
            row[col] = check.get(col)
        for col in schema.ENVIRONMENT_COLUMNS:
            if row[col] in (None, ""):
                row[col] = env.get(col)
        extra = check.get("extra")
        row["extra"] = json.dumps(jsonable(extra or {}), sort_keys=True, default=_json_default) \
            if isinstance(extra, dict) or extra is None else extra
        rows.append(row)
    return rows


def history(results_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every row of every readable run, oldest run first (what regression flags compare against)."""
    return [row for run in iter_runs(results_dir, warn) for row in run_rows(run)]


def write_table(results_dir: Path, warn: Callable[[str], None] | None = None) -> Path:
    """Rebuild ``results.csv`` from every readable run file, atomically; the caller holds :func:`locked`."""
    path = Path(results_dir) / schema.TABLE_FILE
    try:
        atomic_write(path, schema.write_table(history(results_dir, warn)))
    except OSError as exc:
        raise ResultsStoreError(path, f"cannot rebuild: {exc}") from exc
    return path


def rebuild_table(results_dir: Path, warn: Callable[[str], None] | None = None) -> Path:
    """:func:`write_table` under the store's lock."""
    with locked(results_dir):
        return write_table(results_dir, warn)
