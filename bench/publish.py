"""Publish runs: copy them into the repository's results store and regenerate the docs from it.

``cc-bench run`` and ``cc-bench compare`` only write the local store; the results
and docs the repository carries change only through :func:`publish`
(``cc-bench publish``). Everything happens under the target store's lock, the docs
rendered from the table read under it: two publishers at once leave the docs of
whichever came last, never an older store's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from registry.docs import read_results, render_docs
from registry.results_schema import RUNS_DIR, ResultsStoreError
from registry.safe_files import create_exclusive, read_bytes

from . import store


@dataclass(frozen=True)
class Published:
    copied: tuple[str, ...]  # run ids new in the target store
    already: tuple[str, ...]  # run ids it had, byte for byte
    table: Path
    docs: tuple[Path, ...]
    latest_run: str | None


def _copy(run_file: Path, target: Path) -> bool:
    """Copy one run file into ``target``'s runs/; False when it is there already, identical."""
    data = read_bytes(run_file, store.MAX_RUN_BYTES)
    dest = target / RUNS_DIR / run_file.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if create_exclusive(dest, data):
        return True
    if read_bytes(dest, store.MAX_RUN_BYTES) != data:
        raise ResultsStoreError(dest, f"a different run with this id is already published (from {run_file})")
    return False


def publish(index: Any, target: Path, docs_out: Path, run_files: Iterable[Path] = (),
            warn: Callable[[str], None] | None = None) -> Published:
    """Copy ``run_files`` into the store ``target``, rebuild its table and render ``docs_out`` from it.

    ``index``: a ``ModelIndex`` (or a path, None for the packaged one). Raises ``ResultsStoreError``
    when a store cannot be read or written; the docs are then left as they were.
    """
    target = Path(target)
    copied, already = [], []
    with store.locked(target):
        for path in run_files:
            try:
                (copied if _copy(Path(path), target) else already).append(Path(path).stem)
            except OSError as exc:
                raise ResultsStoreError(path, f"cannot publish: {exc}") from exc
        table = store.write_table(target, warn)
        results = read_results(target)
        docs = render_docs(index, results, docs_out)
    latest = results.latest_run
    return Published(tuple(copied), tuple(already), table, tuple(docs), latest.run_id if latest else None)
