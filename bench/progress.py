"""Progress for long steps: a rich progress bar on a terminal (stderr), nothing otherwise.

>>> progress = Progress.create()            # enabled only when stderr is a TTY
>>> with progress.task("accuracy tf_efficientnet_cc_b0_4e", total=391) as advance:
...     for batch in loader:
...         advance(1)
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from .env import is_tty


def _noop(n: float = 1) -> None:
    return None


class Progress:
    """A thin wrapper: ``task(description, total)`` yields an ``advance(n)`` callable."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._rich = None

    @classmethod
    def create(cls, enabled: bool | None = None) -> "Progress":
        return cls(is_tty(sys.stderr) if enabled is None else enabled)

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, \
                TextColumn, TimeElapsedColumn

            self._rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(file=sys.stderr), transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
        if self._rich is None:
            yield _noop
            return
        task_id = self._rich.add_task(description, total=total)
        try:
            yield lambda n=1: self._rich.advance(task_id, n)
        finally:
            self._rich.remove_task(task_id)


QUIET = Progress(False)
