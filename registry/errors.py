"""Error types of the registry: every problem is located (file, line, column, JSON path)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from difflib import get_close_matches
from typing import Iterable


@dataclass(frozen=True, order=True)
class Problem:
    """One validation problem, located as ``file:line:column: json.path: message``."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path or '$'}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class RegistryError(Exception):
    """Base class of the registry's errors."""


class IndexValidationError(RegistryError):
    """The index (or one of its files) is invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.column, p.path, p.message))
        count = len(self.problems)
        head = "\n".join(f"  {p}" for p in self.problems[:20])
        more = f"\n  ... and {count - 20} more" if count > 20 else ""
        super().__init__(f"model index is invalid ({count} problem{'s' if count != 1 else ''}):\n{head}{more}")


class UnknownModelError(RegistryError, KeyError):
    """No model with that id; the message names the closest ids."""

    def __init__(self, model_id: str, known: Iterable[str]):
        known = sorted(known)
        close = get_close_matches(model_id, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known ids: {', '.join(known)}"
        self.model_id = model_id
        self.suggestions = close
        super().__init__(f"unknown model id {model_id!r}; {hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]
